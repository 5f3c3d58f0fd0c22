-- Server-side search (issue 14, client-server-api §Server Side Search): a full-text index
-- of the searchable text of timeline events (mxserver.events.search decides the text and
-- its words), one row per event, keyed by the event's event_nid. Rows are written in the
-- transaction that persists the event (or places a backfilled outlier in the timeline) and
-- deleted in the one that redacts it. Rejected, soft-failed and outlier events get no row.
-- Each searchable event type has one search key (search.yaml `keys`): the events' type says
-- which key a row's text came from.
--
-- Both backends index the same words, prepared in Python: SQLite's FTS5 with the "ascii"
-- tokenizer splits them on the spaces between them; Postgres stores them as a tsvector.
--
-- dialect: sqlite
-- rowid: the event's event_nid
CREATE VIRTUAL TABLE event_search USING fts5(words, tokenize = 'ascii');
-- dialect: postgres
CREATE TABLE event_search (
    event_nid BIGINT PRIMARY KEY,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
-- dialect: all

-- One-time jobs over data stored before a migration, run in batches in the background after
-- start-up (mxserver.storage.background_jobs): a row per unfinished job, with how far it got
-- (a position of the job's own, committed with each batch's work) and where it ends.
CREATE TABLE background_jobs (
    name TEXT PRIMARY KEY,
    position {BIGINT} NOT NULL,
    target {BIGINT} NOT NULL
);

-- Events stored before this migration are indexed by the job, up to the last event_nid
-- now stored; later events are indexed as they are persisted. No events: nothing to do.
INSERT INTO background_jobs (name, position, target)
    SELECT 'event_search', 0, event_nid FROM events ORDER BY event_nid DESC LIMIT 1;
