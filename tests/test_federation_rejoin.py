"""Rejoining a room of another server: the events sent while we were out of it are fetched.

A user of server A joins a room of server B and leaves it; A is then out of
the room and B sends it nothing. When the user joins again (a federation
join: make_join/send_join), A fills the gap between its forward extremities
(its leave) and the new join with get_missing_events before storing the join
(mxserver/federation/remote_rooms.py ``_fill_rejoin_gap``,
mxserver/federation/missing.py ``GapFiller.fill_gap_before``), so /messages
shows the history in order without a hole.
"""

from __future__ import annotations

from typing import Any

from mxserver.federation.remote_rooms import q
from tests.harness import C, TwoServerTestCase
from tests.harness.metrics import federation_requests
from tests.test_federation_joins import FederationTestMixin

#: server A's config, for the tests that need it to differ
A_CONFIG: dict[str, dict[str, Any]] = {
    "test_gap_beyond_the_bound_keeps_the_latest_events": {"federation": {"rejoin_gap_max_events": 8}},
}


def missing_events_requests() -> float:
    return federation_requests("/_matrix/federation/v1/get_missing_events")


class RejoinGapTests(FederationTestMixin, TwoServerTestCase):
    def server_overrides(self, label: str) -> dict[str, Any]:
        return A_CONFIG.get(self._testMethodName, {}) if label == "a" else {}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")

    async def all_messages_backwards(self, room_id: str) -> list[dict[str, Any]]:
        """Every event A's /messages gives alice, from the latest backwards (all pages)."""
        out: list[dict[str, Any]] = []
        path = f"{C}/rooms/{q(room_id)}/messages?dir=b&limit=20"
        code, body = await self.a.get(path, self.alice)
        for _ in range(50):
            self.assertEqual(code, 200, body)
            out.extend(body["chunk"])
            if not body["chunk"] or "end" not in body:
                break
            code, body = await self.a.get(f"{path}&from={body['end']}", self.alice)
        return out

    async def leave_and_talk(self, count: int) -> tuple[str, list[str]]:
        """Alice joins Bob's room, Bob says "before", alice leaves, Bob says ``count`` things."""
        room_id = await self.public_room(self.b, self.bob)
        self.assertEqual((await self.join(self.a, self.alice, room_id, self.b.server_name))[0], 200)
        await self.send_text(self.b, self.bob, room_id, "before leaving")
        await self.until_text(self.a, self.alice, room_id, "before leaving")
        code, body = await self.a.post(f"{C}/rooms/{q(room_id)}/leave", {}, self.alice)
        self.assertEqual(code, 200, body)
        await self.wait_until(lambda: self._b_sees_leave(room_id), "Alice's leave at B")
        away = [f"while away {i}" for i in range(count)]
        for text in away:
            await self.send_text(self.b, self.bob, room_id, text)
        return room_id, away

    async def _b_sees_leave(self, room_id: str) -> bool:
        return self.alice.user_id not in await self.joined(self.b, self.bob, room_id)

    def kinds(self, events: list[dict[str, Any]]) -> list[str]:
        """The timeline as labels: message bodies, and alice's memberships."""
        out = []
        for e in events:
            if e["type"] == "m.room.message":
                out.append(e["content"]["body"])
            elif e["type"] == "m.room.member" and e.get("state_key") == self.alice.user_id:
                out.append(f"alice {e['content']['membership']}")
        return out

    async def test_history_while_away_is_fetched_on_rejoin(self) -> None:
        room_id, away = await self.leave_and_talk(30)
        since = (await self.a.sync(self.alice))["next_batch"]
        asked = missing_events_requests()
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        self.assertGreater(missing_events_requests(), asked)  # (what the first join must not do)
        # /sync: the room is joined again, its timeline the latest of the gap then the join.
        timeline = (await self.a.sync(self.alice, since))["rooms"]["join"][room_id]["timeline"]
        tail = self.kinds(timeline["events"])
        self.assertEqual(tail[-1], "alice join", timeline)
        self.assertEqual(tail[-3:-1], ["while away 28", "while away 29"], timeline)
        events = await self.all_messages_backwards(room_id)
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)), "duplicates in /messages")
        expected = ["alice join", *reversed(away), "alice leave", "before leaving", "alice join"]
        self.assertEqual(self.kinds(events), expected)
        # The gap's events came before the join on A's stream: the join is the latest event.
        self.assertEqual(events[0]["type"], "m.room.member")
        self.assertEqual(events[0]["state_key"], self.alice.user_id)
        # B's new messages arrive as usual after the rejoin.
        await self.send_text(self.b, self.bob, room_id, "after rejoining")
        await self.until_text(self.a, self.alice, room_id, "after rejoining")
        self.assertEqual(self.kinds(await self.all_messages_backwards(room_id))[:3], ["after rejoining", "alice join", "while away 29"])

    async def test_gap_beyond_the_bound_keeps_the_latest_events(self) -> None:
        """Only the latest ``federation.rejoin_gap_max_events`` of a longer gap are fetched
        (8 here); the join still succeeds."""
        room_id, away = await self.leave_and_talk(15)
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        kinds = self.kinds(await self.all_messages_backwards(room_id))
        # The latest eight, in order, right before the join; nothing older from the gap.
        self.assertEqual(kinds[:9], ["alice join", *reversed(away[-8:])])
        self.assertNotIn(away[0], kinds)
        self.assertEqual(kinds[-3:], ["alice leave", "before leaving", "alice join"])

    async def test_failing_gap_fill_does_not_fail_the_join(self) -> None:
        """A gap fill that raises (a bug, or a peer answering nonsense) never fails the join.

        This one test replaces A's gap filler method: no seam makes the fill fail for sure (a
        tiny request timeout races B's answer on a fast machine)."""

        async def broken(origin: str, room: Any, event: Any) -> int:
            raise RuntimeError("boom")

        self.patch(self.a.hs.federation_gaps, "fill_gap_before", broken)
        room_id, away = await self.leave_and_talk(3)
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        self.assertIn(self.alice.user_id, await self.joined(self.a, self.alice, room_id))
        self.assertEqual(self.kinds(await self.all_messages_backwards(room_id)), ["alice join", "alice leave", "before leaving", "alice join"])
        self.flushLoggedErrors(RuntimeError)

    async def test_first_join_fetches_nothing(self) -> None:
        before = missing_events_requests()
        room_id = await self.public_room(self.b, self.bob)
        self.assertEqual((await self.join(self.a, self.alice, room_id, self.b.server_name))[0], 200)
        self.assertEqual(missing_events_requests(), before)
