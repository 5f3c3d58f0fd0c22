"""SQL for bundled aggregations: what the children of a page of parent events add up to.

client-server-api §Aggregations of child events. What a parent's children add up to is
kept in memory per parent until they change; the parents of a page (a /messages chunk,
the timelines of a /sync) not in memory are read in one transaction: a constant number
of statements, each over every such parent at once, never one per event. Only unredacted
children count ("when a child event is redacted then the relationship is broken"),
and only children in the same room as their parent (§Forming relationships between
events: relationships across rooms are ignored).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from mxserver.batched_cache import BatchedCache
from mxserver.events.relations import REFERENCE, REPLACE, THREAD
from mxserver.storage.database import Database, Txn

#: parent IDs per statement (well under SQLite's bound on bound parameters)
_CHUNK = 500


@attrs.frozen
class ThreadTotals:
    """A thread as every reader shares it: its ``threads`` row and who replied how often."""

    room_nid: int
    latest_event_id: str
    latest_position: int
    #: unredacted replies
    count: int
    #: sender -> their unredacted replies (a reader's participation, the replies of those they ignore)
    senders: Mapping[str, int]


@attrs.frozen
class ParentChildren:
    """What one parent's children add up to, for any reader (the cached unit)."""

    thread: ThreadTotals | None = None
    #: the unredacted m.replace children that the same sender sent with the same type and no
    #: state key, most recent first (event_replacements.md: by ``origin_server_ts``, ties to
    #: the larger event ID; compared here, not in SQL, where a collation could order IDs
    #: otherwise)
    edits: tuple[str, ...] = ()
    #: ``(reference ID, its sender)`` of the unredacted m.reference children, oldest first
    references: tuple[tuple[str, str], ...] = ()


#: the answer for a parent without children (most events)
NO_CHILDREN = ParentChildren()


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(ids: Collection[Any]) -> str:
    return ",".join("?" * len(ids))


#: a child row joined to its own event (alias ``c``), kept only while it is unredacted
_LIVE_CHILD = "event_relations r JOIN events c ON c.event_id = r.event_id"
#: ... and to its parent in the same room (alias ``p``)
_SAME_ROOM_PARENT = " JOIN events p ON p.event_id = r.relates_to_id AND p.room_nid = r.room_nid"


class AggregationsStore:
    """Batched reads of ``event_relations`` and ``threads`` for bundled aggregations, cached
    per parent.

    A parent's children change only in the transactions that index a relationship, redact a
    child or purge events; those say so after they commit (:meth:`invalidate`, wired to
    :attr:`EventStore.relation_changes <mxserver.storage.events.EventStore.relation_changes>`),
    and a read that was in flight across one is not kept (:class:`BatchedCache`). Every reader
    shares an entry: what differs between them (participation, the replies of users they
    ignore) is worked out from it
    (:class:`~mxserver.room_handlers.aggregations.BundledAggregations`).
    """

    #: parents whose children are kept in memory (a parent without children costs a key)
    CACHE_SIZE = 20_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: BatchedCache[str, ParentChildren] = BatchedCache(self._load, self.CACHE_SIZE)

    def invalidate(self, parents: Collection[str] | None) -> None:
        """The children of ``parents`` changed (None: of any parent, e.g. after a purge)."""
        if parents is None:
            self._cache.clear()
        else:
            self._cache.invalidate_many(parents)

    async def children(self, parents: Sequence[str]) -> dict[str, ParentChildren]:
        """What the children of each of ``parents`` add up to (:data:`NO_CHILDREN` for those
        without); those not in memory are read in one transaction."""
        return await self._cache.get_many(parents)

    async def _load(self, parents: Sequence[str]) -> dict[str, ParentChildren]:
        return await self.db.run_read("bundled_children", self._children_txn, list(parents))

    def _children_txn(self, txn: Txn, wanted: list[str]) -> dict[str, ParentChildren]:
        out = dict.fromkeys(wanted, NO_CHILDREN)
        # Most parents have no children at all (a page of plain messages): one probe of the
        # (relates_to_id, rel_type) index finds those that have some, and only they are read.
        present: dict[str, set[str]] = {}
        for ids in _chunks(wanted):
            for parent, rel_type in txn.query(
                f"SELECT DISTINCT relates_to_id, rel_type FROM event_relations WHERE relates_to_id IN ({_marks(ids)})",
                ids,
            ):
                present.setdefault(rel_type, set()).add(parent)
        if not present:
            return out
        threads: dict[str, ThreadTotals] = {}
        edits: dict[str, list[tuple[int, str]]] = {}
        references: dict[str, list[tuple[str, str]]] = {}
        for ids in _chunks([e for e in wanted if e in present.get(THREAD, ())]):
            self._threads_txn(txn, ids, threads)
        for ids in _chunks([e for e in wanted if e in present.get(REPLACE, ())]):
            # event_replacements.md §Validity: same room, same sender, same type, no state key;
            # the rest (m.new_content, the original's own relation) is checked on the events.
            rows = txn.query(
                f"SELECT r.relates_to_id, c.origin_server_ts, r.event_id FROM {_LIVE_CHILD}"
                f"{_SAME_ROOM_PARENT} AND p.sender = r.sender AND p.type = r.type"
                f" WHERE r.relates_to_id IN ({_marks(ids)}) AND r.rel_type = ? AND c.redacted_by IS NULL"
                " AND c.state_key IS NULL",
                [*ids, REPLACE],
            )
            for parent, ts, edit in rows:
                edits.setdefault(parent, []).append((ts, edit))
        for ids in _chunks([e for e in wanted if e in present.get(REFERENCE, ())]):
            rows = txn.query(
                f"SELECT r.relates_to_id, r.event_id, r.sender FROM {_LIVE_CHILD}{_SAME_ROOM_PARENT}"
                f" WHERE r.relates_to_id IN ({_marks(ids)}) AND r.rel_type = ? AND c.redacted_by IS NULL"
                " ORDER BY r.stream_ordering",
                [*ids, REFERENCE],
            )
            for parent, child, sender in rows:
                references.setdefault(parent, []).append((child, sender))
        for parent in {*threads, *edits, *references}:
            out[parent] = ParentChildren(
                thread=threads.get(parent),
                edits=tuple(e for _, e in sorted(edits.get(parent, ()), reverse=True)),
                references=tuple(references.get(parent, ())),
            )
        return out

    def _threads_txn(self, txn: Txn, roots: Sequence[str], out: dict[str, ThreadTotals]) -> None:
        rows = txn.query(
            "SELECT t.root_id, t.room_nid, t.latest_event_id, t.latest_stream_ordering, t.reply_count FROM threads t"
            " JOIN events p ON p.event_id = t.root_id AND p.room_nid = t.room_nid"
            f" WHERE t.root_id IN ({_marks(roots)})",
            list(roots),
        )
        if not rows:
            return
        found = [r[0] for r in rows]
        # unredacted replies per thread and sender (the (relates_to_id, rel_type, sender) index
        # answers it without reading every reply)
        senders: dict[tuple[str, int], dict[str, int]] = {}
        for root, nid, sender, n in txn.query(
            f"SELECT r.relates_to_id, r.room_nid, r.sender, COUNT(*) FROM {_LIVE_CHILD}"
            f" WHERE r.relates_to_id IN ({_marks(found)}) AND r.rel_type = ? AND c.redacted_by IS NULL"
            " GROUP BY r.relates_to_id, r.room_nid, r.sender",
            [*found, THREAD],
        ):
            senders.setdefault((root, nid), {})[sender] = n
        for root, nid, latest, position, count in rows:
            out[root] = ThreadTotals(
                room_nid=nid,
                latest_event_id=latest,
                latest_position=position,
                count=count,
                senders=senders.get((root, nid), {}),
            )
