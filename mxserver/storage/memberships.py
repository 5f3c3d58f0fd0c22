"""SQL for per-user room bookkeeping beside the membership itself: forgetting rooms.

``room_memberships`` is written by the room server with every membership
change (which also clears ``forgotten``: re-joining, a new invite or a knock
bring a forgotten room back, client-server-api §Leaving rooms). Only the
``forgotten`` flag is written here.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


class MembershipStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def forget(self, user_id: str, room_nid: int) -> Deferred[bool]:
        """Mark a left (or banned) room as forgotten; False if the user is in it or never was."""

        def txn(t: Txn) -> bool:
            rows = t.query(
                "UPDATE room_memberships SET forgotten = ? WHERE user_id = ? AND room_nid = ?"
                " AND membership IN ('leave', 'ban') RETURNING room_nid",
                (True, user_id, room_nid),
            )
            return bool(rows)

        return self.db.run_interaction("forget_room", txn)

    async def is_forgotten(self, user_id: str, room_nid: int) -> bool:
        row = await self.db.select_one(
            "is_forgotten",
            "SELECT forgotten FROM room_memberships WHERE user_id = ? AND room_nid = ?",
            user_id,
            room_nid,
        )
        return bool(row[0]) if row else False

    async def get_joined_users(self, room_nid: int) -> list[str]:
        rows = await self.db.select(
            "get_joined_users",
            "SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join'",
            room_nid,
        )
        return [r[0] for r in rows]
