-- The user, registration-token and media parts of the admin API (issue 17).

-- An access token may expire: the admin API's "login as a user" takes valid_until_ms.
-- NULL: it does not expire (every other token).
ALTER TABLE access_tokens ADD COLUMN expires_ts {BIGINT};
