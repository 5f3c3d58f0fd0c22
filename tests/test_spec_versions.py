"""``GET /versions`` lists v1.12 to v1.19 only because each one's requirements hold: one test
per listed version exercises its headline Client-Server (and, for v1.18, server-side) features
as a client observes them. The features' edge cases have their own modules."""

from __future__ import annotations

import json
from typing import Any

from mxserver.crypto.keys import verify_key_base64
from mxserver.rooms.policy_server import POLICY_KEY_ID, PolicyServerSigner
from tests.harness import C, q
from tests.harness.appservice import AS_TOKEN, AppServiceTestCase
from tests.test_policy_server import FakePolicyServer

V1 = "/_matrix/client/v1"


class SpecVersionTests(AppServiceTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def versions(self) -> list[str]:
        code, body = await self.get("/_matrix/client/versions")
        self.assertEqual(code, 200, body)
        return body["versions"]

    async def capabilities(self, user: Any) -> dict[str, Any]:
        code, body = await self.get(f"{C}/capabilities", user)
        self.assertEqual(code, 200, body)
        return body["capabilities"]

    async def test_listed_in_order(self) -> None:
        listed = await self.versions()
        wanted = [f"v1.{n}" for n in range(12, 20)]
        self.assertEqual(listed[-len(wanted):], wanted)

    async def test_v1_12_account_locking(self) -> None:
        self.assertIn("v1.12", await self.versions())
        code, body = await self.put(f"{V1}/admin/lock/{q(self.alice.user_id)}", {"locked": True}, self.admin)
        self.assertEqual(code, 200, body)
        code, body = await self.get(f"{C}/account/whoami", self.alice)
        self.assertEqual((code, body["errcode"], body.get("soft_logout")), (401, "M_USER_LOCKED", True))

    async def test_v1_13_suspension_and_room_reports(self) -> None:
        self.assertIn("v1.13", await self.versions())
        room = await self.create_room(self.alice, preset="public_chat")
        code, body = await self.post(f"{C}/rooms/{q(room)}/report", {"reason": "spam"}, self.bob)
        self.assertEqual(code, 200, body)
        code, body = await self.put(f"{V1}/admin/suspend/{q(self.alice.user_id)}", {"suspended": True}, self.admin)
        self.assertEqual(code, 200, body)
        code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/t", {"msgtype": "m.text", "body": "x"}, self.alice)
        self.assertEqual((code, body["errcode"]), (403, "M_USER_SUSPENDED"))

    async def test_v1_14_user_reports(self) -> None:
        self.assertIn("v1.14", await self.versions())
        code, body = await self.post(f"{C}/users/{q(self.bob.user_id)}/report", {"reason": "rude"}, self.alice)
        self.assertEqual(code, 200, body)

    async def test_v1_15_room_summaries_and_optional_oauth(self) -> None:
        self.assertIn("v1.15", await self.versions())
        room = await self.create_room(self.alice, preset="public_chat", name="lobby")
        code, body = await self.get(f"{V1}/room_summary/{q(room)}", self.bob)
        self.assertEqual((code, body.get("room_id"), body.get("name")), (200, room, "lobby"))
        code, body = await self.get(f"{V1}/auth_metadata")
        self.assertEqual((code, body["errcode"]), (404, "M_UNRECOGNIZED"))

    async def test_v1_16_state_after_profile_fields_room_v12(self) -> None:
        self.assertIn("v1.16", await self.versions())
        room = await self.create_room(self.alice, preset="public_chat", room_version="12")
        self.assertNotIn(":", room)  # MSC4291: a v12 room ID has no server name
        joined = (await self.sync(self.alice, use_state_after="true"))["rooms"]["join"][room]
        self.assertNotIn("state", joined)
        self.assertIn("m.room.create", {e["type"] for e in joined["state_after"]["events"]})
        code, body = await self.get(f"{C}/rooms/{q(room)}/state/m.room.create/?format=event", self.alice)
        self.assertEqual((code, body.get("type")), (200, "m.room.create"))
        self.assertEqual((await self.capabilities(self.alice))["m.profile_fields"], {"enabled": True})
        path = f"{C}/profile/{q(self.alice.user_id)}/m.tz"
        self.assertEqual((await self.put(path, {"m.tz": "Europe/London"}, self.alice))[0], 200)
        self.assertEqual(await self.get(path, self.alice), (200, {"m.tz": "Europe/London"}))

    async def test_v1_17_appservice_devices(self) -> None:
        self.assertIn("v1.17", await self.versions())
        user = await self.register_as_user("_bridge_carol")
        code, body = await self.put(self.as_path(f"{C}/devices/PHONE", user), {"display_name": "bridged"}, AS_TOKEN)
        self.assertEqual(code, 201, body)
        code, body = await self.get(self.as_path(f"{C}/account/whoami", user, "PHONE"), AS_TOKEN)
        self.assertEqual((code, body.get("device_id")), (200, "PHONE"))

    async def test_v1_18_invite_blocking_policy_servers_admin_api(self) -> None:
        self.assertIn("v1.18", await self.versions())
        caps = await self.capabilities(self.admin)
        self.assertEqual(caps["m.account_moderation"], {"lock": True, "suspend": True})
        self.assertEqual(caps["m.forget_forced_upon_leave"], {"enabled": False})
        self.assertEqual(await self.get(f"{V1}/admin/lock/{q(self.bob.user_id)}", self.admin), (200, {"locked": False}))
        # invite blocking
        room = await self.create_room(self.alice, preset="private_chat")
        config = f"{C}/user/{q(self.bob.user_id)}/account_data/m.invite_permission_config"
        self.assertEqual((await self.put(config, {"default_action": "block"}, self.bob))[0], 200)
        code, body = await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": self.bob.user_id}, self.alice)
        self.assertEqual((code, body["errcode"]), (403, "M_INVITE_BLOCKED"))
        # redactions through /send
        msg = await self.send_message(self.alice, room, "oops")
        code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.redaction/r1", {"redacts": msg}, self.alice)
        self.assertEqual(code, 200, body)
        # a Policy Server signs our events
        ps = FakePolicyServer(self.server_name)
        self.hs.room_server.local.policy_signer = PolicyServerSigner(self.hs.event_store, ps, "elsewhere.example")
        await self.set_state(self.alice, room, "m.room.policy", {"via": ps.name, "public_keys": {"ed25519": verify_key_base64(ps.key)}})
        event_id = await self.send_message(self.alice, room, "checked")
        event = await self.hs.event_store.get_event(event_id)
        assert event is not None
        self.assertIn(POLICY_KEY_ID, event.signatures[ps.name])
        ps.mode = "refuse"
        code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/spam", {"msgtype": "m.text", "body": "spam"}, self.alice)
        self.assertEqual((code, body["errcode"]), (400, "M_FORBIDDEN"))

    async def test_v1_19_mutual_rooms_and_replaces_state(self) -> None:
        self.assertIn("v1.19", await self.versions())
        room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, room)
        code, body = await self.get(f"{V1}/mutual_rooms?user_id={q(self.bob.user_id)}", self.alice)
        self.assertEqual((code, body.get("joined")), (200, [room]))
        first = await self.set_state(self.alice, room, "x.state", {"v": 1})
        await self.set_state(self.alice, room, "x.state", {"v": 2})
        flt = json.dumps({"room": {"timeline": {"types": ["x.state"]}}})
        timeline = (await self.sync(self.alice, filter=flt))["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual(timeline[-1]["unsigned"].get("replaces_state"), first)
