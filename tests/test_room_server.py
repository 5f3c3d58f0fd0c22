"""The room server: creating rooms, sending events, auth, idempotency, persistence and restarts."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mxserver.errors import MatrixError
from mxserver.events.versions import get_room_version
from mxserver.homeserver import Homeserver
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import EventSpec
from tests.harness import HomeserverTestCase


def basic_room(rv: Any, creator: str) -> list[EventSpec]:
    return [
        EventSpec("m.room.member", {"membership": "join"}, creator, creator),
        EventSpec("m.room.power_levels", default_power_levels_content(rv, creator), "", creator),
        EventSpec("m.room.join_rules", {"join_rule": "public"}, "", creator),
        EventSpec("m.room.history_visibility", {"history_visibility": "shared"}, "", creator),
    ]


class RoomServerTests(HomeserverTestCase):
    alice = "@alice:test"
    bob = "@bob:test"

    async def _room(self, version: str = "12") -> str:
        rv = get_room_version(version)
        room_id, events = await self.hs.room_server.create_room(self.alice, rv, {}, basic_room(rv, self.alice))
        self.assertEqual(len(events), 5)
        return room_id

    async def test_create_room_every_version(self) -> None:
        for version in [str(n) for n in range(1, 13)]:
            room_id = await self._room(version)
            state = await self.hs.room_server.current_state_ids(room_id)
            self.assertIn(("m.room.create", ""), state)
            self.assertIn(("m.room.member", self.alice), state)
            if version == "12":
                self.assertNotIn(":", room_id)
                self.assertEqual(room_id[1:], state[("m.room.create", "")][1:])
            else:
                self.assertTrue(room_id.endswith(":test"))
            ev = await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "hi", "msgtype": "m.text"}, sender=self.alice))
            self.assertEqual(ev.room_id, room_id)

    async def test_messages_chain_and_persist(self) -> None:
        room_id = await self._room()
        sent = []
        for i in range(5):
            sent.append(await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": str(i)}, sender=self.alice)))
        for a, b in zip(sent, sent[1:], strict=False):
            self.assertEqual(list(b.prev_event_ids), [a.event_id])
            self.assertEqual(b.depth, a.depth + 1)
            self.assertGreater(b.metadata.stream_ordering, a.metadata.stream_ordering)
        stored = await self.hs.event_store.get_events([e.event_id for e in sent])
        self.assertEqual(len(stored), 5)

    async def test_events_built_on_a_state_change_not_yet_committed(self) -> None:
        """A write releases the room's lock once its event is planned, before the commit: the
        next event in the room cites the new state event as an auth event while the store does
        not have it yet. The message and a membership template built right after a power-levels
        change (all started in one reactor turn) must wait for that commit, not fail auth."""
        room_id = await self._room("10")
        rv = get_room_version("10")
        levels = {**default_power_levels_content(rv, self.alice), "events_default": 10}
        levels["users"] = {self.alice: 100, self.bob: 10}
        pl = defer.ensureDeferred(self.hs.room_server.send(room_id, EventSpec("m.room.power_levels", levels, "", self.alice)))
        message = defer.ensureDeferred(
            self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "after", "msgtype": "m.text"}, sender=self.alice))
        )
        template = defer.ensureDeferred(
            self.hs.room_server.build_unpersisted(room_id, EventSpec("m.room.member", {"membership": "join"}, self.bob, self.bob))
        )
        pl_event, msg, join = await defer.gatherResults([pl, message, template])
        self.assertIn(pl_event.event_id, msg.auth_event_ids)
        self.assertIn(pl_event.event_id, join.auth_event_ids)

    async def test_concurrent_sends_are_batched_and_ordered(self) -> None:
        room_id = await self._room()
        ds = [
            defer.ensureDeferred(self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": str(i)}, sender=self.alice)))
            for i in range(50)
        ]
        events = await defer.gatherResults(ds)
        ids = {e.event_id for e in events}
        self.assertEqual(len(ids), 50)
        # a single linear chain: every event's prev is the one before it
        for a, b in zip(events, events[1:], strict=False):
            self.assertEqual(list(b.prev_event_ids), [a.event_id])
        self.assertEqual(await self.hs.event_store.get_forward_extremities((await self.hs.room_server.get_room(room_id)).room_nid), [events[-1].event_id])

    async def test_auth_rules_enforced(self) -> None:
        room_id = await self._room()
        with self.assertRaises(MatrixError) as cm:
            await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "x"}, sender=self.bob))
        self.assertEqual((cm.exception.code, cm.exception.errcode), (403, "M_FORBIDDEN"))
        await self.hs.room_server.send(room_id, EventSpec("m.room.member", {"membership": "join"}, self.bob, self.bob))
        await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "x"}, sender=self.bob))
        with self.assertRaises(MatrixError):
            await self.hs.room_server.send(room_id, EventSpec("m.room.power_levels", {"users": {self.bob: 100}}, "", self.bob))
        self.assertEqual(await self.hs.room_server.membership(room_id, self.bob), "join")

    async def test_txn_ids_are_idempotent(self) -> None:
        room_id = await self._room()
        key = (self.alice, "DEV", "txn1")
        spec = EventSpec("m.room.message", {"body": "once"}, sender=self.alice)
        first, second = await defer.gatherResults(
            [defer.ensureDeferred(self.hs.room_server.send(room_id, spec, key)) for _ in range(2)]
        )
        self.assertEqual(first.event_id, second.event_id)
        third = await self.hs.room_server.send(room_id, spec, key)
        self.assertEqual(third.event_id, first.event_id)
        other = await self.hs.room_server.send(room_id, spec, (self.alice, "OTHERDEV", "txn1"))
        self.assertNotEqual(other.event_id, first.event_id)

    async def test_state_snapshots_shared_and_bounded(self) -> None:
        room_id = await self._room()
        rs = self.hs.room_server
        for i in range(120):
            await rs.send(room_id, EventSpec("m.room.member", {"membership": "join"}, f"@u{i}:test", f"@u{i}:test"))
        msg = await rs.send(room_id, EventSpec("m.room.message", {"body": "x"}, sender=self.alice))
        state = await rs.state_at_event(msg.event_id)
        self.assertEqual(len([k for k in state if k[0] == "m.room.member"]), 121)
        # messages share the snapshot of the state before them
        info = await self.hs.event_store.get_event_info(msg.event_id)
        assert info is not None
        self.assertEqual(info.state_before, info.state_after)
        rows = await self.hs.db.select("count", "SELECT COUNT(*) FROM state_snapshot_entries")
        # far fewer rows than one full copy per state event (which would be ~ 120*60 = 7,000+)
        self.assertLess(rows[0][0], 2000)
        # a fresh load from the database (a restarted server, no caches) gives the same state
        await self.restart()
        self.assertEqual(await self.hs.room_server.state_at_event(msg.event_id), state)

    async def test_restart_keeps_rooms_and_positions(self) -> None:
        room_id = await self._room()
        last = await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "before"}, sender=self.alice))
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.assertEqual(self.hs.room_server.current_position, last.metadata.stream_ordering)
        ev = await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "after"}, sender=self.alice))
        self.assertEqual(list(ev.prev_event_ids), [last.event_id])
        self.assertGreater(ev.metadata.stream_ordering, last.metadata.stream_ordering)
        self.assertEqual(await self.hs.room_server.membership(room_id, self.alice), "join")

    async def test_unknown_room(self) -> None:
        with self.assertRaises(MatrixError) as cm:
            await self.hs.room_server.send("!nope:test", EventSpec("m.room.message", {}, sender=self.alice))
        self.assertEqual(cm.exception.errcode, "M_NOT_FOUND")

    async def test_stream_published(self) -> None:
        seen: list[str] = []
        self.hs.room_stream.subscribe(lambda evs: seen.extend(e.event_id for e in evs))
        room_id = await self._room()
        ev = await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "x"}, sender=self.alice))
        self.assertEqual(len(seen), 6)
        self.assertEqual(seen[-1], ev.event_id)
