"""Typing notifications: PUT /rooms/{roomId}/typing/{userId}, expiry, and the "typing" stream for /sync."""

from __future__ import annotations

from mxserver.streams import TypingChange
from tests.harness import C, HomeserverTestCase, q


class TypingTests(HomeserverTestCase):
    use_fake_clock = True

    def path(self, room: str, user_id: str) -> str:
        return f"{C}/rooms/{q(room)}/typing/{q(user_id)}"

    async def test_typing_shows_in_stream_and_expires(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        typing = self.hs.typing_handler
        before = typing.current_position
        code, body = await self.put(self.path(room, alice.user_id), {"typing": True, "timeout": 5000}, alice)
        self.assertEqual((code, body), (200, {}))
        self.assertGreater(typing.current_position, before)
        self.assertEqual(
            typing.typing_for_rooms([room], None),
            {room: {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}},
        )
        pos = typing.current_position
        self.assertEqual(typing.typing_for_rooms([room], pos), {})  # nothing new since
        self.clock.advance(4)
        self.assertEqual(self.hs.typing.typing_in(room), {alice.user_id})
        self.clock.advance(2)
        self.assertEqual(self.hs.typing.typing_in(room), frozenset())
        # the expiry is a change: an incremental sync sees the empty list, and so does an initial
        # one (as Synapse: a room whose typing changed since start is listed); other rooms are not
        stopped = {room: {"type": "m.typing", "content": {"user_ids": []}}}
        self.assertEqual(typing.typing_for_rooms([room], pos), stopped)
        self.assertEqual(typing.typing_for_rooms([room, "!quiet:test"], None), stopped)

    async def test_stop_typing_and_default_timeout(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        await self.put(self.path(room, alice.user_id), {"typing": True}, alice)  # no timeout: 30 s
        await self.put(self.path(room, bob.user_id), {"typing": True, "timeout": 20_000}, bob)
        pos = self.hs.typing_handler.current_position
        self.assertEqual(
            self.hs.typing_handler.typing_for_rooms([room], None)[room]["content"]["user_ids"],
            sorted([alice.user_id, bob.user_id]),
        )
        code, _ = await self.put(self.path(room, bob.user_id), {"typing": False}, bob)
        self.assertEqual(code, 200)
        self.assertEqual(
            self.hs.typing_handler.typing_for_rooms([room], pos),
            {room: {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}},
        )
        self.clock.advance(29)
        self.assertEqual(self.hs.typing.typing_in(room), {alice.user_id})
        self.clock.advance(2)
        self.assertEqual(self.hs.typing.typing_in(room), frozenset())

    async def test_only_changed_rooms_are_returned(self) -> None:
        alice = await self.register("alice")
        room1 = await self.create_room(alice)
        room2 = await self.create_room(alice)
        await self.put(self.path(room1, alice.user_id), {"typing": True, "timeout": 10_000}, alice)
        pos = self.hs.typing_handler.current_position
        await self.put(self.path(room2, alice.user_id), {"typing": True, "timeout": 10_000}, alice)
        self.assertEqual(list(self.hs.typing_handler.typing_for_rooms([room1, room2], pos)), [room2])
        self.assertEqual(sorted(self.hs.typing_handler.typing_for_rooms([room1, room2], None)), sorted([room1, room2]))
        # a token from before a restart (ahead of the in-memory stream) reads as an initial sync
        self.assertEqual(sorted(self.hs.typing_handler.typing_for_rooms([room1, room2], 10**9)), sorted([room1, room2]))
        # rooms not asked about are not returned
        self.assertEqual(list(self.hs.typing_handler.typing_for_rooms([room2], None)), [room2])

    async def test_typing_wakes_the_rooms_long_polls(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        other = await self.create_room(bob)
        in_room = self.waiter(bob, [room])
        elsewhere = self.waiter("@someone:test", [other])  # a long-poll on another room only
        await self.put(self.path(room, alice.user_id), {"typing": True, "timeout": 1000}, alice)
        self.assertTrue(in_room.called)
        self.assertFalse(elsewhere.called)

    async def test_leaving_stops_typing(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        await self.put(self.path(room, bob.user_id), {"typing": True, "timeout": 10_000}, bob)
        await self.leave(bob, room)
        self.assertEqual(self.hs.typing.typing_in(room), frozenset())

    async def test_bad_requests(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        path = self.path(room, alice.user_id)
        self.assertMatrixError(await self.request("PUT", path, raw=b"{not json", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(path, [], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(path, {"typing": "yes"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"typing": True, "timeout": "5"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"typing": True, "timeout": 1.5}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"typing": True, "timeout": -1}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(path, {"typing": True}), 401, "M_MISSING_TOKEN")
        # someone else's typing state
        self.assertMatrixError(await self.put(path, {"typing": True}, bob), 403, "M_FORBIDDEN")
        # not joined (bob), unknown room, malformed IDs
        self.assertMatrixError(await self.put(self.path(room, bob.user_id), {"typing": True}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(
            await self.put(self.path("!nope:test", alice.user_id), {"typing": True}, alice), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(await self.put(self.path("nope", alice.user_id), {"typing": True}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(self.path(room, "alice"), {"typing": True}, alice), 400, "M_INVALID_PARAM")
        self.assertEqual(self.hs.typing.typing_in(room), frozenset())
        self.assertEqual(self.hs.typing_handler.current_position, 0)
        # the server keeps serving
        code, _ = await self.put(path, {"typing": True, "timeout": 100}, alice)
        self.assertEqual(code, 200)

    async def test_changes_and_refreshes_are_published(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        published: list[TypingChange] = []
        self.hs.ephemeral_streams.typing.subscribe(published.append)
        for _ in range(2):
            code, _ = await self.put(self.path(room, alice.user_id), {"typing": True, "timeout": 5000}, alice)
            self.assertEqual(code, 200)
        typing = TypingChange(room, frozenset({alice.user_id}))
        # The default module reports the renewed timeout as a change (which wakes the room);
        # the refresh is published besides, for other servers, and wakes nobody.
        refresh = TypingChange(room, frozenset({alice.user_id}), refreshed=alice.user_id)
        self.assertEqual(published, [typing, typing, refresh])
        self.assertEqual([list(w) for w in typing.wakes], [[], [room]])
        self.assertEqual([list(w) for w in refresh.wakes], [[], []])
        self.clock.advance(6)
        self.assertEqual(published[3:], [TypingChange(room, frozenset())])


class TypingRealClockTests(HomeserverTestCase):
    """With the reactor's clock, a pending expiry must not outlive the server (trial checks the reactor)."""

    async def test_pending_expiry_is_cancelled_at_shutdown(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        code, _ = await self.put(f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 30_000}, alice)
        self.assertEqual(code, 200)
