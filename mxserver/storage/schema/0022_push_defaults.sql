-- Push results stored by exception (issue 13's performance figures).
--
-- An event that notifies most of the room's local members is stored once, in
-- event_push_defaults: every local user joined to the room when it was evaluated (its
-- sender aside) got those actions, unless event_push_actions holds a row for that user
-- and event. So a message into a room of thousands writes one row plus one per user whose
-- result differs (a mention, a muted room, an ignored sender), not one per member.
-- Readers take a user's default rows from the rooms they are joined to, after their join
-- (mxserver.storage.push_actions.user_notifications_sql).
CREATE TABLE event_push_defaults (
    room_nid {BIGINT} NOT NULL,
    stream_ordering {BIGINT} NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- 'main' for the main timeline, else the thread root's event ID
    thread_id TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    -- the actions, as JSON
    actions TEXT NOT NULL,
    ts {BIGINT} NOT NULL
);
CREATE INDEX event_push_defaults_room ON event_push_defaults (room_nid, stream_ordering);

-- A per-user row now also says "not notified" where the event's default would: notify is
-- FALSE there (actions '[]'). Rows from before this migration all notified.
ALTER TABLE event_push_actions ADD COLUMN notify BOOLEAN NOT NULL DEFAULT TRUE;
