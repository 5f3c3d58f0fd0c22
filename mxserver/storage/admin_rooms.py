"""SQL for the admin API's view of rooms: per-room statistics, the block list, room deletion.

Reads the tables the room server writes (``rooms``, ``current_state``, ``room_memberships``,
``events``) and the directory's (``room_directory``); writes only its own tables
(``blocked_rooms``, ``room_delete_tasks``, schema 0031), except for the purge of a deleted
room, which removes every row that names the room (:meth:`AdminRoomStore.purge_room`).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.redaction import redact_pdu
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.storage.database import Database, Txn

#: the current state (type, "") the room list and the room details are made of
STATS_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.join_rules",
    "m.room.guest_access",
    "m.room.history_visibility",
)


@attrs.frozen
class RoomStats:
    """One room as the admin room list shows it."""

    room_id: str
    version: str
    creator: str
    joined_members: int
    joined_local_members: int
    state_events: int
    public: bool
    #: event type -> content of the room's current (type, "") state among STATS_STATE_TYPES
    state: dict[str, dict[str, Any]]


class AdminRoomStore:
    """Room statistics for the admin API (and, with room deletion, the block list and purge)."""

    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self._local_pattern = "%:" + server_name

    def list_rooms(self) -> Deferred[list[RoomStats]]:
        """Every room this server knows, with its statistics."""
        return self.db.run_read("admin_list_rooms", self._stats_txn, None)

    async def get_room_stats(self, room_id: str) -> RoomStats | None:
        rooms = await self.db.run_read("admin_room_stats", self._stats_txn, room_id)
        return rooms[0] if rooms else None

    def _stats_txn(self, t: Txn, room_id: str | None) -> list[RoomStats]:
        where, args = ("WHERE r.room_id = ?", (room_id,)) if room_id is not None else ("", ())
        members: dict[int, tuple[int, int]] = {}
        for nid, joined, local in t.query(
            "SELECT r.room_nid, COUNT(m.user_id), SUM(CASE WHEN m.user_id LIKE ? THEN 1 ELSE 0 END)"
            " FROM rooms r JOIN room_memberships m ON m.room_nid = r.room_nid AND m.membership = 'join'"
            f" {where} GROUP BY r.room_nid",
            (self._local_pattern, *args),
        ):
            members[int(nid)] = (int(joined), int(local or 0))
        state_counts = {
            int(nid): int(n)
            for nid, n in t.query(
                f"SELECT r.room_nid, COUNT(*) FROM rooms r JOIN current_state cs ON cs.room_nid = r.room_nid"
                f" {where} GROUP BY r.room_nid",
                args,
            )
        }
        marks = ",".join("?" * len(STATS_STATE_TYPES))
        states: dict[int, dict[str, dict[str, Any]]] = {}
        for nid, version, etype, raw, redacted_by in t.query(
            "SELECT r.room_nid, r.room_version, cs.type, e.json, e.redacted_by FROM rooms r"
            " JOIN current_state cs ON cs.room_nid = r.room_nid"
            " JOIN events e ON e.event_id = cs.event_id"
            f" WHERE cs.state_key = '' AND cs.type IN ({marks})" + (" AND r.room_id = ?" if room_id is not None else ""),
            (*STATS_STATE_TYPES, *args),
        ):
            states.setdefault(int(nid), {})[etype] = _content(raw, version, redacted_by)
        published = {
            rid
            for (rid,) in t.query(
                "SELECT d.room_id FROM room_directory d JOIN rooms r ON r.room_id = d.room_id"
                + (" WHERE r.room_id = ?" if room_id is not None else ""),
                args,
            )
        }
        out = []
        for nid, rid, version, creator in t.query(
            f"SELECT r.room_nid, r.room_id, r.room_version, r.creator FROM rooms r {where}", args
        ):
            joined, local = members.get(int(nid), (0, 0))
            out.append(
                RoomStats(
                    room_id=rid,
                    version=version,
                    creator=creator,
                    joined_members=joined,
                    joined_local_members=local,
                    state_events=state_counts.get(int(nid), 0),
                    public=rid in published,
                    state=states.get(int(nid), {}),
                )
            )
        return out

    def count_joined_local_devices(self, room_nid: int) -> Deferred[int]:
        """How many devices the room's joined local users have."""

        def txn(t: Txn) -> int:
            row = t.query(
                "SELECT COUNT(*) FROM devices d JOIN room_memberships m ON m.user_id = d.user_id"
                " WHERE m.room_nid = ? AND m.membership = 'join' AND m.user_id LIKE ?",
                (room_nid, self._local_pattern),
            )
            return int(row[0][0])

        return self.db.run_read("admin_room_devices", txn)

    def all_local_forgotten(self, room_nid: int) -> Deferred[bool]:
        """Whether every local user with a membership of the room has forgotten it (False when no local user has one)."""

        def txn(t: Txn) -> bool:
            rows = t.query(
                "SELECT forgotten FROM room_memberships WHERE room_nid = ? AND user_id LIKE ?",
                (room_nid, self._local_pattern),
            )
            return bool(rows) and all(bool(f) for (f,) in rows)

        return self.db.run_read("admin_room_forgotten", txn)

    def joined_members(self, room_nid: int) -> Deferred[list[str]]:
        """The room's joined users, sorted."""

        def txn(t: Txn) -> list[str]:
            return [
                u
                for (u,) in t.query(
                    "SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join' ORDER BY user_id",
                    (room_nid,),
                )
            ]

        return self.db.run_read("admin_room_members", txn)


def _content(raw: str, version: str, redacted_by: str | None) -> dict[str, Any]:
    pdu = json.loads(raw)
    rv = KNOWN_ROOM_VERSIONS.get(version)
    if redacted_by and rv is not None:
        pdu = redact_pdu(pdu, rv)
    content = pdu.get("content")
    return content if isinstance(content, dict) else {}
