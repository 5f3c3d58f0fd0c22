-- Other servers' signing keys (issue: federation). One row per key; key_json
-- is the signed /_matrix/key/v2/server response it came in (the origin's
-- signatures only), which the notary endpoints serve again.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    -- unpadded base64 of the ed25519 public key
    verify_key TEXT NOT NULL,
    -- until when the key may be used: the (capped) valid_until_ts of a
    -- current key, the expired_ts of an old_verify_keys entry
    valid_until_ts {BIGINT} NOT NULL,
    is_old BOOLEAN NOT NULL,
    -- the server we had it from: the key's own server, or a notary
    from_server TEXT NOT NULL,
    fetched_ts {BIGINT} NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
