"""/sync: initial and incremental syncs, long-polling, state across gaps, invites and leaves."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor

from tests.harness import C, HomeserverTestCase, TestUser, until_waiting


class SyncTests(HomeserverTestCase):
    async def _room(self, user: TestUser, **extra: Any) -> str:
        code, body = await self.post(f"{C}/createRoom", {"preset": "public_chat", **extra}, user)
        self.assertEqual(code, 200, body)
        return body["room_id"]

    async def _send(self, user: TestUser, room_id: str, body: str) -> str:
        self._txn = getattr(self, "_txn", 0) + 1
        code, resp = await self.put(
            f"{C}/rooms/{room_id}/send/m.room.message/t{self._txn}", {"msgtype": "m.text", "body": body}, user
        )
        self.assertEqual(code, 200, resp)
        return resp["event_id"]

    async def _sync(self, user: TestUser, since: str | None = None, **params: Any) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        path = f"{C}/sync?" + (f"since={since}&" if since else "") + query
        code, body = await self.get(path, user)
        self.assertEqual(code, 200, body)
        return body

    async def test_initial_sync_has_rooms_timeline_and_state(self) -> None:
        alice = await self.register("alice")
        room = await self._room(alice, name="Lobby")
        ev = await self._send(alice, room, "hello")
        body = await self._sync(alice)
        joined = body["rooms"]["join"][room]
        self.assertEqual(joined["timeline"]["events"][-1]["event_id"], ev)
        self.assertNotIn("room_id", joined["timeline"]["events"][-1])
        types = {e["type"] for e in joined["state"]["events"]} | {e["type"] for e in joined["timeline"]["events"]}
        self.assertIn("m.room.create", types)
        self.assertIn("m.room.name", types)
        self.assertEqual(joined["summary"]["m.joined_member_count"], 1)
        self.assertIn("next_batch", body)
        for key in ("presence", "account_data", "to_device", "device_lists"):
            self.assertIn(key, body)

    async def test_incremental_sync_sees_new_messages_only(self) -> None:
        alice = await self.register("alice")
        room = await self._room(alice)
        first = await self._sync(alice)
        ev = await self._send(alice, room, "new")
        second = await self._sync(alice, first["next_batch"])
        events = second["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in events], [ev])
        self.assertFalse(second["rooms"]["join"][room]["timeline"]["limited"])
        self.assertEqual(second["rooms"]["join"][room]["state"]["events"], [])
        # the sender's own device gets its transaction ID back
        self.assertIn("transaction_id", events[0]["unsigned"])
        third = await self._sync(alice, second["next_batch"])
        self.assertEqual(third["rooms"]["join"], {})

    async def test_long_poll_wakes_on_message(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self._room(alice)
        code, _ = await self.post(f"{C}/join/{room}", {}, bob)
        self.assertEqual(code, 200)
        since = (await self._sync(bob))["next_batch"]
        start = reactor.seconds()
        d = defer.ensureDeferred(self._sync(bob, since, timeout=20000))
        await until_waiting(self.hs, 1)  # the sync is parked on the notifier
        self.assertFalse(d.called)
        ev = await self._send(alice, room, "wake up")
        body = await d
        self.assertLess(reactor.seconds() - start, 10)
        self.assertEqual(body["rooms"]["join"][room]["timeline"]["events"][-1]["event_id"], ev)

    async def test_long_poll_times_out_empty(self) -> None:
        alice = await self.register("alice")
        await self._room(alice)
        since = (await self._sync(alice))["next_batch"]
        body = await self._sync(alice, since, timeout=300)
        self.assertEqual(body["rooms"]["join"], {})
        self.assertEqual(body["next_batch"], since)

    async def test_gap_gives_limited_timeline_and_state_delta(self) -> None:
        alice = await self.register("alice")
        room = await self._room(alice)
        since = (await self._sync(alice))["next_batch"]
        code, _ = await self.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "changed in the gap"}, alice)
        self.assertEqual(code, 200)
        for i in range(15):
            await self._send(alice, room, f"m{i}")
        body = await self._sync(alice, since)
        joined = body["rooms"]["join"][room]
        self.assertTrue(joined["timeline"]["limited"])
        self.assertEqual(len(joined["timeline"]["events"]), 10)
        self.assertEqual([e["type"] for e in joined["state"]["events"]], ["m.room.topic"])
        self.assertEqual(joined["state"]["events"][0]["content"]["topic"], "changed in the gap")
        # prev_batch pages back into the gap with /messages
        code, page = await self.get(
            f"{C}/rooms/{room}/messages?dir=b&limit=5&from={joined['timeline']['prev_batch']}", alice
        )
        self.assertEqual(code, 200, page)
        self.assertEqual([e["content"]["body"] for e in page["chunk"]], ["m4", "m3", "m2", "m1", "m0"])

    async def test_invite_and_leave(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self._room(alice, preset="private_chat", name="Secret")
        since = (await self._sync(bob))["next_batch"]
        code, _ = await self.post(f"{C}/rooms/{room}/invite", {"user_id": bob.user_id}, alice)
        self.assertEqual(code, 200)
        body = await self._sync(bob, since)
        invite = body["rooms"]["invite"][room]["invite_state"]["events"]
        self.assertIn("m.room.name", {e["type"] for e in invite})
        self.assertIn(("m.room.member", bob.user_id), {(e["type"], e.get("state_key")) for e in invite})
        code, _ = await self.post(f"{C}/rooms/{room}/join", {}, bob)
        body = await self._sync(bob, body["next_batch"])
        self.assertIn(room, body["rooms"]["join"])
        code, _ = await self.post(f"{C}/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "bye"}, alice)
        self.assertEqual(code, 200)
        body = await self._sync(bob, body["next_batch"])
        left = body["rooms"]["leave"][room]
        last = left["timeline"]["events"][-1]
        self.assertEqual((last["type"], last["content"]["membership"]), ("m.room.member", "leave"))
        # after leaving, the user no longer sees the room's messages
        since = body["next_batch"]
        await self._send(alice, room, "private now")
        body = await self._sync(bob, since)
        self.assertNotIn(room, body["rooms"]["join"])
        self.assertNotIn(room, body["rooms"]["leave"])

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.get(f"{C}/sync"), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(f"{C}/sync?since=garbage", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/sync?timeout=abc", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/sync?set_presence=busy", alice), 400, "M_INVALID_PARAM")
        code, body = await self.get(f"{C}/sync?filter=%7Bnot%20json", alice)
        self.assertEqual(code, 400)
        self.assertMatrixError(await self.get(f"{C}/sync?filter=12345", alice), 404, "M_NOT_FOUND")
