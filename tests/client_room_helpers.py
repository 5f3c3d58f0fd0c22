"""Shared helpers for the client room API tests (createRoom, membership, directory, upgrades)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.utils import HomeserverTestCase, TestUser

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    """One path segment, percent-encoded (aliases start with '#', IDs may hold '/')."""
    return quote(s, safe="")


class ClientRoomTestCase(HomeserverTestCase):
    """A HomeserverTestCase with shortcuts for the client room APIs; state is read from the room server."""

    async def create_room(self, user: TestUser, **body: Any) -> str:
        code, resp = await self.post(f"{V3}/createRoom", body, user)
        self.assertEqual(code, 200, resp)
        return resp["room_id"]

    async def join(self, user: TestUser, room: str) -> None:
        code, resp = await self.post(f"{V3}/join/{q(room)}", {}, user)
        self.assertEqual(code, 200, resp)

    async def invite(self, user: TestUser, room: str, target: TestUser | str) -> None:
        target_id = target if isinstance(target, str) else target.user_id
        code, resp = await self.post(f"{V3}/rooms/{q(room)}/invite", {"user_id": target_id}, user)
        self.assertEqual(code, 200, resp)

    async def membership(self, room: str, user: TestUser | str) -> str | None:
        user_id = user if isinstance(user, str) else user.user_id
        return await self.hs.room_server.membership(room, user_id)

    async def member_content(self, room: str, user: TestUser | str) -> dict[str, Any]:
        user_id = user if isinstance(user, str) else user.user_id
        ev = await self.hs.room_server.current_state_event(room, "m.room.member", user_id)
        assert ev is not None
        return ev.content

    async def state_content(self, room: str, etype: str, state_key: str = "") -> dict[str, Any] | None:
        ev = await self.hs.room_server.current_state_event(room, etype, state_key)
        return ev.content if ev is not None else None

    async def set_state(self, user: TestUser, room: str, etype: str, content: dict[str, Any], state_key: str = "") -> None:
        from mxserver.rooms.room_server import EventSpec

        await self.hs.room_server.send(room, EventSpec(etype, content, state_key, user.user_id))

    async def set_power(self, admin: TestUser, room: str, user_id: str, level: int) -> None:
        pl = dict(await self.state_content(room, "m.room.power_levels") or {})
        pl["users"] = {**pl.get("users", {}), user_id: level}
        await self.set_state(admin, room, "m.room.power_levels", pl)

    async def set_profile(self, user: TestUser, displayname: str | None, avatar_url: str | None = None) -> None:
        await self.hs.db.execute(
            "test_set_profile",
            "UPDATE profiles SET displayname = ?, avatar_url = ? WHERE user_id = ?",
            displayname,
            avatar_url,
            user.user_id,
        )

    async def room_events(self, room: str) -> list[Any]:
        """Every event of the room in stream order (from the database)."""
        info = await self.hs.room_server.get_room(room)
        rows = await self.hs.db.select(
            "test_room_events", "SELECT event_id FROM events WHERE room_nid = ? ORDER BY stream_ordering", info.room_nid
        )
        events = await self.hs.event_store.get_events([r[0] for r in rows])
        return [events[r[0]] for r in rows]
