"""Backfill end to end: a user of server A joins a room of server B that has history, and
pages back through it on A (server-server-api §Backfilling and retrieving missing events).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.harness import C, TestServer, TestUser, TwoServerTestCase


def q(value: str) -> str:
    return quote(value, safe="")


class TwoServerBackfillTests(TwoServerTestCase):
    async def page_all(self, server: TestServer, user: TestUser, room_id: str, limit: int = 25) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = None
        for _ in range(100):
            path = f"{C}/rooms/{q(room_id)}/messages?dir=b&limit={limit}" + (f"&from={token}" if token else "")
            code, body = await server.get(path, user)
            self.assertEqual(code, 200, body)
            events += body["chunk"]
            token = body.get("end")
            if token is None:
                return events
        self.fail("pagination did not end")

    async def positions_on_a(self, room_id: str, etype: str) -> list[int]:
        room = await self.a.hs.room_server.get_room(room_id)
        assert room is not None
        rows = await self.a.hs.db.select(
            "positions",
            "SELECT stream_ordering FROM events WHERE room_nid = ? AND type = ? AND stream_ordering IS NOT NULL"
            " ORDER BY stream_ordering",
            room.room_nid,
            etype,
        )
        return [r[0] for r in rows]

    async def send_messages(self, user: TestUser, room_id: str, n: int, prefix: str) -> None:
        for i in range(n):
            code, body = await self.b.put(
                f"{C}/rooms/{q(room_id)}/send/m.room.message/{prefix}{i}",
                {"msgtype": "m.text", "body": f"{prefix} {i}"},
                user,
            )
            self.assertEqual(code, 200, body)

    async def test_join_then_page_back_through_history(self) -> None:
        bob = await self.b.register("bob")
        room_id = await self.b.create_room(bob, {"preset": "public_chat", "name": "History"})
        await self.send_messages(bob, room_id, 100, "msg")
        alice = await self.a.register("alice")
        code, body = await self.a.post(f"{C}/join/{q(room_id)}?server_name={q(self.b.server_name)}", {}, alice)
        self.assertEqual(code, 200, body)
        since = (await self.a.sync(alice))["next_batch"]
        # A has the state at its join, none of the messages
        self.assertEqual(await self.positions_on_a(room_id, "m.room.message"), [])

        on_a = await self.page_all(self.a, alice, room_id)
        ids = [e["event_id"] for e in on_a]
        self.assertEqual(len(ids), len(set(ids)), "duplicates")
        bodies = [e["content"]["body"] for e in on_a if e["type"] == "m.room.message"]
        self.assertEqual(bodies, [f"msg {i}" for i in reversed(range(100))])
        self.assertEqual(on_a[0]["type"], "m.room.member")
        self.assertEqual(on_a[0]["state_key"], alice.user_id)
        # the whole room, in the order its own server shows it
        on_b = await self.page_all(self.b, bob, room_id, limit=40)
        self.assertEqual(ids, [e["event_id"] for e in on_b])
        self.assertEqual(on_a[-1]["type"], "m.room.create")
        # fetched by backfill: stored below every position A had, in order
        positions = await self.positions_on_a(room_id, "m.room.message")
        self.assertEqual(len(positions), 100)
        self.assertTrue(all(p < 0 for p in positions), positions)

        # /sync shows no old event as new
        code, inc = await self.a.get(f"{C}/sync?timeout=0&since={since}", alice)
        self.assertEqual(code, 200, inc)
        timeline = inc["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
        self.assertEqual(timeline, [])
        # history is stored: paging again asks no one and gives the same
        again = await self.page_all(self.a, alice, room_id, limit=60)
        self.assertEqual([e["event_id"] for e in again], ids)

        # new events still arrive after the join, and come first in /messages
        await self.send_messages(bob, room_id, 1, "after")
        for _ in range(100):
            code, inc = await self.a.get(f"{C}/sync?timeout=2000&since={since}", alice)
            self.assertEqual(code, 200, inc)
            timeline = inc["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
            if any(e["content"].get("body") == "after 0" for e in timeline):
                break
            since = inc["next_batch"]
        else:
            self.fail("the new message never arrived")
        latest = await self.page_all(self.a, alice, room_id, limit=200)
        self.assertEqual(latest[0]["content"].get("body"), "after 0")
        self.assertEqual([e["event_id"] for e in latest[1:]], ids)
