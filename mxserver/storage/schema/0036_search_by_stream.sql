-- The search index keyed by stream position, with the event's room beside its words (issue 14,
-- client-server-api §Server Side Search). A search in a few rooms (Element searches the open
-- room) is answered from the index alone: the rooms narrow the matches inside the index, and
-- "recent" order is the index's own key order, so neither the count nor a page joins every
-- match to its event (that join was most of a common word's cost). Stream positions are unique
-- (events_stream_ordering) and every indexed event has one (only timeline events are indexed).
--
-- dialect: sqlite
-- rowid: the event's stream_ordering; tags: "r" and the room's room_nid (a word of its own
-- column, so a query's words never match it)
CREATE VIRTUAL TABLE event_search_v2 USING fts5(words, tags, tokenize = 'ascii');
INSERT INTO event_search_v2 (rowid, words, tags)
    SELECT e.stream_ordering, s.words, 'r' || e.room_nid
    FROM event_search s JOIN events e ON e.event_nid = s.rowid
    WHERE e.stream_ordering IS NOT NULL;
DROP TABLE event_search;
ALTER TABLE event_search_v2 RENAME TO event_search;
-- dialect: postgres
CREATE TABLE event_search_v2 (
    stream_ordering BIGINT PRIMARY KEY,
    room_nid BIGINT NOT NULL,
    vector TSVECTOR NOT NULL
);
INSERT INTO event_search_v2 (stream_ordering, room_nid, vector)
    SELECT e.stream_ordering, e.room_nid, s.vector
    FROM event_search s JOIN events e ON e.event_nid = s.event_nid
    WHERE e.stream_ordering IS NOT NULL;
DROP TABLE event_search;
ALTER TABLE event_search_v2 RENAME TO event_search;
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
