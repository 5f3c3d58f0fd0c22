"""Helpers for tests of the room event APIs: rooms, memberships and messages over HTTP.

Rooms are created with POST /createRoom (or through the room server for
shapes createRoom cannot make); memberships and messages go through the
client API's state and send endpoints, so the tests exercise real HTTP.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import quote

from mxserver.events.versions import get_room_version
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import EventSpec
from tests.utils import HomeserverTestCase, TestUser

C = "/_matrix/client/v3"
_txn = itertools.count()


def q(value: str) -> str:
    """Percent-encode one path segment (``/``, ``:``, ``$``, ``+``... included)."""
    return quote(value, safe="")


class RoomEventsTestCase(HomeserverTestCase):
    async def create_room(
        self,
        creator: TestUser,
        version: str = "12",
        history_visibility: str | None = "shared",
        join_rule: str = "public",
        power_users: dict[str, int] | None = None,
    ) -> str:
        if history_visibility is not None and join_rule == "public" and not power_users:
            code, body = await self.post(
                f"{C}/createRoom",
                {
                    "room_version": version,
                    "preset": "public_chat",
                    "initial_state": [
                        {
                            "type": "m.room.history_visibility",
                            "state_key": "",
                            "content": {"history_visibility": history_visibility},
                        }
                    ],
                },
                creator,
            )
            self.assertEqual(code, 200, body)
            return body["room_id"]
        # Rooms createRoom cannot make (no history visibility event at all...): through the room server.
        rv = get_room_version(version)
        assert rv is not None
        user = creator.user_id
        pl = default_power_levels_content(rv, user)
        if power_users:
            pl["users"].update(power_users)
        initial = [
            EventSpec("m.room.member", {"membership": "join"}, user, user),
            EventSpec("m.room.power_levels", pl, "", user),
            EventSpec("m.room.join_rules", {"join_rule": join_rule}, "", user),
        ]
        if history_visibility is not None:
            initial.append(EventSpec("m.room.history_visibility", {"history_visibility": history_visibility}, "", user))
        room_id, _ = await self.hs.room_server.create_room(user, rv, {}, initial)
        return room_id

    async def set_membership(self, actor: TestUser, room_id: str, target: str, membership: str, **extra: Any) -> str:
        code, body = await self.put(
            f"{C}/rooms/{q(room_id)}/state/m.room.member/{q(target)}", {"membership": membership, **extra}, actor
        )
        self.assertEqual(code, 200, body)
        return body["event_id"]

    async def join(self, user: TestUser, room_id: str, **extra: Any) -> str:
        return await self.set_membership(user, room_id, user.user_id, "join", **extra)

    async def leave(self, user: TestUser, room_id: str) -> str:
        return await self.set_membership(user, room_id, user.user_id, "leave")

    async def invite(self, inviter: TestUser, room_id: str, invitee: TestUser) -> str:
        return await self.set_membership(inviter, room_id, invitee.user_id, "invite")

    async def set_state(
        self, user: TestUser, room_id: str, etype: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        code, body = await self.put(f"{C}/rooms/{q(room_id)}/state/{q(etype)}/{q(state_key)}", content, user)
        self.assertEqual(code, 200, body)
        return body["event_id"]

    async def send_message(
        self, user: TestUser, room_id: str, body: str, etype: str = "m.room.message", **extra: Any
    ) -> str:
        txn = f"t{next(_txn)}"
        code, resp = await self.put(
            f"{C}/rooms/{q(room_id)}/send/{q(etype)}/{txn}", {"msgtype": "m.text", "body": body, **extra}, user
        )
        self.assertEqual(code, 200, resp)
        return resp["event_id"]

    async def messages(self, user: TestUser, room_id: str, **params: Any) -> tuple[int, Any]:
        query = "&".join(
            f"{k}={q(json.dumps(v) if isinstance(v, dict) else str(v))}" for k, v in params.items() if v is not None
        )
        return await self.get(f"{C}/rooms/{q(room_id)}/messages?{query}", user)

    async def visible_bodies(self, user: TestUser, room_id: str) -> Any:
        """Bodies of the messages the user sees paging backwards from the end (oldest first), or (status, error)."""
        bodies: list[str] = []
        token = None
        while True:
            code, resp = await self.messages(user, room_id, dir="b", limit=50, **({"from": token} if token else {}))
            if code != 200:
                return (code, resp)
            bodies += [ev["content"]["body"] for ev in resp["chunk"] if ev["type"] == "m.room.message"]
            token = resp.get("end")
            if token is None:
                return list(reversed(bodies))
