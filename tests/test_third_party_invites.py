"""Third-party invites: /invite and createRoom with a 3PID, /3pid/onbind, /join with
third_party_signed, /exchange_third_party_invite between two servers, and bad input.

client-server-api §Third-party invites (third_party_membership.yaml, joining.yaml),
server-server-api §Third-party invites (third_party_invite.yaml), identity-service-api
§Invitation storage; against a stub identity server on loopback (tests.harness.identity).
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mxserver.crypto.keys import verify_key_base64
from mxserver.federation.tls import FederationTLSPolicy
from tests.harness import LOOPBACK_FEDERATION, C, HomeserverTestCase, TestServer, TestUser, TwoServerTestCase, q
from tests.harness.identity import ACCESS_TOKEN, IdentityServerStub

ONBIND = "/_matrix/federation/v1/3pid/onbind"
EMAIL = "lemurs@monkeyworld.example"


@implementer(IPolicyForHTTPS)
class _Unverified:
    """TLS to the test servers' federation listeners (self-signed certificates)."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return FederationTLSPolicy(verify=False).creator_for(hostname.decode())


def three_pid(id_server: str, address: str = EMAIL, **extra: Any) -> dict[str, Any]:
    return {"id_server": id_server, "id_access_token": ACCESS_TOKEN, "medium": "email", "address": address, **extra}


class ThirdPartyInviteTests(HomeserverTestCase):
    config_overrides = {"federation": dict(LOOPBACK_FEDERATION)}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.ids = IdentityServerStub()
        await self.ids.start(self)
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        await self.set_profile(self.alice, displayname="Alice")
        self.room = await self.create_room(self.alice, name="Lemurs")

    async def invite_3pid(self, user: TestUser, room: str, **extra: Any) -> tuple[int, Any]:
        return await self.post(f"{C}/rooms/{q(room)}/invite", three_pid(self.ids.name, **extra), user)

    async def third_party_invite_event(self, room: str) -> dict[str, Any]:
        code, state = await self.get(f"{C}/rooms/{q(room)}/state", self.alice)
        self.assertEqual(code, 200, state)
        found = [e for e in state if e["type"] == "m.room.third_party_invite"]
        self.assertEqual(len(found), 1, state)
        return found[0]

    # -- inviting -------------------------------------------------------------------------------

    async def test_invite_bound_3pid_invites_the_user(self) -> None:
        self.ids.bindings[("email", EMAIL)] = self.bob.user_id
        code, body = await self.invite_3pid(self.alice, self.room)
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(await self.membership(self.room, self.bob), "invite")
        # v2 lookup: hash_details, then the sha256 hash, with the client's token for the server
        (lookup,) = self.ids.hits("/lookup")
        self.assertEqual(lookup.authorization, f"Bearer {ACCESS_TOKEN}")
        self.assertEqual(lookup.body["algorithm"], "sha256")
        self.assertNotIn(EMAIL, str(lookup.body))
        self.assertEqual(self.ids.hits("/store-invite"), [])

    async def test_lookup_falls_back_to_none_algorithm(self) -> None:
        self.ids.algorithms = ["none"]
        self.ids.bindings[("email", EMAIL)] = self.bob.user_id
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        self.assertEqual(self.ids.hits("/lookup")[0].body["addresses"], [f"{EMAIL} email"])
        self.assertEqual(await self.membership(self.room, self.bob), "invite")

    async def test_invite_unbound_3pid_stores_invite_and_sends_event(self) -> None:
        code, body = await self.invite_3pid(self.alice, self.room)
        self.assertEqual((code, body), (200, {}))
        (stored,) = self.ids.hits("/store-invite")
        self.assertEqual(stored.authorization, f"Bearer {ACCESS_TOKEN}")
        self.assertEqual(stored.body["room_id"], self.room)
        self.assertEqual(stored.body["sender"], self.alice.user_id)
        self.assertEqual(stored.body["address"], EMAIL)
        self.assertEqual(stored.body["room_name"], "Lemurs")
        self.assertEqual(stored.body["room_join_rules"], "invite")
        self.assertEqual(stored.body["sender_display_name"], "Alice")
        event = await self.third_party_invite_event(self.room)
        self.assertEqual(event["state_key"], "tok1")
        self.assertEqual(event["sender"], self.alice.user_id)
        content = event["content"]
        server_key = verify_key_base64(self.ids.server_key)
        self.assertEqual(content["display_name"], "a...@e...")
        self.assertEqual(content["public_key"], server_key)
        self.assertEqual(content["key_validity_url"], self.ids.key_validity_url)
        self.assertEqual(
            [k["public_key"] for k in content["public_keys"]], [server_key, verify_key_base64(self.ids.ephemeral_key)]
        )
        self.assertIsNone(await self.membership(self.room, self.bob))

    async def test_create_room_with_invite_3pid(self) -> None:
        self.ids.bindings[("email", EMAIL)] = self.bob.user_id
        room = await self.create_room(self.alice, invite_3pid=[three_pid(self.ids.name)])
        self.assertEqual(await self.membership(room, self.bob), "invite")
        unbound = await self.create_room(self.alice, invite_3pid=[three_pid(self.ids.name, "new@example.org")])
        await self.third_party_invite_event(unbound)

    async def test_create_room_when_identity_server_fails(self) -> None:
        # The room is made; the invite is not (as for invitees of unreachable servers).
        await self.ids.stop()
        room = await self.create_room(self.alice, invite_3pid=[three_pid(self.ids.name)])
        self.assertEqual(await self.membership(room, self.alice), "join")
        code, state = await self.get(f"{C}/rooms/{q(room)}/state", self.alice)
        self.assertFalse([e for e in state if e["type"] == "m.room.third_party_invite"])

    # -- the binding, and joining ------------------------------------------------------------------

    async def test_onbind_issues_every_good_invite_and_reports_a_bad_one(self) -> None:
        other_room = await self.create_room(self.alice)
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        self.assertEqual((await self.invite_3pid(self.alice, other_room))[0], 200)
        onbind = self.ids.bind("email", EMAIL, self.bob.user_id)
        onbind["invites"][0]["signed"]["token"] = "forged"  # breaks its signature
        self.assertMatrixError(await self.put(ONBIND, onbind), 403, "M_FORBIDDEN")
        self.assertIsNone(await self.membership(self.room, self.bob))
        self.assertEqual(await self.membership(other_room, self.bob), "invite")

    async def test_onbind_turns_invite_into_membership_and_invitee_joins(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        code, body = await self.put(ONBIND, self.ids.bind("email", EMAIL, self.bob.user_id))
        self.assertEqual((code, body), (200, {}))
        member = await self.state_content(self.alice, self.room, "m.room.member", self.bob.user_id)
        assert member is not None
        self.assertEqual(member["membership"], "invite")
        self.assertEqual(member["third_party_invite"]["display_name"], "a...@e...")
        self.assertEqual(member["third_party_invite"]["signed"]["token"], "tok1")
        # The invitee sees the invite, with who invited them.
        sync = await self.sync(self.bob)
        invite_state = sync["rooms"]["invite"][self.room]["invite_state"]["events"]
        members = {e["state_key"] for e in invite_state if e["type"] == "m.room.member"}
        self.assertEqual(members, {self.alice.user_id, self.bob.user_id})
        await self.join(self.bob, self.room)
        self.assertEqual(await self.membership(self.room, self.bob), "join")
        # The key was checked with the identity server.
        self.assertEqual(len(self.ids.hits("/pubkey/isvalid")), 1)

    async def test_onbind_after_inviter_left(self) -> None:
        carol = await self.register("carol")
        await self.invite_and_join(self.alice, self.room, carol)
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        await self.leave(self.alice, self.room)
        code, body = await self.post(ONBIND, self.ids.bind("email", EMAIL, self.bob.user_id))
        self.assertEqual(code, 200, body)
        await self.join(self.bob, self.room)
        self.assertEqual(await self.membership(self.room, self.bob), "join")

    async def test_onbind_with_revoked_key_is_refused(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        onbind = self.ids.bind("email", EMAIL, self.bob.user_id)
        self.ids.revoke_keys()
        self.assertMatrixError(await self.put(ONBIND, onbind), 403, "M_FORBIDDEN")
        self.assertIsNone(await self.membership(self.room, self.bob))
        self.assertMatrixError(await self.post(f"{C}/join/{q(self.room)}", {}, self.bob), 403, "M_FORBIDDEN")

    async def test_onbind_signed_by_another_key_is_refused(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        self.ids.revoke_keys()  # new keys sign the proof: not the invite's
        self.assertMatrixError(await self.put(ONBIND, self.ids.bind("email", EMAIL, self.bob.user_id)), 403, "M_FORBIDDEN")
        self.assertIsNone(await self.membership(self.room, self.bob))

    async def test_onbind_with_unreachable_identity_server_is_refused(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        onbind = self.ids.bind("email", EMAIL, self.bob.user_id)
        await self.ids.stop()
        self.assertMatrixError(await self.put(ONBIND, onbind), 403, "M_FORBIDDEN")
        self.assertIsNone(await self.membership(self.room, self.bob))

    async def test_join_with_third_party_signed(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        token = (await self.third_party_invite_event(self.room))["state_key"]
        signed = self.ids.sign({"mxid": self.bob.user_id, "sender": self.alice.user_id, "token": token}, ephemeral=True)
        await self.join(self.bob, self.room, third_party_signed=signed)
        self.assertEqual(await self.membership(self.room, self.bob), "join")

    async def test_join_with_bad_third_party_signed(self) -> None:
        self.assertEqual((await self.invite_3pid(self.alice, self.room))[0], 200)
        token = (await self.third_party_invite_event(self.room))["state_key"]
        path = f"{C}/rooms/{q(self.room)}/join"
        # for someone else
        carol = await self.register("carol")
        signed = self.ids.sign({"mxid": carol.user_id, "sender": self.alice.user_id, "token": token})
        self.assertMatrixError(await self.post(path, {"third_party_signed": signed}, self.bob), 403, "M_FORBIDDEN")
        # a token the room does not have
        signed = self.ids.sign({"mxid": self.bob.user_id, "sender": self.alice.user_id, "token": "nope"})
        self.assertMatrixError(await self.post(path, {"third_party_signed": signed}, self.bob), 403, "M_FORBIDDEN")
        # a sender who did not send the invite
        signed = self.ids.sign({"mxid": self.bob.user_id, "sender": carol.user_id, "token": token})
        self.assertMatrixError(await self.post(path, {"third_party_signed": signed}, self.bob), 403, "M_FORBIDDEN")
        # tampered with after signing
        signed = self.ids.sign({"mxid": self.bob.user_id, "sender": self.alice.user_id, "token": token})
        signed["extra"] = 1
        self.assertMatrixError(await self.post(path, {"third_party_signed": signed}, self.bob), 403, "M_FORBIDDEN")
        # malformed
        for bad in ("x", {"mxid": self.bob.user_id}, {"mxid": 1, "token": token, "signatures": {}, "sender": "x"}):
            self.assertMatrixError(await self.post(path, {"third_party_signed": bad}, self.bob), 400, "M_BAD_JSON")
        self.assertIsNone(await self.membership(self.room, self.bob))

    # -- bad input --------------------------------------------------------------------------------

    async def test_invite_bad_input(self) -> None:
        path = f"{C}/rooms/{q(self.room)}/invite"
        full = three_pid(self.ids.name)
        for key in ("id_server", "id_access_token", "medium", "address"):
            missing = {k: v for k, v in full.items() if k != key}
            self.assertMatrixError(await self.post(path, missing, self.alice), 400, "M_MISSING_PARAM")
            self.assertMatrixError(await self.post(path, {**full, key: 5}, self.alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {**full, "address": ""}, self.alice), 400, "M_INVALID_PARAM")
        for bad_server in ("not a host", "example.org:99999", "https://example.org"):
            result = await self.post(path, {**full, "id_server": bad_server}, self.alice)
            self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        # createRoom checks invite_3pid before making the room
        code, body = await self.post(f"{C}/createRoom", {"invite_3pid": [{"medium": "email"}]}, self.alice)
        self.assertMatrixError((code, body), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(f"{C}/createRoom", {"invite_3pid": ["x"]}, self.alice), 400, "M_BAD_JSON")
        self.assertEqual(self.ids.requests, [])

    async def test_invite_by_non_member_is_refused_without_asking(self) -> None:
        self.assertMatrixError(await self.invite_3pid(self.bob, self.room), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.invite_3pid(self.alice, "!nowhere:test"), 404, "M_NOT_FOUND")
        self.assertEqual(self.ids.requests, [])

    async def test_invite_without_invite_power_is_refused(self) -> None:
        await self.invite_and_join(self.alice, self.room, self.bob)
        pl = await self.state_content(self.alice, self.room, "m.room.power_levels")
        assert pl is not None
        await self.set_state(self.alice, self.room, "m.room.power_levels", {**pl, "invite": 50})
        self.assertMatrixError(await self.invite_3pid(self.bob, self.room), 403, "M_FORBIDDEN")
        code, state = await self.get(f"{C}/rooms/{q(self.room)}/state", self.alice)
        self.assertFalse([e for e in state if e["type"] == "m.room.third_party_invite"])

    async def test_identity_server_failures(self) -> None:
        # a token the identity server refuses
        result = await self.post(
            f"{C}/rooms/{q(self.room)}/invite", {**three_pid(self.ids.name), "id_access_token": "wrong"}, self.alice
        )
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        # an identity server that is not there
        await self.ids.stop()
        self.assertMatrixError(await self.invite_3pid(self.alice, self.room), 502, "M_UNKNOWN")
        # and the server keeps serving
        self.assertEqual((await self.get(f"{C}/rooms/{q(self.room)}/state", self.alice))[0], 200)

    async def test_onbind_bad_input(self) -> None:
        self.assertMatrixError(await self.put(ONBIND, {"medium": "email"}), 400, "M_BAD_JSON")
        body = {"medium": "email", "address": EMAIL, "mxid": "@bob:elsewhere.example", "invites": []}
        self.assertMatrixError(await self.put(ONBIND, body), 400, "M_INVALID_PARAM")
        body = {"medium": "email", "address": EMAIL, "mxid": self.bob.user_id, "invites": "x"}
        self.assertMatrixError(await self.put(ONBIND, body), 400, "M_BAD_JSON")
        body["invites"] = [{"room_id": "nope", "sender": self.alice.user_id, "signed": {}}]
        self.assertMatrixError(await self.put(ONBIND, body), 400, "M_INVALID_PARAM")
        body["invites"] = []
        self.assertEqual((await self.put(ONBIND, body))[0], 200)
        body["mxid"] = f"@nobody:{self.server_name}"
        self.assertMatrixError(await self.put(ONBIND, body), 404, "M_NOT_FOUND")


class ThirdPartyInviteBlockedTests(HomeserverTestCase):
    """Without the loopback whitelist, the identity server's address is refused (no SSRF)."""

    async def test_identity_server_on_blocked_address(self) -> None:
        ids = IdentityServerStub()
        await ids.start(self)
        alice = await self.register("alice")
        room = await self.create_room(alice)
        result = await self.post(f"{C}/rooms/{q(room)}/invite", three_pid(ids.name), alice)
        self.assertMatrixError(result, 400, "M_SERVER_NOT_TRUSTED")
        self.assertEqual(ids.requests, [])


class ThirdPartyInviteFederationTests(TwoServerTestCase):
    """The inviter on A, the invitee on B: B exchanges the proof with A."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.ids = IdentityServerStub()
        await self.ids.start(self)
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")
        self.room = await self.a.create_room(self.alice, name="Lemurs")
        code, body = await self.a.post(f"{C}/rooms/{q(self.room)}/invite", three_pid(self.ids.name), self.alice)
        self.assertEqual(code, 200, body)

    async def onbind(self, server: TestServer, body: dict[str, Any]) -> tuple[int, Any]:
        """PUT /3pid/onbind as the identity server does: to the server's federation listener."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, contextFactory=_Unverified(), pool=pool))
        url = f"https://127.0.0.1:{server.federation_port}{ONBIND}"
        response = await http.put(url, json.dumps(body).encode(), headers={b"Content-Type": [b"application/json"]})
        return response.code, json.loads(await response.content())

    async def test_onbind_on_invitee_server_exchanges_with_inviter_server(self) -> None:
        code, body = await self.onbind(self.b, self.ids.bind("email", EMAIL, self.bob.user_id))
        self.assertEqual((code, body), (200, {}))
        # A issued the invite (B co-signed it) and B shows it, with the inviter's membership
        member = await self.a.state_content(self.alice, self.room, "m.room.member", self.bob.user_id)
        assert member is not None
        self.assertEqual(member["membership"], "invite")
        self.assertEqual(member["third_party_invite"]["display_name"], "a...@e...")
        sync = await self.b.sync(self.bob)
        invite_state = sync["rooms"]["invite"][self.room]["invite_state"]["events"]
        self.assertIn(self.alice.user_id, {e["state_key"] for e in invite_state if e["type"] == "m.room.member"})
        await self.b.join(self.bob, self.room)

        async def bob_joined() -> bool:
            return await self.a.hs.room_server.membership(self.room, self.bob.user_id) == "join"

        await self.wait_until(bob_joined, "A sees Bob joined")

    async def test_onbind_when_invitee_server_is_in_the_room(self) -> None:
        carol = await self.b.register("carol")
        await self.a.invite(self.alice, self.room, carol)
        await self.b.join(carol, self.room)
        code, body = await self.onbind(self.b, self.ids.bind("email", EMAIL, self.bob.user_id))
        self.assertEqual(code, 200, body)

        async def bob_invited() -> bool:
            return await self.b.hs.room_server.membership(self.room, self.bob.user_id) == "invite"

        await self.wait_until(bob_invited, "B sees Bob invited")
        await self.b.join(self.bob, self.room)
        self.assertEqual(await self.b.hs.room_server.membership(self.room, self.bob.user_id), "join")

    async def test_join_with_third_party_signed_through_other_server(self) -> None:
        code, state = await self.a.get(f"{C}/rooms/{q(self.room)}/state", self.alice)
        token = next(e["state_key"] for e in state if e["type"] == "m.room.third_party_invite")
        signed = self.ids.sign({"mxid": self.bob.user_id, "sender": self.alice.user_id, "token": token})
        await self.b.join(self.bob, self.room, third_party_signed=signed)
        self.assertEqual(await self.b.hs.room_server.membership(self.room, self.bob.user_id), "join")

    async def test_exchange_refuses_proof_for_another_server_user(self) -> None:
        code, state = await self.a.get(f"{C}/rooms/{q(self.room)}/state", self.alice)
        token = next(e["state_key"] for e in state if e["type"] == "m.room.third_party_invite")
        dave = await self.a.register("dave")
        signed = self.ids.sign({"mxid": dave.user_id, "token": token})
        body = {
            "type": "m.room.member",
            "room_id": self.room,
            "sender": self.alice.user_id,
            "state_key": dave.user_id,
            "content": {"membership": "invite", "third_party_invite": {"display_name": "x", "signed": signed}},
        }
        path = f"/_matrix/federation/v1/exchange_third_party_invite/{q(self.room)}"
        from mxserver.federation.client import FederationError

        client = self.b.hs.federation_client
        with self.assertRaises(FederationError) as raised:
            await client.put_json(self.a.server_name, path, body)
        self.assertEqual((raised.exception.code, raised.exception.errcode), (403, "M_FORBIDDEN"))
        # malformed
        for bad in ({**body, "room_id": "!other:x"}, {**body, "type": "m.room.message"}, {**body, "content": {}}):
            with self.assertRaises(FederationError) as raised:
                await client.put_json(self.a.server_name, path, bad)
            self.assertEqual(raised.exception.code, 400)
        self.assertIsNone(await self.a.hs.room_server.membership(self.room, dave.user_id))
