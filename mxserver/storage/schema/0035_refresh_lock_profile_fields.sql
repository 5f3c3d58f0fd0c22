-- Refresh tokens, account locking and suspension, extended profile fields (issue 18).

-- Refresh tokens (client-server-api §Refreshing access tokens), kept as their SHA-256 like
-- access tokens. Each belongs to a device. `parent_hash`: the refresh token this one was made
-- from by POST /refresh; the parent stays usable until this token, or the access token issued
-- with it, is first used (then the parent row is deleted and parent_hash set to NULL).
-- expires_ts: NULL never.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    parent_hash TEXT,
    created_ts {BIGINT} NOT NULL,
    expires_ts {BIGINT}
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_hash);

-- The refresh token an access token was issued with (NULL: a token that cannot be refreshed).
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash TEXT;

-- Account moderation (client-server-api §Account locking, §Account suspension): reversible,
-- unlike deactivation. The client API's admin/lock and admin/suspend and Synapse's admin API
-- both change these.
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;

-- Profile fields other than displayname and avatar_url (columns of `profiles`): m.tz and
-- custom keys (profile.yaml, v1.16). `value` is the field's JSON value, encoded.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);
