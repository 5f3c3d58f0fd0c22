"""SQL for server-side search: the ``event_search`` full-text index and the queries /search runs.

Rows are written by the search indexer, a reader of the room event stream
(:mod:`mxserver.room_handlers.search_index`), through :meth:`SearchStore.index`,
a batch of events at a time with the reader's position; by
:mod:`mxserver.storage.backfill` when it places an outlier in the timeline; and,
for events stored before the index existed, by the background job step
:func:`index_existing_events_txn`. They are deleted by :func:`unindex_redacted_txn`
in the transaction that redacts their event, and every writer checks, under a
lock of the event's row, that the event is not redacted: whichever commits first,
a redacted text never stays in the index. Only timeline events are indexed.

The backends differ only in the few fragments of :class:`_Fts5` (SQLite) and
:class:`_TsVector` (Postgres); both index the words of
:func:`mxserver.events.search.search_words`, and a search for words finds the
events that have, for every one of them, a word starting with it (prefix
matching, as Synapse does on Postgres: "apple" finds "apples").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.search import KEY_OF_TYPE, search_words, searchable_text
from mxserver.storage.database import Database, Txn
from mxserver.storage.dialect import Dialect
from mxserver.storage.stream_positions import reader_position, set_reader_position_txn

if TYPE_CHECKING:
    # the event store imports this module's writers
    from mxserver.events.model import Event
    from mxserver.storage.events import EventStore

#: the background job (mxserver.storage.background_jobs) migration 0026 schedules: indexing the
#: events stored before the index existed, with :func:`index_existing_events_txn`
INDEX_JOB = "event_search"

#: an indexed event is in the timeline: not an outlier, not rejected, not soft-failed (alias e)
_IN_TIMELINE = "e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL AND e.soft_failed = ?"


class _Fts5:
    """SQLite: an FTS5 table whose rowid is the event's stream position, ranked by BM25, with
    the event's room as a word ``r<room_nid>`` of its own column ``tags``."""

    key_column = "rowid"
    insert = "INSERT INTO event_search (rowid, tags, words) VALUES (?, ?, ?)"
    #: FTS5 walks its rowids backwards itself: a page in "recent" order stops at the page's end
    recent_order = "event_search.rowid DESC"

    @staticmethod
    def document(words: Sequence[str]) -> str:
        # the "ascii" tokenizer splits on ASCII non-alphanumerics only: the spaces between words
        return " ".join(words)

    @staticmethod
    def room_value(room_nid: int) -> str:
        return f"r{room_nid}"

    @staticmethod
    def query(words: Sequence[str], room_nids: Sequence[int] = ()) -> str:
        # Every word a quoted string (never an FTS5 keyword or operator) with a prefix "*", of
        # the words column only; FTS5 ANDs the terms of a query. Rooms, when given, are matched
        # in the index too: one of the room words in the tags column.
        terms = " ".join('words:"' + w.replace('"', '""') + '"*' for w in words)
        if not room_nids:
            return terms
        return terms + " AND (" + " OR ".join(f'tags:"r{nid}"' for nid in room_nids) + ")"

    #: see _TsVector.lock_rows: SQLite's one writer runs write transactions one at a time
    lock_rows = ""
    match = "event_search MATCH ?"
    # bm25() is lower for better matches; search.yaml's rank is higher for closer ones. The
    # room words weigh nothing: a match's rank is its words' alone.
    score = "-bm25(event_search, 1.0, 0.0)"
    score_takes_query = False
    #: Each room of a query is a term the index merges: cheap for the few rooms a search usually
    #: names (Element searches the open room), not for every room of a user in hundreds, whose
    #: rooms are checked on the matches' events instead.
    max_index_rooms = 8

    @staticmethod
    def rooms_clause(room_nids: Sequence[int]) -> tuple[str, list[Any]]:
        return "", []  # part of the MATCH query


class _TsVector:
    """Postgres: a tsvector column with a GIN index, ranked by cover density (ts_rank_cd), and
    the event's stream position and room beside it."""

    key_column = "stream_ordering"
    insert = (
        "INSERT INTO event_search (stream_ordering, room_nid, vector) VALUES (?, ?, CAST(? AS tsvector))"
        " ON CONFLICT (stream_ordering) DO NOTHING"
    )
    # "+ 0": Postgres would otherwise walk every indexed event backwards by position and test
    # each against the query until it has a page, fast for a common word but a full scan for a
    # rare one; sorting the matches costs what the count costs anyway.
    recent_order = "event_search.stream_ordering + 0 DESC"

    @staticmethod
    def document(words: Sequence[str]) -> str:
        # A tsvector literal with each word's position (Postgres keeps positions up to 16383),
        # so no text search parser or dictionary changes the words.
        return " ".join(f"{_quote(w)}:{min(i, 16383)}" for i, w in enumerate(words, 1))

    @staticmethod
    def room_value(room_nid: int) -> int:
        return room_nid

    @staticmethod
    def query(words: Sequence[str], room_nids: Sequence[int] = ()) -> str:
        return " & ".join(f"{_quote(w)}:*" for w in words)

    #: The start-up job locks the events it indexes: a redaction committed between its read of
    #: an event and its write would otherwise find no row to delete, and the job would then
    #: store the redacted text. Locked, the redaction waits for the job's batch (or the job for
    #: the redaction, and then sees it).
    lock_rows = " FOR UPDATE"
    match = "event_search.vector @@ CAST(? AS tsquery)"
    # ts_rank_cd is a float4: as a float8 the value handed out in a next_batch compares equal
    # to the one computed again for the next page
    score = "CAST(ts_rank_cd(event_search.vector, CAST(? AS tsquery)) AS DOUBLE PRECISION)"
    score_takes_query = True
    #: the room is a column of the index's own rows: any number of rooms is checked there
    max_index_rooms = 1 << 30

    @staticmethod
    def rooms_clause(room_nids: Sequence[int]) -> tuple[str, list[Any]]:
        return f" AND event_search.room_nid IN ({','.join('?' * len(room_nids))})", list(room_nids)


def tsvector_document(words: Sequence[str]) -> str:
    """The ``tsvector`` literal the Postgres index stores for an event's words (port-db turns
    SQLite's index rows into Postgres's with it)."""
    return _TsVector.document(words)


def _quote(word: str) -> str:
    """A lexeme quoted for tsvector/tsquery input (words never hold quotes, but be exact)."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _backend(dialect: Dialect) -> type[_Fts5] | type[_TsVector]:
    return _Fts5 if dialect.name == "sqlite" else _TsVector


# -- writing the index ----------------------------------------------------------------------------

#: events indexed per statement (well under SQLite's bound on bound parameters)
_CHUNK = 500


def _document(backend: type[_Fts5] | type[_TsVector], etype: str, content: Any) -> str | None:
    """The index document of an event's searchable text (None: it has none)."""
    found = searchable_text(etype, content)
    if found is None:
        return None
    words = search_words(found[1])
    return backend.document(words) if words else None


def write_search_txn(txn: Txn, stream_ordering: int, room_nid: int, etype: str, content: Any) -> None:
    """Index a timeline event's searchable text, if it has any (the caller checked that the
    event is unredacted and not indexed yet)."""
    backend = _backend(txn.dialect)
    document = _document(backend, etype, content)
    if document is not None:
        txn.execute(backend.insert, (stream_ordering, backend.room_value(room_nid), document))


def index_events_txn(txn: Txn, reader: str, position: int, events: Sequence[tuple[str, str, Any]]) -> None:
    """Index ``(event ID, type, content)`` of new timeline events and move the indexer ``reader``
    to ``position``. Redacted events are left out, read under a lock of their rows (Postgres):
    a redaction committing meanwhile waits, and then removes what was written, or went first
    and is seen here. Events already indexed (a backfill or the start-up job got there) are
    skipped."""
    backend = _backend(txn.dialect)
    for start in range(0, len(events), _CHUNK):
        chunk = events[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        live = {
            event_id: (stream, room_nid)
            for event_id, stream, room_nid in txn.query(
                f"SELECT e.event_id, e.stream_ordering, e.room_nid FROM events e WHERE e.event_id IN ({marks})"
                f" AND e.stream_ordering IS NOT NULL AND e.redacted_by IS NULL{backend.lock_rows}",
                [event_id for event_id, _, _ in chunk],
            )
        }
        done = _indexed(txn, [stream for stream, _ in live.values()]) if live else set()
        rows = []
        for event_id, etype, content in chunk:
            found = live.get(event_id)
            if found is None or found[0] in done:
                continue
            document = _document(backend, etype, content)
            if document is not None:
                rows.append((found[0], backend.room_value(found[1]), document))
        if rows:
            txn.executemany(backend.insert, rows)
    set_reader_position_txn(txn, reader, position)


def place_search_txn(txn: Txn, event_id: str) -> None:
    """Index a stored event that has just been given its place in the timeline (a backfilled
    outlier): read from its row, so only an accepted, unredacted timeline event gets indexed."""
    row = txn.query_one(
        f"SELECT e.stream_ordering, e.room_nid, e.type, e.json FROM events e WHERE e.event_id = ?"
        f" AND {_IN_TIMELINE} AND e.redacted_by IS NULL",
        (event_id, False),
    )
    if row is None or row[2] not in KEY_OF_TYPE:
        return
    stream, room_nid, etype, raw = row
    if _indexed(txn, [stream]):
        return  # the start-up job got there first
    write_search_txn(txn, stream, room_nid, etype, json.loads(raw).get("content"))


def unindex_redacted_txn(txn: Txn, event_id: str) -> None:
    """Forget the text of an event that has just been redacted: the index must not keep what
    the redaction removed (client-server-api §Redactions)."""
    row = txn.query_one("SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,))
    if row is not None and row[0] is not None:
        txn.execute(f"DELETE FROM event_search WHERE {_backend(txn.dialect).key_column} = ?", (row[0],))


def _indexed(txn: Txn, streams: Sequence[int]) -> set[int]:
    column = _backend(txn.dialect).key_column
    marks = ",".join("?" * len(streams))
    return {r[0] for r in txn.query(f"SELECT {column} FROM event_search WHERE {column} IN ({marks})", streams)}


def index_existing_events_txn(txn: Txn, position: int, target: int, limit: int) -> int | None:
    """Background job step (``event_search``): index up to ``limit`` searchable timeline events
    stored before the index existed, after event_nid ``position`` and up to ``target``; the
    new position, or None when none are left. Events already indexed (a backfill placed them
    in the timeline since) are skipped."""
    rows = txn.query(
        f"SELECT e.event_nid, e.stream_ordering, e.room_nid, e.type, e.json FROM events e"
        f" WHERE e.event_nid > ? AND e.event_nid <= ?"
        f" AND e.type IN ({','.join('?' * len(KEY_OF_TYPE))}) AND {_IN_TIMELINE} AND e.redacted_by IS NULL"
        f" ORDER BY e.event_nid LIMIT ?{_backend(txn.dialect).lock_rows}",
        (position, target, *KEY_OF_TYPE, False, limit),
    )
    if not rows:
        return None
    done = _indexed(txn, [r[1] for r in rows])
    for _, stream, room_nid, etype, raw in rows:
        if stream not in done:
            write_search_txn(txn, stream, room_nid, etype, json.loads(raw).get("content"))
    return rows[-1][0] if len(rows) == limit else None


# -- reading ------------------------------------------------------------------------------------


@attrs.frozen
class SearchRoom:
    """A room whose events a user may search: one they are in or have been in."""

    room_nid: int
    room_id: str
    membership: str
    #: the user's current membership event
    member_event_id: str
    #: for a former member, the stream position of their leaving: they see nothing after it
    #: (client-server-api §Server Side Search); None for a member
    until: int | None


@attrs.frozen
class SearchQuery:
    """What one /search looks for: the words, where, and in which order."""

    words: tuple[str, ...]
    keys: tuple[str, ...]
    rooms: tuple[SearchRoom, ...]
    #: ``(" AND ...", args)`` on alias ``e`` narrowing to (a superset of) the filter's events
    conditions: tuple[str, Sequence[Any]] = ("", ())
    #: only events of this sender (a ``sender`` group's next_batch)
    sender: str | None = None
    #: users whose messages the searcher ignores (their state events still count:
    #: modules/ignore_users.md)
    ignored: frozenset[str] = frozenset()
    #: search.yaml order_by: ``rank`` (True) or ``recent``
    by_rank: bool = True


@attrs.frozen
class SearchCursor:
    """A place in a query's order, after which the next page starts: ``(score, stream)`` in rank
    order (stream positions are unique, so the order is total), the stream alone in recent order."""

    stream: int
    score: float | None = None


@attrs.frozen
class SearchHit:
    event: Event
    #: search.yaml ``rank``: higher is closer
    score: float
    cursor: SearchCursor


class SearchStore:
    """Reads of the search index, and the rooms a user may search."""

    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    def reader_position(self, reader: str) -> Deferred[int | None]:
        """The indexer's persisted position (None: it never stored one)."""
        return reader_position(self.db, reader)

    def index(self, reader: str, position: int, events: Sequence[tuple[str, str, Any]]) -> Deferred[None]:
        """Index ``(event ID, type, content)`` of new timeline events and persist the indexer's
        ``position``, in one transaction (:func:`index_events_txn`)."""
        return self.db.run_interaction("search_index", index_events_txn, reader, position, events)

    async def rooms_for_user(self, user_id: str) -> list[SearchRoom]:
        """The rooms the user is in or has left (or been banned from), not forgotten ones
        (client-server-api §Server Side Search: "all rooms that the user has been in,
        including those that they have left"; a forgotten room's history is no longer theirs)."""
        rows = await self.db.select(
            "search_rooms",
            "SELECT r.room_id, m.room_nid, m.membership, m.event_id, m.stream_ordering"
            " FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid"
            " WHERE m.user_id = ? AND m.membership IN (?, ?, ?) AND m.forgotten = ?",
            user_id,
            "join",
            "leave",
            "ban",
            False,
        )
        return [
            SearchRoom(nid, room_id, membership, event_id, None if membership == "join" else position)
            for room_id, nid, membership, event_id, position in rows
        ]

    async def search(
        self, query: SearchQuery, after: SearchCursor | None, limit: int, with_count: bool
    ) -> tuple[list[SearchHit], int | None]:
        """Up to ``limit`` matching events after ``after`` in the query's order, and (if
        ``with_count``) how many match in all, before history-visibility checks."""
        if not query.words or not query.keys or not query.rooms:
            return [], 0 if with_count else None
        rows, count = await self.db.run_read("search", self._search_txn, query, after, limit, with_count)
        events = await self.events.events_from_rows(rows)
        hits = []
        for ev, row in zip(events, rows, strict=True):
            score = float(row[-1])
            stream = ev.metadata.stream_ordering
            assert stream is not None
            hits.append(SearchHit(ev, score, SearchCursor(stream, score if query.by_rank else None)))
        return hits, count

    def _search_txn(
        self, txn: Txn, query: SearchQuery, after: SearchCursor | None, limit: int, with_count: bool
    ) -> tuple[list[tuple[Any, ...]], int | None]:
        backend = _backend(txn.dialect)
        room_nids = sorted({r.room_nid for r in query.rooms})
        in_index = len(room_nids) <= backend.max_index_rooms
        text_query = backend.query(query.words, room_nids if in_index else ())
        score_args = [text_query] if backend.score_takes_query else []
        source, where, args = self._where(backend, query, text_query, room_nids if in_index else None)
        count = None
        if with_count:
            row = txn.query_one(f"SELECT COUNT(*) FROM {source} WHERE {where}", args)
            count = row[0] if row else 0
        key = f"event_search.{backend.key_column}"
        page, page_args = "", []
        if after is not None and query.by_rank:
            assert after.score is not None
            page = f" AND ({backend.score} < ? OR ({backend.score} = ? AND {key} < ?))"
            page_args = [*score_args, after.score, *score_args, after.score, after.stream]
        elif after is not None:
            page, page_args = f" AND {key} < ?", [after.stream]
        order = f"score DESC, {key} DESC" if query.by_rank else backend.recent_order
        # Sorting carries only keys and scores; the page's events are read afterwards (sorting
        # the events' JSON along with every match cost a common word twice as much).
        page_rows = txn.query(
            f"SELECT {key}, {backend.score} AS score FROM {source} WHERE {where}{page} ORDER BY {order} LIMIT ?",
            [*score_args, *args, *page_args, limit],
        )
        if not page_rows:
            return [], count
        marks = ",".join("?" * len(page_rows))
        by_stream = {
            r[-1]: r[:-1]
            for r in txn.query(
                f"SELECT {self.events.EVENT_COLUMNS}, e.stream_ordering FROM events e WHERE e.stream_ordering IN ({marks})",
                [stream for stream, _ in page_rows],
            )
        }
        return [(*by_stream[stream], score) for stream, score in page_rows if stream in by_stream], count

    @staticmethod
    def _where(
        backend: type[_Fts5] | type[_TsVector], query: SearchQuery, text_query: str, room_nids: list[int] | None
    ) -> tuple[str, str, list[Any]]:
        """The query's ``FROM`` and ``WHERE`` and their arguments. ``room_nids``: the rooms, when
        the index can check them itself (else they are checked on the matches' events).

        Only the index is read when it can answer alone: the user's rooms are all rooms they
        are in, and nothing but the words and rooms narrows the search (the usual search). Else
        every match is looked up in the events (by key: the index drives the query)."""
        clauses = [backend.match]
        args: list[Any] = [text_query]
        members_only = all(r.until is None for r in query.rooms)
        index_only = (
            room_nids is not None
            and members_only
            and set(query.keys) == set(KEY_OF_TYPE.values())
            and query.sender is None
            and not query.ignored
            and not query.conditions[0]
        )
        if room_nids is not None:
            rooms_sql, rooms_args = backend.rooms_clause(room_nids)
            clauses[0] += rooms_sql
            args += rooms_args
        if index_only:
            # the index holds only accepted, unredacted timeline events (its writers see to it)
            return "event_search", " AND ".join(clauses), args
        clauses.insert(0, f"e.stream_ordering = event_search.{backend.key_column}")
        if set(query.keys) != set(KEY_OF_TYPE.values()):
            # each searchable type has one key: the keys asked for are the types to look at (the
            # events' column, cheaper to read than one stored beside the words)
            types = [t for t, key in KEY_OF_TYPE.items() if key in query.keys]
            clauses.append(f"e.type IN ({','.join('?' * len(types))})")
            args += types
        # a member sees the whole room; a former member nothing after they left
        rooms = []
        members = [r.room_nid for r in query.rooms if r.until is None]
        if members:
            rooms.append(f"e.room_nid IN ({','.join('?' * len(members))})")
            args += members
        for r in query.rooms:
            if r.until is not None:
                rooms.append("(e.room_nid = ? AND e.stream_ordering <= ?)")
                args += [r.room_nid, r.until]
        clauses.append("(" + " OR ".join(rooms) + ")")
        # the index has no row of a redacted event; checked all the same, as it costs little
        clauses.append(f"{_IN_TIMELINE} AND e.redacted_by IS NULL")
        args.append(False)
        if query.sender is not None:
            clauses.append("e.sender = ?")
            args.append(query.sender)
        if query.ignored:
            clauses.append(f"NOT (e.state_key IS NULL AND e.sender IN ({','.join('?' * len(query.ignored))}))")
            args += sorted(query.ignored)
        extra, extra_args = query.conditions
        # SQLite never reorders the tables of a CROSS JOIN: left to itself it walks the room's
        # events (by the room_nid condition) and probes the index once per event, whatever matches.
        return "event_search CROSS JOIN events e", " AND ".join(clauses) + extra, [*args, *extra_args]


def unindex_events_txn(txn: Txn, condition: str, args: Sequence[Any]) -> None:
    """Forget the text of the events ``condition`` picks (an SQL condition on ``events e``):
    the events are being purged (admin API)."""
    column = _backend(txn.dialect).key_column
    txn.execute(
        f"DELETE FROM event_search WHERE {column} IN"
        f" (SELECT e.stream_ordering FROM events e WHERE {condition} AND e.stream_ordering IS NOT NULL)",
        args,
    )
