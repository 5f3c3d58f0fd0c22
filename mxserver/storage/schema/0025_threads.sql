-- Threads (issue 14): one row per thread root of a room that has at least one unredacted
-- m.thread reply (client-server-api §Threading), for GET /rooms/{roomId}/threads (newest
-- activity first) and the m.thread bundled aggregation (count and latest reply).
--
-- Maintained in the transaction that indexes a reply in event_relations (a local or received
-- event, or a backfilled one placed in the timeline) and in the one that redacts a reply:
-- "when a child event is redacted then the relationship is broken" (§Aggregations of child
-- events), so a redacted reply leaves the count, a new latest reply is chosen, and a thread
-- whose last reply is redacted has no row.
--
-- The root is the event the replies name, which may not be stored (yet) or be in another room:
-- readers join it to the events table in the same room.
CREATE TABLE threads (
    -- the room of the replies
    room_nid {BIGINT} NOT NULL,
    root_id TEXT NOT NULL,
    -- the reply with the highest stream position (backfilled replies are below every other)
    latest_event_id TEXT NOT NULL,
    latest_stream_ordering {BIGINT} NOT NULL,
    -- unredacted replies
    reply_count {BIGINT} NOT NULL,
    PRIMARY KEY (room_nid, root_id)
);
CREATE INDEX threads_room_latest ON threads (room_nid, latest_stream_ordering);
CREATE INDEX threads_root ON threads (root_id);

-- Who replied in a thread (current_user_participated, include=participated) and how many
-- replies came from users a reader ignores, without reading every reply.
CREATE INDEX event_relations_parent_sender ON event_relations (relates_to_id, rel_type, sender);

-- The threads that already exist: event_relations was filled by migration 0023.
INSERT INTO threads (room_nid, root_id, latest_event_id, latest_stream_ordering, reply_count)
SELECT g.room_nid, g.relates_to_id, latest.event_id, g.latest_position, g.replies
FROM (
    SELECT r.room_nid, r.relates_to_id, MAX(r.stream_ordering) AS latest_position, COUNT(*) AS replies
    FROM event_relations r JOIN events child ON child.event_id = r.event_id
    WHERE r.rel_type = 'm.thread' AND child.redacted_by IS NULL
    GROUP BY r.room_nid, r.relates_to_id
) g
JOIN events latest ON latest.stream_ordering = g.latest_position;
