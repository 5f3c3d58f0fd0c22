-- Simplified sliding sync (MSC4186) connections: what each connection has sent of each room,
-- so that a restart does not make clients start over.
--
-- A connection is (user, device, conn_id). Its state is the rows at position 0 (the base:
-- what the client confirmed by using a pos) plus, per response not yet confirmed, the rows
-- that response changed, at that response's position. A request with a pending position
-- folds it into the base and drops the other pending ones (MSC4186 §Connections).
CREATE TABLE sliding_sync_connections (
    conn_key {BIGINT} PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    -- the position whose state the base rows hold (0: none confirmed yet)
    base_position {BIGINT} NOT NULL,
    created_ts {BIGINT} NOT NULL,
    last_used_ts {BIGINT} NOT NULL,
    UNIQUE (user_id, device_id, conn_id)
);
CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections (last_used_ts);

-- Positions handed out in a pos and not confirmed yet (the base position has no row here).
CREATE TABLE sliding_sync_positions (
    position {BIGINT} PRIMARY KEY,
    conn_key {BIGINT} NOT NULL,
    created_ts {BIGINT} NOT NULL
);
CREATE INDEX sliding_sync_positions_conn ON sliding_sync_positions (conn_key);

-- Per room: the streams sent (rooms, receipts, account data: live, or up to a position),
-- the room config the client's data was built with, the members it has from lazy loading.
CREATE TABLE sliding_sync_rooms (
    conn_key {BIGINT} NOT NULL,
    position {BIGINT} NOT NULL,
    room_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (conn_key, position, room_id)
);

INSERT INTO stream_positions (stream, position) VALUES ('sliding_sync_connections', 0);
INSERT INTO stream_positions (stream, position) VALUES ('sliding_sync_positions', 0);
