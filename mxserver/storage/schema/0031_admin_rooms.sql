-- The admin API's rooms (issue 17): the block list, room deletion and history purge tasks,
-- the server notices rooms.

-- Rooms local users may not join (nor be invited to): blocked by a server admin
-- (PUT /_synapse/admin/v1/rooms/{roomId}/block, or DELETE .../rooms/{roomId} with "block").
-- A room may be blocked before this server knows it.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    -- the admin who blocked it
    user_id TEXT NOT NULL,
    blocked_ts {BIGINT} NOT NULL
);

-- Room deletions and history purges running in the background, and their outcome, kept so
-- that their status survives a restart (a task a restart interrupted is marked failed).
--   kind: 'delete' (DELETE /_synapse/admin/v2/rooms/{roomId}) or 'purge_history'
--   status: scheduled, active, complete, failed
--   result: JSON (a deletion's shutdown_room object); NULL until there is one
CREATE TABLE admin_room_tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    result TEXT,
    created_ts {BIGINT} NOT NULL,
    updated_ts {BIGINT} NOT NULL
);
CREATE INDEX admin_room_tasks_room ON admin_room_tasks (kind, room_id);

-- The highest room-stream position of events a purge removed: stream positions are handed
-- out from the highest one stored at start-up, and must never go back to one a client or a
-- stream reader has already seen.
INSERT INTO stream_positions (stream, position) VALUES ('purged_room_events', 0);

-- Each user's server notices room (client-server-api §Server Notices), made by the system
-- user on the first notice to them.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
