"""GET /_matrix/client/v1/mutual_rooms (mutual_rooms.yaml): joined rooms only, paging with
next_batch and count, unknown users, and bad input."""

from __future__ import annotations

from tests.harness import HomeserverTestCase, q

MUTUAL = "/_matrix/client/v1/mutual_rooms"


class MutualRoomsTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def test_only_rooms_both_are_joined_to(self) -> None:
        both = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, both)
        await self.create_room(self.alice, preset="public_chat")  # alice alone
        invited = await self.create_room(self.alice, invite=[self.bob.user_id])  # bob only invited
        left = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, left)
        await self.leave(self.bob, left)
        code, body = await self.get(f"{MUTUAL}?user_id={q(self.bob.user_id)}", self.alice)
        self.assertEqual((code, body), (200, {"joined": [both], "count": 1}))
        self.assertNotIn(invited, body["joined"])
        # the same from bob's side
        self.assertEqual(await self.get(f"{MUTUAL}?user_id={q(self.alice.user_id)}", self.bob), (200, body))

    async def test_paging(self) -> None:
        from mxserver.room_handlers import mutual_rooms

        self.patch(mutual_rooms, "BATCH", 2)
        rooms = []
        for _ in range(5):
            room = await self.create_room(self.alice, preset="public_chat")
            await self.join(self.bob, room)
            rooms.append(room)
        seen: list[str] = []
        token = None
        while True:
            code, body = await self.get(
                f"{MUTUAL}?user_id={q(self.bob.user_id)}" + (f"&from={q(token)}" if token else ""), self.alice
            )
            self.assertEqual(code, 200, body)
            self.assertEqual(body["count"], 5)
            self.assertLessEqual(len(body["joined"]), 2)
            seen += body["joined"]
            token = body.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, sorted(rooms))

    async def test_unknown_user_and_bad_input(self) -> None:
        self.assertEqual(await self.get(f"{MUTUAL}?user_id={q('@nobody:' + self.server_name)}", self.alice), (200, {"joined": [], "count": 0}))
        self.assertMatrixError(await self.get(MUTUAL, self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{MUTUAL}?user_id=notauser", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{MUTUAL}?user_id={q(self.alice.user_id)}", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.get(f"{MUTUAL}?user_id={q(self.bob.user_id)}&from=!!notatoken", self.alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.get(f"{MUTUAL}?user_id={q(self.bob.user_id)}"), 401, "M_MISSING_TOKEN")
