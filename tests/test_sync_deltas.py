"""/sync as SyTest's 31sync and 49ignore groups see it: what is a delta and what is a new room,
filtered timelines, lazy-loaded members across incremental syncs, room summaries, ignored users,
the federation event format."""

from __future__ import annotations

import json
from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q


def _filter(value: dict[str, Any]) -> str:
    return json.dumps(value)


def _members(room: dict[str, Any]) -> dict[str, str]:
    """state_key -> membership of the member events in a room's state section."""
    return {e["state_key"]: e["content"]["membership"] for e in room["state"]["events"] if e["type"] == "m.room.member"}


class SyncDeltaTests(HomeserverTestCase):
    async def test_displayname_change_is_a_delta_not_a_full_state_sync(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        since = (await self.sync(alice))["next_batch"]
        member = await self.set_membership(alice, room, alice, "join", displayname="boris")
        msg = await self.send_message(alice, room, "after")
        body = await self.sync(alice, since)
        joined = body["rooms"]["join"][room]
        self.assertEqual([e["event_id"] for e in joined["timeline"]["events"]], [member, msg])
        self.assertFalse(joined["timeline"]["limited"])
        self.assertEqual(joined["state"]["events"], [])
        # with a filter that drops both, the room does not appear at all
        since = body["next_batch"]
        await self.set_membership(alice, room, alice, "join", displayname="boris 2")
        quiet = {"room": {"timeline": {"types": []}, "state": {"types": ["x.state"]}}}
        body = await self.sync(alice, since, filter=_filter(quiet))
        self.assertEqual(body["rooms"]["join"], {})

    async def test_join_and_leave_between_syncs_carries_the_state(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_state(alice, room, "x.state", {"k": 1})
        flt = _filter({"room": {"timeline": {"types": []}, "state": {"types": ["x.state"]}, "include_leave": True}})
        since = (await self.sync(bob, filter=flt))["next_batch"]
        await self.join(bob, room)
        await self.leave(bob, room)
        left = (await self.sync(bob, since, filter=flt))["rooms"]["leave"][room]
        self.assertEqual([(e["type"], e["content"]) for e in left["state"]["events"]], [("x.state", {"k": 1})])

    async def test_rejoin_sees_current_state_in_timeline_under_joined_history(self) -> None:
        creator = await self.register("creator")
        syncer = await self.register("syncer")
        invitee = await self.register("invitee")
        room = await self.create_room(creator, preset="public_chat")
        await self.join(syncer, room)
        await self.set_state(creator, room, "m.room.history_visibility", {"history_visibility": "joined"})
        await self.invite(creator, room, invitee)
        since = (await self.sync(syncer))["next_batch"]
        await self.leave(syncer, room)
        await self.join(invitee, room)
        for i in range(25):  # more than a timeline, all while syncer was away
            await self.send_message(creator, room, f"hidden {i}")
        await self.join(syncer, room)
        joined = (await self.sync(syncer, since))["rooms"]["join"][room]
        timeline = joined["timeline"]["events"]
        self.assertIn(
            (invitee.user_id, "join"),
            [(e["state_key"], e["content"]["membership"]) for e in timeline if e["type"] == "m.room.member"],
        )
        # the messages sent while syncer had left stay hidden
        self.assertNotIn("m.room.message", {e["type"] for e in timeline})
        self.assertTrue(joined["timeline"]["limited"])

    async def test_filtered_timeline_reaches_its_limit(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        msg = await self.send_message(alice, room, "My message")
        for i in range(30):
            await self.send_message(alice, room, str(i), event_type="x.filler")
        flt = _filter({"room": {"timeline": {"limit": 1, "types": ["m.room.message"]}, "state": {"types": []}}})
        joined = (await self.sync(alice, filter=flt))["rooms"]["join"][room]
        self.assertEqual([e["event_id"] for e in joined["timeline"]["events"]], [msg])
        self.assertTrue(joined["timeline"]["limited"])

    async def test_event_format_federation(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        msg = await self.send_message(alice, room, "fed")
        flt = _filter({"event_format": "federation", "room": {"timeline": {"limit": 1}}})
        ev = (await self.sync(alice, filter=flt))["rooms"]["join"][room]["timeline"]["events"][0]
        self.assertEqual((ev["event_id"], ev["room_id"], ev["content"]["body"]), (msg, room, "fed"))
        for key in ("prev_events", "auth_events", "depth", "hashes", "signatures"):
            self.assertIn(key, ev)

    async def test_room_summary_heroes_only_for_unnamed_rooms(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        summary = (await self.sync(alice))["rooms"]["join"][room]["summary"]
        self.assertEqual(summary["m.heroes"], [bob.user_id])
        await self.set_state(alice, room, "m.room.name", {"name": "Named"})
        summary = (await self.sync(alice))["rooms"]["join"][room]["summary"]
        self.assertEqual(summary, {"m.joined_member_count": 2, "m.invited_member_count": 0})


class NewlySharedPresenceTests(HomeserverTestCase):
    async def _presence(self, body: dict[str, Any], viewer: TestUser) -> list[str]:
        return [e["sender"] for e in body["presence"]["events"] if e["sender"] != viewer.user_id]

    async def test_presence_of_members_met_by_joining(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.sync(alice)  # alice is online
        since = (await self.sync(bob))["next_batch"]
        await self.join(bob, room)
        body = await self.sync(bob, since)
        self.assertEqual(await self._presence(body, bob), [alice.user_id])
        # only once
        self.assertEqual(await self._presence(await self.sync(bob, body["next_batch"]), bob), [])

    async def test_presence_of_members_who_join(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.sync(bob)  # bob is online, sharing no room with alice yet
        since = (await self.sync(alice))["next_batch"]
        await self.send_message(alice, room, "before")
        since = (await self.sync(alice, since))["next_batch"]
        await self.join(bob, room)
        body = await self.sync(alice, since)
        self.assertEqual(await self._presence(body, alice), [bob.user_id])


class LazyMembersTests(HomeserverTestCase):
    LL = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}}

    async def _room(self) -> tuple[TestUser, TestUser, TestUser, str]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        charlie = await self.register("charlie")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.join(charlie, room)
        return alice, bob, charlie, room

    async def _fill(self, user: TestUser, room: str, n: int) -> None:
        for i in range(n):
            await self.send_message(user, room, str(i), event_type="x.filler")

    async def test_gapped_sync_has_gap_members_and_new_speakers_not_redundant_ones(self) -> None:
        alice, bob, charlie, room = await self._room()
        dave = await self.register("dave")
        flt = _filter(self.LL)
        await self._fill(bob, room, 10)
        first = await self.sync(alice, filter=flt)
        self.assertEqual(_members(first["rooms"]["join"][room]), {alice.user_id: "join", bob.user_id: "join"})
        await self.join(dave, room)  # in the gap, silent
        await self._fill(charlie, room, 10)
        second = await self.sync(alice, first["next_batch"], filter=flt)
        joined = second["rooms"]["join"][room]
        self.assertTrue(joined["timeline"]["limited"])
        self.assertEqual(_members(joined), {charlie.user_id: "join", dave.user_id: "join"})
        await self.leave(dave, room)
        await self._fill(charlie, room, 20)
        third = await self.sync(alice, second["next_batch"], filter=flt)
        # charlie's membership was sent already: only dave's leave
        self.assertEqual(_members(third["rooms"]["join"][room]), {dave.user_id: "leave"})

    async def test_incremental_sync_sends_new_speakers_and_redundant_ones_if_asked(self) -> None:
        alice, bob, charlie, room = await self._room()
        await self._fill(bob, room, 10)
        plain = _filter(self.LL)
        redundant = _filter(
            {"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}, "timeline": {"limit": 10}}}
        )
        first = await self.sync(alice, filter=plain)
        await self.send_message(charlie, room, "from charlie")
        second = await self.sync(alice, first["next_batch"], filter=plain)
        self.assertEqual(_members(second["rooms"]["join"][room]), {charlie.user_id: "join"})
        await self.send_message(bob, room, "bob again")
        await self.send_message(charlie, room, "charlie again")
        third = await self.sync(alice, second["next_batch"], filter=plain)
        self.assertEqual(_members(third["rooms"]["join"][room]), {})
        await self.send_message(bob, room, "bob thrice")
        await self.send_message(charlie, room, "charlie thrice")
        fourth = await self.sync(alice, third["next_batch"], filter=redundant)
        self.assertEqual(_members(fourth["rooms"]["join"][room]), {bob.user_id: "join", charlie.user_id: "join"})


class IgnoredUsersTests(HomeserverTestCase):
    async def _ignore(self, user: TestUser, *ignored: TestUser) -> None:
        content = {"ignored_users": {u.user_id: {} for u in ignored}}
        code, body = await self.put(f"{C}/user/{q(user.user_id)}/account_data/m.ignored_user_list", content, user)
        self.assertEqual(code, 200, body)

    async def test_ignored_users_messages_are_hidden(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.send_message(bob, room, "before")
        since = (await self.sync(alice))["next_batch"]
        await self._ignore(alice, bob)
        await self.send_message(bob, room, "ignored")
        mine = await self.send_message(alice, room, "mine")
        body = await self.sync(alice, since)
        timeline = body["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in timeline], [mine])
        initial = (await self.sync(alice))["rooms"]["join"][room]
        self.assertNotIn(bob.user_id, {e["sender"] for e in initial["timeline"]["events"] if e["type"] == "m.room.message"})
        # bob's state (his membership) still counts
        self.assertIn(bob.user_id, {e.get("state_key") for e in initial["state"]["events"] + initial["timeline"]["events"]})

    async def test_messages_and_context_leave_out_ignored_users(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.set_power(alice, room, bob.user_id, 50)
        first = await self.send_message(alice, room, "first")
        hidden = await self.send_message(bob, room, "from bob")
        topic = await self.set_state(bob, room, "m.room.topic", {"topic": "bob's topic"})
        last = await self.send_message(alice, room, "last")
        await self._ignore(alice, bob)
        code, page = await self.messages(alice, room, dir="b", limit=10)
        self.assertEqual(code, 200, page)
        ids = [e["event_id"] for e in page["chunk"]]
        self.assertEqual(ids[:3], [last, topic, first])  # bob's state event stays
        self.assertNotIn(hidden, ids)
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(first)}?limit=10", alice)
        self.assertEqual(code, 200, ctx)
        self.assertEqual([e["event_id"] for e in ctx["events_after"]], [topic, last])
        # bob himself, and anyone not ignoring him, still sees it
        code, page = await self.messages(bob, room, dir="b", limit=10)
        self.assertIn(hidden, [e["event_id"] for e in page["chunk"]])

    async def test_invites_from_ignored_users_are_hidden(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self._ignore(alice, bob)
        since = (await self.sync(alice))["next_batch"]
        room = await self.create_room(bob, preset="private_chat")
        await self.invite(bob, room, alice)
        self.assertEqual((await self.sync(alice, since))["rooms"]["invite"], {})
        self.assertEqual((await self.sync(alice))["rooms"]["invite"], {})


class RoomReadTests(HomeserverTestCase):
    async def test_joined_members_always_has_both_keys(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        code, body = await self.get(f"{C}/rooms/{q(room)}/joined_members", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["joined"][alice.user_id], {"display_name": "alice", "avatar_url": None})

    async def test_context_in_unreadable_room_is_forbidden(self) -> None:
        alice = await self.register("alice")
        eve = await self.register("eve")
        room = await self.create_room(alice, preset="private_chat")
        ev = await self.send_message(alice, room, "secret")
        code, body = await self.get(f"{C}/rooms/{q(room)}/context/{q(ev)}", eve)
        self.assertMatrixError((code, body), 403, "M_FORBIDDEN")

    async def test_user_directory_finds_self_only_through_public_rooms(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.set_profile(bob, displayname="Zebulon")
        room = await self.shared_room(alice, bob, preset="private_chat")

        async def found(searcher: TestUser) -> list[str]:
            code, body = await self.post(f"{C}/user_directory/search", {"search_term": "zebulon"}, searcher)
            self.assertEqual(code, 200, body)
            return [r["user_id"] for r in body["results"]]

        self.assertEqual(await found(alice), [bob.user_id])
        self.assertEqual(await found(bob), [])
        await self.set_state(alice, room, "m.room.join_rules", {"join_rule": "public"})
        self.assertEqual(await found(bob), [bob.user_id])

    async def test_messages_forwards_from_a_sync_token_gives_an_end_token(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        since = (await self.sync(alice))["next_batch"]
        ev = await self.send_message(alice, room, "2")
        code, page = await self.messages(alice, room, dir="f", **{"from": since})
        self.assertEqual(code, 200, page)
        self.assertEqual([e["event_id"] for e in page["chunk"]], [ev])
        # the live edge: a token to go on from once more arrives, none once nothing came
        code, rest = await self.messages(alice, room, dir="f", **{"from": page["end"]})
        self.assertEqual((code, rest["chunk"]), (200, []))
        self.assertNotIn("end", rest)
        later = await self.send_message(alice, room, "3")
        code, more = await self.messages(alice, room, dir="f", **{"from": page["end"]})
        self.assertEqual([e["event_id"] for e in more["chunk"]], [later])
