"""SQL for push-rule results (schemas 0020, 0022): what notified whom, and the readers' positions.

Results are stored by exception. An event that notifies most of the room's local
members has one ``event_push_defaults`` row: every local user joined to the room when
it was evaluated, its sender aside, got those actions, unless ``event_push_actions``
holds that user's own row for the event (``notify`` false: not notified). Users outside
the default (a mention's highlight, a muted room, an invitee) have their own rows. So a
message into a room of thousands is one row plus the exceptions, not one per member.

A user's notifications (:func:`user_notifications_sql`) are their own notifying rows,
plus the default rows of the rooms they are joined to, after their join (a user joined
now was joined, and so evaluated, at every event after their join). Unread counts are
those after the user's read receipt: the room-wide (unthreaded) receipt or, per thread,
the receipt for that thread (client-server-api §Receiving notifications, §Threaded read
receipts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.receipts import UNTHREADED
from mxserver.storage.stream_positions import reader_position, set_reader_position_txn

#: the receipt types that mark events read (m.read.private too: receipts.yaml)
READ_RECEIPT_TYPES = ("m.read", "m.read.private")

#: rooms counted per statement of :meth:`PushActionsStore.unread_counts` (two SELECTs each, of
#: SQLite's 500 in a compound SELECT)
_UNION_ROOMS = 100

#: the thread_id of main-timeline events (and of main-timeline receipts)
MAIN_THREAD = "main"


@attrs.frozen
class PushActionRow:
    """One user's result for one event, where it differs from the event's default (if any)."""

    user_id: str
    room_nid: int
    stream_ordering: int
    event_id: str
    thread_id: str
    highlight: bool
    actions: list[Any]
    ts: int
    #: False: the user is not notified (where the event's default would notify them)
    notify: bool = True


@attrs.frozen
class PushDefault:
    """An event's result for every local member joined when it was evaluated, bar its sender
    and the users with a :class:`PushActionRow` of their own."""

    room_nid: int
    stream_ordering: int
    event_id: str
    sender: str
    thread_id: str
    highlight: bool
    actions: list[Any]
    ts: int


def user_notifications_sql() -> str:
    """SQL for one user's notifications, as a table ``(user_id, room_nid, stream_ordering,
    event_id, thread_id, highlight, actions, ts)``; parameters: :func:`user_notifications_args`.

    Their own notifying rows, and the defaults of the rooms they are joined to after their
    join (current membership's position), bar their own events and their exceptions.
    """
    return (
        "SELECT a.user_id, a.room_nid, a.stream_ordering, a.event_id, a.thread_id, a.highlight, a.actions, a.ts"
        " FROM event_push_actions a WHERE a.user_id = ? AND a.notify = ?"
        " UNION ALL"
        " SELECT m.user_id, d.room_nid, d.stream_ordering, d.event_id, d.thread_id, d.highlight, d.actions, d.ts"
        " FROM room_memberships m JOIN event_push_defaults d"
        " ON d.room_nid = m.room_nid AND d.stream_ordering > m.stream_ordering"
        " WHERE m.user_id = ? AND m.membership = ? AND d.sender <> m.user_id"
        " AND NOT EXISTS (SELECT 1 FROM event_push_actions x"
        " WHERE x.user_id = m.user_id AND x.stream_ordering = d.stream_ordering)"
    )


def user_notifications_args(user_id: str) -> tuple[Any, ...]:
    return (user_id, True, user_id, "join")


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
        return reader_position(self.db, name)

    async def record(
        self, reader: str, position: int, rows: Sequence[PushActionRow], defaults: Sequence[PushDefault] = ()
    ) -> None:
        """Store ``defaults`` and ``rows`` and move ``reader`` to ``position``.

        In transactions of :data:`RECORD_CHUNK` rows, the position with the last: a message
        into a room of thousands is thousands of rows, and the single writer would make the
        next event's persistence wait for all of them. A crash between chunks leaves some rows
        without the position: the events are evaluated again and the repeats add nothing
        (``ON CONFLICT DO NOTHING``); the position never runs ahead of its rows.
        """
        # Rows share action lists (one per matching rule): encode each list once.
        encoded: dict[int, str] = {}
        for actions in [*(r.actions for r in rows), *(d.actions for d in defaults)]:
            if id(actions) not in encoded:
                encoded[id(actions)] = json.dumps(actions)
        values = [
            (
                r.user_id,
                r.room_nid,
                r.stream_ordering,
                r.event_id,
                r.thread_id,
                r.highlight,
                encoded[id(r.actions)],
                r.ts,
                r.notify,
            )
            for r in rows
        ]
        default_values = [
            (d.room_nid, d.stream_ordering, d.event_id, d.sender, d.thread_id, d.highlight, encoded[id(d.actions)], d.ts)
            for d in defaults
        ]

        def txn(t: Txn, chunk: list[tuple[Any, ...]], with_position: bool) -> None:
            if chunk:
                t.executemany(
                    "INSERT INTO event_push_actions"
                    " (user_id, room_nid, stream_ordering, event_id, thread_id, highlight, actions, ts, notify)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                    chunk,
                )
            if with_position and default_values:
                # With the position, after every exception chunk: a default never stands
                # without the exceptions that qualify it.
                t.executemany(
                    "INSERT INTO event_push_defaults"
                    " (room_nid, stream_ordering, event_id, sender, thread_id, highlight, actions, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_ordering) DO NOTHING",
                    default_values,
                )
            if with_position:
                set_reader_position_txn(t, reader, position)

        while len(values) > RECORD_CHUNK:
            chunk, values = values[:RECORD_CHUNK], values[RECORD_CHUNK:]
            await self.db.run_interaction("push_actions_record", txn, chunk, False)
        await self.db.run_interaction("push_actions_record", txn, values, True)

    # -- counts ----------------------------------------------------------------------------

    def unread_counts(
        self, user_id: str, rooms: Sequence[tuple[int, int]]
    ) -> Deferred[dict[int, dict[str, UnreadCounts]]]:
        """For each ``(room_nid, joined_at)``: notifications after it, per thread.

        Each event counts unless the user's unthreaded read receipt or their receipt for
        the event's thread (``main`` for the main timeline) is at or after it.
        """

        own = (
            "SELECT a.room_nid, a.thread_id, COUNT(*), SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END)"
            " FROM event_push_actions a"
            " WHERE a.user_id = ? AND a.room_nid = ? AND a.stream_ordering > ? AND a.notify = ?"
            f" AND a.stream_ordering > {_read_upto('a', '?')}"
            " GROUP BY a.room_nid, a.thread_id"
        )
        defaults = (
            "SELECT d.room_nid, d.thread_id, COUNT(*), SUM(CASE WHEN d.highlight THEN 1 ELSE 0 END)"
            " FROM event_push_defaults d"
            " WHERE d.room_nid = ? AND d.stream_ordering > ? AND d.sender <> ?"
            f" AND d.stream_ordering > {_read_upto('d', '?')}"
            " AND NOT EXISTS (SELECT 1 FROM event_push_actions x"
            " WHERE x.user_id = ? AND x.stream_ordering = d.stream_ordering)"
            " GROUP BY d.room_nid, d.thread_id"
        )

        def txn(t: Txn) -> dict[int, dict[str, UnreadCounts]]:
            counts: dict[int, dict[str, list[int]]] = {}
            # The user's own rows and the room's defaults, counted apart (each on its own index)
            # and added: after ``after`` and after the receipt covering each. Every room's two
            # counts in one statement (UNION ALL): one round trip through the driver, not two per room.
            for i in range(0, len(rooms), _UNION_ROOMS):
                chunk = rooms[i : i + _UNION_ROOMS]
                sql = " UNION ALL ".join(f"{own} UNION ALL {defaults}" for _ in chunk)
                args: list[Any] = []
                for room_nid, after in chunk:
                    args += (user_id, room_nid, after, True, user_id, UNTHREADED, *READ_RECEIPT_TYPES)
                    args += (room_nid, after, user_id, user_id, UNTHREADED, *READ_RECEIPT_TYPES, user_id)
                for room_nid, thread, n, highlights in t.query(sql, args):
                    c = counts.setdefault(int(room_nid), {}).setdefault(thread, [0, 0])
                    c[0] += int(n)
                    c[1] += int(highlights or 0)
            return {
                room_nid: {thread: UnreadCounts(n, h) for thread, (n, h) in by_thread.items()}
                for room_nid, by_thread in counts.items()
            }

        return self.db.run_read("push_unread_counts", txn)


def _read_upto(alias: str, user: str) -> str:
    """SQL: the stream position of ``user``'s latest read receipt covering notification
    ``alias`` (its thread's, or the unthreaded one); parameters: thread marker, receipt types."""
    return (
        "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r"
        f" WHERE r.room_nid = {alias}.room_nid AND r.user_id = {user}"
        f" AND r.thread_id IN ({alias}.thread_id, ?) AND r.receipt_type IN (?, ?)), 0)"
    )
