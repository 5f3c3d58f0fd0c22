"""Simplified sliding sync (MSC4186): lists, room results, deltas and connections.

The extensions are in tests/test_sliding_sync_extensions.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from twisted.trial.unittest import SynchronousTestCase

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
    async def test_ranges_windows_and_count(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 5)
        newest_first = list(reversed(rooms))
        resp = await self.ss(
            alice,
            {
                "lists": {
                    "two": {"ranges": [[0, 0], [3, 9]], "timeline_limit": 0, "required_state": []},
                    "whole": {"timeline_limit": 0, "required_state": []},
                }
            },
        )
        two = resp["lists"]["two"]
        self.assertEqual(two["count"], 5)
        self.assertEqual(
            two["ops"],
            [
                {"op": "SYNC", "range": [0, 0], "room_ids": newest_first[:1]},
                {"op": "SYNC", "range": [3, 9], "room_ids": newest_first[3:]},
            ],
        )
        # A list without ranges holds every matching room (MSC4186 §SyncListConfig).
        self.assertEqual(resp["lists"]["whole"]["ops"][0]["room_ids"], newest_first)
        self.assertEqual(set(resp["rooms"]), set(rooms))
        # timeline_limit 0: no timeline fields at all
        self.assertNotIn("timeline", resp["rooms"][rooms[0]])
        self.assertNotIn("limited", resp["rooms"][rooms[0]])

    async def test_rooms_outside_the_ranges_are_not_sent(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 4)
        resp = await self.ss(alice, {"lists": {"top": a_list(0, 1)}})
        self.assertEqual(set(resp["rooms"]), {rooms[3], rooms[2]})
        self.assertEqual(resp["lists"]["top"]["count"], 4)

    async def test_activity_orders_the_list_but_only_bump_types_move_bump_stamp(self) -> None:
        alice = await self.register("alice")
        room_a, room_b = await self.rooms_of(alice, 2)
        # A state change is activity (the list order) but not a bump (MSC4186 §bump_stamp).
        await self.set_state(alice, room_a, "m.room.topic", {"topic": "news"})
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 9)}})
        self.assertEqual(resp["lists"]["all"]["ops"][0]["room_ids"], [room_a, room_b])
        stamp_a = resp["rooms"][room_a]["bump_stamp"]
        stamp_b = resp["rooms"][room_b]["bump_stamp"]
        self.assertLess(stamp_a, stamp_b)
        # A message is both: it bumps room A above B's bump.
        await self.send_message(alice, room_a, "again")
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 9)}}, pos=resp["pos"])
        self.assertGreater(resp["rooms"][room_a]["bump_stamp"], stamp_b)

    async def test_invite_is_ordered_by_the_invite_and_carries_stripped_state(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        own = await self.rooms_of(alice, 2)
        room = await self.create_room(bob, name="bob's room", topic="t")
        await self.send_message(bob, room, "before the invite")
        await self.invite(bob, room, alice)
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 9, limit=5)}})
        self.assertEqual(resp["lists"]["all"]["ops"][0]["room_ids"], [room, own[1], own[0]])
        invited = resp["rooms"][room]
        self.assertEqual(invited["membership"], "invite")
        self.assertIs(invited["initial"], True)
        types = {e["type"] for e in invited["invite_state"]}
        self.assertTrue({"m.room.create", "m.room.name", "m.room.member"} <= types, types)
        # Nothing of the room beyond the stripped state (MSC4186 §Invite/knock/rejections).
        for field in ("timeline", "required_state", "name", "joined_count"):
            self.assertNotIn(field, invited)
        # Activity in the room after the invite does not move it: the invitee cannot see it.
        await self.send_message(bob, room, "after the invite")
        await self.send_message(alice, own[0], "mine")
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 9, limit=5)}}, pos=resp["pos"])
        self.assertEqual(resp["lists"]["all"]["ops"][0]["room_ids"], [own[0], room, own[1]])
        self.assertEqual(set(resp["rooms"]), {own[0]})

    async def test_heroes_counts_and_avatar(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        await self.set_profile(bob, displayname="Bob B", avatar_url="mxc://test/bob")
        room = await self.create_room(alice)  # no name: heroes
        await self.invite_and_join(alice, room, bob)
        await self.invite(alice, room, carol)
        await self.set_state(alice, room, "m.room.avatar", {"url": "mxc://test/room"})
        resp = await self.ss(alice, {"lists": {"all": a_list()}})
        entry = resp["rooms"][room]
        self.assertNotIn("name", entry)
        self.assertEqual(entry["avatar"], "mxc://test/room")
        self.assertEqual((entry["joined_count"], entry["invited_count"]), (2, 1))
        self.assertEqual(
            entry["heroes"],
            [
                {"user_id": bob.user_id, "displayname": "Bob B", "avatar_url": "mxc://test/bob"},
                # the invite carries the invitee's profile
                {"user_id": carol.user_id, "displayname": "carol"},
            ],
        )
        # A named room has no heroes.
        await self.set_state(alice, room, "m.room.name", {"name": "named"})
        fresh = await self.ss(alice, {"conn_id": "other", "lists": {"all": a_list()}})
        self.assertEqual(fresh["rooms"][room]["name"], "named")
        self.assertNotIn("heroes", fresh["rooms"][room])

    async def test_is_dm_from_m_direct(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        dm = await self.shared_room(alice, bob)
        group = await self.create_room(alice, name="group")
        code, body = await self.put(
            f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [dm]}, alice
        )
        self.assertEqual(code, 200, body)
        resp = await self.ss(
            alice,
            {
                "lists": {
                    "all": a_list(0, 9),
                    "dms": a_list(0, 9, filters={"is_dm": True}),
                    "not_dms": a_list(0, 9, filters={"is_dm": False}),
                }
            },
        )
        self.assertIs(resp["rooms"][dm]["is_dm"], True)
        self.assertNotIn("is_dm", resp["rooms"][group])
        self.assertEqual(resp["lists"]["dms"]["ops"][0]["room_ids"], [dm])
        self.assertEqual(resp["lists"]["not_dms"]["ops"][0]["room_ids"], [group])
        # m.direct changes: the lists follow.
        code, body = await self.put(
            f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [dm, group]}, alice
        )
        self.assertEqual(code, 200, body)
        resp = await self.ss(alice, {"lists": {"dms": a_list(0, 9, filters={"is_dm": True})}}, pos=resp["pos"])
        self.assertEqual(resp["lists"]["dms"]["count"], 2)

    async def test_unread_counts_from_the_push_reader(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        await self.send_message(bob, room, "one")
        await self.send_message(bob, room, "hey alice", **{"m.mentions": {"user_ids": [alice.user_id]}})
        resp = await self.ss(alice, {"lists": {"all": a_list()}})
        entry = resp["rooms"][room]
        self.assertEqual((entry["notification_count"], entry["highlight_count"]), (2, 1))
        # Reading on another device: the room comes again with the new counts.
        last = entry["timeline"][-1]["event_id"]
        code, body = await self.post(f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}", {}, alice)
        self.assertEqual(code, 200, body)
        resp = await self.ss(alice, {"lists": {"all": a_list()}}, pos=resp["pos"])
        entry = resp["rooms"][room]
        self.assertEqual((entry["notification_count"], entry["highlight_count"]), (0, 0))
        self.assertNotIn("timeline", entry)


    async def test_set_presence(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.shared_room(alice, bob)
        status = f"/_matrix/client/v3/presence/{alice.user_id}/status"
        await self.post(SS + "?set_presence=offline", {}, alice)
        code, body = await self.get(status, bob)
        self.assertEqual((code, body.get("presence")), (200, "offline"), body)
        await self.ss(alice, {"set_presence": "unavailable"})
        code, body = await self.get(status, bob)
        self.assertEqual(body.get("presence"), "unavailable", body)
        await self.ss(alice, {})
        code, body = await self.get(status, bob)
        self.assertEqual(body.get("presence"), "online", body)


class SlidingSyncRequiredStateTests(SlidingSyncCase):
    async def test_exact_keys_wildcards_and_me(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        await self.set_state(alice, room, "m.room.topic", {"topic": "t"})
        await self.set_state(alice, room, "org.example.thing", {"n": 1}, state_key="a")
        await self.set_state(alice, room, "org.example.thing", {"n": 2}, state_key="b")
        resp = await self.ss(
            alice,
            {
                "lists": {
                    "all": a_list(
                        state=[
                            ["m.room.topic", ""],
                            ["org.example.thing", "*"],
                            ["m.room.member", "$ME"],
                            ["m.room.nothing", ""],
                        ]
                    )
                }
            },
        )
        self.assertEqual(
            state_keys(resp["rooms"][room]),
            {
                ("m.room.topic", ""),
                ("org.example.thing", "a"),
                ("org.example.thing", "b"),
                ("m.room.member", alice.user_id),
            },
        )
        everything = await self.ss(alice, {"conn_id": "all", "lists": {"all": a_list(state=[["*", "*"]])}})
        keys = state_keys(everything["rooms"][room])
        self.assertIn(("m.room.member", bob.user_id), keys)
        self.assertIn(("m.room.create", ""), keys)
        self.assertIn(("m.room.power_levels", ""), keys)

    async def test_lazy_members(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.shared_room(alice, bob)
        await self.invite_and_join(alice, room, carol)
        await self.send_message(bob, room, "from bob")
        config = a_list(limit=1, state=[["*", "*"], ["m.room.member", "$LAZY"]])
        resp = await self.ss(alice, {"lists": {"all": config}})
        keys = state_keys(resp["rooms"][room])
        members = {k for t, k in keys if t == "m.room.member"}
        # Everything but members, and only the timeline's senders of those.
        self.assertEqual(members, {bob.user_id})
        self.assertIn(("m.room.power_levels", ""), keys)
        # Carol speaks: her membership comes, Bob's does not come again.
        await self.send_message(carol, room, "from carol")
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        self.assertEqual(state_keys(resp["rooms"][room]), {("m.room.member", carol.user_id)})
        await self.send_message(bob, room, "bob again")
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        self.assertNotIn("required_state", resp["rooms"][room])
        # The invite's sender (Alice, new to this connection) and its target come.
        dave = await self.register("dave")
        await self.invite(alice, room, dave)
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        self.assertEqual(
            state_keys(resp["rooms"][room]), {("m.room.member", dave.user_id), ("m.room.member", alice.user_id)}
        )
        # With a gap (limited), only the timeline's members: Carol's leave is not in it.
        await self.leave(carol, room)
        await self.send_message(alice, room, "carol left")
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        entry = resp["rooms"][room]
        self.assertIs(entry["limited"], True)
        self.assertNotIn("required_state", entry)

    async def test_state_changes_are_sent_as_deltas(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, name="before")
        config = a_list(limit=1, state=[["m.room.name", ""], ["m.room.topic", ""]])
        resp = await self.ss(alice, {"lists": {"all": config}})
        self.assertEqual(state_keys(resp["rooms"][room]), {("m.room.name", "")})
        await self.set_state(alice, room, "m.room.name", {"name": "after"})
        await self.set_state(alice, room, "m.room.join_rules", {"join_rule": "public"})
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        entry = resp["rooms"][room]
        self.assertNotIn("initial", entry)
        self.assertEqual(entry["name"], "after")
        # only what changed and is asked for
        self.assertEqual([e["content"] for e in entry["required_state"]], [{"name": "after"}])
        # A name removed is a null name (MSC4186 §Room results).
        await self.set_state(alice, room, "m.room.name", {})
        resp = await self.ss(alice, {"lists": {"all": config}}, pos=resp["pos"])
        self.assertIsNone(resp["rooms"][room]["name"])

    async def test_required_state_expansion_is_sent_at_once_and_not_twice(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, name="r", topic="the topic")
        resp = await self.ss(alice, {"lists": {"all": a_list(state=[["m.room.name", ""]])}})
        self.assertEqual(state_keys(resp["rooms"][room]), {("m.room.name", "")})
        # More required_state: the room comes at once with the new state only.
        wider = a_list(state=[["m.room.name", ""], ["m.room.topic", ""]])
        resp = await self.ss(alice, {"lists": {"all": wider}}, pos=resp["pos"])
        entry = resp["rooms"][room]
        self.assertEqual(state_keys(entry), {("m.room.topic", "")})
        self.assertNotIn("timeline", entry)
        self.assertNotIn("initial", entry)
        # Dropping the topic and asking again while it did not change sends nothing again.
        resp = await self.ss(alice, {"lists": {"all": a_list(state=[["m.room.name", ""]])}}, pos=resp["pos"])
        self.assertEqual(resp["rooms"], {})
        resp = await self.ss(alice, {"lists": {"all": wider}}, pos=resp["pos"])
        self.assertEqual(resp["rooms"], {})
        # But a topic changed while not asked for comes when asked again.
        resp = await self.ss(alice, {"lists": {"all": a_list(state=[["m.room.name", ""]])}}, pos=resp["pos"])
        await self.set_state(alice, room, "m.room.topic", {"topic": "new"})
        resp = await self.ss(alice, {"lists": {"all": a_list(state=[["m.room.name", ""]])}}, pos=resp["pos"])
        self.assertNotIn("required_state", resp["rooms"][room])
        resp = await self.ss(alice, {"lists": {"all": wider}}, pos=resp["pos"])
        self.assertEqual([e["content"] for e in resp["rooms"][room]["required_state"]], [{"topic": "new"}])


class SlidingSyncDeltaTests(SlidingSyncCase):
    async def test_incremental_sends_only_what_is_new(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        body = {"lists": {"all": a_list(0, 9, limit=3, state=[["m.room.name", ""]])}}
        first = await self.ss(alice, body)
        self.assertEqual(len(first["rooms"]), 3)
        # Nothing new: no rooms (and timeout 0 answers at once).
        idle = await self.ss(alice, body, pos=first["pos"], timeout=0)
        self.assertEqual(idle["rooms"], {})
        self.assertEqual(idle["lists"]["all"]["count"], 3)
        await self.send_message(alice, rooms[0], "new one")
        resp = await self.ss(alice, body, pos=idle["pos"])
        self.assertEqual(list(resp["rooms"]), [rooms[0]])
        entry = resp["rooms"][rooms[0]]
        self.assertEqual(bodies(entry), ["new one"])
        self.assertEqual(entry["num_live"], 1)
        self.assertIs(entry["limited"], False)
        for field in ("initial", "name", "required_state", "joined_count", "heroes"):
            self.assertNotIn(field, entry)
        self.assertEqual(resp["lists"]["all"]["ops"][0]["room_ids"][0], rooms[0])

    async def test_pos_and_prev_batch_page_messages(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=1)}})
        await self.send_message(alice, room, "after the pos")
        # MSC4186 §Connections: a pos is a /messages token like a /sync next_batch.
        code, page = await self.messages(alice, room, dir="f", **{"from": resp["pos"]})
        self.assertEqual(code, 200, page)
        self.assertEqual([e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"], ["after the pos"])
        code, page = await self.messages(alice, room, dir="b", **{"from": resp["rooms"][room]["prev_batch"]})
        self.assertEqual(code, 200, page)
        self.assertEqual(page["chunk"][0]["type"], "m.room.name")  # the event before the timeline's

    async def test_bundled_aggregations_on_new_and_limited_timelines(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        root = await self.send_message(alice, room, "root")
        await self.send_message(alice, room, "reply", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=5)}})
        events = {e["event_id"]: e for e in resp["rooms"][room]["timeline"]}
        self.assertEqual(events[root]["unsigned"]["m.relations"]["m.thread"]["count"], 1)
        # Without a gap the client has every child as it came: no bundles (as /v3/sync).
        await self.send_message(alice, room, "reply 2", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=5)}}, pos=resp["pos"])
        (event,) = resp["rooms"][room]["timeline"]
        self.assertNotIn("m.relations", event.get("unsigned", {}))

    async def test_several_requests_accumulate_deltas(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        body = {"lists": {"all": a_list(limit=10)}}
        resp = await self.ss(alice, body)
        seen = bodies(resp["rooms"][room])
        for i in range(3):
            await self.send_message(alice, room, f"m{i}")
            resp = await self.ss(alice, body, pos=resp["pos"])
            self.assertEqual(bodies(resp["rooms"][room]), [f"m{i}"])
            seen += bodies(resp["rooms"][room])
        self.assertEqual(seen, ["room 0 msg", "m0", "m1", "m2"])

    async def test_timeline_limit_growth_resends_the_latest_events(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        for i in range(4):
            await self.send_message(alice, room, f"m{i}")
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=1)}})
        self.assertEqual(bodies(resp["rooms"][room]), ["m3"])
        # MSC4186 §Changes to timeline_limit: the latest N at once, flagged.
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=3)}}, pos=resp["pos"])
        entry = resp["rooms"][room]
        self.assertEqual(bodies(entry), ["m1", "m2", "m3"])
        self.assertIs(entry["expanded_timeline"], True)
        self.assertIs(entry["unstable_expanded_timeline"], True)
        self.assertNotIn("initial", entry)
        self.assertEqual(entry["num_live"], 0)
        # Going back down and up again without a gap: the client has them, nothing is sent.
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=1)}}, pos=resp["pos"])
        self.assertEqual(resp["rooms"], {})
        resp = await self.ss(alice, {"lists": {"all": a_list(limit=3)}}, pos=resp["pos"])
        self.assertEqual(resp["rooms"], {})

    async def test_room_updated_out_of_range_gets_what_it_missed(self) -> None:
        alice = await self.register("alice")
        room_a, room_b = await self.rooms_of(alice, 2)
        top = {"lists": {"top": a_list(0, 0, limit=5)}}
        both = {"lists": {"top": a_list(0, 1, limit=5)}}
        resp = await self.ss(alice, both)
        self.assertEqual(set(resp["rooms"]), {room_a, room_b})
        resp = await self.ss(alice, top, pos=resp["pos"])
        # B falls out of the window while something happens in it.
        await self.send_message(alice, room_b, "b1")
        await self.send_message(alice, room_a, "a1")
        resp = await self.ss(alice, top, pos=resp["pos"])
        self.assertEqual(list(resp["rooms"]), [room_a])
        await self.send_message(alice, room_a, "a2")
        resp = await self.ss(alice, top, pos=resp["pos"])
        self.assertEqual(list(resp["rooms"]), [room_a])
        # Back in the window: exactly what it missed, as a delta.
        resp = await self.ss(alice, both, pos=resp["pos"])
        self.assertEqual(list(resp["rooms"]), [room_b])
        entry = resp["rooms"][room_b]
        self.assertEqual(bodies(entry), ["b1"])
        self.assertNotIn("initial", entry)
        self.assertEqual(entry["num_live"], 0)

    async def test_growing_the_range_sends_only_the_new_rooms(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 4)
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 1)}})
        self.assertEqual(set(resp["rooms"]), {rooms[3], rooms[2]})
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 3)}}, pos=resp["pos"])
        self.assertEqual(set(resp["rooms"]), {rooms[1], rooms[0]})
        self.assertTrue(all(r["initial"] for r in resp["rooms"].values()))


class SlidingSyncSubscriptionTests(SlidingSyncCase):
    async def test_subscription_with_its_own_config(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        for i in range(3):
            await self.send_message(alice, rooms[0], f"old {i}")
        await self.send_message(alice, rooms[2], "newest")
        resp = await self.ss(
            alice,
            {
                "lists": {"top": a_list(0, 0, limit=1)},
                "room_subscriptions": {
                    rooms[0]: {"timeline_limit": 2, "required_state": [["m.room.create", ""]]},
                    # in the list too: the configs combine (MSC4186 §Combining room configs)
                    rooms[2]: {"timeline_limit": 3, "required_state": [["m.room.name", ""]]},
                },
            },
        )
        self.assertEqual(set(resp["rooms"]), {rooms[0], rooms[2]})
        self.assertEqual(bodies(resp["rooms"][rooms[0]]), ["old 1", "old 2"])
        self.assertEqual(state_keys(resp["rooms"][rooms[0]]), {("m.room.create", "")})
        self.assertEqual(len(resp["rooms"][rooms[2]]["timeline"]), 3)
        self.assertEqual(state_keys(resp["rooms"][rooms[2]]), {("m.room.name", "")})

    async def test_rooms_the_user_cannot_see_are_ignored(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        secret = await self.create_room(bob, name="secret")
        left = await self.create_room(alice, name="left")
        await self.send_message(alice, left, "before leaving")
        await self.leave(alice, left)
        resp = await self.ss(
            alice,
            {
                "room_subscriptions": {
                    secret: {"timeline_limit": 5, "required_state": [["*", "*"]]},
                    "!nowhere:test": {"timeline_limit": 5, "required_state": []},
                    left: {"timeline_limit": 5, "required_state": [["m.room.name", ""]]},
                }
            },
        )
        self.assertEqual(set(resp["rooms"]), {left})
        # A room the user was in: what they saw, up to their leave.
        entry = resp["rooms"][left]
        self.assertEqual(entry["membership"], "leave")
        self.assertEqual(entry["timeline"][-1]["type"], "m.room.member")
        self.assertEqual(entry["name"], "left")


class SlidingSyncMembershipTests(SlidingSyncCase):
    """Invites, joins, leaves, kicks and bans move rooms in and out of lists."""

    async def _lists(self, user: TestUser, pos: str | None = None) -> dict[str, Any]:
        body = {
            "lists": {
                "all": a_list(0, 9, limit=5, state=[["m.room.member", "$ME"]]),
                "invites": a_list(0, 9, limit=5, filters={"is_invite": True}),
            }
        }
        return await self.ss(user, body, pos=pos)

    @staticmethod
    def _ids(resp: dict[str, Any], key: str = "all") -> list[str]:
        return resp["lists"][key]["ops"][0]["room_ids"]

    async def test_invite_then_join(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(bob, name="party")
        resp = await self._lists(alice)
        self.assertEqual(resp["rooms"], {})
        await self.invite(bob, room, alice)
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(self._ids(resp, "invites"), [room])
        self.assertEqual(resp["rooms"][room]["membership"], "invite")
        await self.join(alice, room)
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(self._ids(resp, "invites"), [])
        self.assertEqual(self._ids(resp), [room])
        entry = resp["rooms"][room]
        # Joined: the whole room, as new (the client only had the stripped state).
        self.assertIs(entry["initial"], True)
        self.assertEqual(entry["membership"], "join")
        self.assertEqual(entry["name"], "party")
        self.assertEqual(state_keys(entry), {("m.room.member", alice.user_id)})
        self.assertEqual(entry["timeline"][-1]["content"]["membership"], "join")

    async def test_own_leave_is_sent_once_then_the_room_drops_out(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(bob, alice)
        resp = await self._lists(alice)
        self.assertEqual(self._ids(resp), [room])
        await self.send_message(bob, room, "before")
        await self.leave(alice, room)
        await self.send_message(bob, room, "after")
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(self._ids(resp), [room])
        entry = resp["rooms"][room]
        self.assertEqual(entry["membership"], "leave")
        self.assertEqual(bodies(entry), ["before"])  # nothing after the leave
        self.assertEqual(entry["timeline"][-1]["content"]["membership"], "leave")
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(resp["lists"]["all"]["count"], 0)
        self.assertEqual(resp["rooms"], {})
        # A new connection does not list it either.
        fresh = await self._lists(alice)
        self.assertEqual(fresh["lists"]["all"]["count"], 0)

    async def test_kick_and_ban_stay_in_the_list(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        kicked = await self.shared_room(bob, alice)
        banned = await self.shared_room(bob, alice)
        resp = await self._lists(alice)
        code, body = await self.post(f"/_matrix/client/v3/rooms/{kicked}/kick", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)
        code, body = await self.post(f"/_matrix/client/v3/rooms/{banned}/ban", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)
        await self.send_message(bob, kicked, "after the kick")
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(self._ids(resp), [banned, kicked])
        self.assertEqual(resp["rooms"][kicked]["membership"], "leave")
        self.assertEqual(resp["rooms"][banned]["membership"], "ban")
        self.assertEqual(resp["rooms"][kicked]["timeline"][-1]["sender"], bob.user_id)
        self.assertEqual(bodies(resp["rooms"][kicked]), [])
        # They stay listed (the user may not have seen the kick otherwise), with nothing new.
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(resp["lists"]["all"]["count"], 2)
        self.assertEqual(resp["rooms"], {})
        fresh = await self._lists(alice)
        self.assertEqual(set(self._ids(fresh)), {kicked, banned})
        self.assertEqual(fresh["rooms"][kicked]["bump_stamp"] < fresh["rooms"][banned]["bump_stamp"], True)

    async def test_rejected_invite_is_sent_once(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(bob)
        await self.invite(bob, room, alice)
        resp = await self._lists(alice)
        self.assertEqual(self._ids(resp, "invites"), [room])
        await self.leave(alice, room)
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(resp["rooms"][room]["membership"], "leave")
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(resp["lists"]["all"]["count"], 0)

    async def test_rejoin_after_a_kick_is_sent_whole(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(bob, preset="public_chat", name="pub")
        await self.join(alice, room)
        resp = await self._lists(alice)
        code, body = await self.post(f"/_matrix/client/v3/rooms/{room}/kick", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)
        resp = await self._lists(alice, resp["pos"])
        self.assertEqual(resp["rooms"][room]["membership"], "leave")
        await self.join(alice, room)
        resp = await self._lists(alice, resp["pos"])
        self.assertIs(resp["rooms"][room]["initial"], True)
        self.assertEqual(resp["rooms"][room]["membership"], "join")

    async def test_knock_carries_stripped_state(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(bob, name="knock here")
        await self.set_state(bob, room, "m.room.join_rules", {"join_rule": "knock"})
        code, body = await self.post(f"/_matrix/client/v3/knock/{room}", {"reason": "let me in"}, alice)
        self.assertEqual(code, 200, body)
        resp = await self._lists(alice)
        entry = resp["rooms"][room]
        self.assertEqual(entry["membership"], "knock")
        self.assertIn("m.room.name", {e["type"] for e in entry["invite_state"]})
        self.assertNotIn("timeline", entry)
        # Let in: the room comes whole.
        await self.invite(bob, room, alice)
        await self.join(alice, room)
        resp = await self._lists(alice, resp["pos"])
        self.assertIs(resp["rooms"][room]["initial"], True)
        self.assertEqual(resp["rooms"][room]["name"], "knock here")

    async def test_display_name_change_is_not_a_new_join(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        resp = await self._lists(alice)
        await self.set_profile(alice, displayname="Alice A")
        resp = await self._lists(alice, resp["pos"])
        entry = resp["rooms"][room]
        self.assertNotIn("initial", entry)
        self.assertEqual(
            [e["content"].get("displayname") for e in entry["required_state"]], ["Alice A"]
        )


class SlidingSyncConnectionTests(SlidingSyncCase):
    async def test_retry_with_the_same_pos_gets_the_same_rooms(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 2)
        first = await self.ss(alice, {"lists": {"all": a_list(0, 0)}})
        # The response to the next request is lost: the client asks again with the same pos.
        lost = await self.ss(alice, {"lists": {"all": a_list(0, 1)}}, pos=first["pos"])
        self.assertEqual(set(lost["rooms"]), {rooms[0]})
        again = await self.ss(alice, {"lists": {"all": a_list(0, 1)}}, pos=first["pos"])
        self.assertEqual(set(again["rooms"]), {rooms[0]})
        self.assertIs(again["rooms"][rooms[0]]["initial"], True)
        # Using the retried response's pos voids the lost one.
        resp = await self.ss(alice, {"lists": {"all": a_list(0, 1)}}, pos=again["pos"])
        self.assertEqual(resp["rooms"], {})
        code, body = await self.ss_raw(alice, {"lists": {"all": a_list(0, 1)}}, pos=lost["pos"])
        self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        # An older pos, once a newer one was used, is unknown too.
        code, body = await self.ss_raw(alice, {"lists": {"all": a_list(0, 1)}}, pos=first["pos"])
        self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")

    async def test_pos_belongs_to_its_user_device_and_conn_id(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.rooms_of(alice, 1)
        resp = await self.ss(alice, {"conn_id": "main", "lists": {"all": a_list()}})
        for who, conn_id in ((bob, "main"), (alice, "other")):
            code, body = await self.ss_raw(who, {"conn_id": conn_id, "lists": {"all": a_list()}}, pos=resp["pos"])
            self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        code, login = await self.post(
            "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password},
        )
        self.assertEqual(code, 200, login)
        code, body = await self.ss_raw(login["access_token"], {"conn_id": "main", "lists": {"all": a_list()}}, pos=resp["pos"])
        self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        for garbage in ("", "nonsense", "s1_2~x", "s1~99999", "x~1"):
            code, body = await self.ss_raw(alice, {"conn_id": "main", "lists": {"all": a_list()}}, pos=garbage or "~")
            self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        # The owner still can.
        await self.ss(alice, {"conn_id": "main", "lists": {"all": a_list()}}, pos=resp["pos"])

    async def test_connections_are_independent(self) -> None:
        alice = await self.register("alice")
        (room,) = await self.rooms_of(alice, 1)
        one = await self.ss(alice, {"conn_id": "one", "lists": {"all": a_list()}})
        two = await self.ss(alice, {"conn_id": "two", "lists": {"all": a_list()}})
        self.assertIn(room, one["rooms"])
        self.assertIn(room, two["rooms"])
        await self.send_message(alice, room, "hi")
        one = await self.ss(alice, {"conn_id": "one", "lists": {"all": a_list()}}, pos=one["pos"])
        self.assertEqual(bodies(one["rooms"][room]), ["hi"])
        two = await self.ss(alice, {"conn_id": "two", "lists": {"all": a_list()}}, pos=two["pos"])
        self.assertEqual(bodies(two["rooms"][room]), ["hi"])

    async def test_restart_keeps_the_connection(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        body = {"lists": {"all": a_list(0, 1, limit=2, state=[["m.room.name", ""]])}}
        resp = await self.ss(alice, body)
        self.assertEqual(set(resp["rooms"]), {rooms[2], rooms[1]})
        # A response whose pos the client has not used yet survives too.
        await self.send_message(alice, rooms[0], "wake up")
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(set(resp["rooms"]), {rooms[0]})
        await self.restart()
        await self.send_message(alice, rooms[1], "after restart")
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(list(resp["rooms"]), [rooms[1]])
        entry = resp["rooms"][rooms[1]]
        self.assertNotIn("initial", entry)
        self.assertEqual(bodies(entry), ["after restart"])
        self.assertEqual(entry["num_live"], 1)
        # and the rooms it had are still known: nothing else comes
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(resp["rooms"], {})

    async def test_a_device_keeps_a_bounded_number_of_connections(self) -> None:
        from mxserver.sliding_sync.connections import MAX_CONNECTIONS_PER_DEVICE

        alice = await self.register("alice")
        await self.rooms_of(alice, 1)
        positions = []
        for i in range(MAX_CONNECTIONS_PER_DEVICE + 1):
            resp = await self.ss(alice, {"conn_id": f"c{i}", "lists": {"all": a_list()}})
            positions.append(resp["pos"])
        # The oldest one went.
        code, body = await self.ss_raw(alice, {"conn_id": "c0", "lists": {"all": a_list()}}, pos=positions[0])
        self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        for i in (1, MAX_CONNECTIONS_PER_DEVICE):
            await self.ss(alice, {"conn_id": f"c{i}", "lists": {"all": a_list()}}, pos=positions[i])

    async def test_removing_the_device_removes_its_connections(self) -> None:
        alice = await self.register("alice")
        await self.rooms_of(alice, 1)
        code, login = await self.post(
            "/_matrix/client/v3/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password},
        )
        self.assertEqual(code, 200, login)
        phone = TestUser(alice.user_id, login["access_token"], login["device_id"], alice.password)
        resp = await self.ss(phone, {"lists": {"all": a_list()}})
        code, body = await self.delete(
            f"/_matrix/client/v3/devices/{phone.device_id}",
            {"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password}},
            alice,
        )
        self.assertEqual(code, 200, body)
        rows = await self.hs.db.select("t", "SELECT COUNT(*) FROM sliding_sync_connections WHERE device_id = ?", phone.device_id)
        self.assertEqual(rows[0][0], 0)
        self.assertEqual(self.hs.sliding_sync_connections.cached_connections, 0)
        self.assertTrue(resp["pos"])


class SlidingSyncLongPollTests(SlidingSyncCase):
    async def test_woken_by_a_new_message(self) -> None:
        from twisted.internet.defer import ensureDeferred

        from tests.harness import until_waiting

        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        body = {"lists": {"all": a_list()}}
        resp = await self.ss(alice, body)
        waiting = ensureDeferred(self.ss(alice, body, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        self.assertFalse(waiting.called)
        await self.send_message(bob, room, "wake")
        resp = await waiting
        self.assertEqual(bodies(resp["rooms"][room]), ["wake"])

    async def test_woken_by_an_invite(self) -> None:
        from twisted.internet.defer import ensureDeferred

        from tests.harness import until_waiting

        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(bob)
        body = {"lists": {"all": a_list()}}
        resp = await self.ss(alice, body)
        waiting = ensureDeferred(self.ss(alice, body, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        await self.invite(bob, room, alice)
        resp = await waiting
        self.assertEqual(resp["rooms"][room]["membership"], "invite")

    async def test_times_out_empty_and_without_pos_answers_at_once(self) -> None:
        alice = await self.register("alice")
        await self.rooms_of(alice, 1)
        body = {"lists": {"all": a_list()}}
        resp = await self.ss(alice, body, timeout=60_000)  # no pos: at once
        resp = await self.ss(alice, body, pos=resp["pos"], timeout=50)
        self.assertEqual(resp["rooms"], {})
        self.assertEqual(self.hs.notifier.waiting, 0)

    async def test_activity_no_list_holds_does_not_end_the_wait(self) -> None:
        from twisted.internet.defer import ensureDeferred

        from tests.harness import until_waiting

        alice = await self.register("alice")
        bob = await self.register("bob")
        dm = await self.shared_room(alice, bob)
        group = await self.shared_room(alice, bob)
        code, body = await self.put(
            f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [dm]}, alice
        )
        self.assertEqual(code, 200, body)
        request = {"lists": {"dms": a_list(filters={"is_dm": True})}}
        resp = await self.ss(alice, request)
        waiting = ensureDeferred(self.ss(alice, request, pos=resp["pos"], timeout=20_000))
        await until_waiting(self.hs, 1)
        await self.send_message(bob, group, "not in any list")
        await until_waiting(self.hs, 1)  # woken, found nothing, waiting again
        self.assertFalse(waiting.called)
        await self.send_message(bob, dm, "in the list")
        resp = await waiting
        self.assertEqual(list(resp["rooms"]), [dm])


class SlidingSyncFilterTests(SlidingSyncCase):
    async def test_filters(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        plain = await self.create_room(alice, name="Plain Talk")
        encrypted = await self.create_room(
            alice,
            name="secret",
            initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        )
        space = await self.create_room(alice, name="space", creation_content={"type": "m.space"})
        await self.set_state(alice, space, "m.space.child", {"via": ["test"]}, state_key=plain)
        # a removed child (no via) is no child
        await self.set_state(alice, space, "m.space.child", {}, state_key=encrypted)
        invite = await self.create_room(bob, name="invite")
        await self.invite(bob, invite, alice)
        code, body = await self.put(
            f"/_matrix/client/v3/user/{alice.user_id}/rooms/{encrypted}/tags/m.favourite", {}, alice
        )
        self.assertEqual(code, 200, body)
        code, body = await self.put(f"/_matrix/client/v3/user/{alice.user_id}/rooms/{plain}/tags/u.work", {}, alice)
        self.assertEqual(code, 200, body)
        code, body = await self.put(
            f"/_matrix/client/v3/user/{alice.user_id}/rooms/{plain}/tags/m.lowpriority", {}, alice
        )
        self.assertEqual(code, 200, body)

        cases: dict[str, tuple[dict[str, Any], set[str]]] = {
            "encrypted": ({"is_encrypted": True}, {encrypted}),
            # the invite's stripped state has no encryption event and a create event: unencrypted
            "unencrypted": ({"is_encrypted": False}, {plain, space, invite}),
            "invites": ({"is_invite": True}, {invite}),
            "no_invites": ({"is_invited": False}, {plain, encrypted, space}),
            "spaces_only": ({"room_types": ["m.space"]}, {space}),
            "untyped": ({"room_types": [None]}, {plain, encrypted, invite}),
            "no_spaces": ({"not_room_types": ["m.space"]}, {plain, encrypted, invite}),
            "both": ({"room_types": ["m.space", None], "not_room_types": ["m.space"]}, {plain, encrypted, invite}),
            "in_space": ({"spaces": [space, "!unknown:test"]}, {plain}),
            "favourites": ({"tags": ["m.favourite", "u.work"]}, {encrypted, plain}),
            "not_low": ({"tags": ["m.favourite", "u.work"], "not_tags": ["m.lowpriority"]}, {encrypted}),
            "untagged": ({"not_tags": ["m.favourite", "u.work"]}, {space, invite}),
            "named": ({"room_name_like": "TALK"}, {plain}),
            "combined": ({"is_encrypted": False, "is_invite": False, "not_room_types": ["m.space"]}, {plain}),
        }
        resp = await self.ss(
            alice, {"lists": {key: a_list(0, 9, limit=0, filters=filters) for key, (filters, _) in cases.items()}}
        )
        for key, (_, expected) in cases.items():
            got = set(resp["lists"][key]["ops"][0]["room_ids"])
            self.assertEqual(got, expected, key)
            self.assertEqual(resp["lists"][key]["count"], len(expected), key)

    async def test_filters_follow_state_changes(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, name="first")
        body = {"lists": {"enc": a_list(filters={"is_encrypted": True}), "named": a_list(filters={"room_name_like": "second"})}}
        resp = await self.ss(alice, body)
        self.assertEqual(resp["lists"]["enc"]["count"], 0)
        await self.set_state(alice, room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
        await self.set_state(alice, room, "m.room.name", {"name": "the second"})
        resp = await self.ss(alice, body, pos=resp["pos"])
        self.assertEqual(resp["lists"]["enc"]["count"], 1)
        self.assertEqual(resp["lists"]["named"]["count"], 1)


class SlidingSyncKeptOrderTests(SlidingSyncCase):
    """The list order kept per user between requests: every request, on a new connection or not,
    sees the order and count a fresh computation would give."""

    #: the default list: the user's own membership, so that a leave is sent
    ALL = a_list(0, 9, limit=0, state=[["m.room.member", "$ME"]])

    @staticmethod
    def _ids(resp: dict[str, Any], key: str = "all") -> list[str]:
        return resp["lists"][key]["ops"][0]["room_ids"]

    async def fresh(self, user: TestUser, conn_id: str, **lists: Any) -> dict[str, Any]:
        """An initial request on a new connection (the kept order answers it)."""
        return await self.ss(user, {"conn_id": conn_id, "lists": lists or {"all": self.ALL}})

    async def test_new_messages_move_rooms_to_the_top(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        rooms = await self.rooms_of(alice, 4)
        first = await self.fresh(alice, "c0")
        self.assertEqual(self._ids(first), rooms[::-1])
        await self.send_message(alice, rooms[1], "up")
        resp = await self.fresh(alice, "c1")
        self.assertEqual(self._ids(resp), [rooms[1], rooms[3], rooms[2], rooms[0]])
        self.assertEqual(resp["lists"]["all"]["count"], 4)
        # Another user's message moves the room too; the window follows the order.
        await self.invite_and_join(alice, rooms[0], bob)
        await self.send_message(bob, rooms[0], "hi")
        resp = await self.ss(alice, {"conn_id": "c2", "lists": {"top": a_list(0, 1, limit=1)}})
        self.assertEqual(self._ids(resp, "top"), [rooms[0], rooms[1]])
        self.assertEqual(bodies(resp["rooms"][rooms[0]]), ["hi"])
        # The first connection is brought up to date the same way.
        resp = await self.ss(alice, {"conn_id": "c0", "lists": {"all": self.ALL}}, pos=first["pos"])
        self.assertEqual(self._ids(resp), [rooms[0], rooms[1], rooms[3], rooms[2]])

    async def test_state_events_and_other_types_move_the_order_but_not_bump_stamp(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 3)
        before = await self.fresh(alice, "c0", all=a_list(0, 9, limit=1))
        stamp = before["rooms"][rooms[0]]["bump_stamp"]
        # Not among the bump event types (MSC4186 §bump_stamp): activity all the same.
        await self.set_state(alice, rooms[0], "m.room.topic", {"topic": "news"})
        resp = await self.fresh(alice, "c1", all=a_list(0, 9, limit=1))
        self.assertEqual(self._ids(resp), [rooms[0], rooms[2], rooms[1]])
        self.assertEqual(resp["rooms"][rooms[0]]["bump_stamp"], stamp)
        code, body = await self.get(f"/_matrix/client/v3/rooms/{rooms[1]}/messages?dir=b&limit=1", alice)
        self.assertEqual(code, 200, body)
        message = body["chunk"][0]["event_id"]
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": message, "key": "+1"}}
        await self.send_message(alice, rooms[1], event_type="m.reaction", **reaction)
        resp = await self.fresh(alice, "c2", all=a_list(0, 9, limit=0))
        self.assertEqual(self._ids(resp), [rooms[1], rooms[0], rooms[2]])
        # A bump type moves both.
        await self.send_message(alice, rooms[2], "bump")
        resp = await self.fresh(alice, "c3", all=a_list(0, 9, limit=1))
        self.assertEqual(self._ids(resp), [rooms[2], rooms[1], rooms[0]])
        self.assertGreater(resp["rooms"][rooms[2]]["bump_stamp"], stamp)

    async def test_joins_leaves_and_invites_change_the_list(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        own = await self.rooms_of(alice, 3)
        first = await self.fresh(alice, "c0")
        self.assertEqual(first["lists"]["all"]["count"], 3)
        invited = await self.create_room(bob, name="bob's")
        await self.send_message(bob, invited, "before")
        await self.invite(bob, invited, alice)
        resp = await self.fresh(alice, "c1")
        self.assertEqual(self._ids(resp), [invited, *own[::-1]])
        # Activity in the room after the invite does not move it; activity elsewhere does.
        await self.send_message(bob, invited, "after")
        await self.send_message(alice, own[0], "mine")
        resp = await self.fresh(alice, "c2")
        self.assertEqual(self._ids(resp), [own[0], invited, own[2], own[1]])
        # Joined: placed by the room's activity from now on.
        await self.join(alice, invited)
        await self.send_message(bob, invited, "welcome")
        c3 = await self.fresh(alice, "c3")
        self.assertEqual(self._ids(c3), [invited, own[0], own[2], own[1]])
        # Left by herself: out of every new connection's list, sent once to a connection that
        # had it (in its place by the leave).
        await self.leave(alice, own[2])
        await self.send_message(alice, own[1], "later")
        resp = await self.fresh(alice, "c4")
        self.assertEqual(self._ids(resp), [own[1], invited, own[0]])
        self.assertEqual(resp["lists"]["all"]["count"], 3)
        resp = await self.ss(alice, {"conn_id": "c3", "lists": {"all": self.ALL}}, pos=c3["pos"])
        self.assertEqual(self._ids(resp), [own[1], own[2], invited, own[0]])
        self.assertEqual(resp["lists"]["all"]["count"], 4)
        self.assertEqual(resp["rooms"][own[2]]["membership"], "leave")
        resp = await self.ss(alice, {"conn_id": "c3", "lists": {"all": self.ALL}}, pos=resp["pos"])
        self.assertEqual(self._ids(resp), [own[1], invited, own[0]])

    async def test_invites_of_ignored_users_leave_the_list_and_come_back(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        own = await self.rooms_of(alice, 2)
        invited = await self.create_room(bob, name="bob's")
        await self.invite(bob, invited, alice)
        lists = {"all": a_list(0, 9, limit=0), "invites": a_list(0, 9, limit=0, filters={"is_invite": True})}
        resp = await self.fresh(alice, "c0", **lists)
        self.assertEqual(self._ids(resp), [invited, own[1], own[0]])
        ignore = f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.ignored_user_list"
        code, body = await self.put(ignore, {"ignored_users": {bob.user_id: {}}}, alice)
        self.assertEqual(code, 200, body)
        resp = await self.fresh(alice, "c1", **lists)
        self.assertEqual(self._ids(resp), [own[1], own[0]])
        self.assertEqual(resp["lists"]["all"]["count"], 2)
        self.assertEqual(resp["lists"]["invites"]["count"], 0)
        # Not subscribable either.
        resp = await self.ss(alice, {"conn_id": "c2", "room_subscriptions": {invited: {"timeline_limit": 1, "required_state": []}}})
        self.assertEqual(resp["rooms"], {})
        code, body = await self.put(ignore, {"ignored_users": {}}, alice)
        self.assertEqual(code, 200, body)
        resp = await self.fresh(alice, "c3", all=a_list(0, 9, limit=0))
        self.assertEqual(self._ids(resp), [invited, own[1], own[0]])
        self.assertEqual(resp["lists"]["all"]["count"], 3)

    async def test_filtered_lists_follow_the_kept_order(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 4, name="talk")
        other = await self.create_room(alice, name="elsewhere")
        lists = {"talk": a_list(0, 1, limit=0, filters={"room_name_like": "talk"}), "all": a_list(0, 9, limit=0)}
        resp = await self.fresh(alice, "c0", **lists)
        self.assertEqual(self._ids(resp, "talk"), [rooms[3], rooms[2]])
        self.assertEqual(resp["lists"]["talk"]["count"], 4)
        await self.send_message(alice, rooms[0], "up")
        resp = await self.fresh(alice, "c1", **lists)
        self.assertEqual(self._ids(resp, "talk"), [rooms[0], rooms[3]])
        self.assertEqual(resp["lists"]["talk"]["count"], 4)
        self.assertEqual(self._ids(resp), [rooms[0], other, rooms[3], rooms[2], rooms[1]])

    async def test_kept_orders_are_bounded_and_built_again(self) -> None:
        from mxserver.sliding_sync.request import parse_request
        from mxserver.sliding_sync.room_lists import RoomIndex, RoomLists
        from mxserver.storage.sliding_sync import SlidingSyncStore

        hs = self.hs
        lists = RoomLists(
            RoomIndex(hs.room_activity, SlidingSyncStore(hs.db)),
            hs.account_data,
            hs.event_store,
            hs.invite_permissions,
            max_ordered_entries=3,
        )
        request = parse_request({"lists": {"all": a_list(0, 9, limit=0)}})
        users = [await self.register("alice"), await self.register("bob")]
        rooms = {u.user_id: await self.rooms_of(u, 2) for u in users}

        async def order_of(user: TestUser) -> list[str]:
            memberships = await hs.sync_room_source.memberships(user.user_id)
            got = await lists.compute(user.user_id, memberships, None, request, frozenset())
            self.assertLessEqual(lists.ordered_entries, 3)
            return list(got.lists["all"]["ops"][0]["room_ids"])

        for user in users:
            self.assertEqual(await order_of(user), rooms[user.user_id][::-1])
        # alice's order was dropped for bob's: built again, and right.
        await self.send_message(users[0], rooms[users[0].user_id][0], "up")
        self.assertEqual(await order_of(users[0]), rooms[users[0].user_id])
        self.assertEqual(lists.ordered_entries, 2)


class RoomActivityTouchedTests(SynchronousTestCase):
    """What the kept orders ask of the activity map: the rooms moved since an update number."""

    def test_rooms_touched_since_newest_first_and_the_limit(self) -> None:
        from mxserver.rooms.activity import RoomActivity

        activity = RoomActivity(SimpleNamespace(current_position=0))  # type: ignore[arg-type]

        def events(*pairs: tuple[str, int]) -> Any:
            return [SimpleNamespace(room_id=r, metadata=SimpleNamespace(stream_ordering=p)) for r, p in pairs]

        self.assertEqual(activity.touched_since(0, 10), [])
        activity.on_room_events(events(("!a", 1), ("!b", 2), ("!c", 3)))
        mark = activity.sequence
        activity.on_room_events(events(("!a", 4), ("!b", 1)))  # an older position moves nothing
        self.assertEqual(activity.touched_since(mark, 10), ["!a"])
        activity.on_room_events(events(("!c", 5), ("!a", 6)))
        self.assertEqual(activity.touched_since(mark, 10), ["!a", "!c"])
        self.assertEqual(activity.touched_since(0, 10), ["!a", "!c", "!b"])
        self.assertIsNone(activity.touched_since(0, 2))
        self.assertEqual(activity.touched_since(activity.sequence, 0), [])
        self.assertEqual(activity.latest("!a"), 6)


class SlidingSyncBadInputTests(SlidingSyncCase):
    async def test_bad_bodies(self) -> None:
        alice = await self.register("alice")
        ok_list = a_list()
        bad: list[tuple[Any, int, str]] = [
            ([], 400, "M_BAD_JSON"),
            ({"conn_id": 5}, 400, "M_BAD_JSON"),
            ({"conn_id": "x" * 300}, 400, "M_INVALID_PARAM"),
            ({"lists": []}, 400, "M_BAD_JSON"),
            ({"lists": {"a": 1}}, 400, "M_BAD_JSON"),
            ({"lists": {"": ok_list}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"k" * 65: ok_list}}, 400, "M_INVALID_PARAM"),
            ({"lists": {f"l{i}": ok_list for i in range(101)}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"a": {"ranges": [[0, 1]], "required_state": []}}}, 400, "M_MISSING_PARAM"),
            ({"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": 1}}}, 400, "M_MISSING_PARAM"),
            ({"lists": {"a": a_list(limit="1")}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(limit=True)}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(limit=-1)}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"a": a_list(limit=1001)}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"a": {**ok_list, "ranges": [[0]]}}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": {**ok_list, "ranges": [[0, "1"]]}}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": {**ok_list, "ranges": [[-1, 1]]}}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"a": {**ok_list, "ranges": [[5, 1]]}}}, 400, "M_INVALID_PARAM"),
            ({"lists": {"a": {**ok_list, "ranges": {"0": 1}}}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(state=[["m.room.name"]])}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(state=[["m.room.name", 1]])}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(state={"include": []})}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(filters=[])}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(filters={"is_dm": "yes"})}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(filters={"spaces": "!a:b"})}}, 400, "M_BAD_JSON"),
            ({"lists": {"a": a_list(filters={"room_types": [1]})}}, 400, "M_BAD_JSON"),
            ({"room_subscriptions": {"not-a-room": {"timeline_limit": 1, "required_state": []}}}, 400, "M_INVALID_PARAM"),
            ({"room_subscriptions": {"!a:test": []}}, 400, "M_BAD_JSON"),
            (
                {"room_subscriptions": {f"!r{i}:test": {"timeline_limit": 1, "required_state": []} for i in range(101)}},
                400,
                "M_INVALID_PARAM",
            ),
            ({"extensions": []}, 400, "M_BAD_JSON"),
            ({"extensions": {"to_device": {"enabled": "yes"}}}, 400, "M_BAD_JSON"),
            ({"extensions": {"to_device": {"enabled": True, "since": 5}}}, 400, "M_BAD_JSON"),
            ({"extensions": {"to_device": {"enabled": True, "since": "abc"}}}, 400, "M_INVALID_PARAM"),
            ({"extensions": {"to_device": {"enabled": True, "limit": -1}}}, 400, "M_INVALID_PARAM"),
            ({"extensions": {"receipts": {"enabled": True, "lists": "all"}}}, 400, "M_BAD_JSON"),
            ({"timeout": -5}, 400, "M_INVALID_PARAM"),
            ({"set_presence": "away"}, 400, "M_INVALID_PARAM"),
        ]
        for body, status, errcode in bad:
            self.assertMatrixError(await self.ss_raw(alice, body), status, errcode)
        self.assertMatrixError(
            await self.request("POST", SS, raw=b"{not json", token=alice, headers={"Content-Type": "application/json"}),
            400,
            "M_NOT_JSON",
        )
        self.assertMatrixError(await self.post(SS, {}, None), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.ss_raw(alice, {}, timeout="soon"), 400, "M_INVALID_PARAM")
        # unknown extensions and fields are ignored; an empty body is a valid (empty) request
        resp = await self.ss(alice, {"extensions": {"org.example.future": {"enabled": True}}, "unknown": 1})
        self.assertEqual(resp["rooms"], {})
        code, resp = await self.request("POST", SS, raw=b"", token=alice)
        self.assertEqual(code, 200, resp)

    async def test_body_fields_of_the_later_msc_are_read_too(self) -> None:
        alice = await self.register("alice")
        rooms = await self.rooms_of(alice, 2)
        body: dict[str, Any] = {"lists": {"a": {"range": [0, 0], "timeline_limit": 1, "required_state": []}}}
        resp = await self.ss(alice, body)
        self.assertEqual(list(resp["rooms"]), [rooms[1]])
        await self.send_message(alice, rooms[1], "x")
        resp = await self.ss(alice, {**body, "pos": resp["pos"], "timeout": 0})
        self.assertEqual(bodies(resp["rooms"][rooms[1]]), ["x"])


class SlidingSyncConnectionStoreTests(SlidingSyncCase):
    """The connection state's bounds, on the real store."""

    def connections(self, **bounds: Any) -> Any:
        from twisted.internet import reactor

        from mxserver.sliding_sync.connections import Connections
        from mxserver.storage.sliding_sync import SlidingSyncStore

        return Connections(SlidingSyncStore(self.hs.db), reactor, **bounds)

    async def test_unused_connections_expire(self) -> None:
        alice = await self.register("alice")
        await self.rooms_of(alice, 1)
        resp = await self.ss(alice, {"lists": {"all": a_list()}})
        self.assertEqual(await self.hs.sliding_sync_connections.expire(), 0)
        await self.hs.db.execute("t", "UPDATE sliding_sync_connections SET last_used_ts = 0")
        self.assertEqual(await self.hs.sliding_sync_connections.expire(), 1)
        code, body = await self.ss_raw(alice, {"lists": {"all": a_list()}}, pos=resp["pos"])
        self.assertMatrixError((code, body), 400, "M_UNKNOWN_POS")
        rows = await self.hs.db.select("t", "SELECT COUNT(*) FROM sliding_sync_rooms")
        self.assertEqual(rows[0][0], 0)

    async def test_memory_is_bounded_and_evicted_state_is_read_back(self) -> None:
        from mxserver.sliding_sync.connections import LIVE, RoomEntry

        conns = self.connections(max_cached_entries=5)
        entries = {f"!r{i}:test": RoomEntry(room=LIVE) for i in range(3)}
        positions = {}
        for conn_id in ("a", "b", "c"):
            opened = await conns.open("@u:test", "DEV", conn_id, None)
            positions[conn_id] = await conns.commit(opened, entries)
            self.assertLessEqual(conns.cached_entries, 5)
        self.assertEqual(conns.cached_connections, 1)
        # An evicted connection is read back from the database, pending response included.
        opened = await conns.open("@u:test", "DEV", "a", positions["a"])
        self.assertEqual(set(opened.rooms), set(entries))
        self.assertEqual(opened.rooms["!r0:test"], RoomEntry(room=LIVE))

    async def test_a_user_keeps_a_bounded_number_of_connections(self) -> None:
        from mxserver.sliding_sync.connections import LIVE, RoomEntry

        conns = self.connections(max_per_user=2)
        positions = []
        for device in ("D1", "D2", "D3"):
            opened = await conns.open("@u:test", device, "", None)
            positions.append(await conns.commit(opened, {"!r:test": RoomEntry(room=LIVE)}))
        rows = await self.hs.db.select("t", "SELECT device_id FROM sliding_sync_connections WHERE user_id = '@u:test'")
        self.assertEqual(sorted(r[0] for r in rows), ["D2", "D3"])
