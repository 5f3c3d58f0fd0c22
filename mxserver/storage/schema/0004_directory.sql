-- Room aliases and the published room directory (issue: rooms and events, part A).

-- Local room aliases (#local:our.server) and who created each: the creator
-- may always delete it again (directory.yaml: DELETE /directory/room).
CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts {BIGINT} NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms published in this server's room directory (visibility "public");
-- a room without a row is "private".
CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    published_ts {BIGINT} NOT NULL
);
