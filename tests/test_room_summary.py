"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (room_summary.yaml): local rooms by ID
and alias, who may see what (with and without an access token), and rooms on another server
through the federation hierarchy endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.harness import HomeserverTestCase, TwoServerTestCase, q

V1 = "/_matrix/client/v1"


def path(room: str, via: list[str] | None = None) -> str:
    return f"{V1}/room_summary/{q(room)}" + (f"?{urlencode([('via', v) for v in via])}" if via else "")


class RoomSummaryTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def test_public_room_by_id_and_alias(self) -> None:
        room = await self.create_room(
            self.alice,
            preset="public_chat",
            name="Cheese",
            topic="Tasty",
            room_alias_name="cheese",
            initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        )
        await self.join(self.bob, room)
        code, body = await self.get(path(room), self.bob)
        self.assertEqual(code, 200, body)
        expected = {
            "room_id": room,
            "name": "Cheese",
            "topic": "Tasty",
            "canonical_alias": f"#cheese:{self.server_name}",
            "num_joined_members": 2,
            "join_rule": "public",
            "world_readable": False,
            "guest_can_join": False,
            "encryption": "m.megolm.v1.aes-sha2",
            "membership": "join",
        }
        self.assertEqual({k: body.get(k) for k in expected}, expected)
        self.assertIn("room_version", body)
        self.assertNotIn("children_state", body)
        self.assertNotIn("room_type", body)
        code, by_alias = await self.get(path(f"#cheese:{self.server_name}"), self.bob)
        self.assertEqual((code, by_alias), (200, body))
        # Without an access token: the same, less the membership.
        code, anonymous = await self.get(path(room))
        self.assertEqual(code, 200, anonymous)
        self.assertEqual(anonymous, {k: v for k, v in body.items() if k != "membership"})

    async def test_private_room_is_seen_by_members_and_invitees_only(self) -> None:
        room = await self.create_room(self.alice, preset="private_chat", name="Secret")
        carol = await self.register("carol")
        for result in (await self.get(path(room), carol), await self.get(path(room))):
            self.assertMatrixError(result, 404, "M_NOT_FOUND")
        await self.invite(self.alice, room, self.bob)
        code, body = await self.get(path(room), self.bob)
        self.assertEqual((code, body["membership"], body["join_rule"]), (200, "invite", "invite"), body)
        code, body = await self.get(path(room), self.alice)
        self.assertEqual((code, body["membership"]), (200, "join"), body)
        # A space, world readable: anyone, with its room_type.
        space = await self.create_room(
            self.alice,
            preset="private_chat",
            creation_content={"type": "m.space"},
            initial_state=[{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}],
        )
        code, body = await self.get(path(space))
        self.assertEqual((code, body.get("room_type"), body.get("world_readable")), (200, "m.space", True), body)

    async def test_unknown_rooms_and_bad_input(self) -> None:
        self.assertMatrixError(await self.get(path("!nowhere:test"), self.bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(path(f"#nothing:{self.server_name}"), self.bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(path("not-a-room"), self.bob), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(path("#no-server"), self.bob), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(path("!room:test"), "bad-token"), 401, "M_UNKNOWN_TOKEN")


class FederatedRoomSummaryTests(TwoServerTestCase):
    async def test_room_on_another_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        # Room v10: the room ID names B, the only hint A has (no via needed).
        public = await self.b.create_room(bob, {"name": "On B", "preset": "public_chat", "room_version": "10"})
        secret = await self.b.create_room(bob, {"name": "Hidden", "preset": "private_chat", "room_version": "10"})
        code, body = await self.a.get(path(public), alice)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["room_id"], body["name"], body["num_joined_members"]), (public, "On B", 1))
        self.assertNotIn("membership", body)  # A knows no membership of alice in it
        self.assertEqual(_error(await self.a.get(path(secret), alice)), (404, "M_NOT_FOUND"))
        # Unauthenticated callers get rooms A is in, never a federation request.
        self.assertEqual(_error(await self.a.get(path(public))), (404, "M_NOT_FOUND"))


def _error(result: tuple[int, Any]) -> tuple[int, Any]:
    return result[0], result[1].get("errcode")
