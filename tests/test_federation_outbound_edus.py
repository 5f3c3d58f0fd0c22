"""Outbound EDUs from local activity: typing, receipts, presence, send-to-device (fake transport)."""

from __future__ import annotations

from typing import Any

from mxserver.rooms.room_server import EventSpec
from mxserver.streams import PresenceChange, ReceiptChange, ToDeviceSent, TypingChange
from tests.harness import C, q
from tests.test_federation_sender import R1, R2, SenderTestCase, settle


class OutboundEduTests(SenderTestCase):
    def edus(self, destination: str, edu_type: str) -> list[dict[str, Any]]:
        return [
            e["content"]
            for c in self.transport.to(destination)
            for e in c.body.get("edus", [])
            if e["edu_type"] == edu_type
        ]

    async def test_typing_start_refresh_and_expiry(self) -> None:
        self.transport.auto.update({R1, R2})
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        path = f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}"
        code, body = await self.put(path, {"typing": True, "timeout": 10_000}, alice)
        self.assertEqual(code, 200, body)
        want = {"room_id": room, "user_id": alice.user_id, "typing": True}
        await self.until(lambda: self.edus(R1, "m.typing") == [want], "typing")
        self.assertEqual(self.edus(R2, "m.typing"), [])  # R2 is not in the room
        # a refresh is sent again (other servers expire typing themselves)
        await self.put(path, {"typing": True, "timeout": 10_000}, alice)
        await self.until(lambda: len(self.edus(R1, "m.typing")) == 2, "refresh")
        # the timeout passes: the stop is announced
        self.clock.advance(11)
        await self.until(lambda: len(self.edus(R1, "m.typing")) == 3, "expiry")
        self.assertEqual(self.edus(R1, "m.typing")[-1], {**want, "typing": False})

    async def test_public_receipts_only(self) -> None:
        self.transport.auto.add(R1)
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        event_id = await self.say(alice, room, "read me")
        code, body = await self.post(f"{C}/rooms/{q(room)}/receipt/m.read.private/{q(event_id)}", {}, alice)
        self.assertEqual(code, 200, body)
        code, body = await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}, alice)
        self.assertEqual(code, 200, body)
        await self.until(lambda: len(self.edus(R1, "m.receipt")) == 1, "receipt")
        await settle()
        (content,) = self.edus(R1, "m.receipt")
        self.assertEqual(list(content), [room])
        self.assertEqual(list(content[room]), ["m.read"])
        receipt = content[room]["m.read"][alice.user_id]
        self.assertEqual(receipt["event_ids"], [event_id])
        self.assertIsInstance(receipt["data"]["ts"], int)

    async def test_presence_to_servers_sharing_a_room_merged(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.room_with(alice, R1)
        await self.join(bob, room)
        await self.room_with(bob, R2)
        # Hold R1 so both presence changes land in one transaction.
        self.sender.send_edu(R1, "x.block", {})
        await self.until(lambda: len(self.transport.pending(R1)) == 1)
        self.transport.auto.add(R2)
        for user, status in ((alice, "lunch"), (bob, "busy")):
            code, body = await self.put(f"{C}/presence/{q(user.user_id)}/status", {"presence": "online", "status_msg": status}, user)
            self.assertEqual(code, 200, body)
        await self.until(lambda: self.edus(R2, "m.presence"), "presence at R2")
        # R2 shares a room with bob only
        self.assertEqual([p["user_id"] for e in self.edus(R2, "m.presence") for p in e["push"]], [bob.user_id])
        self.answer(self.transport.pending(R1)[0])
        await self.until(lambda: self.edus(R1, "m.presence"), "presence at R1")
        (merged,) = self.edus(R1, "m.presence")
        pushes = {p["user_id"]: p for p in merged["push"]}
        self.assertEqual(set(pushes), {alice.user_id, bob.user_id})
        self.assertEqual(pushes[alice.user_id]["presence"], "online")
        self.assertEqual(pushes[alice.user_id]["status_msg"], "lunch")
        self.assertIn("last_active_ago", pushes[alice.user_id])

    async def test_new_joins_exchange_presence(self) -> None:
        """SyTest "New federated private chats get full presence information (SYN-115)": a
        remote user's join gets its server the presence of our users in the room; our user's
        join sends theirs to the room's other servers. Users never seen since start are not sent."""
        self.transport.auto.update({R1, R2})
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        code, body = await self.put(f"{C}/presence/{q(alice.user_id)}/status", {"presence": "online", "status_msg": "hi"}, alice)
        self.assertEqual(code, 200, body)
        room = await self.room_with(alice)
        await self.join(carol, room)  # carol's presence is unknown: never sent
        await self.room_servers_joined(room, R1)
        await self.until(lambda: self.edus(R1, "m.presence"), "presence at R1")
        pushes = [p for e in self.edus(R1, "m.presence") for p in e["push"]]
        self.assertEqual([(p["user_id"], p["presence"], p.get("status_msg")) for p in pushes],
                         [(alice.user_id, "online", "hi")])
        # bob's presence is known; his join sends it to R1 (R2 is not in the room)
        await self.put(f"{C}/presence/{q(bob.user_id)}/status", {"presence": "unavailable"}, bob)
        await self.join(bob, room)
        await self.until(lambda: any(p["user_id"] == bob.user_id for e in self.edus(R1, "m.presence")
                                     for p in e["push"]), "bob's presence at R1")
        await settle()
        self.assertEqual(self.edus(R2, "m.presence"), [])

    async def room_servers_joined(self, room: str, server: str) -> None:
        uid = f"@u:{server}"
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, uid, uid))

    async def test_to_device_grouped_per_server_and_deduplicated(self) -> None:
        self.transport.auto.update({R1, R2})
        alice = await self.register("alice")
        bob = await self.register("bob")
        messages = {
            f"@x:{R1}": {"DEV1": {"k": 1}},
            f"@y:{R1}": {"*": {"k": 2}},
            f"@z:{R2}": {"D": {"k": 3}},
            bob.user_id: {bob.device_id: {"k": 4}},
        }
        path = f"{C}/sendToDevice/m.room_key_request/txn1"
        code, body = await self.put(path, {"messages": messages}, alice)
        self.assertEqual(code, 200, body)
        await self.until(lambda: self.edus(R1, "m.direct_to_device") and self.edus(R2, "m.direct_to_device"), "to-device")
        (r1,) = self.edus(R1, "m.direct_to_device")
        (r2,) = self.edus(R2, "m.direct_to_device")
        self.assertEqual(r1["messages"], {f"@x:{R1}": {"DEV1": {"k": 1}}, f"@y:{R1}": {"*": {"k": 2}}})
        self.assertEqual(r2["messages"], {f"@z:{R2}": {"D": {"k": 3}}})
        for edu in (r1, r2):
            self.assertEqual((edu["sender"], edu["type"]), (alice.user_id, "m.room_key_request"))
            self.assertLessEqual(len(edu["message_id"]), 32)
        self.assertNotEqual(r1["message_id"], r2["message_id"])
        # the client retransmits: nothing new goes out
        code, body = await self.put(path, {"messages": messages}, alice)
        self.assertEqual(code, 200, body)
        await settle(3)
        self.assertEqual(len(self.edus(R1, "m.direct_to_device")), 1)
        # the local recipient got its message as before
        sync = await self.get(f"{C}/sync", bob)
        self.assertEqual([m["content"] for m in sync[1]["to_device"]["events"]], [{"k": 4}])

    async def test_changes_published_on_the_ephemeral_streams(self) -> None:
        """The sender's EDUs follow the change records the ephemeral writers publish."""
        self.transport.auto.update({R1, R2})
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        streams = self.hs.ephemeral_streams
        streams.typing.publish(TypingChange(room, frozenset({alice.user_id})))
        streams.receipts.publish(ReceiptChange(room, "m.read", alice.user_id, "$e", None, 5))
        streams.presence.publish(PresenceChange(alice.user_id, {"presence": "online"}))
        streams.to_device.publish(ToDeviceSent(alice.user_id, "DEV", "m.x", "t1", {f"@z:{R2}": {"D": {"k": 1}}}))
        await self.until(
            lambda: all(self.edus(R1, t) for t in ("m.typing", "m.receipt", "m.presence"))
            and self.edus(R2, "m.direct_to_device"),
            "EDUs",
        )
        self.assertEqual(self.edus(R1, "m.typing"), [{"room_id": room, "user_id": alice.user_id, "typing": True}])
        self.assertEqual(self.edus(R1, "m.receipt")[0][room]["m.read"][alice.user_id]["event_ids"], ["$e"])
        self.assertEqual([p["user_id"] for p in self.edus(R1, "m.presence")[0]["push"]], [alice.user_id])
        self.assertEqual(self.edus(R2, "m.direct_to_device")[0]["messages"], {f"@z:{R2}": {"D": {"k": 1}}})
