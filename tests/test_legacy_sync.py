"""The deprecated v1 APIs over HTTP: GET /events, /events/{eventId}, /initialSync,
/rooms/{roomId}/initialSync, and POST send/redact without a transaction ID."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer

from tests.harness import C, HomeserverTestCase, TestUser, q

R0 = "/_matrix/client/r0"


class LegacySyncTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": True, "allow_guests": True}}

    async def events(self, user: TestUser, **params: Any) -> tuple[int, Any]:
        return await self.get(f"{R0}/events?{urlencode({'timeout': 0, **params})}", user)

    async def stream_token(self, user: TestUser, **params: Any) -> str:
        code, body = await self.events(user, **params)
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body), {"chunk", "start", "end"})
        return str(body["end"])

    async def guest(self) -> TestUser:
        code, body = await self.post(f"{C}/register?kind=guest", {})
        self.assertEqual(code, 200, body)
        return TestUser(body["user_id"], body["access_token"], body["device_id"], "")

    # -- GET /events -----------------------------------------------------------------------------

    async def test_stream_returns_new_messages_in_order_and_catches_up_in_limited_pages(self) -> None:
        alice = await self.register("alice")
        room1 = await self.create_room(alice)
        room2 = await self.create_room(alice)
        token = await self.stream_token(alice)
        sent = []
        for i in range(6):
            sent.append(await self.send_message(alice, room1, f"a{i}"))
            sent.append(await self.send_message(alice, room2, f"b{i}"))
        seen: list[str] = []
        for _ in range(10):
            code, body = await self.events(alice, **{"from": token, "limit": 5})
            self.assertEqual(code, 200, body)
            self.assertLessEqual(len([e for e in body["chunk"] if "event_id" in e]), 5)
            self.assertEqual(body["start"], token)
            seen += [e["event_id"] for e in body["chunk"] if e.get("type") == "m.room.message"]
            token = body["end"]
            if not body["chunk"]:
                break
        self.assertEqual(seen, sent)
        # v1 event format: user_id beside sender
        code, body = await self.events(alice, **{"from": await self.stream_token(alice)})
        self.assertEqual(body["chunk"], [])

    async def test_stream_long_poll_wakes_on_a_message(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        token = await self.stream_token(alice)
        pending = defer.ensureDeferred(self.events(alice, **{"from": token, "timeout": 20_000}))
        event_id = await self.send_message(alice, room, "wake up")
        code, body = await pending
        self.assertEqual(code, 200, body)
        messages = [e for e in body["chunk"] if e["type"] == "m.room.message"]
        self.assertEqual([e["event_id"] for e in messages], [event_id])
        self.assertEqual(messages[0]["user_id"], alice.user_id)
        self.assertEqual(messages[0]["room_id"], room)

    async def test_stream_carries_typing_receipts_tags_and_account_data_with_room_ids(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        event_id = await self.send_message(alice, room, "read me")
        token = await self.stream_token(alice)
        await self.put(f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 10_000}, alice)
        await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/work", {"order": 1}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/account_data/my.type", {"cats": 1}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/account_data/my.type", {"rats": 1}, alice)
        code, body = await self.events(alice, **{"from": token})
        self.assertEqual(code, 200, body)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for e in body["chunk"]:
            by_type.setdefault(e["type"], []).append(e)
        self.assertEqual(
            by_type["m.typing"], [{"type": "m.typing", "room_id": room, "content": {"user_ids": [alice.user_id]}}]
        )
        self.assertEqual(by_type["m.receipt"][0]["room_id"], room)
        self.assertIn(alice.user_id, by_type["m.receipt"][0]["content"][event_id]["m.read"])
        self.assertEqual(
            by_type["m.tag"], [{"type": "m.tag", "room_id": room, "content": {"tags": {"work": {"order": 1}}}}]
        )
        self.assertIn({"type": "my.type", "content": {"cats": 1}}, by_type["my.type"])
        self.assertIn({"type": "my.type", "room_id": room, "content": {"rats": 1}}, by_type["my.type"])
        self.assertNotIn("m.push_rules", by_type)
        # and nothing again from its end
        code, again = await self.events(alice, **{"from": body["end"]})
        self.assertEqual(again["chunk"], [])

    async def test_stream_peeks_into_world_readable_rooms_only(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        open_room = await self.create_room(alice, preset="public_chat", history_visibility="world_readable")
        shared_room = await self.create_room(alice, preset="public_chat")
        code, body = await self.events(bob, room_id=shared_room)
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
        guest = await self.guest()
        code, body = await self.events(guest)
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        for reader in (bob, guest):
            token = await self.stream_token(reader, room_id=open_room)
            event_id = await self.send_message(alice, open_room, "for everyone")
            await self.send_message(alice, shared_room, "members only")
            code, body = await self.events(reader, **{"from": token, "room_id": open_room})
            self.assertEqual(code, 200, body)
            messages = [e for e in body["chunk"] if e["type"] == "m.room.message"]
            self.assertEqual([e["event_id"] for e in messages], [event_id])
            # up to date: the next call from its end is empty (no tight loop)
            code, body = await self.events(reader, **{"from": body["end"], "room_id": open_room})
            self.assertEqual([e for e in body["chunk"] if e["type"] != "m.presence"], [])

    async def test_stream_carries_own_membership_changes_in_other_rooms(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        token = await self.stream_token(bob)
        await self.invite(alice, room, bob)
        code, body = await self.events(bob, **{"from": token})
        invites = [e for e in body["chunk"] if e["type"] == "m.room.member"]
        self.assertEqual([(e["state_key"], e["content"]["membership"]) for e in invites], [(bob.user_id, "invite")])
        await self.join(bob, room)
        token = body["end"]
        await self.send_message(alice, room, "while bob is here")
        await self.leave(bob, room)
        await self.send_message(alice, room, "after bob left")
        code, body = await self.events(bob, **{"from": token})
        seen = [(e["type"], e["content"].get("membership") or e["content"].get("body")) for e in body["chunk"]]
        self.assertEqual(
            [s for s in seen if s[0] != "m.presence"],
            [("m.room.member", "join"), ("m.room.message", "while bob is here"), ("m.room.member", "leave")],
        )

    async def test_bad_parameters_are_400(self) -> None:
        alice = await self.register("alice")
        for params in ({"limit": "hello"}, {"limit": -2}, {"timeout": "hello"}, {"from": "nonsense"}):
            code, body = await self.events(alice, **params)
            self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"), params)
        code, body = await self.get(f"{C}/initialSync?limit=hello", alice)
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_get_single_event(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        event_id = await self.send_message(alice, room, "hi")
        code, body = await self.get(f"{R0}/events/{q(event_id)}", alice)
        self.assertEqual(
            (code, body["event_id"], body["user_id"], body["content"]["body"]), (200, event_id, alice.user_id, "hi")
        )
        code, body = await self.get(f"{R0}/events/{q(event_id)}", bob)
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.get(f"{R0}/events/{q('$nope')}", alice)
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))

    # -- GET /initialSync --------------------------------------------------------------------------

    async def test_initial_sync_lists_rooms_with_messages_state_account_data_receipts_presence(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        event_id = await self.send_message(alice, room, "first")
        await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/account_data/my.type", {"rats": 1}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/work", {"order": 1}, alice)
        await self.put(f"{C}/user/{q(alice.user_id)}/account_data/my.type", {"cats": 1}, alice)
        invited = await self.create_room(bob)
        await self.invite(bob, invited, alice)
        code, body = await self.get(f"{C}/initialSync?limit=2", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["account_data"], [{"type": "my.type", "content": {"cats": 1}}])
        rooms = {r["room_id"]: r for r in body["rooms"]}
        self.assertEqual(rooms[invited]["membership"], "invite")
        self.assertEqual(rooms[invited]["invite"]["state_key"], alice.user_id)
        joined = rooms[room]
        self.assertEqual((joined["membership"], joined["visibility"]), ("join", "private"))
        public = await self.create_room(alice, preset="public_chat", visibility="public")
        code, body = await self.get(f"{C}/rooms/{q(public)}/initialSync", alice)
        self.assertEqual(body["visibility"], "public")
        code, body = await self.get(f"{C}/initialSync?limit=2", alice)
        self.assertEqual([e["type"] for e in joined["account_data"]], ["m.tag", "my.type"])
        chunk = joined["messages"]["chunk"]
        self.assertEqual(len(chunk), 2)
        self.assertEqual(chunk[-1]["event_id"], event_id)
        self.assertIn(("m.room.create", ""), {(e["type"], e["state_key"]) for e in joined["state"]})
        # messages.start pages back with /messages; messages.end continues the stream
        code, older = await self.messages(alice, room, dir="b", **{"from": joined["messages"]["start"]})
        self.assertEqual(code, 200, older)
        self.assertTrue(older["chunk"])
        self.assertNotIn(older["chunk"][0]["event_id"], {e["event_id"] for e in chunk})
        code, stream = await self.events(alice, **{"from": body["end"]})
        self.assertEqual(stream["chunk"], [])
        receipt = next(r for r in body["receipts"] if r["room_id"] == room)
        self.assertIn(alice.user_id, receipt["content"][event_id]["m.read"])
        mine = next(p for p in body["presence"] if p["content"]["user_id"] == alice.user_id)
        self.assertEqual(mine["content"]["presence"], "online")
        self.assertIn("last_active_ago", mine["content"])

    async def test_initial_sync_archived_has_left_rooms_as_they_were_when_left(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob, preset="public_chat")
        await self.set_state(alice, room, "madeup.state", {"body": "before"})
        await self.send_message(alice, room, "before")
        await self.leave(bob, room)
        await self.set_state(alice, room, "madeup.state", {"body": "after"})
        await self.send_message(alice, room, "after")
        code, body = await self.get(f"{C}/initialSync", bob)
        self.assertNotIn(room, [r["room_id"] for r in body["rooms"]])
        code, body = await self.get(f"{C}/initialSync?archived=true&limit=3", bob)
        left = next(r for r in body["rooms"] if r["room_id"] == room)
        self.assertEqual(left["membership"], "leave")
        self.assertEqual(next(e for e in left["state"] if e["type"] == "madeup.state")["content"], {"body": "before"})
        self.assertEqual([e["type"] for e in left["messages"]["chunk"]][-1], "m.room.member")
        self.assertEqual(left["messages"]["chunk"][-2]["content"]["body"], "before")
        # its end is the leave: /messages forwards from there has nothing of what came after
        code, later = await self.messages(bob, room, dir="f", **{"from": left["messages"]["end"]})
        self.assertEqual(later["chunk"], [])

    # -- GET /rooms/{roomId}/initialSync ------------------------------------------------------------------

    async def test_room_initial_sync_for_members_former_members_and_peekers(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.shared_room(alice, bob, preset="public_chat")
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/work", {"order": 1}, alice)
        await self.send_message(alice, room, "before")
        code, body = await self.get(f"{C}/rooms/{q(room)}/initialSync", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["room_id"], body["membership"]), (room, "join"))
        self.assertEqual(set(body["messages"]), {"chunk", "start", "end"})
        self.assertEqual(body["messages"]["chunk"][-1]["content"]["body"], "before")
        self.assertEqual(body["account_data"], [{"type": "m.tag", "content": {"tags": {"work": {"order": 1}}}}])
        self.assertIsInstance(body["presence"], list)
        self.assertIsInstance(body["receipts"], list)
        # a non-member of a shared-history room: 403
        code, body = await self.get(f"{C}/rooms/{q(room)}/initialSync", carol)
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
        # a former member sees the room as it was when they left (SPEC-216)
        await self.leave(bob, room)
        await self.send_message(alice, room, "after")
        code, body = await self.get(f"{R0}/rooms/{q(room)}/initialSync?limit=2", bob)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["membership"], "leave")
        self.assertEqual([e["content"].get("body") for e in body["messages"]["chunk"]], ["before", None])
        self.assertEqual((body["presence"], body["receipts"]), ([], []))
        # anyone may read a world-readable room, and continue with /events from messages.end
        await self.set_state(alice, room, "m.room.history_visibility", {"history_visibility": "world_readable"})
        event_id = await self.send_message(alice, room, "public")
        code, body = await self.get(f"{C}/rooms/{q(room)}/initialSync", carol)
        self.assertEqual(code, 200, body)
        self.assertNotIn("membership", body)
        self.assertEqual(body["messages"]["chunk"][-1]["event_id"], event_id)
        code, stream = await self.events(carol, **{"from": body["messages"]["end"], "room_id": room})
        self.assertEqual([e for e in stream["chunk"] if e["type"] != "m.presence"], [])

    # -- sending without a transaction ID -------------------------------------------------------------------

    async def test_post_send_and_redact_without_txn_id(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        other = await self.create_room(alice)
        path = f"{R0}/rooms/{q(room)}/send/m.room.message"
        code, first = await self.post(path, {"msgtype": "m.text", "body": "one"}, alice)
        self.assertEqual(code, 200, first)
        code, second = await self.post(path, {"msgtype": "m.text", "body": "one"}, alice)
        self.assertNotEqual(first["event_id"], second["event_id"])  # no txn ID: two events
        code, redaction = await self.post(
            f"{C}/rooms/{q(room)}/redact/{q(first['event_id'])}", {"reason": "oops"}, alice
        )
        self.assertEqual(code, 200, redaction)
        code, event = await self.get(f"{C}/rooms/{q(room)}/event/{q(first['event_id'])}", alice)
        self.assertEqual(event["content"], {})
        # an event of another room: 400, as Synapse
        code, body = await self.post(f"{C}/rooms/{q(other)}/redact/{q(second['event_id'])}", {}, alice)
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))

    async def test_client_v3_endpoints_answer_under_r0(self) -> None:
        alice = await self.register("alice")
        code, body = await self.get(f"{R0}/account/whoami", alice)
        self.assertEqual((code, body["user_id"]), (200, alice.user_id))
        code, body = await self.get(f"{R0}/devices", alice)
        self.assertEqual(code, 200, body)
        code, body = await self.post(f"{R0}/keys/query", {"device_keys": {alice.user_id: []}}, alice)
        self.assertEqual(code, 200, body)
        # what is not an endpoint stays unknown under either prefix
        code, body = await self.get(f"{R0}/no/such/thing", alice)
        self.assertEqual((code, body["errcode"]), (404, "M_UNRECOGNIZED"))
