"""SQL for bundled aggregations: what the children of a page of parent events add up to.

client-server-api §Aggregations of child events. One read transaction answers a whole
page (a /messages chunk, the timelines of a /sync): a constant number of statements,
each over every parent of the page at once, never one per event. Only unredacted
children count ("when a child event is redacted then the relationship is broken"),
and only children in the same room as their parent (§Forming relationships between
events: relationships across rooms are ignored).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import attrs

from mxserver.events.relations import REFERENCE, REPLACE, THREAD
from mxserver.storage.database import Database, Txn

#: parent IDs per statement (well under SQLite's bound on bound parameters)
_CHUNK = 500


@attrs.frozen
class ThreadRow:
    """A thread's row, as one reader counts it."""

    room_nid: int
    latest_event_id: str
    latest_position: int
    #: unredacted replies, less those of the users the reader ignores
    count: int
    #: the reader sent an unredacted reply
    replied: bool


@attrs.define
class ChildRows:
    """The children of a page of parents that its bundles are made from."""

    def parents(self) -> set[str]:
        """The parents that have children here."""
        return {*self.threads, *self.edits, *self.references}

    #: thread root -> its thread
    threads: dict[str, ThreadRow] = attrs.Factory(dict)
    #: parent -> ``(origin_server_ts, edit ID)`` of the unredacted m.replace children that
    #: the same sender sent with the same type and no state key, in no particular order
    edits: dict[str, list[tuple[int, str]]] = attrs.Factory(dict)
    #: parent -> ``(reference ID, its sender)`` of the unredacted m.reference children, oldest first
    references: dict[str, list[tuple[str, str]]] = attrs.Factory(dict)


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(ids: Collection[Any]) -> str:
    return ",".join("?" * len(ids))


#: a child row joined to its own event (alias ``c``), kept only while it is unredacted
_LIVE_CHILD = "event_relations r JOIN events c ON c.event_id = r.event_id"
#: ... and to its parent in the same room (alias ``p``)
_SAME_ROOM_PARENT = " JOIN events p ON p.event_id = r.relates_to_id AND p.room_nid = r.room_nid"


class AggregationsStore:
    """Batched reads of ``event_relations`` and ``threads`` for bundled aggregations."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def children(
        self,
        thread_roots: Sequence[str],
        replaceable: Sequence[str],
        referenced: Sequence[str],
        reader: str,
        ignored: Collection[str],
    ) -> ChildRows:
        """The rows the bundles of a page need, in one read transaction: threads of
        ``thread_roots`` (counted for ``reader``, who ignores ``ignored``), edit candidates of
        ``replaceable``, references to ``referenced``."""
        return await self.db.run_read(
            "bundled_children", self._children_txn, thread_roots, replaceable, referenced, reader, sorted(ignored)
        )

    def _children_txn(
        self,
        txn: Txn,
        thread_roots: Sequence[str],
        replaceable: Sequence[str],
        referenced: Sequence[str],
        reader: str,
        ignored: list[str],
    ) -> ChildRows:
        out = ChildRows()
        # Most parents have no children at all (a page of plain messages): one probe of the
        # (relates_to_id, rel_type) index finds those that have some, and only they are read.
        wanted = list(dict.fromkeys([*thread_roots, *replaceable, *referenced]))
        present: dict[str, set[str]] = {}
        for ids in _chunks(wanted):
            for parent, rel_type in txn.query(
                f"SELECT DISTINCT relates_to_id, rel_type FROM event_relations WHERE relates_to_id IN ({_marks(ids)})",
                ids,
            ):
                present.setdefault(rel_type, set()).add(parent)
        if not present:
            return out
        thread_roots = [e for e in thread_roots if e in present.get(THREAD, ())]
        replaceable = [e for e in replaceable if e in present.get(REPLACE, ())]
        referenced = [e for e in referenced if e in present.get(REFERENCE, ())]
        for ids in _chunks(list(thread_roots)):
            self._threads_txn(txn, ids, reader, ignored, out)
        for ids in _chunks(list(replaceable)):
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
                out.edits.setdefault(parent, []).append((ts, edit))
        for ids in _chunks(list(referenced)):
            rows = txn.query(
                f"SELECT r.relates_to_id, r.event_id, r.sender FROM {_LIVE_CHILD}{_SAME_ROOM_PARENT}"
                f" WHERE r.relates_to_id IN ({_marks(ids)}) AND r.rel_type = ? AND c.redacted_by IS NULL"
                " ORDER BY r.stream_ordering",
                [*ids, REFERENCE],
            )
            for parent, child, sender in rows:
                out.references.setdefault(parent, []).append((child, sender))
        return out

    def _threads_txn(self, txn: Txn, roots: Sequence[str], reader: str, ignored: list[str], out: ChildRows) -> None:
        rows = txn.query(
            "SELECT t.root_id, t.room_nid, t.latest_event_id, t.latest_stream_ordering, t.reply_count FROM threads t"
            " JOIN events p ON p.event_id = t.root_id AND p.room_nid = t.room_nid"
            f" WHERE t.root_id IN ({_marks(roots)})",
            list(roots),
        )
        if not rows:
            return
        found = [r[0] for r in rows]

        def per_thread(senders: Sequence[str]) -> dict[tuple[str, int], int]:
            # unredacted replies of these senders, per thread (the (relates_to_id, rel_type,
            # sender) index answers it without reading every reply)
            counted = txn.query(
                f"SELECT r.relates_to_id, r.room_nid, COUNT(*) FROM {_LIVE_CHILD}"
                f" WHERE r.relates_to_id IN ({_marks(found)}) AND r.rel_type = ? AND r.sender IN ({_marks(senders)})"
                " AND c.redacted_by IS NULL GROUP BY r.relates_to_id, r.room_nid",
                [*found, THREAD, *senders],
            )
            return {(root, nid): n for root, nid, n in counted}

        replied = per_thread([reader])
        # threading.md: count and latest_event leave out the replies of ignored users
        hidden = per_thread(ignored) if ignored else {}
        for root, nid, latest, position, count in rows:
            out.threads[root] = ThreadRow(
                room_nid=nid,
                latest_event_id=latest,
                latest_position=position,
                count=count - hidden.get((root, nid), 0),
                replied=replied.get((root, nid), 0) > 0,
            )
