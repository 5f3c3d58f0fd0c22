"""Erasure (account_deactivation.yaml ``erase``): what users and servers see of an erased
user's events afterwards."""

from __future__ import annotations

from typing import Any

from mxserver.errors import MatrixError
from tests.harness import C, HomeserverTestCase, TestUser, TwoServerTestCase, q
from tests.test_account import password_auth


async def deactivate(case: HomeserverTestCase, user: TestUser, client: Any, erase: bool) -> None:
    path = f"{C}/account/deactivate"
    code, resp = await client.post(path, {"erase": erase}, user)
    case.assertEqual(code, 401, resp)
    code, resp = await client.post(path, {"erase": erase, "auth": password_auth(user, resp["session"])}, user)
    case.assertEqual(code, 200, resp)


class ErasureTests(HomeserverTestCase):
    async def _room(self) -> tuple[TestUser, TestUser, TestUser, str, str]:
        """alice's room: bob joined before her message, carol after it; then alice is erased."""
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        message = await self.send_message(alice, room, "secret")
        await self.join(carol, room)
        return alice, bob, carol, room, message

    async def _seen(self, user: TestUser, room: str, event_id: str) -> dict[str, Any]:
        """The content ``user`` sees of the event through /event, /messages, /context and /sync."""
        code, event = await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", user)
        self.assertEqual(code, 200, event)
        code, page = await self.messages(user, room, dir="b", limit=50)
        paged = next(e for e in page["chunk"] if e["event_id"] == event_id)
        code, context = await self.get(f"{C}/rooms/{q(room)}/context/{q(event_id)}", user)
        sync = await self.sync(user)
        synced = [e for e in sync["rooms"]["join"][room]["timeline"]["events"] if e["event_id"] == event_id]
        for other in (paged, context["event"], *synced):
            self.assertEqual(other["content"], event["content"])
        return event["content"]

    async def test_only_members_at_the_time_see_the_original(self) -> None:
        alice, bob, carol, room, message = await self._room()
        self.assertEqual((await self._seen(carol, room, message))["body"], "secret")
        await deactivate(self, alice, self, erase=True)
        self.assertEqual((await self._seen(bob, room, message))["body"], "secret")
        self.assertEqual(await self._seen(carol, room, message), {})
        # a user joining later sees the redacted form too
        dave = await self.register("dave")
        await self.join(dave, room)
        self.assertEqual(await self._seen(dave, room, message), {})

    async def test_without_erase_nothing_is_redacted(self) -> None:
        alice, bob, carol, room, message = await self._room()
        await deactivate(self, alice, self, erase=False)
        self.assertEqual((await self._seen(carol, room, message))["body"], "secret")

    async def test_erasure_survives_a_restart_and_drops_account_data(self) -> None:
        alice, bob, carol, room, message = await self._room()
        path = f"{C}/user/{q(alice.user_id)}/account_data/org.example.data"
        self.assertEqual(await self.put(path, {"x": 1}, alice), (200, {}))
        await deactivate(self, alice, self, erase=True)
        await self.restart()
        self.assertEqual(await self._seen(carol, room, message), {})
        with self.assertRaises(MatrixError) as raised:
            await self.hs.account_data.get_account_data(alice.user_id, None, "org.example.data")
        self.assertEqual(raised.exception.code, 404)


class ErasureFederationTests(TwoServerTestCase):
    async def test_other_servers_get_the_redacted_event(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        code, body = await self.a.post(f"{C}/createRoom", {"preset": "public_chat"}, alice)
        room = body["room_id"]
        await self.b.join(bob, room, via=[self.a.server_name])
        message = await self.a.send_message(alice, room, "secret")
        path = f"/_matrix/federation/v1/event/{q(message)}"
        before = await self.b.hs.federation_client.get_json(self.a.server_name, path)
        self.assertEqual(before["pdus"][0]["content"]["body"], "secret")
        await deactivate(self, alice, self.a, erase=True)
        after = await self.b.hs.federation_client.get_json(self.a.server_name, path)
        self.assertEqual(after["pdus"][0]["content"], {})
