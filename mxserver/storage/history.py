"""SQL for reading room history: pages of the timeline, state at a position, membership history.

Every query here reads the ``events`` table by ``(room_nid, stream_ordering)``
(or ``origin_server_ts``) and returns :class:`Event` objects through the
event store, which reuses cached events and caches the rest. Only events in
the timeline count: outliers (no stream position), rejected and soft-failed
events are never returned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mxserver.events.model import Event
from mxserver.storage.database import Database, Txn
from mxserver.storage.events import EventStore

#: the WHERE clause shared by every timeline query (alias ``e``)
_IN_TIMELINE = "e.stream_ordering IS NOT NULL AND e.rejected_reason IS NULL AND e.soft_failed = ?"


class HistoryStore:
    """Read-only queries over room timelines."""

    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events

    async def page(
        self,
        room_nid: int,
        from_pos: int,
        to_pos: int | None,
        backwards: bool,
        limit: int,
        conditions: tuple[str, Sequence[Any]] = ("", ()),
    ) -> list[Event]:
        """Up to ``limit`` timeline events of a room, in paging order, in one query.

        Positions are between events: backwards returns events at or before
        ``from_pos`` and after ``to_pos``; forwards, events after ``from_pos``
        and at or before ``to_pos``. ``conditions`` is extra SQL (`` AND ...``)
        with its arguments, on alias ``e``.
        """
        extra, extra_args = conditions
        args: list[Any] = [room_nid, False, from_pos]
        if backwards:
            sql = " AND e.stream_ordering <= ?"
            if to_pos is not None:
                sql += " AND e.stream_ordering > ?"
                args.append(to_pos)
            order = "DESC"
        else:
            sql = " AND e.stream_ordering > ?"
            if to_pos is not None:
                sql += " AND e.stream_ordering <= ?"
                args.append(to_pos)
            order = "ASC"
        args += list(extra_args)
        args.append(limit)
        query = (
            f"SELECT {EventStore.EVENT_COLUMNS} FROM events e WHERE e.room_nid = ? AND {_IN_TIMELINE}{sql}{extra}"
            f" ORDER BY e.stream_ordering {order} LIMIT ?"
        )
        rows = await self.db.select("history_page", query, *args)
        return await self.events.events_from_rows(rows)

    async def snapshot_at_position(self, room_nid: int, position: int) -> int | None:
        """The state snapshot after the room's last timeline event at or before ``position``."""
        row = await self.db.select_one(
            "snapshot_at_position",
            # current_state_after: the resolved room state after a received event that forked the DAG
            "SELECT COALESCE(e.current_state_after, e.state_after) FROM events e"
            f" WHERE e.room_nid = ? AND {_IN_TIMELINE} AND e.stream_ordering <= ?"
            " ORDER BY e.stream_ordering DESC LIMIT 1",
            room_nid,
            False,
            position,
        )
        return row[0] if row else None

    async def last_join_position(self, room_nid: int, user_id: str) -> int | None:
        """The stream position of the user's latest ``join`` membership event in the room, if any."""

        def txn(t: Txn) -> int | None:
            t.execute(
                f"SELECT e.stream_ordering, e.json FROM events e WHERE e.room_nid = ? AND e.type = ?"
                f" AND e.state_key = ? AND {_IN_TIMELINE} ORDER BY e.stream_ordering DESC",
                (room_nid, "m.room.member", user_id, False),
            )
            while True:
                row = t.fetchone()
                if row is None:
                    return None
                content = json.loads(row[1]).get("content")
                if isinstance(content, dict) and content.get("membership") == "join":
                    return row[0]

        return await self.db.run_read("last_join_position", txn)

    async def events_near_timestamp(self, room_nid: int, ts: int, forwards: bool, limit: int) -> list[Event]:
        """Timeline events from ``ts`` on (forwards) or back (backwards), nearest first."""
        op, order = (">=", "ASC") if forwards else ("<=", "DESC")
        rows = await self.db.select(
            "events_near_timestamp",
            f"SELECT {EventStore.EVENT_COLUMNS} FROM events e WHERE e.room_nid = ? AND {_IN_TIMELINE}"
            f" AND e.origin_server_ts {op} ? ORDER BY e.origin_server_ts {order}, e.stream_ordering {order} LIMIT ?",
            room_nid,
            False,
            ts,
            limit,
        )
        return await self.events.events_from_rows(rows)
