"""SQL for the server notices rooms (table ``server_notice_rooms``, schema 0031): each user's
notices room, made by the system user on the first notice to them."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


class ServerNoticeRoomsStore:
    """Which room is whose server notices room."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def room_of(self, user_id: str) -> str | None:
        """The user's notices room, if one was made."""
        row = await self.db.select_one("notice_room_of", "SELECT room_id FROM server_notice_rooms WHERE user_id = ?", user_id)
        return str(row[0]) if row else None

    def set_room(self, user_id: str, room_id: str) -> Deferred[None]:
        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
                (user_id, room_id),
            )

        return self.db.run_interaction("set_notice_room", txn)

    async def is_notice_room_of(self, user_id: str, room_id: str) -> bool:
        return await self.room_of(user_id) == room_id
