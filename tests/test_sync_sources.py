"""/sync carrying everything a client sees live: ephemeral events, account data, presence,
to-device (deleted after acknowledgement), lazy-loaded members, history visibility,
tokens across a restart, and waiters freed when a client goes away."""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import defer
from twisted.web._newclient import ResponseNeverReceived

from mxserver.homeserver import Homeserver
from tests.harness import C, HomeserverTestCase, TestUser, q, until_waiting


class SyncSourcesTests(HomeserverTestCase):
    async def sync(self, user: TestUser, since: str | None = None, **params: Any) -> dict[str, Any]:
        args = dict(params)
        if since:
            args["since"] = since
        query = "&".join(f"{k}={q(str(v))}" for k, v in args.items())
        code, body = await self.get(f"{C}/sync?{query}", user)
        self.assertEqual(code, 200, body)
        return body

    async def test_typing_and_receipts_in_ephemeral(self) -> None:
        alice, bob = await self.register("alice"), await self.register("bob")
        room = await self.shared_room(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        code, _ = await self.put(f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 10000}, alice)
        self.assertEqual(code, 200)
        body = await self.sync(bob, since)
        ephemeral = body["rooms"]["join"][room]["ephemeral"]["events"]
        typing = [e for e in ephemeral if e["type"] == "m.typing"]
        self.assertEqual(typing[0]["content"]["user_ids"], [alice.user_id])
        event_id = await self.send_message(alice, room, "read me")
        since = body["next_batch"]
        code, _ = await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}, alice)
        self.assertEqual(code, 200)
        body = await self.sync(bob, since)
        receipts = [e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
        self.assertIn(alice.user_id, receipts[0]["content"][event_id]["m.read"])

    async def test_unread_count_follows_read_receipt(self) -> None:
        alice, bob = await self.register("alice"), await self.register("bob")
        room = await self.shared_room(alice, bob)
        last = ""
        for i in range(3):
            last = await self.send_message(alice, room, f"m{i}")
        body = await self.sync(bob)
        self.assertEqual(body["rooms"]["join"][room]["unread_notifications"]["notification_count"], 3)
        code, _ = await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(last)}", {}, bob)
        body = await self.sync(bob)
        self.assertEqual(body["rooms"]["join"][room]["unread_notifications"]["notification_count"], 0)

    async def test_account_data_global_and_room(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        initial = await self.sync(alice)
        self.assertIn("m.push_rules", [e["type"] for e in initial["account_data"]["events"]])
        await self.put(f"{C}/user/{q(alice.user_id)}/account_data/org.example.settings", {"theme": "dark"}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/m.favourite", {"order": 0.5}, alice)
        body = await self.sync(alice, initial["next_batch"])
        self.assertEqual(
            [e for e in body["account_data"]["events"] if e["type"] == "org.example.settings"][0]["content"],
            {"theme": "dark"},
        )
        tags = body["rooms"]["join"][room]["account_data"]["events"]
        self.assertEqual(tags[0]["content"]["tags"]["m.favourite"]["order"], 0.5)

    async def test_presence_of_room_sharers(self) -> None:
        alice, bob = await self.register("alice"), await self.register("bob")
        await self.shared_room(alice, bob)
        await self.put(f"{C}/presence/{q(alice.user_id)}/status", {"presence": "online", "status_msg": "hi"}, alice)
        body = await self.sync(bob)
        senders = {e["sender"]: e["content"] for e in body["presence"]["events"]}
        self.assertEqual(senders[alice.user_id]["status_msg"], "hi")

    async def test_to_device_delivered_then_deleted_after_ack(self) -> None:
        alice, bob = await self.register("alice"), await self.register("bob")
        since = (await self.sync(bob))["next_batch"]
        msg = {"messages": {bob.user_id: {bob.device_id: {"secret": 1}}}}
        code, _ = await self.put(f"{C}/sendToDevice/org.example.ping/txn1", msg, alice)
        self.assertEqual(code, 200)
        body = await self.sync(bob, since)
        self.assertEqual(body["to_device"]["events"], [{"type": "org.example.ping", "sender": alice.user_id, "content": {"secret": 1}}])
        # Repeating the old `since` (no acknowledgement yet) delivers it again...
        again = await self.sync(bob, since)
        self.assertEqual(len(again["to_device"]["events"]), 1)
        # ...syncing from the new token acknowledges it: it is gone from the database.
        after = await self.sync(bob, body["next_batch"])
        self.assertEqual(after["to_device"]["events"], [])
        rows = await self.hs.db.select("count", "SELECT COUNT(*) FROM device_inbox")
        self.assertEqual(rows[0][0], 0)

    async def test_lazy_loaded_members(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        others = [await self.register(f"user{i}") for i in range(4)]
        for u in others:
            await self.join(u, room)
        for _ in range(12):
            await self.send_message(alice, room, "only alice talks")
        lazy = '{"room":{"state":{"lazy_load_members":true}}}'
        body = await self.sync(others[0], filter=lazy)
        state = body["rooms"]["join"][room]["state"]["events"]
        members = {e["state_key"] for e in state if e["type"] == "m.room.member"}
        self.assertEqual(members, {alice.user_id, others[0].user_id})
        full = await self.sync(others[0])
        members = {e["state_key"] for e in full["rooms"]["join"][room]["state"]["events"] if e["type"] == "m.room.member"}
        self.assertEqual(len(members), 5)
        self.assertEqual(body["rooms"]["join"][room]["summary"]["m.joined_member_count"], 5)

    async def test_history_visibility_joined_hides_earlier_events(self) -> None:
        alice, bob = await self.register("alice"), await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.put(f"{C}/rooms/{q(room)}/state/m.room.history_visibility/", {"history_visibility": "joined"}, alice)
        await self.send_message(alice, room, "before bob")
        await self.join(bob, room)
        await self.send_message(alice, room, "after bob")
        body = await self.sync(bob)
        bodies = [e["content"].get("body") for e in body["rooms"]["join"][room]["timeline"]["events"] if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["after bob"])

    async def test_tokens_survive_a_restart(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        since = (await self.sync(alice))["next_batch"]
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.base_url = f"http://127.0.0.1:{self.hs.listening_ports[0].getHost().port}"
        event_id = await self.send_message(alice, room, "after restart")
        body = await self.sync(alice, since)
        self.assertEqual([e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]], [event_id])

    async def test_disconnect_frees_the_waiter(self) -> None:
        alice = await self.register("alice")
        await self.create_room(alice)
        since = (await self.sync(alice))["next_batch"]
        d = treq.get(
            f"{self.base_url}{C}/sync?since={since}&timeout=30000",
            headers={"Authorization": [f"Bearer {alice.access_token}"]},
            pool=self.pool,
        )
        await until_waiting(self.hs, 1)
        d.cancel()  # the client goes away mid-poll
        with self.assertRaises((defer.CancelledError, ResponseNeverReceived)):
            await d
        await until_waiting(self.hs, 0)  # the server saw the disconnect and dropped the waiter
