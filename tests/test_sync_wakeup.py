"""A long-polling /sync woken by a membership change sees the new membership.

Regression test for what the Synapse interop tests found: the notifier woke the
waiting /sync inside the room-stream publish before the sync handler had
dropped its cached memberships, so a kick was served under ``rooms.join``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.harness import C, HomeserverTestCase, until_waiting


class SyncWakeupTests(HomeserverTestCase):
    async def _sync(self, token: Any, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        path = f"{C}/sync?timeout={timeout}" + (f"&since={since}" if since else "")
        code, body = await self.get(path, token)
        self.assertEqual(code, 200, body)
        return body

    async def _joined_pair(self) -> tuple[Any, Any, str, str]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        code, body = await self.post(f"{C}/createRoom", {"preset": "public_chat"}, alice)
        self.assertEqual(code, 200, body)
        room = body["room_id"]
        code, body = await self.post(f"{C}/join/{room}", {}, bob)
        self.assertEqual(code, 200, body)
        since = (await self._sync(bob))["next_batch"]
        return alice, bob, room, since

    async def _woken_by(self, bob: Any, since: str, change: Any) -> dict[str, Any]:
        waiting = ensureDeferred(self._sync(bob, since, timeout=10000))
        await until_waiting(self.hs, 1)  # the sync is parked on the notifier now
        self.assertFalse(waiting.called)
        await change()
        return await waiting

    async def test_kick_wakes_sync_with_the_room_left(self) -> None:
        alice, bob, room, since = await self._joined_pair()

        async def kick() -> None:
            code, body = await self.post(f"{C}/rooms/{room}/kick", {"user_id": bob.user_id}, alice)
            self.assertEqual(code, 200, body)

        body = await self._woken_by(bob, since, kick)
        self.assertNotIn(room, body["rooms"]["join"])
        events = body["rooms"]["leave"][room]["timeline"]["events"]
        self.assertEqual([(e["type"], e["content"]["membership"]) for e in events], [("m.room.member", "leave")])

    async def test_invite_wakes_sync_with_the_invite(self) -> None:
        alice, bob, room, since = await self._joined_pair()
        carol = await self.register("carol")
        carol_since = (await self._sync(carol))["next_batch"]

        async def invite() -> None:
            code, body = await self.post(f"{C}/rooms/{room}/invite", {"user_id": carol.user_id}, alice)
            self.assertEqual(code, 200, body)

        body = await self._woken_by(carol, carol_since, invite)
        self.assertIn(room, body["rooms"]["invite"])
        self.assertNotIn(room, body["rooms"]["join"])
