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
    """SQLite: an FTS5 table whose rowid is the event_nid, ranked by BM25."""

    nid_column = "rowid"
    insert = "INSERT INTO event_search (rowid, words) VALUES (?, ?)"

    @staticmethod
    def document(words: Sequence[str]) -> str:
        # the "ascii" tokenizer splits on ASCII non-alphanumerics only: the spaces between words
        return " ".join(words)

    @staticmethod
    def query(words: Sequence[str]) -> str:
        # Every word a quoted string (never an FTS5 keyword or operator) with a prefix "*";
        # FTS5 ANDs the terms of a query.
        return " ".join('"' + w.replace('"', '""') + '"*' for w in words)

    #: see _TsVector.lock_rows: SQLite's one writer runs write transactions one at a time
    lock_rows = ""
    match = "event_search MATCH ?"
    # bm25() is lower for better matches; search.yaml's rank is higher for closer ones
    score = "-bm25(event_search)"
    score_takes_query = False


class _TsVector:
    """Postgres: a tsvector column with a GIN index, ranked by cover density (ts_rank_cd)."""

    nid_column = "event_nid"
    insert = (
        "INSERT INTO event_search (event_nid, vector) VALUES (?, CAST(? AS tsvector))"
        " ON CONFLICT (event_nid) DO NOTHING"
    )

    @staticmethod
    def document(words: Sequence[str]) -> str:
        # A tsvector literal with each word's position (Postgres keeps positions up to 16383),
        # so no text search parser or dictionary changes the words.
        return " ".join(f"{_quote(w)}:{min(i, 16383)}" for i, w in enumerate(words, 1))

    @staticmethod
    def query(words: Sequence[str]) -> str:
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


def write_search_txn(txn: Txn, event_nid: int, etype: str, content: Any) -> None:
    """Index a timeline event's searchable text, if it has any (the caller checked that the
    event is unredacted and not indexed yet)."""
    backend = _backend(txn.dialect)
    document = _document(backend, etype, content)
    if document is not None:
        txn.execute(backend.insert, (event_nid, document))


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
        live = dict(
            txn.query(
                f"SELECT e.event_id, e.event_nid FROM events e WHERE e.event_id IN ({marks})"
                f" AND e.redacted_by IS NULL{backend.lock_rows}",
                [event_id for event_id, _, _ in chunk],
            )
        )
        done = _indexed(txn, list(live.values())) if live else set()
        rows = []
        for event_id, etype, content in chunk:
            nid = live.get(event_id)
            if nid is None or nid in done:
                continue
            document = _document(backend, etype, content)
            if document is not None:
                rows.append((nid, document))
        if rows:
            txn.executemany(backend.insert, rows)
    set_reader_position_txn(txn, reader, position)


def place_search_txn(txn: Txn, event_id: str) -> None:
    """Index a stored event that has just been given its place in the timeline (a backfilled
    outlier): read from its row, so only an accepted, unredacted timeline event gets indexed."""
    row = txn.query_one(
        f"SELECT e.event_nid, e.type, e.json FROM events e WHERE e.event_id = ? AND {_IN_TIMELINE}"
        " AND e.redacted_by IS NULL",
        (event_id, False),
    )
    if row is None or row[1] not in KEY_OF_TYPE:
        return
    event_nid, etype, raw = row
    if _indexed(txn, [event_nid]):
        return  # the start-up job got there first
    write_search_txn(txn, event_nid, etype, json.loads(raw).get("content"))


def unindex_redacted_txn(txn: Txn, event_id: str) -> None:
    """Forget the text of an event that has just been redacted: the index must not keep what
    the redaction removed (client-server-api §Redactions)."""
    row = txn.query_one("SELECT event_nid FROM events WHERE event_id = ?", (event_id,))
    if row is not None:
        txn.execute(f"DELETE FROM event_search WHERE {_backend(txn.dialect).nid_column} = ?", (row[0],))


def _indexed(txn: Txn, event_nids: Sequence[int]) -> set[int]:
    column = _backend(txn.dialect).nid_column
    marks = ",".join("?" * len(event_nids))
    return {r[0] for r in txn.query(f"SELECT {column} FROM event_search WHERE {column} IN ({marks})", event_nids)}


def index_existing_events_txn(txn: Txn, position: int, target: int, limit: int) -> int | None:
    """Background job step (``event_search``): index up to ``limit`` searchable timeline events
    stored before the index existed, after event_nid ``position`` and up to ``target``; the
    new position, or None when none are left. Events already indexed (a backfill placed them
    in the timeline since) are skipped."""
    rows = txn.query(
        f"SELECT e.event_nid, e.type, e.json FROM events e WHERE e.event_nid > ? AND e.event_nid <= ?"
        f" AND e.type IN ({','.join('?' * len(KEY_OF_TYPE))}) AND {_IN_TIMELINE} AND e.redacted_by IS NULL"
        f" ORDER BY e.event_nid LIMIT ?{_backend(txn.dialect).lock_rows}",
        (position, target, *KEY_OF_TYPE, False, limit),
    )
    if not rows:
        return None
    done = _indexed(txn, [r[0] for r in rows])
    for event_nid, etype, raw in rows:
        if event_nid not in done:
            write_search_txn(txn, event_nid, etype, json.loads(raw).get("content"))
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
        text_query = backend.query(query.words)
        score_args = [text_query] if backend.score_takes_query else []
        where, args = self._where(backend, query, text_query)
        count = None
        if with_count:
            row = txn.query_one(f"SELECT COUNT(*) FROM {self._from()} WHERE {where}", args)
            count = row[0] if row else 0
        page, page_args = "", []
        if after is not None and query.by_rank:
            assert after.score is not None
            page = f" AND ({backend.score} < ? OR ({backend.score} = ? AND e.stream_ordering < ?))"
            page_args = [*score_args, after.score, *score_args, after.score, after.stream]
        elif after is not None:
            page, page_args = " AND e.stream_ordering < ?", [after.stream]
        # "+ 0": Postgres would otherwise walk every event of the server backwards by position
        # and test each against the index until it has a page, fast for a common word but a
        # full scan for a rare one; sorting the matches costs what the count costs anyway.
        order = "score DESC, e.stream_ordering DESC" if query.by_rank else "e.stream_ordering + 0 DESC"
        # Sorting carries only keys and scores; the page's events are read afterwards (sorting
        # the events' JSON along with every match cost a common word twice as much).
        page_rows = txn.query(
            f"SELECT e.event_nid, {backend.score} AS score"
            f" FROM {self._from()} WHERE {where}{page} ORDER BY {order} LIMIT ?",
            [*score_args, *args, *page_args, limit],
        )
        if not page_rows:
            return [], count
        marks = ",".join("?" * len(page_rows))
        by_nid = {
            r[-1]: r[:-1]
            for r in txn.query(
                f"SELECT {self.events.EVENT_COLUMNS}, e.event_nid FROM events e WHERE e.event_nid IN ({marks})",
                [nid for nid, _ in page_rows],
            )
        }
        return [(*by_nid[nid], score) for nid, score in page_rows if nid in by_nid], count

    @staticmethod
    def _from() -> str:
        # The index drives the query, the events are looked up by key for its matches. SQLite
        # never reorders the tables of a CROSS JOIN: left to itself it walks the room's events
        # (by the room_nid condition) and probes the index once per event, whatever matches.
        return "event_search CROSS JOIN events e"

    @staticmethod
    def _where(backend: type[_Fts5] | type[_TsVector], query: SearchQuery, text_query: str) -> tuple[str, list[Any]]:
        clauses = [f"e.event_nid = event_search.{backend.nid_column}", backend.match]
        args: list[Any] = [text_query]
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
        # the index has no row of a redacted event; checked all the same, as it costs nothing
        clauses.append(f"{_IN_TIMELINE} AND e.redacted_by IS NULL")
        args.append(False)
        if query.sender is not None:
            clauses.append("e.sender = ?")
            args.append(query.sender)
        if query.ignored:
            clauses.append(f"NOT (e.state_key IS NULL AND e.sender IN ({','.join('?' * len(query.ignored))}))")
            args += sorted(query.ignored)
        extra, extra_args = query.conditions
        return " AND ".join(clauses) + extra, [*args, *extra_args]


def unindex_events_txn(txn: Txn, condition: str, args: Sequence[Any]) -> None:
    """Forget the text of the events ``condition`` picks (an SQL condition on ``events e``):
    the events are being purged (admin API)."""
    column = _backend(txn.dialect).nid_column
    txn.execute(
        f"DELETE FROM event_search WHERE {column} IN (SELECT e.event_nid FROM events e WHERE {condition})", args
    )
