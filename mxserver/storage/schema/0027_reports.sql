-- Content reports (client-server-api §Reporting content, report_content.yaml): what users
-- reported to this server's administrators, kept for them (the admin API lists them).
-- One table for the three kinds; the columns a kind does not use are NULL:
--   event: room_id and event_id (the reporter was joined and could see the event)
--   room:  room_id
--   user:  target_user_id
CREATE TABLE content_reports (
    report_id {BIGINT} PRIMARY KEY,
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    reason TEXT,
    -- the score of an event report, for clients that still send it (removed in v1.18)
    score {BIGINT},
    received_ts {BIGINT} NOT NULL
);
CREATE INDEX content_reports_room ON content_reports (room_id);
CREATE INDEX content_reports_received ON content_reports (received_ts);
-- report IDs are allocated like stream positions (serialised writers on Postgres)
INSERT INTO stream_positions (stream, position) VALUES ('content_reports', 0);
