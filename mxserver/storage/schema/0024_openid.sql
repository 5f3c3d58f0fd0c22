-- OpenID tokens (client-server-api §OpenID, server-server-api §OpenID): a user's proof of
-- identity for a third party, which exchanges it at GET /_matrix/federation/v1/openid/userinfo.
-- Stored as SHA-256 hashes, like access tokens; each expires after an hour.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts {BIGINT} NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
