"""Read receipts and read markers: the client API, the "receipts" stream and what /sync gets of it."""

from __future__ import annotations

from typing import Any

from mxserver.homeserver import Homeserver
from tests.harness import C, HomeserverTestCase, TestUser, q


class ReceiptTests(HomeserverTestCase):
    async def receipt(
        self, user: TestUser, room: str, event_id: str, receipt_type: str = "m.read", body: Any = None
    ) -> tuple[int, Any]:
        return await self.post(f"{C}/rooms/{q(room)}/receipt/{receipt_type}/{q(event_id)}", body or {}, user)

    async def ok(self, *args: Any, **kwargs: Any) -> None:
        code, body = await self.receipt(*args, **kwargs)
        self.assertEqual((code, body), (200, {}))

    async def receipts(self, user: TestUser, rooms: list[str], from_pos: int | None = None) -> dict[str, Any]:
        return await self.hs.receipts.receipts_for_rooms(
            user.user_id, rooms, from_pos, self.hs.receipts.current_position
        )

    async def setup_room(self) -> tuple[TestUser, TestUser, str]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        return alice, bob, room

    async def test_read_receipt_in_sync(self) -> None:
        alice, bob, room = await self.setup_room()
        event_id = await self.send_message(bob, room)
        before = self.hs.receipts.current_position
        await self.ok(alice, room, event_id)
        self.assertGreater(self.hs.receipts.current_position, before)
        for viewer in (alice, bob):
            got = await self.receipts(viewer, [room])
            self.assertEqual(list(got), [room])
            self.assertEqual(got[room]["type"], "m.receipt")
            receipt = got[room]["content"][event_id]["m.read"][alice.user_id]
            self.assertIsInstance(receipt["ts"], int)
            self.assertNotIn("thread_id", receipt)
        # incremental: nothing new since the current position; the change since the earlier one
        self.assertEqual(await self.receipts(bob, [room], self.hs.receipts.current_position), {})
        self.assertEqual(list(await self.receipts(bob, [room], before)), [room])
        # rooms not asked for are not returned
        self.assertEqual(await self.receipts(bob, []), {})

    async def test_receipts_only_move_forward(self) -> None:
        alice, bob, room = await self.setup_room()
        first = await self.send_message(bob, room, "one")
        second = await self.send_message(bob, room, "two")
        await self.ok(alice, room, second)
        pos = self.hs.receipts.current_position
        await self.ok(alice, room, first)  # accepted, ignored
        self.assertEqual(self.hs.receipts.current_position, pos)
        content = (await self.receipts(bob, [room]))[room]["content"]
        self.assertEqual(list(content), [second])
        third = await self.send_message(bob, room, "three")
        await self.ok(alice, room, third)
        content = (await self.receipts(bob, [room]))[room]["content"]
        self.assertEqual(list(content), [third])
        # the delta since ``pos`` holds only the new receipt
        self.assertEqual(list((await self.receipts(bob, [room], pos))[room]["content"]), [third])
        ordering = await self.hs.receipts.get_read_receipt_stream_ordering(alice.user_id, room)
        self.assertEqual(ordering, (await self.hs.event_store.get_event(third)).metadata.stream_ordering)

    async def test_private_receipts_only_for_their_owner(self) -> None:
        alice, bob, room = await self.setup_room()
        first = await self.send_message(bob, room, "one")
        second = await self.send_message(bob, room, "two")
        bob_waits = self.waiter(bob, [room])
        alice_waits = self.waiter(alice.user_id, [])
        pos = self.hs.receipts.current_position
        await self.ok(alice, room, second, "m.read.private")
        self.assertFalse(bob_waits.called)  # nothing for bob: his /sync stays asleep
        self.assertTrue(alice_waits.called)
        self.assertEqual(await self.receipts(bob, [room]), {})
        self.assertEqual(await self.receipts(bob, [room], pos), {})
        mine = (await self.receipts(alice, [room]))[room]["content"]
        self.assertEqual(list(mine[second]), ["m.read.private"])
        # a public receipt behind the private one is valid; the read-up-to mark is the later of both
        await self.ok(alice, room, first, "m.read")
        self.assertTrue(bob_waits.called)
        theirs = (await self.receipts(bob, [room]))[room]["content"]
        self.assertEqual(theirs, {first: {"m.read": {alice.user_id: theirs[first]["m.read"][alice.user_id]}}})
        ordering = await self.hs.receipts.get_read_receipt_stream_ordering(alice.user_id, room)
        self.assertEqual(ordering, (await self.hs.event_store.get_event(second)).metadata.stream_ordering)
        self.assertIsNone(await self.hs.receipts.get_read_receipt_stream_ordering(bob.user_id, room))

    async def test_threaded_receipts(self) -> None:
        alice, bob, room = await self.setup_room()
        root = await self.send_message(bob, room, "root")
        later = await self.send_message(bob, room, "later")
        await self.ok(alice, room, later)
        await self.ok(alice, room, root, body={"thread_id": "main"})
        await self.ok(alice, room, later, body={"thread_id": root})
        content = (await self.receipts(bob, [room]))[room]["content"]
        self.assertEqual(content[root]["m.read"][alice.user_id]["thread_id"], "main")
        # unthreaded and thread-root receipts on one event: both keys exist, one receipt per user shows
        self.assertIn(alice.user_id, content[later]["m.read"])
        rows = await self.hs.db.select("r", "SELECT thread_id FROM receipts ORDER BY thread_id")
        self.assertEqual(sorted(r[0] for r in rows), sorted(["", "main", root]))

    async def test_read_markers(self) -> None:
        alice, bob, room = await self.setup_room()
        first = await self.send_message(bob, room, "one")
        second = await self.send_message(bob, room, "two")
        code, body = await self.post(
            f"{C}/rooms/{q(room)}/read_markers", {"m.fully_read": first, "m.read": second, "m.read.private": second}, alice
        )
        self.assertEqual((code, body), (200, {}))
        marker = await self.get(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/account_data/m.fully_read", alice)
        self.assertEqual(marker, (200, {"event_id": first}))
        mine = (await self.receipts(alice, [room]))[room]["content"]
        self.assertEqual(sorted(mine[second]), ["m.read", "m.read.private"])
        # the fully-read marker through the receipt endpoint, forward only
        await self.ok(alice, room, second, "m.fully_read")
        await self.ok(alice, room, first, "m.fully_read")
        marker = await self.get(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/account_data/m.fully_read", alice)
        self.assertEqual(marker, (200, {"event_id": second}))
        # an empty body is fine (nothing to do); a bad event writes nothing at all
        self.assertEqual(await self.post(f"{C}/rooms/{q(room)}/read_markers", {}, alice), (200, {}))
        third = await self.send_message(bob, room, "three")
        pos = self.hs.receipts.current_position
        bad = await self.post(
            f"{C}/rooms/{q(room)}/read_markers", {"m.read": third, "m.fully_read": "$unknown"}, alice
        )
        self.assertMatrixError(bad, 404, "M_NOT_FOUND")
        self.assertEqual(self.hs.receipts.current_position, pos)
        self.assertMatrixError(
            await self.post(f"{C}/rooms/{q(room)}/read_markers", {"m.read": 5}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/read_markers", [], alice), 400, "M_BAD_JSON")
        outsider = await self.register("carol")
        self.assertMatrixError(
            await self.post(f"{C}/rooms/{q(room)}/read_markers", {"m.read": third}, outsider), 403, "M_FORBIDDEN"
        )

    async def test_bad_requests(self) -> None:
        alice, bob, room = await self.setup_room()
        event_id = await self.send_message(bob, room)
        other_room = await self.create_room(bob)
        elsewhere = await self.send_message(bob, other_room)
        pos = self.hs.receipts.current_position
        self.assertMatrixError(await self.receipt(alice, room, event_id, "m.seen"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.receipt(alice, room, "$nope"), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.receipt(alice, room, "not-an-event"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.receipt(alice, room, elsewhere), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.receipt(alice, other_room, elsewhere), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.receipt(alice, "!unknown:test", event_id), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.receipt(alice, "bad", event_id), 400, "M_INVALID_PARAM")
        for thread_id in (5, "", ["main"]):
            self.assertMatrixError(
                await self.receipt(alice, room, event_id, body={"thread_id": thread_id}), 400, "M_INVALID_PARAM"
            )
        self.assertMatrixError(
            await self.receipt(alice, room, event_id, body={"thread_id": "nonsense"}), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.receipt(alice, room, event_id, "m.fully_read", body={"thread_id": "main"}), 400, "M_INVALID_PARAM"
        )
        path = f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}"
        self.assertMatrixError(await self.request("POST", path, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", path, raw=b"[]", token=alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.request("POST", path, raw=b"{}"), 401, "M_MISSING_TOKEN")
        self.assertEqual(self.hs.receipts.current_position, pos)
        # no body at all (some clients send none) is a valid receipt
        self.assertEqual(await self.request("POST", path, raw=b"", token=alice), (200, {}))
        self.assertGreater(self.hs.receipts.current_position, pos)

    async def test_public_receipt_wakes_the_room(self) -> None:
        alice, bob, room = await self.setup_room()
        event_id = await self.send_message(bob, room)
        waits = self.waiter(bob, [room])
        await self.ok(alice, room, event_id)
        self.assertTrue(waits.called)

    async def test_position_survives_a_restart(self) -> None:
        alice, bob, room = await self.setup_room()
        event_id = await self.send_message(bob, room)
        await self.ok(alice, room, event_id)
        pos = self.hs.receipts.current_position
        self.assertGreater(pos, 0)
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.assertEqual(self.hs.receipts.current_position, pos)
        self.assertEqual(self.hs.notifier.current_token().receipts, pos)
        got = await self.hs.receipts.receipts_for_rooms(bob.user_id, [room], None, pos)
        self.assertIn(alice.user_id, got[room]["content"][event_id]["m.read"])
