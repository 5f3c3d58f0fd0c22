-- Event relationships (issue 14): one row per timeline event whose content carries a valid
-- m.relates_to (client-server-api §Forming relationships between events), written in the
-- transaction that persists the event (or places a backfilled outlier in the timeline).
-- Rejected, soft-failed and outlier events get no row. Rich replies (m.in_reply_to without
-- a rel_type) are not relations here.
--
-- A redacted child keeps its row: readers decide what a redaction breaks (the spec's
-- "when a child event is redacted then the relationship is broken"), and a room version
-- whose redaction keeps m.relates_to needs the row.
--
-- Events stored before this migration are indexed once at start-up, in Python (reading
-- m.relates_to out of the events' JSON has no portable SQL), see mxserver.storage.relations.
CREATE TABLE event_relations (
    -- the child
    event_id TEXT PRIMARY KEY,
    room_nid {BIGINT} NOT NULL,
    -- the parent, as the child names it (it may not be stored, or be in another room)
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    -- an m.annotation's key, NULL otherwise
    annotation_key TEXT,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    -- the child's room-stream position (negative for backfilled history)
    stream_ordering {BIGINT} NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, stream_ordering);
CREATE INDEX event_relations_parent_rel_type ON event_relations (relates_to_id, rel_type, stream_ordering);
