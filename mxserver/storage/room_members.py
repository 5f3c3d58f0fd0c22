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
        return self.db.run_read("room_members_load_rooms", _joined, "r.room_id", "m.user_id", room_ids)

    def joined_rooms(self, user_ids: Sequence[str]) -> Deferred[dict[str, set[str]]]:
        """user -> the rooms they are joined to (every one of ``user_ids`` present)."""
        return self.db.run_read("room_members_load_users", _joined, "m.user_id", "r.room_id", user_ids)


def _joined(t: Txn, key: str, value: str, keys: Sequence[str]) -> dict[str, set[str]]:
    """``key`` -> the ``value``s of its joined memberships, for every one of ``keys`` (chunked)."""
    out: dict[str, set[str]] = {k: set() for k in keys}
    for i in range(0, len(keys), _CHUNK):
        chunk = list(keys[i : i + _CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = t.query(
            f"SELECT {key}, {value} FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid"
            f" WHERE {key} IN ({marks}) AND m.membership = 'join'",
            chunk,
        )
        for k, v in rows:
            out[k].add(v)
    return out
