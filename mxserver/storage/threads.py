"""SQL for threads: the ``threads`` table (schema 0025) and the pages GET /threads reads.

One row per (room, thread root) with the thread's latest reply and its number of
unredacted replies (client-server-api §Threading). Rows are written in the transaction
that indexes a reply in ``event_relations`` (:func:`thread_reply_added_txn`) and
recomputed in the one that redacts a reply, or places a backfilled reply in the
timeline (:func:`refresh_thread_txn`): "when a child event is redacted then the
relationship is broken" (§Aggregations of child events).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mxserver.events.relations import THREAD
from mxserver.storage.database import Database, Txn

if TYPE_CHECKING:
    from mxserver.events.model import Event
    from mxserver.storage.events import EventStore


def thread_reply_added_txn(txn: Txn, room_nid: int, root_id: str, event_id: str, stream_ordering: int) -> None:
    """A new (unredacted) reply: one more in the count, and the latest if it is the newest."""
    newer = "excluded.latest_stream_ordering > threads.latest_stream_ordering"
    txn.execute(
        "INSERT INTO threads (room_nid, root_id, latest_event_id, latest_stream_ordering, reply_count)"
        " VALUES (?, ?, ?, ?, 1) ON CONFLICT (room_nid, root_id) DO UPDATE SET"
        " reply_count = threads.reply_count + 1,"
        f" latest_event_id = CASE WHEN {newer} THEN excluded.latest_event_id ELSE threads.latest_event_id END,"
        f" latest_stream_ordering = CASE WHEN {newer} THEN excluded.latest_stream_ordering"
        " ELSE threads.latest_stream_ordering END",
        (room_nid, root_id, event_id, stream_ordering),
    )


def refresh_thread_txn(txn: Txn, room_nid: int, root_id: str) -> None:
    """Recompute a thread's row from its unredacted replies (none left: no row)."""
    row = txn.query_one(
        "SELECT COUNT(*), MAX(r.stream_ordering) FROM event_relations r JOIN events c ON c.event_id = r.event_id"
        " WHERE r.relates_to_id = ? AND r.rel_type = ? AND r.room_nid = ? AND c.redacted_by IS NULL",
        (root_id, THREAD, room_nid),
    )
    count, latest_position = row if row is not None else (0, None)
    latest = (
        txn.query_one("SELECT event_id FROM events WHERE stream_ordering = ?", (latest_position,))
        if count
        else None
    )
    if latest is None:
        txn.execute("DELETE FROM threads WHERE room_nid = ? AND root_id = ?", (room_nid, root_id))
        return
    txn.execute(
        "INSERT INTO threads (room_nid, root_id, latest_event_id, latest_stream_ordering, reply_count)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_nid, root_id) DO UPDATE SET"
        " latest_event_id = excluded.latest_event_id, latest_stream_ordering = excluded.latest_stream_ordering,"
        " reply_count = excluded.reply_count",
        (room_nid, root_id, latest[0], latest_position, count),
    )


class ThreadsStore:
    """Reads of the threads of a room."""

    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def roots(
        self, room_nid: int, at_or_before: int, limit: int, participant: str | None = None
    ) -> list[tuple[Event, int]]:
        """Up to ``limit`` ``(thread root, position of its latest reply)`` of the room, latest
        activity first, whose latest reply is at or before ``at_or_before``; with
        ``participant``, only threads that user started or replied to. Roots that are not in
        the room's timeline (unknown, rejected, soft-failed, of another room) are left out."""
        args: list[Any] = [room_nid, at_or_before, False]
        mine = ""
        if participant is not None:
            # threading.md: participated = sent the root, or an unredacted m.thread reply
            mine = (
                " AND (e.sender = ? OR EXISTS (SELECT 1 FROM event_relations r"
                " JOIN events c ON c.event_id = r.event_id WHERE r.relates_to_id = t.root_id AND r.rel_type = ?"
                " AND r.sender = ? AND r.room_nid = t.room_nid AND c.redacted_by IS NULL))"
            )
            args += [participant, THREAD, participant]
        args.append(limit)
        rows = await self.db.select(
            "thread_roots",
            f"SELECT {self.events.EVENT_COLUMNS}, t.latest_stream_ordering FROM threads t"
            " JOIN events e ON e.event_id = t.root_id AND e.room_nid = t.room_nid"
            " WHERE t.room_nid = ? AND t.latest_stream_ordering <= ? AND e.stream_ordering IS NOT NULL"
            f" AND e.rejected_reason IS NULL AND e.soft_failed = ?{mine}"
            " ORDER BY t.latest_stream_ordering DESC LIMIT ?",
            *args,
        )
        roots = await self.events.events_from_rows(rows)
        return [(root, row[-1]) for root, row in zip(roots, rows, strict=True)]
