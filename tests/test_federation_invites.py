"""Invites across servers, knocks through another server, and the resident side's bad-input answers.

server-server-api §Inviting to a room, §Knocking upon a room, §Leaving Rooms
(Rejecting Invites), joins-v1/v2.yaml, knocks.yaml, invites-v2.yaml.
"""

from __future__ import annotations

from typing import Any

from mxserver.crypto.keys import generate_signing_key
from mxserver.events.builder import build_event
from mxserver.federation.remote_rooms import q
from tests.harness import C, TestServer, TestUser, TwoServerTestCase
from tests.test_federation_joins import F1, F2, FederationTestMixin


class InviteTests(FederationTestMixin, TwoServerTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")

    async def invite(self, server: TestServer, user: TestUser, room_id: str, target: str) -> tuple[int, Any]:
        return await server.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": target}, user)

    async def membership_on(self, server: TestServer, room_id: str, user_id: str) -> str | None:
        if await server.hs.room_server.get_room(room_id) is None:
            return None
        return await server.hs.room_server.membership(room_id, user_id)

    async def test_invite_then_accept(self) -> None:
        for version in ("1", "12"):
            room_id = await self.a.create_room(self.alice, {"preset": "private_chat", "room_version": version, "name": "secret"})
            code, body = await self.invite(self.a, self.alice, room_id, self.bob.user_id)
            self.assertEqual(code, 200, body)
            self.assertEqual(await self.membership_on(self.a, room_id, self.bob.user_id), "invite")
            # B stored the invite with both signatures and shows it in /sync with the room's state
            sync = await self.b.sync(self.bob)
            invite = sync["rooms"]["invite"][room_id]["invite_state"]["events"]
            by_type = {e["type"]: e for e in invite}
            self.assertEqual(by_type["m.room.name"]["content"]["name"], "secret")
            self.assertIn("m.room.create", by_type)
            self.assertEqual(by_type["m.room.member"]["state_key"], self.bob.user_id)
            self.assertEqual(by_type["m.room.member"]["content"]["membership"], "invite")
            event = await self.a.hs.room_server.current_state_event(room_id, "m.room.member", self.bob.user_id)
            self.assertEqual(set(event.signatures), {self.a.server_name, self.b.server_name})
            # inviting again is a no-op
            self.assertEqual((await self.invite(self.a, self.alice, room_id, self.bob.user_id))[0], 200)
            # Bob accepts: no server name needed, the inviting server is asked
            code, body = await self.join(self.b, self.bob, room_id)
            self.assertEqual(code, 200, body)
            both = {self.alice.user_id, self.bob.user_id}
            self.assertEqual(await self.joined(self.b, self.bob, room_id), both)
            self.assertEqual(await self.joined(self.a, self.alice, room_id), both)
            sync = await self.b.sync(self.bob)
            self.assertIn(room_id, sync["rooms"]["join"])
            self.assertNotIn(room_id, sync["rooms"]["invite"])
            await self.send_text(self.b, self.bob, room_id, f"thanks v{version}")
            await self.until_text(self.a, self.alice, room_id, f"thanks v{version}")

    async def test_reject_invite(self) -> None:
        room_id = await self.a.create_room(self.alice, {"preset": "private_chat"})
        self.assertEqual((await self.invite(self.a, self.alice, room_id, self.bob.user_id))[0], 200)
        since = (await self.b.sync(self.bob))["next_batch"]
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/leave", {"reason": "no thanks"}, self.bob)
        self.assertEqual(code, 200, body)
        # A took the rejection into the room (send_leave)
        self.assertEqual(await self.membership_on(self.a, room_id, self.bob.user_id), "leave")
        member = await self.a.hs.room_server.current_state_event(room_id, "m.room.member", self.bob.user_id)
        self.assertEqual(member.content.get("reason"), "no thanks")
        sync = await self.b.sync(self.bob, since)
        self.assertNotIn(room_id, sync["rooms"]["invite"])
        self.assertIn(room_id, sync["rooms"]["leave"])
        # and joining later without an invite is refused by A
        self.assertMatrixError(await self.join(self.b, self.bob, room_id, self.a.server_name), 403, "M_FORBIDDEN")
        # the rejected room can be forgotten
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/forget", {}, self.bob)
        self.assertEqual(code, 200, body)

    async def test_reject_when_inviter_is_gone(self) -> None:
        room_id = await self.a.create_room(self.alice, {"preset": "private_chat"})
        self.assertEqual((await self.invite(self.a, self.alice, room_id, self.bob.user_id))[0], 200)
        await self.a.hs.stopService()  # A is unreachable now
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/leave", {}, self.bob)
        self.assertEqual(code, 200, body)
        sync = await self.b.sync(self.bob)
        self.assertNotIn(room_id, sync["rooms"]["invite"])

    async def test_invite_unknown_remote_user(self) -> None:
        room_id = await self.a.create_room(self.alice, {"preset": "private_chat"})
        # B co-signs (invites-v2.yaml has no 404 for an unknown invitee; Synapse accepts too)
        result = await self.invite(self.a, self.alice, room_id, "@nobody:" + self.b.server_name)
        self.assertEqual(result[0], 200, result[1])
        self.assertEqual(await self.membership_on(self.a, room_id, "@nobody:" + self.b.server_name), "invite")

    async def test_create_room_inviting_a_remote_user(self) -> None:
        code, body = await self.a.post(
            f"{C}/createRoom", {"preset": "trusted_private_chat", "invite": [self.bob.user_id], "is_direct": True},
            self.alice,
        )
        self.assertEqual(code, 200, body)
        room_id = body["room_id"]
        sync = await self.b.sync(self.bob)
        events = sync["rooms"]["invite"][room_id]["invite_state"]["events"]
        own = [e for e in events if e["type"] == "m.room.member"][-1]
        self.assertTrue(own["content"].get("is_direct"))

    async def test_knock_then_accepted(self) -> None:
        room_id = await self.b.create_room(
            self.bob,
            {"room_version": "11", "name": "knock knock",
             "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]},
        )
        code, body = await self.a.post(
            f"{C}/knock/{q(room_id)}?server_name={q(self.b.server_name)}", {"reason": "let me in"}, self.alice
        )
        self.assertEqual((code, body.get("room_id")), (200, room_id), body)
        self.assertEqual(await self.membership_on(self.b, room_id, self.alice.user_id), "knock")
        sync = await self.a.sync(self.alice)
        knock_state = {e["type"]: e for e in sync["rooms"]["knock"][room_id]["knock_state"]["events"]}
        self.assertEqual(knock_state["m.room.name"]["content"]["name"], "knock knock")
        self.assertEqual(knock_state["m.room.member"]["content"]["membership"], "knock")
        # Bob lets her in (an invite reaches A out of band), she joins
        self.assertEqual((await self.invite(self.b, self.bob, room_id, self.alice.user_id))[0], 200)
        sync = await self.a.sync(self.alice)
        self.assertIn(room_id, sync["rooms"]["invite"])
        code, body = await self.join(self.a, self.alice, room_id)
        self.assertEqual(code, 200, body)
        self.assertIn(self.alice.user_id, await self.joined(self.b, self.bob, room_id))

    async def test_knock_retracted_and_refused(self) -> None:
        room_id = await self.b.create_room(
            self.bob, {"room_version": "12", "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}
        )
        via = f"?server_name={q(self.b.server_name)}"
        self.assertEqual((await self.a.post(f"{C}/knock/{q(room_id)}{via}", {}, self.alice))[0], 200)
        code, body = await self.a.post(f"{C}/rooms/{q(room_id)}/leave", {}, self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.membership_on(self.b, room_id, self.alice.user_id), "leave")
        # a room that does not take knocks
        public = await self.public_room(self.b, self.bob)
        result = await self.a.post(f"{C}/knock/{q(public)}{via}", {}, self.alice)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")


class ResidentBadInputTests(FederationTestMixin, TwoServerTestCase):
    """Requests signed by A to B's federation API, which is resident in Bob's rooms."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.bob = await self.b.register("bob")
        self.alice_id = self.a.user_id("alice")
        self.room_id = await self.public_room(self.b, self.bob, "12")

    def make_join_path(self, user_id: str | None = None, room_id: str | None = None) -> str:
        return f"{F1}/make_join/{q(room_id or self.room_id)}/{q(user_id or self.alice_id)}"

    async def template(self, kind: str = "join") -> dict[str, Any]:
        code, body = await self.fed(self.a, "GET", f"{F1}/make_{kind}/{q(self.room_id)}/{q(self.alice_id)}",
                                    args={"ver": ["12"]})
        self.assertEqual(code, 200, body)
        return body["event"]

    def signed(self, template: dict[str, Any], key: Any = None, **changes: Any) -> Any:
        from mxserver.events.versions import KNOWN_ROOM_VERSIONS

        t = {**template, **changes}
        return build_event(
            KNOWN_ROOM_VERSIONS["12"],
            type=t["type"],
            sender=t["sender"],
            content=t["content"],
            room_id=t["room_id"],
            state_key=t["state_key"],
            prev_event_ids=t["prev_events"],
            auth_event_ids=t["auth_events"],
            depth=t["depth"],
            origin_server_ts=t["origin_server_ts"],
            server_name=self.a.server_name,
            signing_key=key or self.a.hs.signing_key,
        )

    async def test_make_join_checks(self) -> None:
        result = await self.fed(self.a, "GET", self.make_join_path(), args={"ver": ["1", "11"]})
        self.assertFedError(result, 400, "M_INCOMPATIBLE_ROOM_VERSION")
        self.assertEqual(result[1]["room_version"], "12")
        # no ver: version 1 assumed
        self.assertFedError(await self.fed(self.a, "GET", self.make_join_path()), 400, "M_INCOMPATIBLE_ROOM_VERSION")
        # a user of another server than the requesting one
        other = self.make_join_path(user_id=self.b.user_id("mallory"))
        self.assertFedError(await self.fed(self.a, "GET", other, args={"ver": ["12"]}), 403, "M_FORBIDDEN")
        self.assertFedError(
            await self.fed(self.a, "GET", self.make_join_path(room_id="!nope"), args={"ver": ["12"]}), 404, "M_NOT_FOUND"
        )
        self.assertFedError(
            await self.fed(self.a, "GET", self.make_join_path(user_id="nope"), args={"ver": ["12"]}), 400, "M_INVALID_PARAM"
        )
        # banned
        code, body = await self.b.post(f"{C}/rooms/{q(self.room_id)}/ban", {"user_id": self.alice_id}, self.bob)
        self.assertEqual(code, 200, body)
        self.assertFedError(await self.fed(self.a, "GET", self.make_join_path(), args={"ver": ["12"]}), 403, "M_FORBIDDEN")
        # a good template otherwise
        code, body = await self.fed(self.a, "GET", self.make_join_path(user_id=self.a.user_id("carol")), args={"ver": ["12"]})
        self.assertEqual(code, 200, body)
        self.assertEqual(body["room_version"], "12")
        self.assertEqual(body["event"]["content"], {"membership": "join"})
        self.assertNotIn("signatures", body["event"])

    async def test_unauthenticated(self) -> None:
        code, body = await self.a.request("GET", "/_matrix/client/versions")
        self.assertEqual(code, 200)
        import treq
        from twisted.internet import reactor
        from twisted.web.client import Agent

        from tests.test_xmatrix import _NoVerify

        agent = Agent(reactor, contextFactory=_NoVerify(), pool=self.b.pool)
        resp = await treq.request(
            "GET", f"https://127.0.0.1:{self.b.federation_port}{self.make_join_path()}?ver=12", agent=agent
        )
        body = await resp.json()
        self.assertEqual((resp.code, body["errcode"]), (401, "M_UNAUTHORIZED"))

    async def test_send_join_checks(self) -> None:
        template = await self.template()
        good = self.signed(template)
        path = f"{F2}/send_join/{q(self.room_id)}/{q(good.event_id)}"
        # forged: signed with another key under A's key ID
        # (403 M_FORBIDDEN for a bad signature, as Synapse answers and SyTest expects; the spec
        # mandates no code)
        forged = self.signed(template, key=generate_signing_key(self.a.hs.signing_key.version))
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(forged.event_id)}", forged.get_pdu_json())
        self.assertFedError(result, 403, "M_FORBIDDEN")
        # unsigned: refused as such, before its format is looked at
        unsigned = {k: v for k, v in good.get_pdu_json().items() if k not in ("signatures", "hashes")}
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(good.event_id)}", unsigned)
        self.assertFedError(result, 403, "M_FORBIDDEN")
        # ... and so with a made-up signature (SyTest "Inbound /v1/send_join rejects incorrectly-signed joins")
        key = next(iter(good.signatures[self.a.server_name]))
        fake = {**unsigned, "signatures": {self.a.server_name: {key: "a" * 86}}}
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(good.event_id)}", fake)
        self.assertFedError(result, 403, "M_FORBIDDEN")
        # the path names another event
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q('$other')}", good.get_pdu_json())
        self.assertFedError(result, 400, "M_INVALID_PARAM")
        # not a join
        leave = self.signed(template, content={"membership": "leave"})
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(leave.event_id)}", leave.get_pdu_json())
        self.assertFedError(result, 400, "M_INVALID_PARAM")
        # a user of B, sent by A
        mallory = self.b.user_id("mallory")
        theirs = self.signed(template, sender=mallory, state_key=mallory)
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(theirs.event_id)}", theirs.get_pdu_json())
        self.assertFedError(result, 403, "M_FORBIDDEN")
        # state_key is not the sender
        other = self.signed(template, state_key=self.a.user_id("carol"))
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(self.room_id)}/{q(other.event_id)}", other.get_pdu_json())
        self.assertFedError(result, 400, "M_INVALID_PARAM")
        self.assertNotIn(self.alice_id, await self.joined(self.b, self.bob, self.room_id))
        # the good one goes in, and the answer carries the room
        code, answer = await self.fed(self.a, "PUT", path, good.get_pdu_json())
        self.assertEqual(code, 200, answer)
        self.assertFalse(answer["members_omitted"])
        self.assertEqual(answer["servers_in_room"], sorted([self.b.server_name]))
        self.assertEqual(answer["event"]["event_id"] if "event_id" in answer["event"] else good.event_id, good.event_id)
        state_types = {(e["type"], e.get("state_key")) for e in answer["state"]}
        self.assertIn(("m.room.create", ""), state_types)
        self.assertIn(("m.room.member", self.bob.user_id), state_types)
        self.assertNotIn(("m.room.member", self.alice_id), state_types)  # the state before the join
        self.assertTrue(answer["auth_chain"])
        # oldest first, so a server keeping the last event per state key keeps the newest
        depths = [e["depth"] for e in answer["auth_chain"]]
        self.assertEqual(depths, sorted(depths))
        self.assertIn(self.alice_id, await self.joined(self.b, self.bob, self.room_id))
        # omit_members is accepted; the answer is the full state all the same (sent again: a duplicate)
        code, again = await self.fed(self.a, "PUT", path, good.get_pdu_json(), args={"omit_members": "true"})
        self.assertEqual(code, 200, again)
        self.assertFalse(again["members_omitted"])
        self.assertEqual(len(again["state"]), len(answer["state"]))
        # v1 send_join answers [200, {state, auth_chain}] (our client only takes objects: a raw request)
        code, body = await self.raw_put(f"{F1}/send_join/{q(self.room_id)}/{q(good.event_id)}", good.get_pdu_json())
        self.assertEqual(code, 200, body)
        self.assertEqual(body[0], 200)
        self.assertEqual(len(body[1]["state"]), len(answer["state"]))

    async def raw_put(self, path: str, content: Any) -> tuple[int, Any]:
        """A PUT to B signed as A, whatever JSON B answers."""
        import json

        import treq
        from twisted.internet import reactor
        from twisted.web.client import Agent

        from tests.test_xmatrix import _NoVerify, xmatrix

        auth = xmatrix(self.a.server_name, self.a.hs.signing_key, "PUT", path, self.b.server_name, content)
        agent = Agent(reactor, contextFactory=_NoVerify(), pool=self.b.pool)
        resp = await treq.request(
            "PUT", f"https://127.0.0.1:{self.b.federation_port}{path}", agent=agent,
            headers={"Authorization": [auth]}, data=json.dumps(content).encode(),
        )
        return resp.code, json.loads(await resp.content())

    async def test_join_refused_by_auth(self) -> None:
        private = await self.b.create_room(self.bob, {"preset": "private_chat", "room_version": "12"})
        path = f"{F1}/make_join/{q(private)}/{q(self.alice_id)}"
        self.assertFedError(await self.fed(self.a, "GET", path, args={"ver": ["12"]}), 403, "M_FORBIDDEN")
        # a join built without make_join is refused at send_join too
        template = await self.template()
        sneaky = self.signed(template, room_id=private)
        result = await self.fed(self.a, "PUT", f"{F2}/send_join/{q(private)}/{q(sneaky.event_id)}", sneaky.get_pdu_json())
        self.assertIn(result[0], (400, 403), result)

    async def test_make_knock_and_leave_checks(self) -> None:
        path = f"{F1}/make_knock/{q(self.room_id)}/{q(self.alice_id)}"
        self.assertFedError(await self.fed(self.a, "GET", path), 400, "M_MISSING_PARAM")
        self.assertFedError(await self.fed(self.a, "GET", path, args={"ver": ["12"]}), 403, "M_FORBIDDEN")  # public room
        # leaving a room one is not in
        path = f"{F1}/make_leave/{q(self.room_id)}/{q(self.alice_id)}"
        self.assertFedError(await self.fed(self.a, "GET", path), 403, "M_FORBIDDEN")

    async def invite_body(self, **changes: Any) -> tuple[str, dict[str, Any]]:
        """An invite of Bob from A's user to a made-up room on A, as A would send it."""
        alice = getattr(self, "alice", None) or await self.a.register("alice")
        self.alice = alice
        room_id = await self.a.create_room(alice, {"preset": "private_chat", "room_version": "12"})
        from mxserver.rooms.room_server import EventSpec

        content = changes.pop("content", {"membership": "invite"})
        target = changes.pop("target", self.bob.user_id)
        event = await self.a.hs.room_server.build_unpersisted(
            room_id, EventSpec("m.room.member", content, target, alice.user_id)
        )
        state = await self.a.hs.remote_rooms.invite_room_state(room_id)
        body = {"room_version": "12", "event": event.get_pdu_json(), "invite_room_state": state, **changes}
        return f"{F2}/invite/{q(room_id)}/{q(event.event_id)}", body

    async def test_invite_checks(self) -> None:
        path, body = await self.invite_body()
        self.assertFedError(await self.fed(self.a, "PUT", path, {**body, "room_version": "99"}), 400, "M_INCOMPATIBLE_ROOM_VERSION")
        self.assertFedError(await self.fed(self.a, "PUT", path, {**body, "invite_room_state": []}), 400, "M_INVALID_PARAM")
        self.assertFedError(await self.fed(self.a, "PUT", path, {"room_version": "12"}), 400, "M_MISSING_PARAM")
        wrong_id = path.rsplit("/", 1)[0] + "/" + q("$nope")
        self.assertFedError(await self.fed(self.a, "PUT", wrong_id, body), 400, "M_INVALID_PARAM")
        tampered = {**body, "event": {**body["event"], "content": {"membership": "invite", "x": 1}}}
        result = await self.fed(self.a, "PUT", path, tampered)
        self.assertFedError(result, 400, "M_INVALID_PARAM")
        # good: signed by B, and Bob sees it
        code, answer = await self.fed(self.a, "PUT", path, body)
        self.assertEqual(code, 200, answer)
        self.assertEqual(set(answer["event"]["signatures"]), {self.a.server_name, self.b.server_name})
        sync = await self.b.sync(self.bob)
        self.assertIn(body["event"]["room_id"], sync["rooms"]["invite"])

    async def test_invite_target_checks(self) -> None:
        # invites-v2.yaml has no 404: an invite of a user that does not exist is co-signed, as
        # Synapse does (SyTest "Banned servers cannot /invite" uses one as its control).
        path, body = await self.invite_body(target="@nobody:" + self.b.server_name)
        code, answer = await self.fed(self.a, "PUT", path, body)
        self.assertEqual(code, 200, answer)
        self.assertIn(self.b.server_name, answer["event"]["signatures"])
        path, body = await self.invite_body(target=self.a.user_id("carol"))
        self.assertFedError(await self.fed(self.a, "PUT", path, body), 400, "M_INVALID_PARAM")

    async def test_third_party_invite_exchange_bad_body(self) -> None:
        # (the exchange itself: tests.test_third_party_invites)
        result = await self.fed(self.a, "PUT", f"{F1}/exchange_third_party_invite/{q(self.room_id)}", {"type": "m.room.member"})
        self.assertFedError(result, 400, "M_INVALID_PARAM")


class OutOfBandUpdateTests(FederationTestMixin, TwoServerTestCase):
    """A withdrawn invite reaches the invitee's server, which is not in the room (hs.remote_rooms
    .receive_out_of_band, which the /send receiver offers such events to)."""

    async def test_withdrawn_invite(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        room_id = await self.b.create_room(bob, {"preset": "private_chat"})
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)
        since = (await self.a.sync(alice))["next_batch"]
        remote = self.a.hs.remote_rooms
        # A leave from a server that did not invite her is not believed (checked while her
        # membership is still the invite, before the real kick can arrive).
        from mxserver.events.builder import build_event

        invite = await self.b.hs.room_server.current_state_event(room_id, "m.room.member", alice.user_id)
        forged = build_event(
            invite.room_version, type="m.room.member", sender=self.a.user_id("mallory"), content={"membership": "leave"},
            room_id=room_id, state_key=alice.user_id, prev_event_ids=[], auth_event_ids=[], depth=5,
            origin_server_ts=self.now_ms(), server_name=self.a.server_name, signing_key=self.a.hs.signing_key,
        )
        self.assertFalse(await remote.receive_out_of_band(forged))
        # The kick reaches A through B's sender (a kick of a remote user goes to her server)
        # and replaces the invite: her client sees the room leave.
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/kick", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)
        kick = await self.b.hs.room_server.current_state_event(room_id, "m.room.member", alice.user_id)
        sync = await self.a.sync(alice, since, timeout_ms=20_000)
        for _ in range(10):  # other wake-ups (presence, device lists) may come first
            if room_id in sync["rooms"]["leave"]:
                break
            sync = await self.a.sync(alice, sync["next_batch"], timeout_ms=20_000)
        self.assertNotIn(room_id, sync["rooms"]["invite"])
        self.assertIn(room_id, sync["rooms"]["leave"])
        # taken once: her membership is no longer an invite
        self.assertFalse(await remote.receive_out_of_band(kick))


class GuestInviteTests(FederationTestMixin, TwoServerTestCase):
    """guest_access.md: guests join only rooms whose m.room.guest_access is "can_join"; for a room
    on another server, B learns it from the invite's stripped state (which A includes)."""

    config_overrides = {"registration": {"enabled": True, "allow_guests": True}}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")

    async def invited_guest(self, guest_access: str) -> tuple[str, str]:
        room_id = await self.a.create_room(self.alice, {
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": guest_access}}],
        })
        code, guest = await self.b.post(f"{C}/register?kind=guest", {})
        self.assertEqual(code, 200, guest)
        code, body = await self.a.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": guest["user_id"]}, self.alice)
        self.assertEqual(code, 200, body)
        return room_id, guest["access_token"]

    async def test_guest_accepts_invite_to_a_room_guests_may_join(self) -> None:
        """SyTest "Guest users can accept invites to private rooms over federation"."""
        room_id, token = await self.invited_guest("can_join")
        code, body = await self.b.post(f"{C}/join/{q(room_id)}", {}, token)
        self.assertEqual(code, 200, body)
        code, members = await self.a.get(f"{C}/rooms/{q(room_id)}/joined_members", self.alice)
        self.assertEqual(len(members["joined"]), 2, members)

    async def test_guest_refused_where_guests_are_forbidden(self) -> None:
        room_id, token = await self.invited_guest("forbidden")
        self.assertMatrixError(await self.b.post(f"{C}/join/{q(room_id)}", {}, token), 403, "M_GUEST_ACCESS_FORBIDDEN")
        code, members = await self.a.get(f"{C}/rooms/{q(room_id)}/joined_members", self.alice)
        self.assertEqual(list(members["joined"]), [self.alice.user_id])
