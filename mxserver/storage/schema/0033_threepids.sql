-- Third-party identifiers (client-server-api §Adding Account Administrative Contact Information).

-- The 3PIDs the homeserver associates with an account (GET /account/3pid): used to log in with
-- an e-mail address and to reset a password. An address belongs to at most one account.
-- address is canonical (e-mail: trimmed and lower-cased). Times are ms.
CREATE TABLE user_threepids (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    validated_at {BIGINT} NOT NULL,
    added_at {BIGINT} NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- Which identity server each 3PID of a user was bound to through this homeserver
-- (POST /account/3pid/bind): /3pid/unbind, /3pid/delete and deactivation unbind from it.
CREATE TABLE user_threepid_id_servers (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);

-- The homeserver's own validation sessions (the .../requestToken endpoints): a session is one
-- (client_secret, medium, address); each new send_attempt sends a new token (the previous one
-- stops working). validated_at is set once the token came back (NULL: not yet).
CREATE TABLE threepid_validation_sessions (
    session_id TEXT PRIMARY KEY,
    client_secret TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    last_send_attempt INTEGER NOT NULL,
    token TEXT NOT NULL,
    token_expires {BIGINT} NOT NULL,
    next_link TEXT,
    created_at {BIGINT} NOT NULL,
    validated_at {BIGINT}
);
CREATE UNIQUE INDEX threepid_validation_sessions_key ON threepid_validation_sessions (client_secret, medium, address);
