-- Rooms, events, the DAG, and state snapshots (issue: rooms and events).
--
-- Internal numeric IDs (*_nid) are allocated by the single writer process.
-- State does not grow with history: a snapshot is a delta on a parent
-- snapshot (chains bounded in length) and every event that has the same
-- state shares its snapshot.
CREATE TABLE rooms (
    room_nid {BIGINT} PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts {BIGINT} NOT NULL
);

CREATE TABLE events (
    event_nid {BIGINT} PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_nid {BIGINT} NOT NULL,
    -- position in the room event stream; NULL for outliers and rejected events
    stream_ordering {BIGINT},
    depth {BIGINT} NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts {BIGINT} NOT NULL,
    state_before {BIGINT},
    state_after {BIGINT},
    -- the state event this one replaced in the room state (for prev_content)
    replaces_state TEXT,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    rejected_reason TEXT,
    redacted_by TEXT,
    json TEXT NOT NULL
);
CREATE UNIQUE INDEX events_stream_ordering ON events (stream_ordering);
CREATE INDEX events_room_stream ON events (room_nid, stream_ordering);
CREATE INDEX events_room_ts ON events (room_nid, origin_server_ts);

CREATE TABLE event_edges (
    event_nid {BIGINT} NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE forward_extremities (
    room_nid {BIGINT} NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_nid, event_id)
);

CREATE TABLE state_keys (
    state_key_nid {BIGINT} PRIMARY KEY,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    UNIQUE (type, state_key)
);

CREATE TABLE state_snapshots (
    snapshot_nid {BIGINT} PRIMARY KEY,
    room_nid {BIGINT} NOT NULL,
    parent_nid {BIGINT},
    chain_length INTEGER NOT NULL
);

CREATE TABLE state_snapshot_entries (
    snapshot_nid {BIGINT} NOT NULL,
    state_key_nid {BIGINT} NOT NULL,
    event_nid {BIGINT} NOT NULL,
    PRIMARY KEY (snapshot_nid, state_key_nid)
);

CREATE TABLE current_state (
    room_nid {BIGINT} NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_nid, type, state_key)
);

-- Every user's current membership of every room this server knows, with
-- the stream position of the change: what /sync and joined_rooms read.
CREATE TABLE room_memberships (
    user_id TEXT NOT NULL,
    room_nid {BIGINT} NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering {BIGINT} NOT NULL,
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, room_nid)
);
CREATE INDEX room_memberships_room ON room_memberships (room_nid, membership);
CREATE INDEX room_memberships_stream ON room_memberships (user_id, stream_ordering);

-- Client transaction IDs: PUT .../send/{type}/{txnId} is idempotent per device.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
