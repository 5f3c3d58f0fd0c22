"""Sliding sync extensions: to-device, E2EE, account data, receipts, typing (and their scoping)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.harness import C, TestUser, until_waiting
from tests.test_keys import KeysTestCase
from tests.test_sliding_sync import SlidingSyncCase, a_list

TO_DEVICE = {"to_device": {"enabled": True}}


class ToDeviceExtensionTests(SlidingSyncCase):
    async def send_to_device(self, sender: TestUser, target: TestUser, n: int, txn: str) -> None:
        messages = {target.user_id: {target.device_id: {"n": n}}}
        code, body = await self.put(f"{C}/sendToDevice/org.example.msg/{txn}", {"messages": messages}, sender)
        self.assertEqual(code, 200, body)

    async def test_messages_acknowledged_by_since_are_deleted(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        for i in range(3):
            await self.send_to_device(bob, alice, i, f"t{i}")
        resp = await self.ss(alice, {"extensions": {"to_device": {"enabled": True, "limit": 2}}})
        ext = resp["extensions"]["to_device"]
        self.assertEqual([e["content"]["n"] for e in ext["events"]], [0, 1])
        self.assertEqual(ext["events"][0]["sender"], bob.user_id)
        # The same since again (a retry) gives the same batch: nothing is deleted before it is acknowledged.
        retry = await self.ss(alice, {"extensions": {"to_device": {"enabled": True, "limit": 2}}}, pos=resp["pos"])
        self.assertEqual(len(retry["extensions"]["to_device"]["events"]), 2)
        first_batch = ext["next_batch"]
        resp = await self.ss(
            alice, {"extensions": {"to_device": {"enabled": True, "since": first_batch}}}, pos=resp["pos"]
        )
        ext = resp["extensions"]["to_device"]
        self.assertEqual([e["content"]["n"] for e in ext["events"]], [2])
        resp = await self.ss(
            alice, {"extensions": {"to_device": {"enabled": True, "since": ext["next_batch"]}}}, pos=resp["pos"]
        )
        self.assertEqual(resp["extensions"]["to_device"]["events"], [])
        # Acknowledged means deleted: a new connection from the start does not get them again.
        fresh = await self.ss(alice, {"conn_id": "new", "extensions": TO_DEVICE})
        self.assertEqual(fresh["extensions"]["to_device"]["events"], [])

    async def test_a_to_device_message_ends_a_long_poll(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        resp = await self.ss(alice, {"extensions": TO_DEVICE})
        since = resp["extensions"]["to_device"]["next_batch"]
        body = {"extensions": {"to_device": {"enabled": True, "since": since}}}
        waiting = ensureDeferred(self.ss(alice, body, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        await self.send_to_device(bob, alice, 7, "wake")
        resp = await waiting
        self.assertEqual([e["content"]["n"] for e in resp["extensions"]["to_device"]["events"]], [7])

    async def test_disabled_or_absent_extensions_are_not_in_the_response(self) -> None:
        alice = await self.register("alice")
        resp = await self.ss(
            alice, {"extensions": {"to_device": {"enabled": False}, "typing": {}, "receipts": {"enabled": False}}}
        )
        self.assertEqual(resp["extensions"], {})


class E2eeExtensionTests(SlidingSyncCase, KeysTestCase):
    async def test_key_counts_and_device_list_changes(self) -> None:
        alice = await self.new_device("alice", upload=False)
        bob = await self.new_device("bob")
        code, room = await self.post(f"{C}/createRoom", {"preset": "public_chat"}, alice.user)
        self.assertEqual(code, 200, room)
        await self.join(bob.user, room["room_id"])
        body = {"extensions": {"e2ee": {"enabled": True}}}
        resp = await self.ss(bob.user, body)
        e2ee = resp["extensions"]["e2ee"]
        self.assertEqual(e2ee["device_one_time_keys_count"], {"signed_curve25519": 0})
        self.assertEqual(e2ee["device_unused_fallback_key_types"], [])
        self.assertNotIn("device_lists", e2ee)  # only on an incremental request, as Synapse
        code, up = await self.upload(bob, one_time_keys=bob.one_time_keys(3), fallback_keys=bob.fallback_keys())
        self.assertEqual(code, 200, up)
        # Alice's keys change: a long-polling Bob hears it.
        waiting = ensureDeferred(self.ss(bob.user, body, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        code, up = await self.upload(alice, device_keys=alice.device_keys())
        self.assertEqual(code, 200, up)
        resp = await waiting
        e2ee = resp["extensions"]["e2ee"]
        self.assertEqual(e2ee["device_lists"], {"changed": [alice.user_id], "left": []})
        self.assertEqual(e2ee["device_one_time_keys_count"], {"signed_curve25519": 3})
        self.assertEqual(e2ee["device_unused_fallback_key_types"], ["signed_curve25519"])
        # Key counts alone do not end a long-poll; nothing new is an empty change list.
        resp = await self.ss(bob.user, body, pos=resp["pos"], timeout=50)
        self.assertEqual(resp["extensions"]["e2ee"]["device_lists"], {"changed": [], "left": []})
        # Alice leaves the only room they share: she is "left".
        await self.leave(alice.user, room["room_id"])
        resp = await self.ss(bob.user, body, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["e2ee"]["device_lists"]["left"], [alice.user_id])


class AccountDataExtensionTests(SlidingSyncCase):
    async def put_data(self, user: TestUser, data_type: str, content: dict[str, Any], room: str | None = None) -> None:
        where = f"rooms/{room}/account_data" if room else "account_data"
        code, body = await self.put(f"{C}/user/{user.user_id}/{where}/{data_type}", content, user)
        self.assertEqual(code, 200, body)

    async def test_global_and_room_account_data(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 2)
        await self.put_data(alice, "org.example.global", {"v": 1})
        await self.put_data(alice, "org.example.room", {"v": "a"}, rooms[0])
        await self.put_data(alice, "org.example.room", {"v": "b"}, rooms[1])
        body = {
            "lists": {"top": a_list(0, 0)},
            "extensions": {"account_data": {"enabled": True}},
        }
        resp = await self.ss(alice, body)
        ext = resp["extensions"]["account_data"]
        global_types = {e["type"] for e in ext["global"]}
        self.assertIn("org.example.global", global_types)
        self.assertIn("m.push_rules", global_types)
        # Only the rooms of the response's lists and subscriptions.
        self.assertEqual(list(ext["rooms"]), [rooms[1]])
        self.assertEqual(ext["rooms"][rooms[1]], [{"type": "org.example.room", "content": {"v": "b"}}])
        # Incremental: only what changed.
        await self.put_data(alice, "org.example.global", {"v": 2})
        resp = await self.ss(alice, body, pos=resp["pos"])
        ext = resp["extensions"]["account_data"]
        self.assertEqual(ext["global"], [{"type": "org.example.global", "content": {"v": 2}}])
        self.assertEqual(ext["rooms"], {})
        # A change in a room out of scope comes when the room is in scope.
        await self.put_data(alice, "org.example.room", {"v": "a2"}, rooms[0])
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["account_data"]["rooms"], {})
        resp = await self.ss(alice, {**body, "lists": {"top": a_list(0, 1)}}, pos=resp["pos"])
        self.assertEqual(
            resp["extensions"]["account_data"]["rooms"],
            {rooms[0]: [{"type": "org.example.room", "content": {"v": "a2"}}]},
        )

    async def test_scoping_by_lists_and_rooms(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        for room in rooms:
            await self.put_data(alice, "org.example.room", {"room": room}, room)
        lists = {"one": a_list(0, 0), "two": a_list(1, 1)}
        subs = {rooms[0]: {"timeline_limit": 0, "required_state": []}}
        cases = [
            ({"lists": ["two"], "rooms": []}, {rooms[1]}),
            ({"lists": [], "rooms": [rooms[0]]}, {rooms[0]}),
            ({"lists": [], "rooms": ["!notsubscribed:test"]}, set()),
            ({}, set(rooms)),
        ]
        for i, (scope, expected) in enumerate(cases):
            resp = await self.ss(
                alice,
                {
                    "conn_id": f"c{i}",
                    "lists": lists,
                    "room_subscriptions": subs,
                    "extensions": {"account_data": {"enabled": True, **scope}},
                },
            )
            self.assertEqual(set(resp["extensions"]["account_data"]["rooms"]), expected, scope)


class ReceiptsAndTypingExtensionTests(SlidingSyncCase):
    async def test_receipts(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.shared_room(alice, bob)
        await self.invite_and_join(alice, room, carol)
        old = await self.send_message(alice, room, "old")
        new = await self.send_message(alice, room, "new")
        for user, event in ((carol, old), (bob, new), (alice, new)):
            code, body = await self.post(f"{C}/rooms/{room}/receipt/m.read/{event}", {}, user)
            self.assertEqual(code, 200, body)
        body = {"lists": {"all": a_list(limit=1)}, "extensions": {"receipts": {"enabled": True}}}
        resp = await self.ss(alice, body)
        content = resp["extensions"]["receipts"]["rooms"][room]["content"]
        # A room new to the client: the receipts of its timeline (the last event) and its own.
        self.assertEqual(set(content), {new})
        self.assertEqual(set(content[new]["m.read"]), {bob.user_id, alice.user_id})
        # Incremental: new receipts only.
        code, r = await self.post(f"{C}/rooms/{room}/receipt/m.read/{new}", {}, carol)
        self.assertEqual(code, 200, r)
        resp = await self.ss(alice, body, pos=resp["pos"])
        receipts = resp["extensions"]["receipts"]["rooms"]
        self.assertEqual(receipts[room]["type"], "m.receipt")
        self.assertEqual(receipts[room]["content"], {new: {"m.read": {carol.user_id: receipts[room]["content"][new]["m.read"][carol.user_id]}}})
        # Out of scope, then back: what was missed.
        resp = await self.ss(alice, {**body, "extensions": {"receipts": {"enabled": True, "lists": [], "rooms": []}}}, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["receipts"]["rooms"], {})
        newest = await self.send_message(bob, room, "newest")
        code, r = await self.post(f"{C}/rooms/{room}/receipt/m.read/{newest}", {}, carol)
        self.assertEqual(code, 200, r)
        resp = await self.ss(alice, {**body, "extensions": {"receipts": {"enabled": True, "lists": [], "rooms": []}}}, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["receipts"]["rooms"], {})
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertIn(carol.user_id, resp["extensions"]["receipts"]["rooms"][room]["content"][newest]["m.read"])

    async def test_private_receipts_are_only_the_users_own(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        event = await self.send_message(alice, room, "x")
        code, r = await self.post(f"{C}/rooms/{room}/receipt/m.read.private/{event}", {}, bob)
        self.assertEqual(code, 200, r)
        body = {"lists": {"all": a_list()}, "extensions": {"receipts": {"enabled": True}}}
        resp = await self.ss(alice, body)
        self.assertNotIn(room, resp["extensions"]["receipts"]["rooms"])
        resp = await self.ss(bob, body)
        self.assertIn(bob.user_id, resp["extensions"]["receipts"]["rooms"][room]["content"][event]["m.read.private"])

    async def test_typing(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        other = await self.shared_room(alice, bob)
        body = {
            "lists": {"all": a_list(0, 9, limit=0)},
            "room_subscriptions": {},
            "extensions": {"typing": {"enabled": True, "lists": ["all"]}},
        }
        resp = await self.ss(alice, body)
        waiting = ensureDeferred(self.ss(alice, body, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        code, r = await self.put(f"{C}/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000}, bob)
        self.assertEqual(code, 200, r)
        resp = await waiting
        self.assertEqual(
            resp["extensions"]["typing"]["rooms"], {room: {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}}
        )
        code, r = await self.put(f"{C}/rooms/{room}/typing/{bob.user_id}", {"typing": False}, bob)
        self.assertEqual(code, 200, r)
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["typing"]["rooms"][room]["content"]["user_ids"], [])
        # Scoped to rooms the response does not hold: nothing.
        code, r = await self.put(f"{C}/rooms/{other}/typing/{bob.user_id}", {"typing": True, "timeout": 30000}, bob)
        self.assertEqual(code, 200, r)
        scoped = {**body, "extensions": {"typing": {"enabled": True, "lists": [], "rooms": ["!elsewhere:test"]}}}
        resp = await self.ss(alice, scoped, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["typing"]["rooms"], {})
        # A subscription is in scope through "rooms". (Typing is not remembered per room, as in
        # Synapse: a room coming into scope gets typing changes from then on.)
        scoped["room_subscriptions"] = {other: {"timeline_limit": 0, "required_state": []}}
        scoped["extensions"] = {"typing": {"enabled": True, "lists": [], "rooms": [other]}}
        for typing in (False, True):
            code, r = await self.put(f"{C}/rooms/{other}/typing/{bob.user_id}", {"typing": typing, "timeout": 30000}, bob)
            self.assertEqual(code, 200, r)
        resp = await self.ss(alice, scoped, pos=resp["pos"])
        self.assertEqual(resp["extensions"]["typing"]["rooms"][other]["content"]["user_ids"], [bob.user_id])
