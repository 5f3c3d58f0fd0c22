-- Ephemeral data that outlives a restart (issue 4, sync sources): read receipts.
--
-- The receipts stream position lives in stream_positions (schema 0006):
-- writers take the next position with UPDATE ... RETURNING in their own
-- transaction, so positions commit in order.
INSERT INTO stream_positions (stream, position) VALUES ('receipts', 0);

-- Receipts are "up to" markers: one row per (room, receipt type, user,
-- thread) holding the latest one (receipts.md: each user, receipt type and
-- thread has a single event). thread_id is '' for an unthreaded receipt, else
-- 'main' or a thread root's event ID. event_stream_ordering is the
-- acknowledged event's room-stream position (receipts only move forward;
-- unread counts compare against it); stream_id is the receipts-stream
-- position of the row's latest change (what /sync reads).
CREATE TABLE receipts (
    room_nid {BIGINT} NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering {BIGINT} NOT NULL,
    ts {BIGINT} NOT NULL,
    stream_id {BIGINT} NOT NULL,
    PRIMARY KEY (room_nid, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);
CREATE INDEX receipts_user_room ON receipts (user_id, room_nid);
