"""SQL for event relationships: the ``event_relations`` index and the pages /relations reads.

Rows are written by the event persisters (:mod:`mxserver.storage.events`, and
:mod:`mxserver.storage.backfill` when it places an outlier in the timeline) in
the transaction that stores the event, through :func:`write_relation_txn`, which keeps
the ``threads`` table (:mod:`mxserver.storage.threads`) up to date with it; a redaction
of a child calls :func:`relation_redacted_txn` in its transaction. Each says which parent's
children changed, and the persister tells the caches of them once it has committed
(:meth:`EventStore.relations_changed_after <mxserver.storage.events.EventStore.relations_changed_after>`).
Reads return :class:`Event` objects through the event store, as the history
store does. Only timeline events are indexed, and a page never returns a
redacted child: client-server-api §Aggregations of child events, "when a child
event is redacted then the relationship is broken".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from mxserver.events.relations import THREAD, Relation, relation_of
from mxserver.storage.database import Database, Txn
from mxserver.storage.dialect import Dialect
from mxserver.storage.threads import refresh_thread_txn, thread_reply_added_txn

if TYPE_CHECKING:
    from mxserver.events.model import Event
    from mxserver.storage.events import EventStore

#: rows the start-up indexing of existing events reads at a time
_INDEX_BATCH = 500


def write_relation_txn(
    txn: Txn,
    event_id: str,
    room_nid: int,
    etype: str,
    sender: str,
    content: Any,
    stream_ordering: int,
    threads: bool = True,
) -> Relation | None:
    """Index a timeline event's relationship, if its content declares a valid one (and it was
    not indexed already); the relationship indexed. ``threads``: count a thread reply in the
    ``threads`` table too (False only before migration 0025 made it)."""
    if not isinstance(content, dict):
        return None
    relation = relation_of(content)
    if relation is None:
        return None
    txn.execute(
        "INSERT INTO event_relations (event_id, room_nid, relates_to_id, rel_type, annotation_key, sender, type,"
        " stream_ordering) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        (event_id, room_nid, relation.parent_id, relation.rel_type, relation.key, sender, etype, stream_ordering),
    )
    if not txn.rowcount:
        return None
    if threads and relation.rel_type == THREAD:
        thread_reply_added_txn(txn, room_nid, relation.parent_id, event_id, stream_ordering)
    return relation


def place_relation_txn(txn: Txn, event_id: str) -> str | None:
    """Index a stored event that has just been given its place in the timeline (a backfilled
    outlier): read from its row, so only an accepted timeline event gets indexed. The parent
    whose children changed, if any."""
    row = txn.query_one(
        "SELECT room_nid, type, sender, json, stream_ordering FROM events WHERE event_id = ?"
        " AND stream_ordering IS NOT NULL AND rejected_reason IS NULL AND soft_failed = ? AND outlier = ?",
        (event_id, False, False),
    )
    if row is None:
        return None
    room_nid, etype, sender, raw, position = row
    relation = write_relation_txn(txn, event_id, room_nid, etype, sender, json.loads(raw).get("content"), position)
    if relation is None:
        return None
    if relation.rel_type == THREAD:
        # the outlier may have been redacted before it had its place: count it from its row
        refresh_thread_txn(txn, room_nid, relation.parent_id)
    return relation.parent_id


def relation_redacted_txn(txn: Txn, event_id: str) -> str | None:
    """``event_id`` has just been redacted: if it was a thread reply, its thread loses it
    (§Aggregations of child events: "when a child event is redacted then the relationship is
    broken"). Its ``event_relations`` row stays; readers skip redacted children. The parent
    whose children changed, if ``event_id`` was a child."""
    row = txn.query_one("SELECT room_nid, relates_to_id, rel_type FROM event_relations WHERE event_id = ?", (event_id,))
    if row is None:
        return None
    if row[2] == THREAD:
        refresh_thread_txn(txn, row[0], row[1])
    return str(row[1])


def index_existing_relations(conn: Any, dialect: Dialect) -> None:
    """Migration 0023's data step: index the relationships of the timeline events stored before
    the table existed. Runs inside the migration's transaction, on a DB-API connection."""
    reader = conn.cursor()
    writer = Txn(conn.cursor(), dialect)
    # Only rows that can hold a relationship are parsed: the PDU JSON is written by
    # encode_pdu, which keeps the key as it is.
    reader.execute(
        dialect.translate(
            "SELECT event_id, room_nid, type, sender, json, stream_ordering FROM events"
            " WHERE stream_ordering IS NOT NULL AND rejected_reason IS NULL AND soft_failed = ? AND outlier = ?"
            " AND json LIKE ?"
        ),
        (False, False, '%"m.relates_to"%'),
    )
    while rows := reader.fetchmany(_INDEX_BATCH):
        for event_id, room_nid, etype, sender, raw, position in rows:
            content = json.loads(raw).get("content")
            # (0025 fills the threads table from this one)
            write_relation_txn(writer, event_id, room_nid, etype, sender, content, position, threads=False)
    reader.close()


@attrs.frozen
class RelationFilter:
    """Which children a page asks for: the path's ``relType`` and ``eventType``, and how deep."""

    rel_type: str | None = None
    event_type: str | None = None
    #: 1: direct children only, more: children of children too (``recurse``)
    depth: int = 1

    def sql(self, alias: str) -> tuple[str, list[Any]]:
        clause, args = "", []
        if self.rel_type is not None:
            clause += f" AND {alias}.rel_type = ?"
            args.append(self.rel_type)
        if self.event_type is not None:
            clause += f" AND {alias}.type = ?"
            args.append(self.event_type)
        return clause, args


class RelationsStore:
    """Reads of the relationship index."""

    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def children(
        self,
        room_nid: int,
        parent_id: str,
        filt: RelationFilter,
        from_pos: int,
        to_pos: int | None,
        backwards: bool,
        limit: int,
    ) -> list[Event]:
        """Up to ``limit`` children of ``parent_id`` in the room (its descendants down to
        ``filt.depth`` levels), unredacted and in the timeline, in paging order.

        Positions are between events, as for /messages: backwards returns events at or
        before ``from_pos`` and after ``to_pos``; forwards, events after ``from_pos`` and at
        or before ``to_pos``.
        """
        order = "DESC" if backwards else "ASC"
        page_args: list[Any] = [from_pos] if to_pos is None else [from_pos, to_pos]

        def window(alias: str) -> str:
            col = f"{alias}.stream_ordering"
            if backwards:
                return f" AND {col} <= ?" + (f" AND {col} > ?" if to_pos is not None else "")
            return f" AND {col} > ?" + (f" AND {col} <= ?" if to_pos is not None else "")

        columns = self.events.EVENT_COLUMNS
        # The child's own row in the timeline: not rejected, not soft-failed, not redacted.
        timeline = "e.room_nid = ? AND e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL"
        timeline += " AND e.soft_failed = ? AND e.redacted_by IS NULL"
        if filt.depth <= 1:
            match, match_args = filt.sql("r")
            query = (
                f"SELECT {columns} FROM event_relations r JOIN events e ON e.event_id = r.event_id"
                # paged on the index's copy of the position: (relates_to_id[, rel_type], stream_ordering)
                f" WHERE r.relates_to_id = ? AND r.room_nid = ?{match} AND {timeline}{window('r')}"
                f" ORDER BY r.stream_ordering {order} LIMIT ?"
            )
            args = [parent_id, room_nid, *match_args, room_nid, False, *page_args, limit]
        else:
            # relations.yaml `recurse`: the filters apply at every level, so a matching event
            # related only through a non-matching one is left out (§Relationships API).
            # A redacted intermediate breaks its children's path too.
            match, match_args = filt.sql("r")
            query = (
                "WITH RECURSIVE related (event_id, depth) AS ("
                f" SELECT r.event_id, 1 FROM event_relations r WHERE r.relates_to_id = ? AND r.room_nid = ?{match}"
                " UNION ALL"
                " SELECT r.event_id, related.depth + 1 FROM event_relations r"
                " JOIN related ON r.relates_to_id = related.event_id"
                " JOIN events p ON p.event_id = related.event_id"
                f" WHERE related.depth < ? AND r.room_nid = ? AND p.redacted_by IS NULL{match})"
                f" SELECT {columns} FROM events e WHERE e.event_id IN (SELECT event_id FROM related)"
                f" AND e.event_id <> ? AND {timeline}{window('e')}"
                f" ORDER BY e.stream_ordering {order} LIMIT ?"
            )
            args = [
                parent_id, room_nid, *match_args,
                filt.depth, room_nid, *match_args,
                parent_id, room_nid, False, *page_args, limit,
            ]  # fmt: skip
        rows = await self.db.select("relation_children", query, *args)
        return await self.events.events_from_rows(rows)
