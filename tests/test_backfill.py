"""Outbound backfill (server-server-api §Backfilling and retrieving missing events) against a
fake remote server that owns a room's history.

The local server "joined" the fake server's room: it holds the state at its join as
outliers and its join event as the start of its timeline, as after a send_join; every
earlier event is on the fake server, which serves /backfill, /state_ids, /state and /event.
The end-to-end version with two real servers is in ``tests/test_backfill_two_servers.py``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.trial import unittest

from mxserver.events.model import Event
from mxserver.storage.events import PersistItem, RoomRecord, StoredEventInfo
from tests.harness import FED, C, FakeRemote, FakeRoom, HomeserverTestCase, TestUser, temp_dir


def q(value: str) -> str:
    return quote(value, safe="")


async def seed_joined_room(hs: Any, room: FakeRoom, user_id: str) -> Event:
    """Make ``hs`` joined to ``room`` as a send_join leaves it: the state before the join (and its
    auth chain) stored as outliers, the join event in the timeline, the current state after it.
    Returns the join event (also added to the fake room's DAG)."""
    join = room.build(
        "m.room.member", {"membership": "join"}, user_id, user_id,
        server_name=hs.server_name, signing_key=hs.signing_key,
    )
    room.add_event(join)
    store, state = hs.event_store, hs.state_store
    before_map = room.state_before[join.event_id]
    ids = dict.fromkeys([*room.auth_chain(list(before_map.values())), *before_map.values()])
    outliers = sorted((room.events[i] for i in ids), key=lambda e: e.depth)
    record = RoomRecord(store.allocate_room_nid(), room.room_id, room.rv, room.creator)
    items = []
    for n, ev in enumerate(outliers):
        ev.metadata.outlier = True
        items.append(PersistItem(ev, record, store.allocate_ids(stream=False)[0], None, None, None, new_room=n == 0))
    before = state.plan(record.room_nid, None, {}, before_map)
    after = state.plan(record.room_nid, before.snapshot_nid, before.full_map, {join.state_tuple(): join.event_id})
    # The store hands out event NIDs and stream positions: take the next ones, as a receive would.
    join_nid, stream = store.allocate_ids()
    join.metadata.stream_ordering = stream
    items.append(
        PersistItem(
            join, record, join_nid, stream, before.snapshot_nid, after.snapshot_nid,
            snapshot=after, extra_snapshots=[before], current_state_delta=dict(after.full_map),
            extremities_added=[join.event_id],
        )
    )
    await store.persist(items, int(hs.clock.seconds() * 1000))
    store.persisted(items)
    hs.room_stream.publish_events([join], store.max_stream)
    return join


class BackfillTests(HomeserverTestCase):
    config_overrides = {"federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.remote = FakeRemote()
        self.remote.listen(self, temp_dir(self))
        self.alice: TestUser = await self.register("alice")

    async def page_all(self, room_id: str, limit: int = 30, max_pages: int = 50) -> list[dict[str, Any]]:
        """Every event /messages returns paging back from the end, in order."""
        events: list[dict[str, Any]] = []
        token = None
        for _ in range(max_pages):
            path = f"{C}/rooms/{q(room_id)}/messages?dir=b&limit={limit}" + (f"&from={token}" if token else "")
            code, body = await self.get(path, self.alice)
            self.assertEqual(code, 200, body)
            events += body["chunk"]
            token = body.get("end")
            if token is None:
                return events
        self.fail("pagination did not end")

    async def stream_of(self, event_id: str) -> StoredEventInfo | None:
        """Where the server stored the event (None: not stored)."""
        return await self.hs.event_store.get_event_info(event_id)

    async def position_of(self, event_id: str) -> int | None:
        info = await self.stream_of(event_id)
        assert info is not None, f"{event_id} was not stored"
        return info.stream_ordering

    async def test_pages_back_through_remote_history(self) -> None:
        room = self.remote.new_room()
        mallory = self.remote.user("mallory")
        messages = room.messages(60)
        # not in the room: fails auth, stored rejected, never shown
        bad = room.add("m.room.message", {"msgtype": "m.text", "body": "intruder"}, None, mallory)
        messages += room.messages(40, prefix="later")
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        since = (await self.sync_token())
        head_before = await self.hs.room_server.current_state_ids(room.room_id)

        events = await self.page_all(room.room_id)
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)), "duplicates")
        expected = [e for e in reversed(room.order) if e != bad.event_id]
        self.assertEqual(ids, expected)
        self.assertEqual(ids[0], join.event_id)
        self.assertEqual(events[-1]["type"], "m.room.create")
        bodies = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
        self.assertEqual(bodies[:2], ["later 39", "later 38"])
        self.assertEqual(bodies[-1], "message 0")

        # stored: backfilled events below every position, decreasing going back; the
        # rejected one stored rejected; outliers from the join placed in the timeline
        positions = [await self.position_of(e) for e in ids[1:]]
        self.assertTrue(all(p < 0 for p in positions), positions)
        self.assertEqual(positions, sorted(positions, reverse=True))
        bad_info = await self.stream_of(bad.event_id)
        assert bad_info is not None
        self.assertEqual((bad_info.stream_ordering, bad_info.outlier), (None, False))
        self.assertIsNotNone(bad_info.rejected_reason)
        create_info = await self.stream_of(room.order[0])
        assert create_info is not None
        self.assertFalse(create_info.outlier)

        # events that change nothing share snapshots: a handful for 100 messages
        infos = [await self.stream_of(e) for e in room.order]
        snaps = {i.state_before for i in infos if i} | {i.state_after for i in infos if i}
        self.assertLessEqual(len(snaps - {None}), 12, snaps)
        # nothing else changed: current state, forward extremities, /sync
        self.assertEqual(await self.hs.room_server.current_state_ids(room.room_id), head_before)
        record = await self.hs.room_server.get_room(room.room_id)
        self.assertEqual(await self.hs.event_store.get_forward_extremities(record.room_nid), [join.event_id])
        sync = await self.sync(since)
        self.assertNotIn(room.room_id, sync["rooms"]["join"])
        # history is fetched once: later pagination is local
        asked = self.remote.count(FED + "/backfill/")
        self.assertGreaterEqual(asked, 2)
        self.assertGreaterEqual(self.remote.count(FED + "/state_ids/"), 1)
        again = await self.page_all(room.room_id, limit=50)
        self.assertEqual([e["event_id"] for e in again], ids)
        self.assertEqual(self.remote.count(FED + "/backfill/"), asked)

    async def test_state_at_backfilled_events(self) -> None:
        room = self.remote.new_room()
        room.messages(3)
        room.add("m.room.name", {"name": "Old name"}, "")
        named = room.messages(2, prefix="named")
        room.add("m.room.name", {"name": "New name"}, "")
        await seed_joined_room(self.hs, room, self.alice.user_id)
        await self.page_all(room.room_id)
        rs = self.hs.room_server
        state = await rs.state_at_event(named[0].event_id, after=False)
        name_event = await self.hs.event_store.get_event(state[("m.room.name", "")])
        self.assertEqual(name_event.content["name"], "Old name")
        self.assertIn(("m.room.power_levels", ""), state)
        current = await rs.current_state_event(room.room_id, "m.room.name")
        self.assertEqual(current.content["name"], "New name")
        # /context around a backfilled event works with negative positions
        code, body = await self.get(f"{C}/rooms/{q(room.room_id)}/context/{q(named[0].event_id)}?limit=2", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["events_after"][0]["event_id"], named[1].event_id)
        names = [e["content"].get("name") for e in body["state"] if e["type"] == "m.room.name"]
        self.assertEqual(names, ["Old name"])

    async def test_state_events_we_lack_are_fetched(self) -> None:
        room = self.remote.new_room()
        old_name = room.add("m.room.name", {"name": "Old name"}, "")
        early = room.messages(120)
        room.add("m.room.name", {"name": "New name"}, "")
        await self.get_state_ids_then_page(room, early, old_name)

    async def get_state_ids_then_page(self, room: FakeRoom, early: list[Event], old_name: Event) -> None:
        await seed_joined_room(self.hs, room, self.alice.user_id)
        # the join's state names the new name only: the old one is not here
        self.assertIsNone(await self.hs.event_store.get_event(old_name.event_id))
        code, body = await self.get(f"{C}/rooms/{q(room.room_id)}/messages?dir=b&limit=10", self.alice)
        self.assertEqual(code, 200, body)
        # the first batch stopped inside the messages: the state there came from /state_ids,
        # and the old name event from /event, stored as an outlier
        self.assertGreaterEqual(self.remote.count(FED + "/state_ids/"), 1)
        self.assertGreaterEqual(self.remote.count(FED + "/event/"), 1)
        stored = await self.hs.event_store.get_event(old_name.event_id)
        self.assertIsNotNone(stored)
        oldest = min(
            [e for e in early if (await self.stream_of(e.event_id)) is not None],
            key=lambda e: e.depth,
        )
        state = await self.hs.room_server.state_at_event(oldest.event_id, after=False)
        self.assertEqual(state[("m.room.name", "")], old_name.event_id)
        events = await self.page_all(room.room_id)
        ids = [e["event_id"] for e in events]
        self.assertEqual(ids, list(reversed(room.order)))
        # the outlier found its place in the timeline too
        old_name_info = await self.stream_of(old_name.event_id)
        assert old_name_info is not None
        self.assertFalse(old_name_info.outlier)

    async def test_backfilled_event_arriving_again_is_a_duplicate(self) -> None:
        room = self.remote.new_room()
        msgs = room.messages(5)
        await seed_joined_room(self.hs, room, self.alice.user_id)
        await self.page_all(room.room_id)
        position = await self.position_of(msgs[2].event_id)
        again = Event(msgs[2].get_pdu_json(), room.rv)
        result = await self.hs.room_server.receive_event(again)
        self.assertTrue(result.duplicate and result.accepted, result)
        self.assertEqual(await self.position_of(msgs[2].event_id), position)

    async def test_backfilled_event_sent_again_over_federation(self) -> None:
        from mxserver.config import FederationConfig
        from mxserver.federation.client import FederationClient

        room = self.remote.new_room()
        msgs = room.messages(5)
        await seed_joined_room(self.hs, room, self.alice.user_id)
        await self.page_all(room.room_id)
        before = await self.position_of(msgs[3].event_id)
        signer = FederationClient(
            self.hs.reactor, self.hs.reactor, FederationConfig(), self.remote.server_name, self.remote.signing_key
        )
        uri = f"{FED}/send/again1"
        body = {"origin": self.remote.server_name, "origin_server_ts": 1, "pdus": [msgs[3].get_pdu_json()]}
        auth = signer.authorization_header("PUT", self.hs.server_name, uri, body).decode()
        code, answer = await self.request("PUT", uri, body, headers={"Authorization": auth})
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["pdus"], {msgs[3].event_id: {}})
        self.assertEqual(await self.position_of(msgs[3].event_id), before)

    async def test_a_gap_after_the_join_is_not_the_start(self) -> None:
        room = self.remote.new_room()
        room.messages(5)
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        room.messages(3, prefix="missed")
        tip = room.add("m.room.message", {"msgtype": "m.text", "body": "tip"})
        rs = self.hs.room_server
        # as the federation receiver does when get_missing_events cannot close a gap
        result = await rs.receive_event(tip, state_before=await rs.current_state_ids(room.room_id))
        self.assertTrue(result.accepted, result)
        record = await rs.get_room(room.room_id)
        extremities = await self.hs.backfiller.store.backward_extremities(record.room_nid)
        self.assertEqual([x.event_id for x in extremities], list(join.prev_event_ids))
        events = await self.page_all(room.room_id)
        bodies = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
        self.assertEqual(bodies, ["tip", "message 4", "message 3", "message 2", "message 1", "message 0"])

    async def test_redaction_that_came_first_applies(self) -> None:
        room = self.remote.new_room()
        msgs = room.messages(4)
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        # after the join, the old message is redacted (by its sender): we do not have it yet
        redaction = room.build("m.room.redaction", {}, None, redacts=msgs[1].event_id)
        room.add_event(redaction)
        result = await self.hs.room_server.receive_event(redaction)
        self.assertTrue(result.accepted, result)
        events = await self.page_all(room.room_id)
        by_id = {e["event_id"]: e for e in events}
        self.assertEqual(by_id[msgs[1].event_id]["content"], {})
        self.assertEqual(by_id[msgs[1].event_id]["unsigned"]["redacted_because"]["event_id"], redaction.event_id)
        self.assertEqual(by_id[msgs[2].event_id]["content"]["body"], "message 2")
        self.assertIn(join.event_id, by_id)
        # the same from the database (not the cache)
        self.hs.event_store.invalidate_event(msgs[1].event_id)
        stored = await self.hs.event_store.get_event(msgs[1].event_id)
        self.assertEqual(stored.metadata.redacted_by, redaction.event_id)

    async def test_remote_without_history(self) -> None:
        room = self.remote.new_room()
        room.messages(5)
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        self.remote.refuse.add(FED + "/backfill/")
        events = await self.page_all(room.room_id)
        self.assertEqual([e["event_id"] for e in events], [join.event_id])
        # not asked again right away
        asked = self.remote.count(FED + "/backfill/")
        await self.page_all(room.room_id)
        self.assertEqual(self.remote.count(FED + "/backfill/"), asked)

    async def test_bad_pdus_are_dropped(self) -> None:
        room = self.remote.new_room()
        msgs = room.messages(4)
        await seed_joined_room(self.hs, room, self.alice.user_id)
        tampered = msgs[1].get_pdu_json()
        tampered["signatures"] = {}

        def answer(request: Any) -> tuple[int, Any]:
            pdus = [m.get_pdu_json() for m in reversed(msgs)]
            pdus[2] = tampered
            return 200, {"origin": self.remote.server_name, "origin_server_ts": 0, "pdus": pdus + ["junk", 5]}

        self.remote.routes[f"{FED}/backfill/{q(room.room_id)}".encode()] = answer
        events = await self.page_all(room.room_id)
        ids = [e["event_id"] for e in events]
        self.assertNotIn(msgs[1].event_id, ids)
        # the ones before the dropped event still come, with the state the remote gives for them
        self.assertIn(msgs[0].event_id, ids)
        self.assertIn(msgs[3].event_id, ids)

    async def test_forwards_from_the_start_and_receipts(self) -> None:
        room = self.remote.new_room()
        msgs = room.messages(5)
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        await self.page_all(room.room_id)
        # dir=f without a token starts before the backfilled events
        code, body = await self.get(f"{C}/rooms/{q(room.room_id)}/messages?dir=f&limit=3", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([e["event_id"] for e in body["chunk"]], room.order[:3])
        code, rest = await self.get(f"{C}/rooms/{q(room.room_id)}/messages?dir=f&limit=50&from={body['end']}", self.alice)
        self.assertEqual([e["event_id"] for e in rest["chunk"]], room.order[3:])
        # a read receipt on an old event is fine, and does not move the marker back
        path = f"{C}/rooms/{q(room.room_id)}/receipt/m.read"
        self.assertEqual((await self.post(f"{path}/{q(join.event_id)}", {}, self.alice))[0], 200)
        self.assertEqual((await self.post(f"{path}/{q(msgs[1].event_id)}", {}, self.alice))[0], 200)
        code, sync = await self.get(f"{C}/sync?timeout=0", self.alice)
        self.assertEqual(code, 200, sync)
        receipts = [e for e in sync["rooms"]["join"][room.room_id]["ephemeral"]["events"] if e["type"] == "m.receipt"]
        self.assertIn(join.event_id, receipts[0]["content"])

    async def test_history_visibility_applies(self) -> None:
        room = self.remote.new_room()
        room.add("m.room.history_visibility", {"history_visibility": "joined"}, "")
        room.messages(30)
        join = await seed_joined_room(self.hs, room, self.alice.user_id)
        events = await self.page_all(room.room_id, limit=10)
        # the messages are fetched, but sent under "joined" before alice joined: not for her;
        # what came before the change (visible as "shared") is
        self.assertEqual([e["event_id"] for e in events], [join.event_id, *reversed(room.order[:6])])
        self.assertGreaterEqual(self.remote.count(FED + "/backfill/"), 1)
        position = await self.position_of(room.order[-2])
        assert position is not None
        self.assertLess(position, 0)

    async def test_local_rooms_ask_no_one(self) -> None:
        code, body = await self.post(f"{C}/createRoom", {}, self.alice)
        room_id = body["room_id"]
        events = await self.page_all(room_id)
        self.assertEqual(events[-1]["type"], "m.room.create")
        self.assertEqual(self.remote.requests, [])

    # -- helpers -----------------------------------------------------------------------------

    async def sync_token(self) -> str:
        code, body = await self.get(f"{C}/sync?timeout=0", self.alice)
        self.assertEqual(code, 200, body)
        return body["next_batch"]

    async def sync(self, since: str) -> dict[str, Any]:
        code, body = await self.get(f"{C}/sync?timeout=0&since={since}", self.alice)
        self.assertEqual(code, 200, body)
        return body


class BackfillRoomV10Tests(BackfillTests):
    """The same in a room version whose create event carries the room ID."""

    async def _set_up(self) -> None:
        await super()._set_up()
        original = self.remote.new_room
        self.remote.new_room = lambda creator="bob", version="10": original(creator, version)  # type: ignore[method-assign]


class ParentsFirstTests(unittest.SynchronousTestCase):
    """The order backfilled events are placed in: every event after its prev events."""

    def test_fork_and_merge(self) -> None:
        from mxserver.crypto.keys import generate_signing_key
        from mxserver.events.builder import build_event
        from mxserver.events.versions import get_room_version
        from mxserver.federation.backfill import _Item, _parents_first

        rv = get_room_version("10")
        assert rv is not None
        key = generate_signing_key("k")

        def ev(name: str, prevs: list[Event], depth: int, ts: int) -> Event:
            return build_event(
                rv, type="m.room.message", sender="@a:x", content={"body": name}, room_id="!r:x",
                prev_event_ids=[p.event_id for p in prevs], auth_event_ids=[], depth=depth,
                origin_server_ts=ts, server_name="x", signing_key=key,
            )

        a = ev("a", [], 1, 1)
        b = ev("b", [a], 2, 5)
        c = ev("c", [a], 2, 3)
        # d's depth is lower than b's (a lying or odd server): prev events still come first
        d = ev("d", [b, c], 1, 6)
        e = ev("e", [d], 4, 7)
        items = [_Item(x, outlier=False) for x in (e, d, c, b, a)]
        order = [i.event.content["body"] for i in _parents_first(items)]
        self.assertEqual(order, ["a", "c", "b", "d", "e"])
