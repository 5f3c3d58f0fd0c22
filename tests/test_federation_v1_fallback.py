"""Older servers and the historical v1 membership endpoints, and the resident's answers to bad ones.

invites-v1.yaml / invites-v2.yaml ("Senders which receive a 400 or 404 response to this endpoint
should retry using the v1 API ... if the room version is "1" or "2""), joins-v1.yaml (the v1
send_join and its ``[200, {...}]`` answer), keys_query.yaml, transactions.yaml. The SyTest
counterparts are named on each test.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from mxserver.events.model import Event
from mxserver.events.signing import add_event_signature
from mxserver.events.versions import get_room_version
from tests.harness import C, FakeRemote, FakeRoom, InboundTestCase
from tests.test_federation_send import pdu, q

F1 = "/_matrix/federation/v1"


class OldRemote(FakeRemote):
    """A remote that predates the v2 membership endpoints: /v2/* answers 404 M_UNRECOGNIZED; it
    serves make_join and the v1 send_join and invite (answers wrapped in ``[200, ...]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse.add("/_matrix/federation/v2/")

    def _answer(self, request: Any, path: str, args: dict[str, list[str]], content: bytes) -> tuple[int, Any]:
        segments = [unquote(s) for s in path.split("/")]
        if path.startswith(F1 + "/make_join/"):
            room = self.rooms[segments[5]]
            user = segments[6]
            template = room.build("m.room.member", {"membership": "join"}, user, user).get_pdu_json()
            for key in ("signatures", "hashes", "unsigned"):
                template.pop(key, None)
            return 200, {"room_version": room.rv.identifier, "event": template}
        if path.startswith(F1 + "/send_join/") and request.method == b"PUT":
            room = self.rooms[segments[5]]
            join = Event(json.loads(content), room.rv)
            state = list(room.state.values())
            chain = room.auth_chain(state)
            room.add_event(join)
            return 200, [200, {
                "state": [room.events[e].get_pdu_json() for e in state],
                "auth_chain": [room.events[e].get_pdu_json() for e in chain],
            }]
        if path.startswith(F1 + "/invite/") and request.method == b"PUT":
            event = json.loads(content)
            rv = get_room_version("2")
            assert rv is not None
            return 200, [200, {"event": add_event_signature(event, rv, self.server_name, self.signing_key)}]
        return super()._answer(request, path, args, content)


class OutboundV1FallbackTests(InboundTestCase):
    def new_remote(self, key_version: str = "r1") -> FakeRemote:
        remote = OldRemote()
        remote.listen(self, self.cert)
        return remote

    def asked(self, prefix: str) -> int:
        return self.remote.count(prefix)

    async def test_join_through_v1_send_join(self) -> None:
        """SyTest "Outbound federation can query v1 /send_join"."""
        room: FakeRoom = self.remote.new_room(version="10")
        room.messages(2)
        code, body = await self.post(
            f"{C}/join/{q(room.room_id)}?server_name={q(self.remote.server_name)}", {}, self.alice
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(self.asked("/_matrix/federation/v2/send_join/"), 1)  # tried first
        self.assertEqual(self.asked(F1 + "/send_join/"), 1)
        code, members = await self.get(f"{C}/rooms/{q(room.room_id)}/joined_members", self.alice)
        self.assertEqual(code, 200, members)
        self.assertEqual(set(members["joined"]), {self.alice.user_id, room.creator})

    async def test_invite_through_v1_in_a_v2_room(self) -> None:
        """SyTest "Outbound federation can send invites via v1 API"."""
        room_id = await self.create_room(self.alice, {"preset": "private_chat", "room_version": "2"})
        carol = self.remote.user("carol")
        code, body = await self.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": carol}, self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(self.asked("/_matrix/federation/v2/invite/"), 1)
        self.assertEqual(self.asked(F1 + "/invite/"), 1)
        invite = await self.hs.room_server.current_state_event(room_id, "m.room.member", carol)
        assert invite is not None
        self.assertEqual(invite.membership, "invite")
        self.assertIn(self.remote.server_name, invite.signatures)  # co-signed over v1

    async def test_no_v1_invite_for_later_room_versions(self) -> None:
        """invites-v2.yaml: the v1 retry is only for rooms of version 1 or 2 (v1 cannot say which)."""
        room_id = await self.create_room(self.alice, {"preset": "private_chat", "room_version": "10"})
        code, body = await self.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": self.remote.user("carol")}, self.alice)
        self.assertNotEqual(code, 200, body)
        self.assertEqual(self.asked(F1 + "/invite/"), 0)

    async def test_incompatible_room_version_reaches_the_client(self) -> None:
        """SyTest "Outbound federation correctly handles unsupported room versions": the remote's
        M_INCOMPATIBLE_ROOM_VERSION and its room_version reach the joining client."""
        room_id = "!unknown:" + self.remote.server_name
        self.remote.routes[f"{F1}/make_join/{q(room_id)}/{q(self.alice.user_id)}".encode()] = (
            400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "upgrade", "room_version": "future-ver"},
        )
        code, body = await self.post(
            f"{C}/join/{q(room_id)}?server_name={q(self.remote.server_name)}", {}, self.alice
        )
        self.assertEqual((code, body.get("errcode"), body.get("room_version")), (400, "M_INCOMPATIBLE_ROOM_VERSION", "future-ver"))


class InboundV1AndErrorsTests(InboundTestCase):
    async def v1_invite(self, room: FakeRoom, invite: Event, body: Any = None) -> tuple[int, Any]:
        return await self.fed("PUT", f"{F1}/invite/{q(room.room_id)}/{q(invite.event_id)}",
                              invite.get_pdu_json() if body is None else body)

    async def test_v1_invite(self) -> None:
        """SyTest "Inbound federation rejects invites which are not signed by the sender" and
        "Inbound federation can receive invites via v1 API"."""
        room = self.remote.new_room(version="1")
        invite = room.build("m.room.member", {"membership": "invite"}, self.alice.user_id)
        unsigned = {**invite.get_pdu_json(), "signatures": {}}
        code, body = await self.v1_invite(room, invite, unsigned)
        self.assertEqual((code, body.get("errcode")), (403, "M_FORBIDDEN"), body)
        code, body = await self.v1_invite(room, invite)
        self.assertEqual(code, 200, body)
        self.assertEqual(body[0], 200)  # the historical wrapper
        self.assertEqual(set(body[1]["event"]["signatures"]), {self.remote.server_name, self.hs.server_name})
        sync = await self.sync(self.alice)
        self.assertIn(room.room_id, sync["rooms"]["invite"])

    async def test_float_in_a_v6_invite_or_join_is_bad_json(self) -> None:
        """SyTest "Inbound federation rejects invites which include invalid JSON for room version 6"
        and "Inbound: send_join rejects invalid JSON for room version 6"."""
        room = self.remote.new_room(version="6")
        invite = room.build("m.room.member", {"membership": "invite"}, self.alice.user_id).get_pdu_json()
        invite["content"]["bad_val"] = 1.1
        code, body = await self.fed("PUT", f"/_matrix/federation/v2/invite/{q(room.room_id)}/{q('$x')}",
                                    {"room_version": "6", "event": invite, "invite_room_state": []})
        self.assertEqual((code, body.get("errcode")), (400, "M_BAD_JSON"), body)
        room_id = await self.room(version="6")
        bob = self.remote.user("bob")
        join = (await self.remote_event(room_id, "m.room.member", {"membership": "join"}, sender=bob,
                                        state_key=bob)).get_pdu_json()
        join["content"]["bad_val"] = 1.1
        code, body = await self.fed("PUT", f"/_matrix/federation/v2/send_join/{q(room_id)}/{q('$x')}", join)
        self.assertEqual((code, body.get("errcode")), (400, "M_BAD_JSON"), body)

    async def test_send_leave_of_another_servers_user_is_forbidden(self) -> None:
        """SyTest "Inbound /v1/send_leave rejects leaves from other servers"."""
        room_id = await self.room(version="10")
        other = self.new_remote("r2")
        await self.join_remote_user(room_id, remote=other)
        carol = other.user("bob")
        leave = await self.remote_event(room_id, "m.room.member", {"membership": "leave"}, sender=carol,
                                        state_key=carol, remote=other)
        code, body = await self.fed("PUT", f"{F1}/send_leave/{q(room_id)}/{q(leave.event_id)}", pdu(leave))
        self.assertEqual((code, body.get("errcode")), (403, "M_FORBIDDEN"), body)

    async def test_acl_denied_invite_and_empty_get_missing_events(self) -> None:
        """SyTest "Banned servers cannot /invite" (the ACL is checked before the invitee is looked
        up) and "Banned servers cannot get missing events" (asking for nothing is answered)."""
        room_id = await self.room(version="10")
        await self.join_remote_user(room_id)
        code, body = await self.fed("POST", f"{F1}/get_missing_events/{q(room_id)}", {})
        self.assertEqual((code, body), (200, {"events": []}))
        host = self.remote.server_name.split(":")[0]
        code, body = await self.put(f"{C}/rooms/{q(room_id)}/state/m.room.server_acl/",
                                    {"allow": ["*"], "deny": [host]}, self.alice)
        self.assertEqual(code, 200, body)
        code, body = await self.fed("POST", f"{F1}/get_missing_events/{q(room_id)}", {})
        self.assertEqual((code, body.get("errcode")), (403, "M_FORBIDDEN"), body)
        invite = await self.remote_event(room_id, "m.room.member", {"membership": "invite"},
                                         state_key="@nobody:" + self.hs.server_name)
        code, body = await self.fed("PUT", f"/_matrix/federation/v2/invite/{q(room_id)}/{q(invite.event_id)}",
                                    {"room_version": "10", "event": pdu(invite), "invite_room_state": []})
        self.assertEqual((code, body.get("errcode")), (403, "M_FORBIDDEN"), body)


class InboundRedactionTests(InboundTestCase):
    """rooms/v3 "Handling redactions": accepted by the auth rules, applied only when allowed."""

    async def content_of(self, room_id: str, event_id: str) -> dict[str, Any]:
        code, body = await self.get(f"{C}/rooms/{q(room_id)}/event/{q(event_id)}", self.alice)
        self.assertEqual(code, 200, body)
        content: dict[str, Any] = body["content"]
        return content

    async def test_remote_user_without_power_cannot_redact_others(self) -> None:
        """SyTest "Inbound federation ignores redactions from invalid servers room > v3"."""
        room_id = await self.room(version="10")
        await self.join_remote_user(room_id)
        msg = await self.local_message(room_id, "Hello")
        bad = await self.remote_event(room_id, "m.room.redaction", {}, redacts=msg.event_id)
        code, body = await self.send_txn("r1", [pdu(bad)])
        self.assertEqual(body, {"pdus": {bad.event_id: {}}})  # accepted by the auth rules ...
        self.assertEqual((await self.content_of(room_id, msg.event_id)).get("body"), "Hello")  # ... not applied
        # the remote user's own message: the same server, so it is applied
        own = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "mine"})
        await self.send_txn("r2", [pdu(own)])
        good = await self.remote_event(room_id, "m.room.redaction", {}, redacts=own.event_id)
        await self.send_txn("r3", [pdu(good)])
        self.assertEqual(await self.content_of(room_id, own.event_id), {})

    async def test_redaction_of_an_event_of_another_room_is_ignored(self) -> None:
        """SyTest "An event which redacts an event in a different room should be ignored"."""
        room1 = await self.room(version="10")
        room2 = await self.room(version="10")
        await self.join_remote_user(room1)
        await self.join_remote_user(room2)
        own = await self.remote_event(room1, "m.room.message", {"msgtype": "m.text", "body": "mine"})
        await self.send_txn("r1", [pdu(own)])
        cross = await self.remote_event(room2, "m.room.redaction", {}, redacts=own.event_id)
        code, body = await self.send_txn("r2", [pdu(cross)])
        self.assertEqual(body, {"pdus": {cross.event_id: {}}})
        self.assertEqual((await self.content_of(room1, own.event_id)).get("body"), "mine")
        # never shown to clients: it cannot be validated with its target (soft-failed)
        sentinel = await self.remote_event(room2, "m.room.message", {"msgtype": "m.text", "body": "sentinel"})
        await self.send_txn("r3", [pdu(sentinel)])
        ids = [e["event_id"] for e in await self.room_events(self.alice, room2)]
        self.assertIn(sentinel.event_id, ids)
        self.assertNotIn(cross.event_id, ids)


class FloatRemote(FakeRemote):
    """A remote that co-signs invites after adding a float to the event (not JSON of a v6+ room)."""

    def _answer(self, request: Any, path: str, args: dict[str, list[str]], content: bytes) -> tuple[int, Any]:
        if path.startswith("/_matrix/federation/v2/invite/") and request.method == b"PUT":
            body = json.loads(content)
            event = {**body["event"], "bad_val": 1.1}
            rv = get_room_version(body["room_version"])
            assert rv is not None
            return 200, {"event": add_event_signature(event, rv, self.server_name, self.signing_key)}
        return super()._answer(request, path, args, content)


class InviteAnswerTests(InboundTestCase):
    def new_remote(self, key_version: str = "r1") -> FakeRemote:
        remote = FloatRemote()
        remote.listen(self, self.cert)
        return remote

    async def test_invite_answer_with_a_float_is_bad_json(self) -> None:
        """SyTest "Outbound federation rejects invite response which include invalid JSON for room
        version 6": 400 M_BAD_JSON (as Synapse), and no invite in the room."""
        room_id = await self.create_room(self.alice, {"preset": "private_chat", "room_version": "6"})
        carol = self.remote.user("carol")
        code, body = await self.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": carol}, self.alice)
        self.assertEqual((code, body.get("errcode")), (400, "M_BAD_JSON"), body)
        self.assertIsNone(await self.hs.room_server.current_state_event(room_id, "m.room.member", carol))
