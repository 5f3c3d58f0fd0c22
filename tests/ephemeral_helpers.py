"""Shared helpers for the typing, receipts, presence, profile and user directory tests.

Rooms are created and joined through the client API (POST /createRoom,
/join, /leave) and messages sent with PUT .../send, like a client would.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, ensureDeferred

from tests.utils import HomeserverTestCase, TestUser

C = "/_matrix/client/v3"

_txn = itertools.count()


def q(s: str) -> str:
    """One path segment, percent-encoded."""
    return quote(s, safe="")


class EphemeralTestCase(HomeserverTestCase):
    async def create_room(self, user: TestUser, preset: str = "private_chat", **body: Any) -> str:
        if self.use_fake_clock:
            # v12 room IDs hash the create event: two identical ones in the same millisecond collide.
            self.clock.advance(0.001)
        code, resp = await self.post(f"{C}/createRoom", {"preset": preset, **body}, user)
        self.assertEqual(code, 200, resp)
        return resp["room_id"]

    async def join(self, user: TestUser, room: str) -> None:
        code, resp = await self.post(f"{C}/join/{q(room)}", {}, user)
        self.assertEqual(code, 200, resp)

    async def invite_and_join(self, inviter: TestUser, room: str, user: TestUser) -> None:
        code, resp = await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": user.user_id}, inviter)
        self.assertEqual(code, 200, resp)
        await self.join(user, room)

    async def leave(self, user: TestUser, room: str) -> None:
        code, resp = await self.post(f"{C}/rooms/{q(room)}/leave", {}, user)
        self.assertEqual(code, 200, resp)

    async def send_message(self, user: TestUser, room: str, body: str = "hello") -> str:
        code, resp = await self.put(
            f"{C}/rooms/{q(room)}/send/m.room.message/t{next(_txn)}", {"msgtype": "m.text", "body": body}, user
        )
        self.assertEqual(code, 200, resp)
        return resp["event_id"]

    async def shared_room(self, a: TestUser, b: TestUser, preset: str = "private_chat") -> str:
        """A room ``a`` created and ``b`` joined."""
        room = await self.create_room(a, preset)
        await self.invite_and_join(a, room, b)
        return room

    def waiter(self, user: TestUser | str, rooms: tuple[str, ...] | list[str] = (), timeout_ms: int = 60_000) -> Deferred[None]:
        """A /sync-style long-poll on the notifier; cancel it if it must not fire."""
        user_id = user if isinstance(user, str) else user.user_id
        d = ensureDeferred(self.hs.notifier.wait(user_id, rooms, timeout_ms))
        self.addCleanup(lambda: d.called or d.cancel())
        d.addErrback(lambda f: None)
        return d
