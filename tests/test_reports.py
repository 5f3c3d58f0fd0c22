"""Reporting content (report_content.yaml): events (joined members, visible events only), rooms
and users; stored for administrators; bad input and rate limits answered with Matrix errors."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q


class ReportTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)
        self.event = await self.send_message(self.alice, self.room, "something offensive")

    async def report_event(self, user: TestUser, event_id: str, body: Any, room: str | None = None) -> tuple[int, Any]:
        return await self.post(f"{C}/rooms/{q(room or self.room)}/report/{q(event_id)}", body, user)

    async def stored(self) -> list[Any]:
        return list(reversed(await self.hs.reports.recent(100)))

    async def test_event_report_is_stored_for_admins(self) -> None:
        self.assertEqual(await self.report_event(self.bob, self.event, {"reason": "rude", "score": -100}), (200, {}))
        self.assertEqual(await self.report_event(self.bob, self.event, {}), (200, {}))  # reason is optional
        [first, second] = await self.stored()
        self.assertEqual(
            (first.kind, first.reporter, first.room_id, first.event_id, first.reason, first.score),
            ("event", self.bob.user_id, self.room, self.event, "rude", -100),
        )
        self.assertEqual((second.reason, second.score), (None, None))
        self.assertGreater(second.report_id, first.report_id)
        # Kept across a restart, and IDs keep growing.
        await self.restart()
        self.assertEqual(await self.report_event(self.bob, self.event, {"reason": "again"}), (200, {}))
        self.assertEqual([r.reason for r in await self.stored()], ["rude", None, "again"])
        self.assertEqual(len({r.report_id for r in await self.stored()}), 3)

    async def test_event_report_needs_a_joined_member_who_can_see_it(self) -> None:
        carol = await self.register("carol")
        not_found = (404, "M_NOT_FOUND")
        # Not in the room (though it is public and the event exists).
        self.assertMatrixError(await self.report_event(carol, self.event, {"reason": "x"}), *not_found)
        # An event that does not exist, or is in another room: the same answer.
        self.assertMatrixError(await self.report_event(self.bob, "$nope:test", {"reason": "x"}), *not_found)
        other = await self.create_room(self.alice)
        in_other = await self.send_message(self.alice, other, "elsewhere")
        self.assertMatrixError(await self.report_event(self.bob, in_other, {"reason": "x"}), *not_found)
        # History from before carol joined a room whose visibility is "joined".
        private = await self.create_room(self.alice, preset="public_chat")
        await self.set_state(self.alice, private, "m.room.history_visibility", {"history_visibility": "joined"})
        before = await self.send_message(self.alice, private, "before carol")
        await self.join(carol, private)
        self.assertMatrixError(await self.report_event(carol, before, {"reason": "x"}, private), *not_found)
        after = await self.send_message(self.alice, private, "after carol")
        self.assertEqual(await self.report_event(carol, after, {"reason": "x"}, private), (200, {}))
        # Having left, bob can no longer report what he saw.
        await self.leave(self.bob, self.room)
        self.assertMatrixError(await self.report_event(self.bob, self.event, {"reason": "x"}), *not_found)
        self.assertEqual([r.event_id for r in await self.stored()], [after])

    async def test_room_and_user_reports(self) -> None:
        carol = await self.register("carol")  # joined nowhere: may still report
        code, body = await self.post(f"{C}/rooms/{q(self.room)}/report", {"reason": ""}, carol)
        self.assertEqual((code, body), (200, {}))
        code, body = await self.post(f"{C}/users/{q(self.alice.user_id)}/report", {"reason": "spam"}, carol)
        self.assertEqual((code, body), (200, {}))
        # A user of another server is taken as reported; this server cannot tell if they exist.
        code, body = await self.post(f"{C}/users/{q('@mallory:elsewhere.example')}/report", {"reason": "x"}, carol)
        self.assertEqual((code, body), (200, {}))
        room, user, remote = await self.stored()
        self.assertEqual((room.kind, room.room_id, room.reason, room.reporter), ("room", self.room, "", carol.user_id))
        self.assertEqual((user.kind, user.target_user_id, user.reason), ("user", self.alice.user_id, "spam"))
        self.assertEqual(remote.target_user_id, "@mallory:elsewhere.example")
        # Unknown room, unknown local user.
        result = await self.post(f"{C}/rooms/{q('!unknown:test')}/report", {"reason": "x"}, carol)
        self.assertMatrixError(result, 404, "M_NOT_FOUND")
        result = await self.post(f"{C}/users/{q('@nobody:test')}/report", {"reason": "x"}, carol)
        self.assertMatrixError(result, 404, "M_NOT_FOUND")

    async def test_bad_input(self) -> None:
        room_path = f"{C}/rooms/{q(self.room)}/report"
        user_path = f"{C}/users/{q(self.alice.user_id)}/report"
        for path in (room_path, user_path):
            self.assertMatrixError(await self.post(path, {}, self.bob), 400, "M_MISSING_PARAM")
            self.assertMatrixError(await self.post(path, {"reason": 5}, self.bob), 400, "M_BAD_JSON")
            self.assertMatrixError(await self.post(path, {"reason": "x" * 10_001}, self.bob), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.post(path, [], self.bob), 400, "M_BAD_JSON")
            self.assertMatrixError(await self.post(path, {"reason": "x"}), 401, "M_MISSING_TOKEN")
        for score in (1, -101, "bad", True, 0.5):
            result = await self.report_event(self.bob, self.event, {"reason": "x", "score": score})
            self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.report_event(self.bob, self.event, {"reason": ["x"]}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.report_event(self.bob, "not-an-id", {}), 400, "M_INVALID_PARAM")
        result = await self.post(f"{C}/rooms/{q('not-a-room')}/report", {"reason": "x"}, self.bob)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        result = await self.post(f"{C}/users/{q('not-a-user')}/report", {"reason": "x"}, self.bob)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        self.assertEqual(await self.stored(), [])


class ReportRateLimitTests(HomeserverTestCase):
    config_overrides: dict[str, Any] = {"rate_limits": {"enabled": True, "report": {"per_second": 0.001, "burst": 2}}}

    async def test_reports_are_rate_limited_per_user(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        for _ in range(2):
            code, body = await self.post(f"{C}/rooms/{q(room)}/report", {"reason": "x"}, alice)
            self.assertEqual(code, 200, body)
        code, body = await self.post(f"{C}/users/{q(bob.user_id)}/report", {"reason": "x"}, alice)
        self.assertMatrixError((code, body), 429, "M_LIMIT_EXCEEDED")
        self.assertIn("retry_after_ms", body)
        # Another user has a bucket of their own.
        code, body = await self.post(f"{C}/rooms/{q(room)}/report", {"reason": "x"}, bob)
        self.assertEqual(code, 200, body)
