-- End-to-end encryption (issue 6): device keys, one-time and fallback keys,
-- cross-signing keys and signatures, device list changes (local and remote),
-- and server-side key backups.

-- Position of the device-list stream (sync tokens' last number). Every change
-- to a user's devices, device keys or cross-signing keys takes one position.
INSERT INTO stream_positions (stream, position) VALUES ('device_lists', 0);

-- Device identity keys as uploaded (the signed object, signatures included),
-- for local devices and for the cached device lists of remote users.
-- key_json is NULL for a remote device without keys; display_name is kept for
-- remote devices only (local names live in ``devices``).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT,
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys of local devices. upload_seq orders them by upload
-- (keys.yaml: one-time keys are given out in the order they were uploaded).
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    upload_seq {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys (user_id, device_id, algorithm, upload_seq);

-- At most one fallback key per device and algorithm; ``used`` once claimed.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys (key_type master, self_signing, user_signing) of local
-- users, and the cached master/self-signing keys of remote users.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with /keys/signatures/upload, kept apart from the keys
-- they sign so that /keys/query can show each requester only those it may see
-- (end_to_end_encryption.md §Cross-signing: no other user's user-signing
-- signatures). target_key_id is a device ID or a master public key.
CREATE TABLE e2e_cross_signing_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- One row per change to a user's device list (device_id '' for a change of
-- cross-signing keys), local or remote, at its device_lists stream position.
-- /sync and /keys/changes read it; for local users it also gives the
-- stream_id/prev_id of outbound m.device_list_update EDUs.
CREATE TABLE device_list_changes (
    stream_id {BIGINT} NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id, device_id)
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);

-- Remote users whose device list we cache. stream_id is the remote server's
-- position for that list (NULL when it came from /user/keys/query, which
-- gives none: the next EDU then triggers a resync).
CREATE TABLE e2e_remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id {BIGINT}
);

-- The remote stream IDs already applied per cached user, to recognise an
-- EDU's prev_id (server-server-api §Device Management); pruned to the latest.
CREATE TABLE e2e_remote_device_list_ids (
    user_id TEXT NOT NULL,
    stream_id {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, stream_id)
);

-- Server-side key backups (key_backup.yaml). version is a per-user counter;
-- a deleted version stays as a tombstone so DELETE is idempotent and a
-- version number is never reused. etag changes with every write of keys.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version {BIGINT} NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag {BIGINT} NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version {BIGINT} NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index {BIGINT} NOT NULL,
    forwarded_count {BIGINT} NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Dehydrated devices (MSC3814): at most one per user. The device itself is a
-- row of ``devices`` without access tokens; device_data is the client's
-- opaque (encrypted) pickle.
CREATE TABLE e2e_dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);

-- /sync device_lists reads the membership changes of a user's rooms between
-- two positions (mxserver/e2ee/device_lists.py): by room and position.
CREATE INDEX e2e_room_memberships_room_stream ON room_memberships (room_nid, stream_ordering);
