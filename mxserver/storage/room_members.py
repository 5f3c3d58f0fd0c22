"""SQL for the in-memory joined-members cache: who is joined where, read from ``room_memberships``.

:class:`~mxserver.ephemeral.room_members.RoomMembers` loads rooms and users
lazily through this store and then follows the room stream; the rows are
written by the room server with the events (see
:class:`~mxserver.storage.events.EventStore`).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

_CHUNK = 500


class RoomMembersStore:
    """Joined memberships, by room or by user."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def joined_members(self, room_ids: Sequence[str]) -> Deferred[dict[str, set[str]]]:
        """room -> the users joined to it (every one of ``room_ids`` present, empty if unknown)."""

        def txn(t: Txn) -> dict[str, set[str]]:
            out: dict[str, set[str]] = {r: set() for r in room_ids}
            for i in range(0, len(room_ids), _CHUNK):
                chunk = list(room_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    "SELECT r.room_id, m.user_id FROM rooms r JOIN room_memberships m ON m.room_nid = r.room_nid"
                    f" WHERE r.room_id IN ({marks}) AND m.membership = 'join'",
                    chunk,
                )
                for room_id, user_id in rows:
                    out[room_id].add(user_id)
            return out

        return self.db.run_read("room_members_load_rooms", txn)

    def joined_rooms(self, user_ids: Sequence[str]) -> Deferred[dict[str, set[str]]]:
        """user -> the rooms they are joined to (every one of ``user_ids`` present)."""

        def txn(t: Txn) -> dict[str, set[str]]:
            out: dict[str, set[str]] = {u: set() for u in user_ids}
            for i in range(0, len(user_ids), _CHUNK):
                chunk = list(user_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    "SELECT m.user_id, r.room_id FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid"
                    f" WHERE m.user_id IN ({marks}) AND m.membership = 'join'",
                    chunk,
                )
                for user_id, room_id in rows:
                    out[user_id].add(room_id)
            return out

        return self.db.run_read("room_members_load_users", txn)
