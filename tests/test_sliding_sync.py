"""Simplified sliding sync (MSC4186): lists, room results, deltas and connections.

The extensions are in tests/test_sliding_sync_extensions.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.harness import HomeserverTestCase, TestUser

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def a_list(start: int = 0, end: int = 19, limit: int = 1, state: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ranges": [[start, end]], "timeline_limit": limit, "required_state": state or []}
    body.update(extra)
    return body


class SlidingSyncCase(HomeserverTestCase):
    async def ss_raw(
        self, user: TestUser, body: dict[str, Any], pos: str | None = None, timeout: int | None = None
    ) -> tuple[int, Any]:
        query: dict[str, Any] = {}
        if pos is not None:
            query["pos"] = pos
        if timeout is not None:
            query["timeout"] = timeout
        return await self.post(SS + (f"?{urlencode(query)}" if query else ""), body, user)

    async def ss(
        self, user: TestUser, body: dict[str, Any], pos: str | None = None, timeout: int | None = None
    ) -> dict[str, Any]:
        code, resp = await self.ss_raw(user, body, pos, timeout)
        self.assertEqual(code, 200, resp)
        self.assertIsInstance(resp["pos"], str)
        return resp

    async def rooms_of(self, user: TestUser, n: int, name: str = "room") -> list[str]:
        """``n`` rooms, each with a message, the last created the most recent."""
        out = []
        for i in range(n):
            room = await self.create_room(user, name=f"{name} {i}")
            await self.send_message(user, room, f"{name} {i} msg")
            out.append(room)
        return out


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"].get("body") for e in room.get("timeline", []) if e["type"] == "m.room.message"]


def state_keys(room: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in room.get("required_state", [])}


class SlidingSyncBasicsTests(SlidingSyncCase):
    async def test_versions_advertises_it(self) -> None:
        code, body = await self.get("/_matrix/client/versions")
        self.assertEqual(code, 200)
        self.assertIs(body["unstable_features"].get("org.matrix.simplified_msc3575"), True)

    async def test_initial_list_in_activity_order(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        # Activity in the oldest room brings it to the top.
        await self.send_message(alice, rooms[0], "bump")
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 1)}})
        self.assertEqual(resp["lists"]["all"]["count"], 3)
        ops = resp["lists"]["all"]["ops"]
        self.assertEqual(ops, [{"op": "SYNC", "range": [0, 1], "room_ids": [rooms[0], rooms[2]]}])
        self.assertEqual(set(resp["rooms"]), {rooms[0], rooms[2]})
        room = resp["rooms"][rooms[0]]
        self.assertIs(room["initial"], True)
        self.assertEqual(room["name"], "room 0")
        self.assertEqual(bodies(room), ["bump"])
        self.assertIs(room["limited"], True)
        self.assertEqual(room["num_live"], 0)
        self.assertEqual(room["joined_count"], 1)
        self.assertEqual(room["invited_count"], 0)
        self.assertEqual(room["membership"], "join")
        self.assertEqual((room["notification_count"], room["highlight_count"]), (0, 0))
        self.assertIsInstance(room["bump_stamp"], int)
        self.assertIsInstance(room["prev_batch"], str)
        self.assertNotIn("timeline", resp["rooms"][rooms[2]].keys() - {"timeline"})
