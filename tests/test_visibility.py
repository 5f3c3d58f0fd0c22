"""History visibility (client-server-api §Room History Visibility) through /messages, /event and /context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred

from mxserver.events.versions import get_room_version
from mxserver.rooms.local_events import EventSpec
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.visibility import HistoryVisibility
from mxserver.storage.database import Database
from mxserver.storage.state import StateStore
from tests.harness import C, HomeserverTestCase, q

V12 = get_room_version("12")
assert V12 is not None


class VisibilityTests(HomeserverTestCase):
    async def _users(self) -> tuple:
        return await self.register("alice"), await self.register("bob"), await self.register("carol")

    async def _visible(self, user, room: str, event_id: str) -> bool:
        code, body = await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", user)
        self.assertIn(code, (200, 404), body)
        return code == 200

    async def test_shared(self) -> None:
        alice, bob, _ = await self._users()
        for version in ("1", "12"):
            room = await self.create_room(alice, preset="public_chat", room_version=version, history_visibility="shared")
            await self.send_message(alice, room, "before")
            self.assertEqual((await self.visible_bodies(bob, room))[0], 403)
            await self.join(bob, room)
            await self.send_message(alice, room, "during")
            self.assertEqual(await self.visible_bodies(bob, room), ["before", "during"])
            await self.leave(bob, room)
            away = await self.send_message(alice, room, "away")
            # a former member sees what he could see, nothing after he left
            self.assertEqual(await self.visible_bodies(bob, room), ["before", "during"])
            self.assertFalse(await self._visible(bob, room, away))
            # rejoining under "shared" shows what was sent while away
            await self.join(bob, room)
            self.assertEqual(await self.visible_bodies(bob, room), ["before", "during", "away"])
            self.assertTrue(await self._visible(bob, room, away))

    async def test_joined(self) -> None:
        alice, bob, _ = await self._users()
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        before = await self.send_message(alice, room, "before")
        await self.invite(alice, room, bob)
        invited = await self.send_message(alice, room, "invited")
        join = await self.set_membership(bob, room, bob, "join")
        await self.send_message(alice, room, "joined")
        self.assertEqual(await self.visible_bodies(bob, room), ["joined"])
        self.assertFalse(await self._visible(bob, room, before))
        self.assertFalse(await self._visible(bob, room, invited))
        # his own join is visible (judged after the event)
        self.assertTrue(await self._visible(bob, room, join))
        leave = await self.set_membership(bob, room, bob, "leave")
        await self.send_message(alice, room, "after")
        self.assertEqual(await self.visible_bodies(bob, room), ["joined"])
        # his own leave is visible (judged before the event)
        self.assertTrue(await self._visible(bob, room, leave))
        # rejoining under "joined" does not show what was sent while away
        await self.join(bob, room)
        await self.send_message(alice, room, "back")
        self.assertEqual(await self.visible_bodies(bob, room), ["joined", "back"])
        # alice, joined all along, sees everything
        self.assertEqual(await self.visible_bodies(alice, room), ["before", "invited", "joined", "after", "back"])

    async def test_invited(self) -> None:
        alice, bob, _ = await self._users()
        room = await self.create_room(alice, preset="public_chat", history_visibility="invited")
        before = await self.send_message(alice, room, "before")
        invite = await self.set_membership(alice, room, bob, "invite")
        await self.send_message(alice, room, "invited")
        # an invited user cannot read the room yet (he must join)
        self.assertEqual((await self.visible_bodies(bob, room))[0], 403)
        await self.join(bob, room)
        await self.send_message(alice, room, "joined")
        self.assertEqual(await self.visible_bodies(bob, room), ["invited", "joined"])
        self.assertFalse(await self._visible(bob, room, before))
        self.assertTrue(await self._visible(bob, room, invite))

    async def test_world_readable(self) -> None:
        alice, bob, carol = await self._users()
        room = await self.create_room(alice, preset="public_chat", history_visibility="world_readable")
        first = await self.send_message(alice, room, "public 1")
        # carol never joined: she reads the room, its events and their context
        self.assertEqual(await self.visible_bodies(carol, room), ["public 1"])
        self.assertTrue(await self._visible(carol, room, first))
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(first)}", carol)
        self.assertEqual(code, 200, ctx)
        change = await self.set_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
        later = await self.send_message(alice, room, "private")
        # the change itself is visible (world_readable before it); later events are not, nor the room
        self.assertEqual((await self.visible_bodies(carol, room))[0], 403)
        self.assertFalse(await self._visible(carol, room, later))
        # bob joins now: under "joined" he sees the public part (world_readable then) and what follows his join
        await self.join(bob, room)
        await self.send_message(alice, room, "for bob")
        self.assertEqual(await self.visible_bodies(bob, room), ["public 1", "for bob"])
        self.assertTrue(await self._visible(bob, room, change))
        self.assertFalse(await self._visible(bob, room, later))
        # back to world_readable: the change is visible to outsiders again (world_readable after it)
        back = await self.set_state(alice, room, "m.room.history_visibility", {"history_visibility": "world_readable"})
        await self.send_message(alice, room, "public 2")
        self.assertEqual(await self.visible_bodies(carol, room), ["public 1", "public 2"])
        self.assertTrue(await self._visible(carol, room, back))
        self.assertTrue(await self._visible(carol, room, change))

    async def test_default_is_shared(self) -> None:
        alice, bob, _ = await self._users()
        # no m.room.history_visibility event at all (createRoom always sends one)
        room = await self.create_room_from(alice, [
            EventSpec("m.room.member", {"membership": "join"}, alice.user_id, alice.user_id),
            EventSpec("m.room.power_levels", default_power_levels_content(V12, alice.user_id), "", alice.user_id),
            EventSpec("m.room.join_rules", {"join_rule": "public"}, "", alice.user_id),
        ])
        await self.send_message(alice, room, "old")
        await self.join(bob, room)
        self.assertEqual(await self.visible_bodies(bob, room), ["old"])
        room2 = await self.create_room(alice, preset="public_chat", history_visibility="something_new")
        await self.send_message(alice, room2, "old2")
        await self.join(bob, room2)
        self.assertEqual(await self.visible_bodies(bob, room2), ["old2"])

    async def test_context_respects_visibility(self) -> None:
        alice, bob, _ = await self._users()
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        hidden = [await self.send_message(alice, room, f"h{i}") for i in range(3)]
        await self.join(bob, room)
        shown = [await self.send_message(alice, room, f"s{i}") for i in range(3)]
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(shown[0])}?limit=10", bob)
        self.assertEqual(code, 200, ctx)
        before = [e["event_id"] for e in ctx["events_before"]]
        self.assertFalse(set(before) & set(hidden))
        self.assertEqual([e["event_id"] for e in ctx["events_after"]], shown[1:])
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/context/{q(hidden[1])}", bob), 404, "M_NOT_FOUND")
        # timestamp_to_event does not point at hidden events
        ev = await self.hs.event_store.get_event(hidden[0])
        path = f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event?ts={ev.origin_server_ts - 1000}&dir=b"
        self.assertMatrixError(await self.get(path, bob), 404, "M_NOT_FOUND")

    async def test_lazy_members_and_state_for_left_user(self) -> None:
        alice, bob, _ = await self._users()
        room = await self.create_room(alice, preset="public_chat", history_visibility="shared")
        await self.join(bob, room)
        await self.send_message(alice, room, "x")
        await self.leave(bob, room)
        await self.set_state(alice, room, "m.room.topic", {"topic": "later"})
        code, page = await self.messages(bob, room, dir="f", limit=100)
        self.assertEqual(code, 200)
        self.assertNotIn("m.room.topic", [e["type"] for e in page["chunk"]])


class _CountingReads:
    """A Database for a StateStore that records the description of every read it runs."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.reads: list[str] = []

    def run_read(self, desc: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.reads.append(desc)
        return self._db.run_read(desc, fn, *args, **kwargs)


class FilterForUserTests(HomeserverTestCase):
    """The function /sync can reuse: many events, several rooms, few state loads."""

    async def test_filter_many_rooms_few_loads(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        joined_room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        shared_room = await self.create_room(alice, preset="public_chat", history_visibility="shared")
        early = [await self.send_message(alice, joined_room, f"e{i}") for i in range(20)]
        await self.join(bob, joined_room)
        late = [await self.send_message(alice, joined_room, f"l{i}") for i in range(20)]
        shared = [await self.send_message(alice, shared_room, f"s{i}") for i in range(20)]
        await self.join(bob, shared_room)
        ids = early + late + shared
        store = self.hs.event_store
        events = [(await store.get_events(ids))[e] for e in ids]
        # Cold caches: a visibility checker over a state store of its own, whose database
        # reads are counted.
        db = _CountingReads(self.hs.db)
        visibility = HistoryVisibility(
            self.hs.room_server, store, StateStore(cast(Database, db)), self.hs.history_store, self.hs.erased_users
        )
        visible = await visibility.filter_events_for_user(bob.user_id, events)
        self.assertEqual([e.event_id for e in visible], late + shared)
        # the 20 early messages share one snapshot, the 20 late ones another, the shared room's 20 a third
        self.assertEqual(db.reads.count("get_state_snapshot"), 3)
