-- Per-user data that /sync delivers (issue 4): account data and room tags,
-- push rules, filters, and send-to-device messages.

-- Positions of the persisted per-user streams ("account_data", "to_device").
-- A write takes the next position with UPDATE ... RETURNING inside its own
-- transaction: the row lock orders concurrent writers, so every position at
-- or below a committed one is committed too. Kept here, not derived from the
-- data tables, because delivered to-device messages are deleted and a
-- position must never go back.
CREATE TABLE stream_positions (
    stream TEXT PRIMARY KEY,
    position {BIGINT} NOT NULL
);
INSERT INTO stream_positions (stream, position) VALUES ('account_data', 0);
INSERT INTO stream_positions (stream, position) VALUES ('to_device', 0);

-- Global (room_id = '') and per-room account data; one row per type, holding
-- the position of its latest change. m.tag (room tags) lives here too.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

-- User-defined push rules. position orders the rules of one kind: 0 is the
-- most important.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default push rules: NULL keeps the default.
CREATE TABLE push_rule_default_overrides (
    user_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, rule_id)
);

-- The account_data position of a user's latest push rule change: /sync then
-- sends the whole m.push_rules event again.
CREATE TABLE push_rules_changes (
    user_id TEXT PRIMARY KEY,
    stream_id {BIGINT} NOT NULL
);

-- Uploaded filters (filter.yaml). filter_id is filter_nid as a string;
-- filter_hash (SHA-256 of the canonical JSON) lets an identical upload reuse
-- its ID, since clients upload the same filter on every start.
CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_nid {BIGINT} NOT NULL,
    filter_hash TEXT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_nid)
);
CREATE INDEX user_filters_hash ON user_filters (user_id, filter_hash);

-- Send-to-device messages waiting for a local device, deleted once the
-- device's /sync shows it received them.
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id {BIGINT} NOT NULL,
    message_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- PUT /sendToDevice/{eventType}/{txnId} is idempotent per device and path.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, device_id, event_type, txn_id)
);
