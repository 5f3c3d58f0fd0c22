"""The room server's receive pipeline: events from other servers accepted, rejected or soft failed.

Events are built and signed as the fake remote server ``remote.test`` and handed
to :meth:`RoomServer.receive_event` directly, as the federation receiver will
after checking signatures and hashes (server-server-api.md §Checks performed
on receipt of a PDU, §Rejection, §Soft failure).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from twisted.internet import defer

from mxserver.crypto.keys import generate_signing_key
from mxserver.errors import MatrixError
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.versions import get_room_version
from mxserver.homeserver import Homeserver
from mxserver.rooms.auth import auth_types_for_event
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import (
    EventSpec,
    EventStoreStateSource,
    MissingEventsError,
    ReceiveStatus,
)
from mxserver.rooms.state_resolution import resolve_state_sync
from mxserver.storage.events import StoredEventInfo
from tests.harness import C, HomeserverTestCase, TestUser

REMOTE = "remote.test"
BOB = "@bob:remote.test"
EVE = "@eve:remote.test"


def q(value: str) -> str:
    return quote(value, safe="")


class ReceiveTests(HomeserverTestCase):
    remote_key = generate_signing_key("r1")

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice: TestUser = await self.register("alice")
        self._ts = 1_700_000_000_000

    # -- helpers ---------------------------------------------------------------------------

    async def room(self, version: str = "12", powers: dict[str, int] | None = None) -> str:
        rv = get_room_version(version)
        assert rv is not None
        user = self.alice.user_id
        pl = default_power_levels_content(rv, user)
        pl["users"].update(powers or {})
        initial = [
            EventSpec("m.room.member", {"membership": "join"}, user, user),
            EventSpec("m.room.power_levels", pl, "", user),
            EventSpec("m.room.join_rules", {"join_rule": "public"}, "", user),
            EventSpec("m.room.history_visibility", {"history_visibility": "shared"}, "", user),
        ]
        room_id, _ = await self.hs.room_server.create_room(user, rv, {}, initial)
        return room_id

    async def remote(
        self,
        room_id: str,
        etype: str,
        content: dict[str, Any],
        *,
        sender: str = BOB,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
        auth_ids: Sequence[str] | None = None,
    ) -> Event:
        """An event built and signed by remote.test on ``prev`` (default: the room's forward
        extremities), citing the auth events §Auth events selection picks from the state there."""
        rs = self.hs.room_server
        head = await rs.get_head(room_id)
        rv = head.room.room_version
        prev_ids = list(head.extremities if prev is None else prev)
        if auth_ids is None:
            state = dict(head.state)
            if len(prev_ids) == 1 and await self.hs.event_store.get_event(prev_ids[0]) is not None:
                state = await rs.state_at_event(prev_ids[0])
            wanted = auth_types_for_event(rv, etype, sender, state_key, content)
            auth_ids = [state[k] for k in sorted(wanted) if k in state]
        known = await self.hs.event_store.get_events(prev_ids)
        depth = max((e.depth for e in known.values()), default=head.depth) + 1
        self._ts += 1
        return build_event(
            rv,
            type=etype,
            sender=sender,
            content=content,
            room_id=room_id,
            state_key=state_key,
            prev_event_ids=prev_ids,
            auth_event_ids=list(auth_ids),
            depth=depth,
            origin_server_ts=self._ts,
            server_name=REMOTE,
            signing_key=self.remote_key,
        )

    async def receive(self, event: Event, expected: ReceiveStatus = ReceiveStatus.ACCEPTED) -> Any:
        result = await self.hs.room_server.receive_event(event)
        self.assertEqual(result.status, expected, result)
        return result

    async def join_bob(self, room_id: str, user: str = BOB) -> Event:
        join = await self.remote(room_id, "m.room.member", {"membership": "join"}, sender=user, state_key=user)
        await self.receive(join)
        return join

    async def local(self, room_id: str, etype: str, content: dict[str, Any], state_key: str | None = None,
                    sender: str | None = None) -> Event:
        return await self.hs.room_server.send(room_id, EventSpec(etype, content, state_key, sender or self.alice.user_id))

    async def info(self, event_id: str) -> StoredEventInfo:
        info = await self.hs.event_store.get_event_info(event_id)
        assert info is not None, f"{event_id} is not stored"
        return info

    async def count_events(self) -> int:
        rows = await self.hs.db.select("count", "SELECT COUNT(*) FROM events")
        return rows[0][0]

    async def room_nid(self, room_id: str) -> int:
        room = await self.hs.room_server.get_room(room_id)
        assert room is not None
        return room.room_nid

    async def extremities(self, room_id: str) -> set[str]:
        return set(await self.hs.event_store.get_forward_extremities(await self.room_nid(room_id)))

    async def message_ids(self, room_id: str) -> list[str]:
        code, body = await self.get(f"{C}/rooms/{q(room_id)}/messages?dir=b&limit=100", self.alice)
        self.assertEqual(code, 200, body)
        return [e["event_id"] for e in body["chunk"]]

    async def sync_timeline_ids(self, room_id: str) -> list[str]:
        flt = q(json.dumps({"room": {"timeline": {"limit": 100}}}))
        code, body = await self.get(f"{C}/sync?filter={flt}", self.alice)
        self.assertEqual(code, 200, body)
        return [e["event_id"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]]

    async def expected_resolution(self, room_id: str, event_ids: Sequence[str]) -> dict[Any, str]:
        """``resolve_state_sync`` over the states after ``event_ids``, with every event it may need."""
        rs = self.hs.room_server
        rv = (await rs.get_room(room_id)).room_version
        maps = [await rs.state_at_event(e) for e in event_ids]
        ids = {e for m in maps for e in m.values()}
        source = EventStoreStateSource(self.hs.event_store)
        event_map = await source.get_events(ids | await source.get_auth_chain_ids(ids))
        return resolve_state_sync(rv, maps, event_map)

    # -- tests -----------------------------------------------------------------------------

    async def test_accepted_message_reaches_clients(self) -> None:
        for version in ("1", "10", "11", "12"):
            room_id = await self.room(version)
            seen: list[str] = []
            self.hs.room_stream.subscribe(lambda evs, seen=seen: seen.extend(e.event_id for e in evs))
            join = await self.join_bob(room_id)
            if version == "1":
                self.assertTrue(join.event_id.endswith(":remote.test"))
                self.assertIsInstance(join.get("prev_events")[0], list)
            self.assertEqual(await self.hs.room_server.membership(room_id, BOB), "join")
            msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello from afar"})
            result = await self.receive(msg)
            self.assertFalse(result.duplicate)
            self.assertIsNone(result.reason)
            self.assertEqual(seen, [join.event_id, msg.event_id])
            self.assertIsNotNone(msg.metadata.stream_ordering)
            self.assertEqual(await self.extremities(room_id), {msg.event_id})
            info = await self.info(msg.event_id)
            self.assertEqual(info.stream_ordering, msg.metadata.stream_ordering)
            self.assertIsNone(info.rejected_reason)
            self.assertEqual(info.state_before, info.state_after)
            self.assertIn(msg.event_id, await self.message_ids(room_id))
            self.assertIn(msg.event_id, await self.sync_timeline_ids(room_id))
            code, members = await self.get(f"{C}/rooms/{q(room_id)}/joined_members", self.alice)
            self.assertEqual(code, 200, members)
            self.assertIn(BOB, members["joined"])
            # our next event builds on it
            reply = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi bob"})
            self.assertEqual(list(reply.prev_event_ids), [msg.event_id])

    async def test_message_from_non_member_is_rejected(self) -> None:
        for version in ("1", "12"):
            room_id = await self.room(version)
            before = await self.extremities(room_id)
            state = await self.hs.room_server.current_state_ids(room_id)
            msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "spam"}, sender=EVE)
            result = await self.receive(msg, ReceiveStatus.REJECTED)
            self.assertIsInstance(result.reason, str)
            info = await self.info(msg.event_id)  # a rejected event is stored
            self.assertIsNone(info.stream_ordering)
            self.assertEqual(info.rejected_reason, result.reason)
            self.assertFalse(info.soft_failed)
            self.assertFalse(info.outlier)
            self.assertEqual(info.state_before, info.state_after)
            self.assertIsNotNone(info.state_before)
            self.assertEqual(await self.extremities(room_id), before)
            self.assertEqual(set((await self.hs.room_server.get_head(room_id)).extremities), before)
            self.assertEqual(await self.hs.room_server.current_state_ids(room_id), state)
            self.assertNotIn(msg.event_id, await self.message_ids(room_id))
            self.assertNotIn(msg.event_id, await self.sync_timeline_ids(room_id))
            stored = await self.hs.event_store.get_event(msg.event_id)
            self.assertTrue(stored.rejected)
            # a rejected state event does not change the state either
            topic = await self.remote(room_id, "m.room.topic", {"topic": "hijacked"}, sender=EVE, state_key="")
            await self.receive(topic, ReceiveStatus.REJECTED)
            self.assertEqual(await self.hs.room_server.current_state_ids(room_id), state)
            topic_info = await self.info(topic.event_id)
            self.assertEqual((topic_info.state_before, topic_info.state_after), (info.state_before, info.state_before))

    async def test_event_citing_rejected_auth_event_is_rejected(self) -> None:
        for version in ("10", "12"):
            room_id = await self.room(version)
            await self.join_bob(room_id)
            # bob (power 0) makes himself admin: rejected against its own auth events
            pl_content = dict(default_power_levels_content(get_room_version(version), self.alice.user_id))
            pl_content["users"] = {**pl_content["users"], BOB: 100}
            grab = await self.remote(room_id, "m.room.power_levels", pl_content, state_key="")
            await self.receive(grab, ReceiveStatus.REJECTED)
            state = await self.hs.room_server.current_state_ids(room_id)
            self.assertNotEqual(state[("m.room.power_levels", "")], grab.event_id)
            # an event citing it as an auth event is rejected too
            head = await self.hs.room_server.get_head(room_id)
            auth = [state[k] for k in sorted(auth_types_for_event(head.room.room_version, "m.room.message", BOB, None, {}))
                    if k in state and k != ("m.room.power_levels", "")] + [grab.event_id]
            msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "as admin"}, auth_ids=auth)
            result = await self.receive(msg, ReceiveStatus.REJECTED)
            self.assertIn("rejected", result.reason)
            self.assertIsNotNone((await self.info(msg.event_id)).rejected_reason)
            # but an event with the rejected event as a prev event and proper auth events is fine
            # (§Rejection): the state after a rejected event is the state before it
            ok = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "sorry"}, prev=[grab.event_id])
            await self.receive(ok)
            self.assertEqual((await self.info(ok.event_id)).state_before, (await self.info(grab.event_id)).state_after)
            self.assertIn(ok.event_id, await self.message_ids(room_id))
            self.assertNotIn(grab.event_id, await self.message_ids(room_id))
            self.assertEqual(await self.hs.room_server.current_state_ids(room_id), state)
            # the next local event cites the accepted events only
            reply = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "ok"})
            self.assertNotIn(grab.event_id, reply.prev_event_ids)
            self.assertNotIn(msg.event_id, reply.prev_event_ids)
            self.assertIn(ok.event_id, reply.prev_event_ids)

    async def test_banned_user_on_old_prev_events_is_soft_failed(self) -> None:
        for version in ("1", "10", "12"):
            room_id = await self.room(version)
            join = await self.join_bob(room_id)
            await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "before the ban"})
            ban = await self.local(room_id, "m.room.member", {"membership": "ban"}, state_key=BOB)
            # bob's server sends as if it had not seen the ban: valid at its own state
            evade = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "evading"}, prev=[join.event_id])
            result = await self.receive(evade, ReceiveStatus.SOFT_FAILED)
            self.assertIsInstance(result.reason, str)
            info = await self.info(evade.event_id)
            self.assertIsNone(info.stream_ordering)
            self.assertIsNone(info.rejected_reason)
            self.assertTrue(info.soft_failed)
            self.assertEqual(info.state_before, (await self.info(join.event_id)).state_after)
            self.assertEqual(info.state_after, info.state_before)
            self.assertEqual(await self.extremities(room_id), {ban.event_id})
            self.assertNotIn(evade.event_id, await self.message_ids(room_id))
            self.assertNotIn(evade.event_id, await self.sync_timeline_ids(room_id))
            # a soft-failed state event has its own state after it (later events may build on it),
            # but does not change the room's
            rename = await self.remote(room_id, "m.room.member", {"membership": "join", "displayname": "evader"},
                                       state_key=BOB, prev=[evade.event_id])
            await self.receive(rename, ReceiveStatus.SOFT_FAILED)
            rename_state = await self.hs.room_server.state_at_event(rename.event_id)
            self.assertEqual(rename_state[("m.room.member", BOB)], rename.event_id)
            self.assertEqual(await self.hs.room_server.membership(room_id, BOB), "ban")
            self.assertEqual((await self.hs.room_server.current_state_ids(room_id))[("m.room.member", BOB)], ban.event_id)
            again = await self.hs.room_server.receive_event(evade)
            self.assertEqual((again.status, again.duplicate), (ReceiveStatus.SOFT_FAILED, True))
            nxt = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "after"})
            self.assertEqual(list(nxt.prev_event_ids), [ban.event_id])

    async def test_fork_with_conflicting_topics_is_resolved(self) -> None:
        for version in ("1", "10", "12"):
            room_id = await self.room(version, powers={BOB: 100})
            join = await self.join_bob(room_id)
            mine = await self.local(room_id, "m.room.topic", {"topic": "local"}, state_key="")
            theirs = await self.remote(room_id, "m.room.topic", {"topic": "remote"}, state_key="", prev=[join.event_id])
            await self.receive(theirs)
            self.assertEqual(await self.extremities(room_id), {mine.event_id, theirs.event_id})
            expected = await self.expected_resolution(room_id, [mine.event_id, theirs.event_id])
            rs = self.hs.room_server
            self.assertEqual(await rs.current_state_ids(room_id), expected)
            # (the database's current state agrees with the head: the restart below reads it back)
            current_after = (await self.info(theirs.event_id)).current_state_after
            if expected == await rs.state_at_event(theirs.event_id):
                self.assertIsNone(current_after)
            else:
                self.assertEqual(dict(await self.hs.state_store.get_state(current_after)), expected)
            if version != "1":
                # v2 mainline ordering, same power levels: the later origin_server_ts (ours) wins,
                # so the room's state is not the state after the latest event (restart reads it back)
                self.assertEqual(expected[("m.room.topic", "")], mine.event_id)
            await self.restart()
            rs = self.hs.room_server
            self.assertEqual(await rs.current_state_ids(room_id), expected)
            code, body = await self.get(f"{C}/rooms/{q(room_id)}/state/m.room.topic", self.alice)
            self.assertEqual(code, 200, body)
            winner = await self.hs.event_store.get_event(expected[("m.room.topic", "")])
            self.assertEqual(body["topic"], winner.content["topic"])
            # our next event cites both branches and starts from the resolved state
            nxt = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "merged"})
            self.assertEqual(set(nxt.prev_event_ids), {mine.event_id, theirs.event_id})
            self.assertEqual(await rs.state_at_event(nxt.event_id, after=False), expected)
            self.assertEqual(await self.extremities(room_id), {nxt.event_id})
            self.assertIn(theirs.event_id, await self.message_ids(room_id) + await self.sync_timeline_ids(room_id))

    async def test_ban_racing_a_join(self) -> None:
        carol = await self.register("carol")
        for version in ("1", "10", "12"):
            room_id = await self.room(version, powers={BOB: 100})
            join = await self.join_bob(room_id)
            carol_join = await self.local(room_id, "m.room.member", {"membership": "join"}, state_key=carol.user_id,
                                          sender=carol.user_id)
            # bob bans carol before he has seen her join: valid at its state and at the current state
            ban = await self.remote(room_id, "m.room.member", {"membership": "ban"}, state_key=carol.user_id,
                                    prev=[join.event_id])
            await self.receive(ban)
            self.assertEqual(await self.extremities(room_id), {carol_join.event_id, ban.event_id})
            expected = await self.expected_resolution(room_id, [carol_join.event_id, ban.event_id])
            rs = self.hs.room_server
            self.assertEqual(await rs.current_state_ids(room_id), expected)
            winner = await self.hs.event_store.get_event(expected[("m.room.member", carol.user_id)])
            if version != "1":
                # state resolution v2: the ban is a power event, applied first; the join then fails
                self.assertEqual(winner.event_id, ban.event_id)
            self.assertEqual(await rs.membership(room_id, carol.user_id), winner.membership)
            membership = await self.hs.event_store.get_membership(carol.user_id, await self.room_nid(room_id))
            self.assertEqual(membership[:2], (winner.membership, winner.event_id))
            nxt = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "after"})
            self.assertEqual(set(nxt.prev_event_ids), {carol_join.event_id, ban.event_id})

    async def test_missing_prev_or_auth_events(self) -> None:
        for version in ("1", "12"):
            room_id = await self.room(version)
            await self.join_bob(room_id)
            count = await self.count_events()
            first = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "1"})
            second = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "2"}, prev=[first.event_id])
            with self.assertRaises(MissingEventsError) as cm:
                await self.hs.room_server.receive_event(second)
            self.assertEqual(cm.exception.missing, [first.event_id])
            self.assertEqual(await self.count_events(), count)
            # an unknown auth event: bob's new displayname, not delivered yet
            rename = await self.remote(room_id, "m.room.member", {"membership": "join", "displayname": "B"},
                                       state_key=BOB)
            state = await self.hs.room_server.current_state_ids(room_id)
            auth = [v for k, v in state.items() if k in {("m.room.create", ""), ("m.room.power_levels", "")}
                    and (version != "12" or k[0] != "m.room.create")] + [rename.event_id]
            third = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "3"},
                                      prev=[rename.event_id], auth_ids=auth)
            with self.assertRaises(MissingEventsError) as cm:
                await self.hs.room_server.receive_event(third)
            self.assertEqual(cm.exception.missing, [rename.event_id])
            self.assertEqual(await self.count_events(), count)
            self.assertIsNone(await self.hs.event_store.get_event_info(third.event_id))
            # once the missing events arrive, so can the others
            await self.receive(first)
            await self.receive(second)
            await self.receive(rename)
            await self.receive(third)
            self.assertEqual(await self.extremities(room_id), {second.event_id, third.event_id})

    async def test_duplicate_delivery_is_a_no_op(self) -> None:
        room_id = await self.room("12")
        await self.join_bob(room_id)
        msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "once"})
        spam = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"}, sender=EVE)
        seen: list[str] = []
        self.hs.room_stream.subscribe(lambda evs: seen.extend(e.event_id for e in evs))
        results = await defer.gatherResults(
            [defer.ensureDeferred(self.hs.room_server.receive_event(e)) for e in (msg, msg, spam, spam)]
        )
        self.assertEqual([r.status for r in results], [ReceiveStatus.ACCEPTED] * 2 + [ReceiveStatus.REJECTED] * 2)
        self.assertEqual([r.duplicate for r in results], [False, True, False, True])
        count = await self.count_events()
        again = await self.hs.room_server.receive_event(msg)
        self.assertEqual((again.status, again.duplicate), (ReceiveStatus.ACCEPTED, True))
        rejected = await self.hs.room_server.receive_event(spam)
        self.assertEqual((rejected.status, rejected.duplicate), (ReceiveStatus.REJECTED, True))
        self.assertEqual(rejected.reason, results[2].reason)
        self.assertEqual(await self.count_events(), count)
        self.assertEqual(seen, [msg.event_id])
        self.assertEqual((await self.message_ids(room_id)).count(msg.event_id), 1)

    async def test_interleaved_with_local_sends(self) -> None:
        # Remote events received while local sends are still being persisted build on them.
        room_id = await self.room("12")
        join = await self.join_bob(room_id)
        rs = self.hs.room_server
        msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "late"}, prev=[join.event_id])
        sends = [
            defer.ensureDeferred(rs.send(room_id, EventSpec("m.room.message", {"body": str(i)}, sender=self.alice.user_id)))
            for i in range(5)
        ]
        results = await defer.gatherResults([*sends, defer.ensureDeferred(rs.receive_event(msg))])
        self.assertTrue(results[-1].accepted)
        self.assertEqual(await self.extremities(room_id), {results[4].event_id, msg.event_id})
        nxt = await self.local(room_id, "m.room.message", {"msgtype": "m.text", "body": "after"})
        self.assertEqual(len(nxt.prev_event_ids), 2)
        self.assertIn(msg.event_id, nxt.prev_event_ids)

    async def test_unknown_room_and_wrong_version(self) -> None:
        room_id = await self.room("12")
        await self.join_bob(room_id)
        msg = await self.remote(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        other = Event(msg.get_pdu_json(), get_room_version("11"))
        with self.assertRaises(ValueError):
            await self.hs.room_server.receive_event(other)
        pdu = msg.get_pdu_json()
        pdu["room_id"] = "!unknown:remote.test"
        with self.assertRaises(MatrixError) as cm:
            await self.hs.room_server.receive_event(Event(pdu, get_room_version("12")))
        self.assertEqual(cm.exception.errcode, "M_NOT_FOUND")

    async def restart(self) -> None:
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        port = self.hs.listening_ports[0].getHost().port
        self.base_url = f"http://127.0.0.1:{port}"
