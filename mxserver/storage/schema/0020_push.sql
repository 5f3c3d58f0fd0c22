-- Push notifications (issue 13): what push-rule evaluation decided, per user and event.
--
-- One row per (user, event) whose matching rule said "notify". Unread counts in
-- /sync are the rows after the user's read receipt (per thread for threaded
-- receipts); /notifications lists them. Backfilled events never get rows: they
-- never reach the stream reader that writes them.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_nid {BIGINT} NOT NULL,
    stream_ordering {BIGINT} NOT NULL,
    event_id TEXT NOT NULL,
    -- 'main' for the main timeline, else the thread root's event ID
    thread_id TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    -- the matching rule's actions, as JSON
    actions TEXT NOT NULL,
    ts {BIGINT} NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_nid, stream_ordering);

-- How far each reader of the room event stream has got (push evaluation, ...): after
-- a restart a reader catches up from here, so no event is skipped or seen twice.
CREATE TABLE stream_readers (
    name TEXT PRIMARY KEY,
    position {BIGINT} NOT NULL
);
