"""SQL for push-rule results (schema 0020): ``event_push_actions`` and the readers' positions.

A row exists for each (user, event) that notifies the user. Unread counts are
the rows after the user's read receipt: the room-wide (unthreaded) receipt or the
join, whichever is later, and, per thread, the receipt for that thread
(client-server-api §Receiving notifications, §Threaded read receipts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.receipts import UNTHREADED

#: the receipt types that mark events read (m.read.private too: receipts.yaml)
READ_RECEIPT_TYPES = ("m.read", "m.read.private")

#: the thread_id of main-timeline events (and of main-timeline receipts)
MAIN_THREAD = "main"


@attrs.frozen
class PushActionRow:
    user_id: str
    room_nid: int
    stream_ordering: int
    event_id: str
    thread_id: str
    highlight: bool
    actions: list[Any]
    ts: int


#: rows per transaction when storing push actions (see PushActionsStore.record)
RECORD_CHUNK = 250


@attrs.frozen
class UnreadCounts:
    notifications: int = 0
    highlights: int = 0


class PushActionsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the reader's position -------------------------------------------------------------

    def reader_position(self, name: str) -> Deferred[int | None]:
        def txn(t: Txn) -> int | None:
            row = t.query_one("SELECT position FROM stream_readers WHERE name = ?", (name,))
            return int(row[0]) if row else None

        return self.db.run_read("stream_reader_position", txn)

    async def record(self, reader: str, position: int, rows: Sequence[PushActionRow]) -> None:
        """Store ``rows`` and move ``reader`` to ``position``.

        In transactions of :data:`RECORD_CHUNK` rows, the position with the last: a message
        into a room of thousands is thousands of rows, and the single writer would make the
        next event's persistence wait for all of them. A crash between chunks leaves some rows
        without the position: the events are evaluated again and the repeats add nothing
        (``ON CONFLICT DO NOTHING``); the position never runs ahead of its rows.
        """
        # Rows share action lists (one per matching rule): encode each list once.
        encoded: dict[int, str] = {}
        for r in rows:
            if id(r.actions) not in encoded:
                encoded[id(r.actions)] = json.dumps(r.actions)
        values = [
            (r.user_id, r.room_nid, r.stream_ordering, r.event_id, r.thread_id, r.highlight, encoded[id(r.actions)], r.ts)
            for r in rows
        ]

        def txn(t: Txn, chunk: list[tuple[Any, ...]], with_position: bool) -> None:
            if chunk:
                t.executemany(
                    "INSERT INTO event_push_actions"
                    " (user_id, room_nid, stream_ordering, event_id, thread_id, highlight, actions, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                    chunk,
                )
            if with_position:
                t.execute(
                    "INSERT INTO stream_readers (name, position) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (reader, position),
                )

        while len(values) > RECORD_CHUNK:
            chunk, values = values[:RECORD_CHUNK], values[RECORD_CHUNK:]
            await self.db.run_interaction("push_actions_record", txn, chunk, False)
        await self.db.run_interaction("push_actions_record", txn, values, True)

    def timeline_event_ids_after(self, position: int, upto: int, limit: int) -> Deferred[list[str]]:
        """IDs of timeline events in ``(position, upto]``, in stream order (a reader catching up)."""

        def txn(t: Txn) -> list[str]:
            rows = t.query(
                "SELECT event_id FROM events WHERE stream_ordering > ? AND stream_ordering <= ?"
                " AND rejected_reason IS NULL AND soft_failed = ? ORDER BY stream_ordering LIMIT ?",
                (position, upto, False, limit),
            )
            return [r[0] for r in rows]

        return self.db.run_read("push_catch_up_events", txn)

    # -- counts ----------------------------------------------------------------------------

    def unread_counts(
        self, user_id: str, rooms: Sequence[tuple[int, int]]
    ) -> Deferred[dict[int, dict[str, UnreadCounts]]]:
        """For each ``(room_nid, joined_at)``: notifications after it, per thread.

        Each event counts unless the user's unthreaded read receipt or their receipt for
        the event's thread (``main`` for the main timeline) is at or after it.
        """

        def txn(t: Txn) -> dict[int, dict[str, UnreadCounts]]:
            out: dict[int, dict[str, UnreadCounts]] = {}
            for room_nid, after in rooms:
                rows = t.query(
                    "SELECT a.thread_id, COUNT(*), SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END)"
                    " FROM event_push_actions a"
                    " WHERE a.user_id = ? AND a.room_nid = ? AND a.stream_ordering > ?"
                    " AND a.stream_ordering > COALESCE(("
                    "   SELECT MAX(r.event_stream_ordering) FROM receipts r"
                    "   WHERE r.room_nid = a.room_nid AND r.user_id = a.user_id"
                    "   AND r.thread_id IN (a.thread_id, ?) AND r.receipt_type IN (?, ?)), 0)"
                    " GROUP BY a.thread_id",
                    (user_id, room_nid, after, UNTHREADED, *READ_RECEIPT_TYPES),
                )
                if rows:
                    out[room_nid] = {r[0]: UnreadCounts(int(r[1]), int(r[2] or 0)) for r in rows}
            return out

        return self.db.run_read("push_unread_counts", txn)
