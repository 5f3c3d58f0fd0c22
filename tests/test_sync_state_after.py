"""/sync's ``use_state_after`` (spec v1.16, MSC4222): ``state_after`` carries the state up to the
*end* of each room's timeline instead of ``state`` (up to its start), on initial, incremental,
gappy and full-state syncs, for joined and left rooms."""

from __future__ import annotations

import json
from typing import Any

from tests.harness import C, HomeserverTestCase


def _state(room: dict[str, Any], key: str = "state_after") -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["type"], e["state_key"]): e for e in room[key]["events"]}


class StateAfterTests(HomeserverTestCase):
    async def test_initial_sync_has_state_after_and_no_state(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_state(alice, room, "x.topic", {"v": 1})
        joined = (await self.sync(alice, use_state_after="true"))["rooms"]["join"][room]
        self.assertNotIn("state", joined)
        state = _state(joined)
        # the whole state at the end of the timeline, events in the timeline included
        self.assertEqual(state[("x.topic", "")]["content"], {"v": 1})
        self.assertIn(("m.room.create", ""), state)
        self.assertIn(("m.room.member", alice.user_id), state)
        # without the parameter (or with false): state, no state_after
        for params in ({}, {"use_state_after": "false"}):
            plain = (await self.sync(alice, **params))["rooms"]["join"][room]
            self.assertIn("state", plain)
            self.assertNotIn("state_after", plain)

    async def test_incremental_sync_carries_changes_in_the_timeline(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        since = (await self.sync(alice, use_state_after="true"))["next_batch"]
        first = await self.set_state(alice, room, "x.topic", {"v": 1})
        second = await self.set_state(alice, room, "x.topic", {"v": 2})
        await self.send_message(alice, room, "hi")
        joined = (await self.sync(alice, since, use_state_after="true"))["rooms"]["join"][room]
        self.assertFalse(joined["timeline"]["limited"])
        self.assertIn(first, [e["event_id"] for e in joined["timeline"]["events"]])
        # only what changed since the last sync, at the end of the timeline: v2, not v1
        self.assertEqual(list(_state(joined)), [("x.topic", "")])
        self.assertEqual(_state(joined)[("x.topic", "")]["event_id"], second)
        # nothing changed in state: an empty state_after is still there
        since = (await self.sync(alice, since, use_state_after="true"))["next_batch"]
        await self.send_message(alice, room, "again")
        joined = (await self.sync(alice, since, use_state_after="true"))["rooms"]["join"][room]
        self.assertEqual(joined["state_after"], {"events": []})
        self.assertNotIn("state", joined)

    async def test_gappy_sync_gives_state_at_the_end_not_the_start(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        flt = json.dumps({"room": {"timeline": {"limit": 2}}})
        since = (await self.sync(alice, filter=flt, use_state_after="true"))["next_batch"]
        await self.set_state(alice, room, "x.early", {"v": 1})
        for i in range(4):
            await self.send_message(alice, room, f"m{i}")
        late = await self.set_state(alice, room, "x.late", {"v": 1})
        joined = (await self.sync(alice, since, filter=flt, use_state_after="true"))["rooms"]["join"][room]
        self.assertTrue(joined["timeline"]["limited"])
        state = _state(joined)
        self.assertEqual(set(state), {("x.early", ""), ("x.late", "")})
        self.assertEqual(state[("x.late", "")]["event_id"], late)
        # the old way: x.late is in the timeline, so `state` (to the start) leaves it out
        old = (await self.sync(alice, since, filter=flt))["rooms"]["join"][room]
        self.assertEqual(set(_state(old, "state")), {("x.early", "")})
        # full_state: all of it
        full = (await self.sync(alice, since, filter=flt, full_state="true", use_state_after="true"))
        self.assertIn(("m.room.create", ""), _state(full["rooms"]["join"][room]))

    async def test_left_room_state_after_includes_the_leave(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        since = (await self.sync(bob, use_state_after="true"))["next_batch"]
        await self.leave(bob, room)
        await self.send_message(alice, room, "after bob left")
        left = (await self.sync(bob, since, use_state_after="true"))["rooms"]["leave"][room]
        self.assertNotIn("state", left)
        member = _state(left)[("m.room.member", bob.user_id)]
        self.assertEqual(member["content"]["membership"], "leave")

    async def test_lazy_loaded_members(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.join(carol, room)
        await self.send_message(bob, room, "from bob")
        flt = json.dumps({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}})
        joined = (await self.sync(alice, filter=flt, use_state_after="true"))["rooms"]["join"][room]
        members = {k[1] for k in _state(joined) if k[0] == "m.room.member"}
        self.assertEqual(members, {alice.user_id, bob.user_id})

    async def test_bad_value_is_rejected(self) -> None:
        alice = await self.register("alice")
        for bad in ("yes", "TRUE", "", "2"):
            code, body = await self.get(f"{C}/sync?use_state_after={bad}", alice)
            self.assertEqual(code, 400, body)
            self.assertEqual(body["errcode"], "M_INVALID_PARAM")
