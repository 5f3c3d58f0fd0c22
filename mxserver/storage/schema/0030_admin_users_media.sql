-- The user, registration-token and media parts of the admin API (issue 17).

-- An access token may expire: the admin API's "login as a user" takes valid_until_ms.
-- NULL: it does not expire (every other token).
ALTER TABLE access_tokens ADD COLUMN expires_ts {BIGINT};

-- Registration tokens made through the admin API (m.login.registration_token; the token of the
-- config file, registration.registration_token, is not stored). pending: uses begun (a UIA
-- session passed the stage) and not finished; completed: registrations done with it. A token is
-- valid while pending + completed < uses_allowed (NULL: unlimited) and expiry_time (ms; NULL:
-- never) has not passed.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time {BIGINT}
);

-- Quarantined media (the admin API): served to nobody (404), its bytes kept. quarantined_by is
-- the admin who quarantined it (NULL: not quarantined). Local media marked safe_from_quarantine
-- is skipped when a user's or room's media is quarantined in bulk, and by deletions by date.
-- last_access_ts: when local media was last downloaded (coarse; NULL: never), for deletions by
-- date ("last used before").
ALTER TABLE local_media ADD COLUMN quarantined_by TEXT;
ALTER TABLE local_media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE local_media ADD COLUMN last_access_ts {BIGINT};
ALTER TABLE remote_media ADD COLUMN quarantined_by TEXT;
