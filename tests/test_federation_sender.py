"""The outbound federation sender against a fake transport, on a task.Clock.

A real Homeserver and database; remote servers are "in" a room because remote
users' joins are written straight through the room server (only membership
bookkeeping matters here). Every transaction goes to :class:`FakeTransport`,
which records it and answers when the test says so.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from mxserver.config import HomeserverConfig
from mxserver.federation import sender as sender_mod
from mxserver.federation.client import FederationError, RequestFailed
from mxserver.homeserver import Homeserver
from mxserver.rooms.room_server import EventSpec
from tests.harness import HomeserverTestCase, TestUser

R1 = "r1.example"
R2 = "r2.example"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Call:
    def __init__(self, destination: str, txn_id: str, body: dict[str, Any]) -> None:
        self.destination = destination
        self.txn_id = txn_id
        self.body = body
        self.d: Deferred[dict[str, Any]] = Deferred()

    @property
    def pdu_ids(self) -> list[str]:
        return [p["content"].get("body") for p in self.body["pdus"]]

    @property
    def answered(self) -> bool:
        return self.d.called


class FakeTransport:
    """Records every transaction; ``auto`` answers 200 at once for the destinations in it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.auto: set[str] = set()

    def __call__(self, destination: str, txn_id: str, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        call = Call(destination, txn_id, body)
        self.calls.append(call)
        if destination in self.auto:
            call.d.callback({"pdus": {}})
        return call.d

    def to(self, destination: str) -> list[Call]:
        return [c for c in self.calls if c.destination == destination]

    def pending(self, destination: str) -> list[Call]:
        return [c for c in self.to(destination) if not c.answered]


async def settle(rounds: int = 5) -> None:
    """Let database round trips on the real reactor finish."""
    for _ in range(rounds):
        d: Deferred[None] = Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d


class SenderTestCase(HomeserverTestCase):
    use_fake_clock = True

    def make_homeserver(self, config: HomeserverConfig) -> Homeserver:
        # every server this test starts (restarts too) sends through a new FakeTransport
        self.transport = FakeTransport()
        return Homeserver(config, reactor, clock=self.clock, federation_transport=self.transport)

    async def _set_up(self) -> None:
        await super()._set_up()
        self.sender = self.hs.federation_sender

    async def until(self, cond: Any, what: str = "condition", timeout: float = 10.0) -> None:
        deadline = reactor.seconds() + timeout
        while not cond():
            if reactor.seconds() > deadline:
                self.fail(f"timed out waiting for {what}")
            await settle(1)

    async def room_with(self, user: TestUser, *servers: str) -> str:
        room = await self.create_room(user, preset="public_chat")
        # Destinations come from the joined members when the sender routes an event: let it
        # route the creation events (only we are in the room) before anyone else joins.
        await self.hs.room_servers.servers_in_room(room)
        await self.sender.routed()
        for i, server in enumerate(servers):
            uid = f"@u{i}:{server}"
            await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, uid, uid))
        return room

    async def say(self, user: TestUser, room: str, body: str) -> str:
        ev = await self.hs.room_server.send(room, EventSpec("m.room.message", {"msgtype": "m.text", "body": body}, None, user.user_id))
        return ev.event_id

    async def restart(self, config_overrides: dict[str, Any] | None = None) -> Homeserver:
        hs = await super().restart(config_overrides)
        self.sender = hs.federation_sender
        return hs

    def status(self, destination: str) -> dict[str, Any]:
        """The sender's admin-API view of ``destination``."""
        return {d["destination"]: d for d in self.sender.destinations_status()}[destination]

    def answer(self, call: Call, response: Any = None, error: Exception | None = None) -> None:
        if error is not None:
            call.d.errback(error)
        else:
            call.d.callback(response if response is not None else {"pdus": {}})


class QueueTests(SenderTestCase):
    async def test_one_transaction_in_flight_batches_and_order(self) -> None:
        sent_before = metric("mxserver_federation_transactions_total", destination=R1, outcome="sent")
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "m0")
        await self.until(lambda: len(self.transport.to(R1)) == 1, "first transaction")
        for i in range(1, 121):
            await self.say(alice, room, f"m{i}")
        for i in range(150):
            self.sender.send_edu(R1, "org.example.test", {"n": i})
        await settle()
        # Still just the first transaction: nothing else may go while it is unanswered.
        self.assertEqual(len(self.transport.to(R1)), 1)
        self.assertEqual(self.transport.calls[0].pdu_ids, ["m0"])
        status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
        self.assertEqual((status["pending_pdus"], status["pending_edus"]), (120, 150))
        self.assertEqual(status["in_flight"]["pdus"], 1)
        seen: list[str] = []
        edus: list[int] = []
        while True:
            pending = self.transport.pending(R1)
            self.assertLessEqual(len(pending), 1)
            if not pending:
                await settle(2)
                if not self.transport.pending(R1):
                    break
                continue
            call = pending[0]
            self.assertLessEqual(len(call.body["pdus"]), 50)
            self.assertLessEqual(len(call.body.get("edus", [])), 100)
            self.assertEqual(call.body["origin"], self.hs.server_name)
            seen += call.pdu_ids
            edus += [e["content"]["n"] for e in call.body.get("edus", [])]
            self.answer(call)
            await settle(1)
        self.assertEqual(seen, [f"m{i}" for i in range(121)])
        self.assertEqual(edus, list(range(150)))
        sizes = [len(c.body["pdus"]) for c in self.transport.to(R1)]
        self.assertEqual(sizes, [1, 50, 50, 20])
        self.assertEqual(metric("mxserver_federation_transactions_total", destination=R1, outcome="sent") - sent_before, 4)
        self.assertEqual(metric("mxserver_federation_pending_pdus", destination=R1), 0)
        ids = [c.txn_id for c in self.transport.to(R1)]
        self.assertEqual(len(set(ids)), len(ids))

    async def test_never_to_ourselves_and_only_our_events(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.add(R1)
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "hello")
        await self.until(lambda: any("hello" in c.pdu_ids for c in self.transport.calls), "hello")
        self.assertEqual({c.destination for c in self.transport.calls}, {R1})
        # the remote user's join (its sender is remote) was not sent anywhere
        senders = {p["sender"] for c in self.transport.calls for p in c.body["pdus"]}
        self.assertEqual(senders, {alice.user_id})
        self.sender.send_edu(self.hs.server_name, "m.typing", {})
        self.assertNotIn(self.hs.server_name, {d["destination"] for d in self.sender.destinations_status()})

    async def test_edu_coalescing_and_send_to_room(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1, R2)
        await self.until(lambda: len(self.transport.calls) >= 0)
        # Hold R1 with a transaction in flight so EDUs queue up behind it.
        self.sender.send_edu(R1, "x.block", {})
        await self.until(lambda: len(self.transport.pending(R1)) == 1, "blocking transaction")
        self.sender.send_edu(R1, "m.typing", {"room_id": room, "user_id": alice.user_id, "typing": True}, key=(room, "a"))
        self.sender.send_edu(R1, "m.typing", {"room_id": room, "user_id": "@b:test", "typing": True}, key=(room, "b"))
        self.sender.send_edu(R1, "m.typing", {"room_id": room, "user_id": alice.user_id, "typing": False}, key=(room, "a"))
        self.answer(self.transport.pending(R1)[0])
        await self.until(lambda: len(self.transport.to(R1)) == 2, "second transaction")
        edus = self.transport.to(R1)[1].body["edus"]
        self.assertEqual([(e["content"]["user_id"], e["content"]["typing"]) for e in edus], [("@b:test", True), (alice.user_id, False)])
        self.transport.auto.update({R1, R2})
        self.answer(self.transport.to(R1)[1])
        await self.sender.send_edu_to_room(room, "org.example.room", {"r": room})
        await self.until(
            lambda: {c.destination for c in self.transport.calls if any(e["edu_type"] == "org.example.room" for e in c.body.get("edus", []))}
            == {R1, R2},
            "room EDU at both servers",
        )

    async def test_kick_reaches_the_target_server(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.update({R1, R2})
        room = await self.room_with(alice, R1, R2)
        # R2's only user is kicked: R2 is no longer in the room, yet must receive its kick.
        await self.hs.room_server.send(
            room, EventSpec("m.room.member", {"membership": "leave", "reason": "bye"}, f"@u1:{R2}", alice.user_id)
        )
        await self.until(
            lambda: any(p["type"] == "m.room.member" for c in self.transport.to(R2) for p in c.body["pdus"]), "kick at R2"
        )
        await self.say(alice, room, "after")
        await self.until(lambda: any("after" in c.pdu_ids for c in self.transport.to(R1)), "message at R1")
        self.assertFalse(any("after" in c.pdu_ids for c in self.transport.to(R2)))

    async def test_send_pdu_forwards_another_servers_event(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.update({R1, R2})
        room = await self.room_with(alice, R1)
        uid = f"@joiner:{R2}"
        # as after send_join: R2's join, persisted here, goes to the other servers but not back to R2
        join = await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, uid, uid))
        await settle(2)
        self.assertFalse(any(p.get("state_key") == uid for c in self.transport.calls for p in c.body["pdus"]))
        self.sender.send_pdu(join, exclude=[R2])
        await self.until(lambda: any(p["state_key"] == uid for c in self.transport.to(R1) for p in c.body["pdus"]), "join at R1")
        self.assertEqual(self.transport.to(R2), [])

    async def test_servers_denied_by_the_acl_get_nothing(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.update({R1, R2})
        room = await self.room_with(alice, R1, R2)
        await self.set_state(alice, room, "m.room.server_acl", {"allow": ["*"], "deny": ["r2.*"]})
        await self.say(alice, room, "not for r2")
        await self.sender.send_edu_to_room(room, "org.example.room", {})
        await self.until(lambda: any("not for r2" in c.pdu_ids for c in self.transport.to(R1)), "message at R1")
        await self.until(lambda: any(c.body.get("edus") for c in self.transport.to(R1)), "EDU at R1")
        await settle(2)
        self.assertFalse(any("not for r2" in c.pdu_ids for c in self.transport.to(R2)))
        self.assertFalse(any(c.body.get("edus") for c in self.transport.to(R2)))
        self.assertEqual(await self.sender.servers_in_room(room), {R1})

    async def test_healthy_destination_not_delayed_by_dead_one(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.add(R2)
        room = await self.room_with(alice, R1, R2)
        for i in range(5):
            await self.say(alice, room, f"m{i}")
        # R1 never answers; R2 got every message anyway.
        await self.until(lambda: [i for c in self.transport.to(R2) for i in c.pdu_ids] == [f"m{i}" for i in range(5)], "R2")
        self.assertEqual(len(self.transport.to(R1)), 1)

    async def test_full_queue_falls_back_to_catch_up(self) -> None:
        self.patch(sender_mod, "MAX_PENDING_PDUS", 5)
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        other = await self.room_with(alice, R1)
        await self.say(alice, room, "first")
        await self.until(lambda: len(self.transport.pending(R1)) == 1, "first")
        for i in range(12):
            await self.say(alice, room if i % 2 else other, f"m{i}")
        status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
        self.assertLessEqual(status["pending_pdus"], 5)
        self.assertTrue(status["catching_up"])
        self.transport.auto.add(R1)
        self.answer(self.transport.pending(R1)[0])
        # The catch-up sends the latest event of each room (m11 in room, m10 in other), oldest first.
        await self.until(lambda: len(self.transport.to(R1)) >= 2, "catch-up")
        await settle()
        self.assertEqual(self.transport.to(R1)[1].pdu_ids, ["m10", "m11"])
        await self.say(alice, room, "live")
        await self.until(lambda: self.transport.to(R1)[-1].pdu_ids == ["live"], "live message")


class FailureTests(SenderTestCase):
    async def test_backoff_grows_with_jitter_and_txn_id_is_stable(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "hello")
        await self.until(lambda: len(self.transport.to(R1)) == 1, "first attempt")
        first = self.transport.to(R1)[0]
        failed_before = metric("mxserver_federation_transactions_total", destination=R1, outcome="failed")
        intervals: list[int] = []
        for attempt in range(6):
            call = self.transport.to(R1)[-1]
            self.assertEqual((call.txn_id, call.body), (first.txn_id, first.body))
            self.answer(call, error=RequestFailed(R1, "connection refused"))
            status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
            self.assertTrue(status["backing_off"])
            interval = status["retry_interval_ms"]
            intervals.append(interval)
            self.assertEqual(status["next_retry_ts"], int(self.clock.seconds() * 1000) + interval)
            # Not a moment before it is due.
            self.clock.advance(interval / 1000 - 0.5)
            await settle(2)
            self.assertEqual(len(self.transport.to(R1)), attempt + 1)
            self.clock.advance(0.5)
            want = attempt + 2
            await self.until(lambda: len(self.transport.to(R1)) == want, f"retry {want - 1}")  # noqa: B023
        self.assertEqual(metric("mxserver_federation_transactions_total", destination=R1, outcome="failed") - failed_before, 6)
        self.assertEqual(metric("mxserver_federation_backing_off", destination=R1), 1)
        self.assertEqual(metric("mxserver_federation_retry_interval_seconds", destination=R1), intervals[-1] / 1000)
        lo, hi = 1 - sender_mod.RETRY_JITTER, 1 + sender_mod.RETRY_JITTER
        self.assertGreaterEqual(intervals[0], sender_mod.MIN_RETRY_INTERVAL_MS)
        self.assertLessEqual(intervals[0], sender_mod.MIN_RETRY_INTERVAL_MS * hi)
        for prev, cur in zip(intervals, intervals[1:], strict=False):
            self.assertGreaterEqual(cur, int(prev * 2 * lo) - 1)
            self.assertLessEqual(cur, int(prev * 2 * hi) + 1)
        # success resets everything
        self.answer(self.transport.to(R1)[-1])
        status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
        self.assertFalse(status["backing_off"])
        self.assertEqual(metric("mxserver_federation_backing_off", destination=R1), 0)
        self.assertEqual(status["retry_interval_ms"], 0)
        self.assertIsNotNone(status["last_success_ts"])

    async def test_a_request_from_the_destination_ends_its_backoff(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "a")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=RequestFailed(R1, "connection refused"))
        self.assertIn(self.sender.destination_is_up, self.hs.federation_auth.on_authenticated)
        # R1 calls us right away: one new attempt, but not sooner than the inbound gap
        self.sender.destination_is_up(R1)
        await settle(2)
        self.assertEqual(len(self.transport.to(R1)), 1)
        self.clock.advance(sender_mod.INBOUND_RETRY_GAP_MS / 1000)
        await self.until(lambda: len(self.transport.to(R1)) == 2, "attempt after the inbound request")
        self.assertEqual(self.transport.to(R1)[1].txn_id, self.transport.to(R1)[0].txn_id)
        self.answer(self.transport.to(R1)[1])
        self.assertFalse(self.status(R1)["retry_interval_ms"])
        # and for a healthy destination it does nothing
        self.sender.destination_is_up(R1)
        self.sender.destination_is_up("unknown.example")
        await settle(1)
        self.assertEqual(len(self.transport.calls), 2)

    async def test_server_errors_retry_client_errors_drop(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "a")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=FederationError(R1, 502, "M_UNKNOWN", "bad gateway"))
        self.assertGreater(self.status(R1)["retry_interval_ms"], 0)
        self.clock.advance(sender_mod.MIN_RETRY_INTERVAL_MS * 2 / 1000)
        await self.until(lambda: len(self.transport.to(R1)) == 2, "retry after 502")
        # A 400 for the whole transaction: dropped, not retried, and the destination is up.
        self.answer(self.transport.to(R1)[1], error=FederationError(R1, 400, "M_BAD_JSON", "no"))
        self.assertEqual(self.status(R1)["retry_interval_ms"], 0)
        await self.say(alice, room, "b")
        await self.until(lambda: len(self.transport.to(R1)) == 3, "next transaction")
        self.assertEqual(self.transport.to(R1)[2].pdu_ids, ["b"])
        self.assertNotEqual(self.transport.to(R1)[2].txn_id, self.transport.to(R1)[1].txn_id)
        # Per-PDU errors in a 200 answer are the remote's verdict: no retry.
        self.answer(self.transport.to(R1)[2], {"pdus": {"$x": {"error": "not allowed"}}})
        self.assertEqual(self.status(R1)["retry_interval_ms"], 0)
        await self.say(alice, room, "c")
        await self.until(lambda: len(self.transport.to(R1)) == 4)
        self.assertEqual(self.transport.to(R1)[3].pdu_ids, ["c"])

    async def test_catch_up_after_outage_sends_latest_event_per_room(self) -> None:
        alice = await self.register("alice")
        self.transport.auto.add(R2)
        room_a = await self.room_with(alice, R1, R2)
        room_b = await self.room_with(alice, R1)
        await self.say(alice, room_a, "before")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=RequestFailed(R1, "timed out", 504))
        for i in range(5):
            await self.say(alice, room_a, f"a{i}")
        for i in range(3):
            await self.say(alice, room_b, f"b{i}")
        status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
        self.assertEqual(status["pending_pdus"], 0)  # nothing held in memory while backing off
        self.assertTrue(status["catching_up"])
        # R2 was never held up
        await self.until(lambda: [i for c in self.transport.to(R2) for i in c.pdu_ids][-5:] == [f"a{i}" for i in range(5)])
        self.transport.auto.add(R1)
        self.clock.advance(sender_mod.MIN_RETRY_INTERVAL_MS * 2 / 1000)
        await self.until(lambda: len(self.transport.to(R1)) >= 3, "retry and catch-up")
        await settle()
        calls = self.transport.to(R1)
        self.assertEqual(calls[1].txn_id, calls[0].txn_id)  # the failed transaction, again
        self.assertEqual(calls[1].pdu_ids, ["before"])
        self.assertEqual(calls[2].pdu_ids, ["a4", "b2"])
        self.assertEqual(len(calls), 3)
        self.assertFalse(self.status(R1)["catching_up"])


class RestartTests(SenderTestCase):

    async def test_backoff_and_catch_up_survive_a_restart(self) -> None:
        alice = await self.register("alice")
        room_a = await self.room_with(alice, R1)
        room_b = await self.room_with(alice, R1)
        await self.say(alice, room_a, "x")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=RequestFailed(R1, "connection refused"))
        await self.say(alice, room_a, "a-last")
        await self.say(alice, room_b, "b-last")
        interval = self.status(R1)["retry_interval_ms"]
        await self.sender.flush_writes()
        await self.restart()
        status = {d["destination"]: d for d in self.sender.destinations_status()}[R1]
        self.assertEqual(status["retry_interval_ms"], interval)
        self.assertTrue(status["catching_up"])
        await settle(3)
        self.assertEqual(self.transport.to(R1), [])  # no hammering right after start
        self.transport.auto.add(R1)
        self.clock.advance(interval / 1000 + 1)
        await self.until(lambda: len(self.transport.to(R1)) >= 1, "catch-up after restart")
        await settle()
        sent = [i for c in self.transport.to(R1) for i in c.pdu_ids]
        # the latest event of each room (x was superseded in room A by a-last)
        self.assertEqual(sent, ["a-last", "b-last"])
        self.assertFalse(self.status(R1)["catching_up"])

    async def test_clean_restart_catches_up_unsent_events(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "one")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        await self.say(alice, room, "two")  # queued behind the unanswered transaction
        await self.sender.flush_writes()
        await self.restart()  # the in-flight transaction is cancelled: no verdict on R1
        self.transport.auto.add(R1)
        await self.until(lambda: len(self.transport.to(R1)) >= 1, "catch-up at start")
        await settle()
        self.assertEqual([i for c in self.transport.to(R1) for i in c.pdu_ids], ["two"])


class OutboxTests(SenderTestCase):
    def to_device(self, n: int) -> dict[str, Any]:
        return {"sender": "@a:test", "type": "m.test", "message_id": f"id{n}", "messages": {f"@x:{R1}": {"D": {"n": n}}}}

    async def test_persisted_edus_survive_an_outage_and_a_restart(self) -> None:
        self.sender.send_edu(R1, "m.direct_to_device", self.to_device(0), persistent=True)
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=RequestFailed(R1, "connection refused"))
        for n in (1, 2):
            self.sender.send_edu(R1, "m.direct_to_device", self.to_device(n), persistent=True)
        self.sender.send_edu(R1, "m.typing", {"room_id": "!r:test", "user_id": "@a:test", "typing": True}, key=1)
        await self.sender.flush_writes()
        interval = self.status(R1)["retry_interval_ms"]
        await self.restart()
        self.transport.auto.add(R1)
        self.clock.advance(interval / 1000 + 1)
        await self.until(lambda: len(self.transport.to(R1)) >= 1, "delivery after the restart")
        await settle()
        # every to-device EDU, in order; the typing EDU lived in memory only
        edus = [e for c in self.transport.to(R1) for e in c.body.get("edus", [])]
        self.assertEqual([e["edu_type"] for e in edus], ["m.direct_to_device"] * 3)
        self.assertEqual([e["content"]["message_id"] for e in edus], ["id0", "id1", "id2"])
        # delivered: gone from the store, nothing is sent again after another restart
        await self.sender.flush_writes()
        await self.restart()
        await settle(3)
        self.assertEqual(self.transport.calls, [])

    async def test_queue_overflow_reads_persisted_edus_back_in_order(self) -> None:
        self.patch(sender_mod, "MAX_PENDING_EDUS", 3)
        self.patch(sender_mod, "MAX_EDUS_PER_TXN", 4)
        self.sender.send_edu(R1, "x.block", {})
        await self.until(lambda: len(self.transport.pending(R1)) == 1)
        for n in range(10):
            self.sender.send_edu(R1, "m.direct_to_device", self.to_device(n), persistent=True)
        self.assertLessEqual(self.status(R1)["pending_edus"], 3)
        self.transport.auto.add(R1)
        self.answer(self.transport.pending(R1)[0])
        await self.until(
            lambda: [e["content"].get("message_id") for c in self.transport.to(R1) for e in c.body.get("edus", [])][1:]
            == [f"id{n}" for n in range(10)],
            "all ten in order, once",
        )
        await settle(3)
        self.assertTrue(all(len(c.body.get("edus", [])) <= 4 for c in self.transport.to(R1)))
        self.assertFalse(self.status(R1)["persisted_edus_in_store"])


class DisabledTests(SenderTestCase):
    config_overrides = {"federation": {"enabled": False}}

    async def test_nothing_is_sent(self) -> None:
        alice = await self.register("alice")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "hello")
        self.sender.send_edu(R1, "m.typing", {})
        await settle(3)
        self.assertEqual(self.transport.calls, [])
        self.assertEqual(self.sender.destinations_status(), [])


class AdminTests(SenderTestCase):
    async def test_destinations_endpoint(self) -> None:
        alice = await self.register("alice")
        admin = await self.register("admin")
        await self.hs.accounts.set_admin(admin.user_id, True)
        path = "/_mxserver/admin/v1/federation/destinations"
        self.assertMatrixError(await self.get(path), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(path, alice), 403, "M_FORBIDDEN")
        room = await self.room_with(alice, R1)
        await self.say(alice, room, "hello")
        await self.until(lambda: len(self.transport.to(R1)) == 1)
        self.answer(self.transport.to(R1)[0], error=RequestFailed(R1, "connection refused"))
        code, body = await self.get(path, admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["total"], 1)
        (entry,) = body["destinations"]
        self.assertEqual(entry["destination"], R1)
        self.assertTrue(entry["backing_off"])
        self.assertGreaterEqual(entry["retry_interval_ms"], sender_mod.MIN_RETRY_INTERVAL_MS)
        self.assertEqual(entry["next_retry_ts"], entry["failure_ts"] + entry["retry_interval_ms"])
        self.assertIsNone(entry["in_flight"])
        self.assertIsNone(entry["last_success_ts"])

