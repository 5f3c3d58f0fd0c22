"""Shared helpers for the room event API tests (send, state, redact, members, messages).

NOTE: this file was accidentally overwritten by the room-creation/membership
work and rebuilt from how the tests use it; check it against your copy.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote, urlencode

from mxserver.events.versions import get_room_version
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import EventSpec
from tests.utils import HomeserverTestCase, TestUser

C = "/_matrix/client/v3"

_txn = itertools.count()


def q(s: str) -> str:
    """One path segment, percent-encoded."""
    return quote(s, safe="")


class RoomTestCase(HomeserverTestCase):
    async def create_room(self, user: TestUser, version: str | None = None, history_visibility: str = "shared") -> str:
        """A public room of five events: create, the creator's join, power levels, join rules, history visibility."""
        rv = get_room_version(version or self.hs.config.default_room_version)
        assert rv is not None
        creator = user.user_id
        room_id, _ = await self.hs.room_server.create_room(
            creator,
            rv,
            {},
            [
                EventSpec("m.room.member", {"membership": "join"}, creator, creator),
                EventSpec("m.room.power_levels", default_power_levels_content(rv, creator), "", creator),
                EventSpec("m.room.join_rules", {"join_rule": "public"}, "", creator),
                EventSpec("m.room.history_visibility", {"history_visibility": history_visibility}, "", creator),
            ],
        )
        return room_id

    async def _member(self, sender: TestUser, room: str, target: str, content: dict[str, Any]) -> str:
        ev = await self.hs.room_server.send(room, EventSpec("m.room.member", content, target, sender.user_id))
        return ev.event_id

    async def join(self, user: TestUser, room: str, **content: Any) -> str:
        return await self._member(user, room, user.user_id, {"membership": "join", **content})

    async def leave(self, user: TestUser, room: str) -> str:
        return await self._member(user, room, user.user_id, {"membership": "leave"})

    async def invite(self, inviter: TestUser, room: str, invitee: TestUser) -> str:
        return await self._member(inviter, room, invitee.user_id, {"membership": "invite"})

    async def set_state(
        self, user: TestUser, room: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        ev = await self.hs.room_server.send(room, EventSpec(event_type, content, state_key, user.user_id))
        return ev.event_id

    async def send_message(self, user: TestUser, room: str, body: str, **extra: Any) -> str:
        content = {"msgtype": "m.text", "body": body, **extra}
        code, resp = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/h{next(_txn)}", content, user)
        self.assertEqual(code, 200, resp)
        return resp["event_id"]

    async def messages(self, user: TestUser, room: str, **params: Any) -> tuple[int, Any]:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return await self.get(f"{C}/rooms/{q(room)}/messages" + (f"?{query}" if query else ""), user)

    async def visible_bodies(self, user: TestUser, room: str) -> list[str]:
        """The bodies of the room's messages the user can see, oldest first."""
        code, page = await self.messages(user, room, dir="b", limit=1000)
        self.assertEqual(code, 200, page)
        return [
            e["content"]["body"]
            for e in reversed(page["chunk"])
            if e["type"] == "m.room.message" and "body" in e.get("content", {})
        ]
