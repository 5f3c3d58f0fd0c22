"""Invite blocking (client-server-api §Invite permission, spec v1.18): a user whose
``m.invite_permission_config`` says ``default_action: block`` cannot be invited through
/invite, createRoom, a state PUT or federation (403 ``M_INVITE_BLOCKED``), and /sync and
sliding sync serve none of their invites; other values change nothing."""

from __future__ import annotations

from typing import Any

from mxserver.federation.remote_rooms import q
from tests.harness import C, HomeserverTestCase, TestUser, TwoServerTestCase

CONFIG = "m.invite_permission_config"


async def _set_config(server: Any, user: TestUser, content: dict[str, Any]) -> None:
    code, body = await server.put(f"{C}/user/{q(user.user_id)}/account_data/{CONFIG}", content, user)
    assert code == 200, body


class InvitePermissionTests(HomeserverTestCase):
    async def _blocked(self, code: int, body: Any) -> None:
        self.assertEqual(code, 403, body)
        self.assertEqual(body["errcode"], "M_INVITE_BLOCKED")

    async def test_blocked_user_cannot_be_invited_any_way(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await _set_config(self, bob, {"default_action": "block"})
        room = await self.create_room(alice, preset="private_chat")
        # POST /invite
        await self._blocked(*await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice))
        # PUT /state/m.room.member/{bob}
        path = f"{C}/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}"
        await self._blocked(*await self.put(path, {"membership": "invite"}, alice))
        # createRoom with bob among the invitees: refused, nothing created
        rooms_before = (await self.get(f"{C}/joined_rooms", alice))[1]["joined_rooms"]
        await self._blocked(*await self.post(f"{C}/createRoom", {"invite": [bob.user_id]}, alice))
        self.assertEqual((await self.get(f"{C}/joined_rooms", alice))[1]["joined_rooms"], rooms_before)
        self.assertIsNone(await self.state_content(alice, room, "m.room.member", bob.user_id))
        # other members stay invitable, and bob still joins a public room
        carol = await self.register("carol")
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": carol.user_id}, alice))[0], 200)

    async def test_unblocking_and_unknown_values(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="private_chat")
        # "A missing, invalid or unsupported value means that the user wants to receive invites"
        for content in ({}, {"default_action": "allow"}, {"default_action": 1}, {"default_action": ["block"]}):
            await _set_config(self, bob, content)
            code, body = await self.post(f"{C}/createRoom", {"invite": [bob.user_id]}, alice)
            self.assertEqual(code, 200, (content, body))
        await _set_config(self, bob, {"default_action": "block"})
        await self._blocked(*await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice))
        await _set_config(self, bob, {})
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice))[0], 200)

    async def test_sync_hides_invites_while_blocked(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="private_chat")
        await self.invite(alice, room, bob)
        self.assertIn(room, (await self.sync(bob))["rooms"]["invite"])
        await _set_config(self, bob, {"default_action": "block"})
        self.assertNotIn(room, (await self.sync(bob))["rooms"]["invite"])
        # sliding sync neither
        body = {"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 1, "required_state": []}}}
        code, sliding = await self.post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", body, bob)
        self.assertEqual(code, 200, sliding)
        self.assertNotIn(room, sliding.get("rooms", {}))
        # the room's state still has the invite (§Invite permission: other endpoints unaffected)
        member = await self.state_content(alice, room, "m.room.member", bob.user_id)
        self.assertEqual((member or {}).get("membership"), "invite")
        # unblocked: served again (an initial sync lists it)
        await _set_config(self, bob, {})
        self.assertIn(room, (await self.sync(bob))["rooms"]["invite"])


class FederatedInvitePermissionTests(TwoServerTestCase):
    async def test_remote_invite_of_blocked_user(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        await _set_config(self.b, bob, {"default_action": "block"})
        room = await self.a.create_room(alice, {"preset": "private_chat"})
        # B refuses to co-sign (invites-v2 through A's /invite): the error reaches alice
        code, body = await self.a.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice)
        self.assertEqual(code, 403, body)
        self.assertEqual(body["errcode"], "M_INVITE_BLOCKED")
        self.assertNotIn(room, (await self.b.sync(bob))["rooms"]["invite"])
        # createRoom inviting bob: the room exists, the answer says the invite was blocked
        code, body = await self.a.post(f"{C}/createRoom", {"invite": [bob.user_id]}, alice)
        self.assertEqual(code, 403, body)
        self.assertEqual(body["errcode"], "M_INVITE_BLOCKED")
        await _set_config(self.b, bob, {"default_action": "nope"})
        code, body = await self.a.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice)
        self.assertEqual(code, 200, body)
        sync = await self.b.sync_until(bob, lambda s: room in s["rooms"]["invite"], "the invite")
        self.assertTrue(sync)
