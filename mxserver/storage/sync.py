"""Read queries for /sync: memberships, recent timelines, member counts.

Each method is one database interaction however many rooms it covers, so an
initial sync of many rooms costs a handful of round trips, not one per room.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import attrs

from mxserver.storage.database import Database, Txn


@attrs.frozen
class MembershipRow:
    room_id: str
    room_nid: int
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool


_TIMELINE = "stream_ordering IS NOT NULL AND rejected_reason IS NULL AND soft_failed = ?"
#: rooms per UNION ALL statement (SQLite allows 500 terms in a compound SELECT)
_UNION_CHUNK = 100

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def memberships(self, user_id: str) -> list[MembershipRow]:
        rows = await self.db.select(
            "sync_memberships",
            "SELECT r.room_id, m.room_nid, m.membership, m.event_id, m.stream_ordering, m.forgotten"
            " FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = ?",
            user_id,
        )
        return [MembershipRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    async def recent_event_ids(
        self, rooms: Sequence[tuple[int, int | None, int]], limit: int
    ) -> dict[int, tuple[list[str], bool]]:
        """For each ``(room_nid, after, upto)``: the last ``limit`` timeline event IDs in
        (after, upto], oldest first, and whether more were left out."""

        def txn(t: Txn) -> dict[int, tuple[list[str], bool]]:
            found: dict[int, list[tuple[int, str]]] = {}
            # One statement per chunk of rooms: a UNION ALL of one index seek each (a statement per
            # room costs a round trip through the driver, and the GIL, each).
            for chunk in _chunks(rooms, _UNION_CHUNK):
                parts = []
                args: list[Any] = []
                for i, (room_nid, after, upto) in enumerate(chunk):
                    extra = " AND stream_ordering > ?" if after is not None else ""
                    parts.append(
                        f"SELECT room_nid, stream_ordering, event_id FROM (SELECT room_nid, stream_ordering, event_id"
                        f" FROM events WHERE room_nid = ? AND {_TIMELINE} AND stream_ordering <= ?{extra}"
                        f" ORDER BY stream_ordering DESC LIMIT ?) AS r{i}"
                    )
                    args += [room_nid, False, upto, *([after] if after is not None else []), limit + 1]
                for room_nid, position, event_id in t.query(" UNION ALL ".join(parts), args):
                    found.setdefault(room_nid, []).append((int(position), event_id))
            out = {}
            for room_nid, _, _ in rooms:
                rows = sorted(found.get(room_nid, ()), reverse=True)
                ids = [r[1] for r in rows[:limit]]
                ids.reverse()
                out[room_nid] = (ids, len(rows) > limit)
            return out

        return await self.db.run_read("sync_recent_events", txn)

    async def membership_history(
        self, room_nids: Sequence[int], user_id: str, since: int
    ) -> dict[int, tuple[str | None, list[str]]]:
        """For each room: the user's membership at ``since`` (None if it had none) and its
        memberships after it, oldest first. /sync asks only for the rooms whose membership row
        moved after ``since``: to tell a (re)join from a profile change."""

        def membership(raw: str) -> str | None:
            value = json.loads(raw).get("content", {}).get("membership")
            return value if isinstance(value, str) else None

        def txn(t: Txn) -> dict[int, tuple[str | None, list[str]]]:
            out: dict[int, tuple[str | None, list[str]]] = {}
            where = f"room_nid = ? AND type = 'm.room.member' AND state_key = ? AND {_TIMELINE}"
            for room_nid in room_nids:
                before = t.query_one(
                    f"SELECT json FROM events WHERE {where} AND stream_ordering <= ? ORDER BY stream_ordering DESC LIMIT 1",
                    (room_nid, user_id, False, since),
                )
                after = t.query(
                    f"SELECT json FROM events WHERE {where} AND stream_ordering > ? ORDER BY stream_ordering",
                    (room_nid, user_id, False, since),
                )
                changes = [m for m in (membership(r[0]) for r in after) if m is not None]
                out[room_nid] = (membership(before[0]) if before else None, changes)
            return out

        return await self.db.run_read("sync_membership_history", txn)

    async def joins_between(self, room_nids: Sequence[int], after: int, upto: int) -> set[str]:
        """Users whose current membership of one of the rooms is a join made in (after, upto]."""

        def txn(t: Txn) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(room_nids), 500):
                chunk = list(room_nids[i : i + 500])
                marks = ", ".join("?" for _ in chunk)
                out.update(
                    r[0]
                    for r in t.query(
                        f"SELECT user_id FROM room_memberships WHERE room_nid IN ({marks}) AND membership = 'join'"
                        " AND stream_ordering > ? AND stream_ordering <= ?",
                        (*chunk, after, upto),
                    )
                )
            return out

        return await self.db.run_read("sync_joins_between", txn)

    @staticmethod
    def _named_rooms_txn(t: Txn, room_nids: Sequence[int], named_by: Sequence[str]) -> set[int]:
        """The rooms with a non-empty ``m.room.name`` or ``m.room.canonical_alias`` (those of the
        two in ``named_by``)."""
        named: set[int] = set()
        types = ", ".join("?" for _ in named_by)
        for i in range(0, len(room_nids), 500):
            chunk = list(room_nids[i : i + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = t.query(
                "SELECT c.room_nid, c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id"
                f" WHERE c.room_nid IN ({marks}) AND c.state_key = ''"
                f" AND c.type IN ({types})",
                [*chunk, *named_by],
            )
            for room_nid, etype, raw in rows:
                content = json.loads(raw).get("content", {})
                if (etype == "m.room.name" and content.get("name")) or (
                    etype == "m.room.canonical_alias" and content.get("alias")
                ):
                    named.add(room_nid)
        return named

    async def snapshots_at(self, positions: Sequence[tuple[int, int]]) -> dict[int, int | None]:
        """For each ``(room_nid, position)``: the state snapshot after the room's last event at or before it."""

        def txn(t: Txn) -> dict[int, int | None]:
            out: dict[int, int | None] = {}
            for room_nid, position in positions:
                row = t.query_one(
                    # current_state_after: the resolved room state after a received event that forked the DAG
                    "SELECT COALESCE(current_state_after, state_after) FROM events"
                    f" WHERE room_nid = ? AND {_TIMELINE} AND stream_ordering <= ?"
                    " ORDER BY stream_ordering DESC LIMIT 1",
                    (room_nid, False, position),
                )
                out[room_nid] = row[0] if row else None
            return out

        return await self.db.run_read("sync_snapshots_at", txn)

    async def member_summaries(
        self,
        room_nids: Sequence[int],
        user_id: str,
        named_by: Sequence[str] = ("m.room.name", "m.room.canonical_alias"),
    ) -> dict[int, tuple[int, int, list[str] | None]]:
        """For each room: (joined count, invited count, up to 5 other members' IDs for heroes, or
        None for a room named by one of ``named_by``: it needs no heroes; /sync counts a
        canonical alias as a name, sliding sync only ``m.room.name``)."""

        def txn(t: Txn) -> dict[int, tuple[int, int, list[str] | None]]:
            named = self._named_rooms_txn(t, room_nids, named_by)
            counts: dict[int, dict[str, int]] = {}
            heroes: dict[int, list[str]] = {}
            for chunk in _chunks(room_nids, 500):
                marks = ", ".join("?" for _ in chunk)
                for room_nid, membership, n in t.query(
                    f"SELECT room_nid, membership, COUNT(*) FROM room_memberships WHERE room_nid IN ({marks})"
                    " AND membership IN ('join', 'invite') GROUP BY room_nid, membership",
                    list(chunk),
                ):
                    counts.setdefault(room_nid, {})[membership] = int(n)
            unnamed = [nid for nid in room_nids if nid not in named]
            for chunk in _chunks(unnamed, _UNION_CHUNK):
                # One index seek per room (LIMIT 5), all in one statement.
                sql = " UNION ALL ".join(
                    "SELECT room_nid, user_id FROM (SELECT room_nid, user_id FROM room_memberships"
                    " WHERE room_nid = ? AND user_id != ? AND membership IN ('join', 'invite')"
                    f" ORDER BY user_id LIMIT 5) AS h{i}"
                    for i in range(len(chunk))
                )
                for room_nid, member in t.query(sql + " ORDER BY 1, 2", [a for nid in chunk for a in (nid, user_id)]):
                    heroes.setdefault(room_nid, []).append(member)
            out: dict[int, tuple[int, int, list[str] | None]] = {}
            for room_nid in room_nids:
                c = counts.get(room_nid, {})
                hero_ids = None if room_nid in named else heroes.get(room_nid, [])
                out[room_nid] = (c.get("join", 0), c.get("invite", 0), hero_ids)
            return out

        return await self.db.run_read("sync_member_summaries", txn)

    async def membership_content(self, event_id: str) -> dict[str, Any]:
        row = await self.db.select_one("sync_member_content", "SELECT json FROM events WHERE event_id = ?", event_id)
        return json.loads(row[0]).get("content", {}) if row else {}
