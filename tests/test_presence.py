"""Presence: GET/PUT /presence/{userId}/status, visibility to room-sharers, idle timeouts, the "presence" stream."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q


def path(user_id: str) -> str:
    return f"{C}/presence/{q(user_id)}/status"


class PresenceTests(HomeserverTestCase):
    use_fake_clock = True
    config_overrides = {"presence": {"idle_after_ms": 60_000, "offline_after_ms": 120_000}}

    async def presence_of(self, viewer: TestUser, since: int | None = None) -> dict[str, dict[str, Any]]:
        events = await self.hs.presence_handler.presence_for_sync(viewer.user_id, since)
        for e in events:
            self.assertEqual(e["type"], "m.presence")
        return {e["sender"]: e["content"] for e in events}

    async def test_set_and_get_own(self) -> None:
        alice = await self.register("alice")
        self.assertEqual(await self.get(path(alice.user_id), alice), (200, {"presence": "offline"}))
        code, body = await self.put(path(alice.user_id), {"presence": "online", "status_msg": "hi"}, alice)
        self.assertEqual((code, body), (200, {}))
        code, body = await self.get(path(alice.user_id), alice)
        self.assertEqual(code, 200)
        self.assertEqual((body["presence"], body["status_msg"], body["currently_active"]), ("online", "hi", True))
        self.assertEqual(body["last_active_ago"], 0)
        self.clock.advance(5)
        await self.put(path(alice.user_id), {"presence": "unavailable"}, alice)
        code, body = await self.get(path(alice.user_id), alice)
        self.assertEqual(body["presence"], "unavailable")
        self.assertNotIn("status_msg", body)

    async def test_visible_only_to_room_sharers(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        await self.put(path(alice.user_id), {"presence": "online"}, alice)
        self.assertMatrixError(await self.get(path(alice.user_id), bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(path("@nobody:test"), bob), 403, "M_FORBIDDEN")
        room = await self.shared_room(alice, bob)
        code, body = await self.get(path(alice.user_id), bob)
        self.assertEqual((code, body["presence"]), (200, "online"))
        self.assertMatrixError(await self.get(path(alice.user_id), carol), 403, "M_FORBIDDEN")
        self.assertIn(alice.user_id, await self.presence_of(bob))
        self.assertNotIn(alice.user_id, await self.presence_of(carol))
        await self.leave(bob, room)
        self.assertMatrixError(await self.get(path(alice.user_id), bob), 403, "M_FORBIDDEN")
        self.assertNotIn(alice.user_id, await self.presence_of(bob))

    async def test_presence_stream(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        await self.shared_room(alice, bob)
        await self.create_room(carol)
        start = self.hs.presence_handler.current_position
        bob_waits = self.waiter(bob)
        carol_waits = self.waiter(carol)
        await self.put(path(alice.user_id), {"presence": "online", "status_msg": "here"}, alice)
        pos = self.hs.presence_handler.current_position
        self.assertGreater(pos, start)
        self.assertEqual(self.hs.notifier.current_token().presence, pos)
        self.assertTrue(bob_waits.called)
        self.assertFalse(carol_waits.called)
        seen = await self.presence_of(bob, start)
        self.assertEqual(list(seen), [alice.user_id])
        self.assertEqual((seen[alice.user_id]["presence"], seen[alice.user_id]["status_msg"]), ("online", "here"))
        self.assertEqual(seen[alice.user_id]["displayname"], "alice")
        self.assertEqual(await self.presence_of(bob, pos), {})
        # initial sync: everyone sharing a room who has presence, and always the user themself
        initial = await self.presence_of(bob)
        self.assertEqual(sorted(initial), sorted([alice.user_id, bob.user_id]))
        self.assertEqual(initial[bob.user_id]["presence"], "offline")
        self.assertEqual(list(await self.presence_of(carol)), [carol.user_id])
        # one's own change is in one's own sync
        await self.put(path(bob.user_id), {"presence": "unavailable"}, bob)
        self.assertEqual(sorted(await self.presence_of(bob, pos)), [bob.user_id])
        self.assertEqual(sorted(await self.presence_of(alice, pos)), [bob.user_id])
        # the same state again is no change
        again = self.hs.presence_handler.current_position
        await self.put(path(bob.user_id), {"presence": "unavailable"}, bob)
        self.assertEqual(self.hs.presence_handler.current_position, again)
        # a token from before a restart reads as an initial sync
        self.assertEqual(sorted(await self.presence_of(alice, 10**9)), sorted([alice.user_id, bob.user_id]))

    async def test_sync_activity_and_timeouts(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.shared_room(alice, bob)
        presence = self.hs.presence_handler
        await presence.user_synced(alice.user_id, None)
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "online")
        pos = presence.current_position
        self.clock.advance(50)
        await presence.user_synced(alice.user_id, None)  # still active: the idle timer starts again
        self.clock.advance(50)
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "online")
        self.assertEqual(presence.current_position, pos)
        bob_waits = self.waiter(bob)
        self.clock.advance(11)  # 61 s without a sync: unavailable
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "unavailable")
        self.assertGreater(presence.current_position, pos)
        self.assertTrue(bob_waits.called)
        self.assertEqual((await self.presence_of(bob, pos))[alice.user_id]["presence"], "unavailable")
        self.clock.advance(60)  # 121 s: offline
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "offline")
        # syncing again brings the user back online
        await presence.user_synced(alice.user_id, None)
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "online")
        # set_presence=unavailable marks unavailable; set_presence=offline changes nothing
        await presence.user_synced(alice.user_id, "unavailable")
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "unavailable")
        await presence.user_synced(alice.user_id, "offline")
        self.assertEqual((await self.get(path(alice.user_id), bob))[1]["presence"], "unavailable")
        # an explicit offline cancels the timers
        await self.put(path(alice.user_id), {"presence": "offline", "status_msg": "gone"}, alice)
        before = presence.current_position
        self.clock.advance(600)
        self.assertEqual(presence.current_position, before)
        code, body = await self.get(path(alice.user_id), bob)
        self.assertEqual((body["presence"], body["status_msg"]), ("offline", "gone"))

    async def test_status_msg_survives_timeouts(self) -> None:
        alice = await self.register("alice")
        await self.put(path(alice.user_id), {"presence": "online", "status_msg": "lunch"}, alice)
        self.clock.advance(61)
        code, body = await self.get(path(alice.user_id), alice)
        self.assertEqual((body["presence"], body["status_msg"]), ("unavailable", "lunch"))

    async def test_bad_requests(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        p = path(alice.user_id)
        self.assertMatrixError(await self.request("PUT", p, raw=b"nope", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(p, ["online"], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(p, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(p, {"presence": 1}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(p, {"presence": "busy"}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(p, {"presence": "online", "status_msg": 5}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(p, {"presence": "online", "status_msg": "x" * 5000}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.put(p, {"presence": "online"}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.put(p, {"presence": "online"}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(path("alice"), alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(path("alice"), {"presence": "online"}, alice), 400, "M_INVALID_PARAM")
        self.assertEqual(self.hs.presence_handler.current_position, 0)
        self.assertEqual(await self.get(p, alice), (200, {"presence": "offline"}))


class PresenceDisabledTests(HomeserverTestCase):
    config_overrides = {"presence": {"enabled": False}}

    async def test_nothing_is_shared(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.shared_room(alice, bob)
        bob_waits = self.waiter(bob)
        code, body = await self.put(path(alice.user_id), {"presence": "online", "status_msg": "hi"}, alice)
        self.assertEqual((code, body), (200, {}))
        await self.hs.presence_handler.user_synced(alice.user_id, None)
        self.assertEqual(await self.get(path(alice.user_id), alice), (200, {"presence": "offline"}))
        self.assertEqual(await self.get(path(alice.user_id), bob), (200, {"presence": "offline"}))
        self.assertEqual(await self.hs.presence_handler.presence_for_sync(bob.user_id, None), [])
        self.assertEqual(await self.hs.presence_handler.presence_for_sync(alice.user_id, 0), [])
        self.assertEqual(self.hs.presence_handler.current_position, 0)
        self.assertFalse(bob_waits.called)
        # bad input is still refused
        self.assertMatrixError(await self.put(path(alice.user_id), {"presence": "busy"}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(path(alice.user_id), {"presence": "online"}, bob), 403, "M_FORBIDDEN")


class PresenceRealClockTests(HomeserverTestCase):
    async def test_pending_timers_are_cancelled_at_shutdown(self) -> None:
        alice = await self.register("alice")
        await self.hs.presence_handler.user_synced(alice.user_id, None)
        code, _ = await self.put(path(alice.user_id), {"presence": "online"}, alice)
        self.assertEqual(code, 200)
