"""Delivery to application services (application-service-api §Pushing events, §Pushing
ephemeral data): which events each service gets, in stream order, in transactions
(``PUT /_matrix/app/v1/transactions/{txnId}`` with the hs_token), retried with the same ID and
the same events until the service answers 2xx, across restarts; ephemeral data and to-device
messages for services that ask; a service that is down slows nobody down.

The services are one real HTTP server on loopback (:class:`FakeAppService`); each registration
has its own hs_token, which tells their requests apart.
"""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from tests.harness import C, TestUser, q
from tests.harness.appservice import AS_TOKEN, HS_TOKEN, AppServiceTestCase, registration

WATCHER_HS = "hs-watcher"
QUIET_HS = "hs-quiet"


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def ids(body: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in body["events"]]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``check()`` on the real reactor (what the server does lands a moment later)."""
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        d: Deferred[None] = Deferred()
        reactor.callLater(0.02, d.callback, None)
        await d


class DeliveryTests(AppServiceTestCase):
    def registrations(self) -> list[dict[str, Any]]:
        url = self.appservice.url
        # interested in every room of this server by room ID, no ephemeral data
        watcher = registration(
            url,
            id="watcher",
            as_token="as-watcher",
            hs_token=WATCHER_HS,
            sender_localpart="_watcher_bot",
            namespaces={"rooms": [{"exclusive": False, "regex": "!"}]},  # every room (v12 IDs name no server)
            receive_ephemeral=False,
        )
        # no URL: registered, receives nothing
        quiet = registration(
            None,
            id="quiet",
            as_token="as-quiet",
            hs_token=QUIET_HS,
            sender_localpart="_quiet_bot",
            namespaces={"users": [{"exclusive": False, "regex": ".*"}]},
        )
        return [registration(url), watcher, quiet]

    async def test_events_of_interest_in_stream_order(self) -> None:
        human = await self.register("human")
        other = await self.register("other")
        # interested through its sender being joined
        joined = await self.create_room(human, preset="public_chat")
        await self.join(self.bot, joined)
        # not interested: nobody of the service, no alias
        elsewhere = await self.create_room(other, preset="public_chat")
        # interested through an alias of its namespace
        aliased = await self.create_room(human, preset="public_chat")
        code, body = await self.put(f"{C}/directory/room/{q('#_bridge_aliased:test')}", {"room_id": aliased}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        # interested through a member event about one of its users
        invited_room = await self.create_room(human)
        ghost = await self.register_as_user("_bridge_ghost")
        await self.invite(human, invited_room, ghost)

        sent = []
        for i in range(5):
            sent.append(await self.send_message(human, joined, f"joined {i}"))
            await self.send_message(other, elsewhere, f"elsewhere {i}")
        await self.send_message(human, aliased, "aliased")
        await self.send_message(human, invited_room, "after the invite")  # the ghost is only invited
        await self.send_message(human, joined, "last")

        await self.appservice.wait_until(lambda: "last" in bodies(self.appservice.delivered_events()), "the last message")
        events = self.appservice.delivered_events()
        self.assertEqual(bodies(events), [*(f"joined {i}" for i in range(5)), "aliased", "last"])
        # nothing twice, everything in stream order (the events' order across rooms as sent)
        ids = [e["event_id"] for e in events]
        self.assertEqual(len(ids), len(set(ids)))
        [invite] = [e for e in events if e["type"] == "m.room.member" and e.get("state_key") == ghost]
        # the alias names the room from when it was made: its creation (published just before,
        # perhaps not read yet when the alias came) is not the service's
        self.assertEqual([e["type"] for e in events if e["room_id"] == aliased], ["m.room.message"])
        self.assertEqual((invite["content"]["membership"], invite["room_id"]), ("invite", invited_room))
        self.assertLess(ids.index(invite["event_id"]), ids.index(sent[0]))
        [bot_join] = [e for e in events if e.get("state_key") == self.bot.user_id]
        self.assertEqual(bot_join["room_id"], joined)
        # client format (client_event.yaml)
        first = next(e for e in events if e["event_id"] == sent[0])
        self.assertEqual((first["room_id"], first["sender"], first["type"]), (joined, human.user_id, "m.room.message"))
        self.assertEqual(first["content"], {"msgtype": "m.text", "body": "joined 0"})
        self.assertIsInstance(first["origin_server_ts"], int)
        # the requests: PUT, the hs_token as Bearer, increasing transaction IDs, no ephemeral key
        txns = self.appservice.acknowledged()
        self.assertEqual({(r.method, r.authorization) for r in txns}, {("PUT", f"Bearer {HS_TOKEN}")})
        txn_ids = [int(self.appservice.txn_id(r)) for r in txns]
        self.assertEqual(txn_ids, sorted(set(txn_ids)))
        # the watcher gets every room's events (its rooms namespace), the quiet one nothing
        await self.appservice.wait_until(lambda: "last" in bodies(self.appservice.delivered_events(WATCHER_HS)), "the watcher")
        watched = bodies(self.appservice.delivered_events(WATCHER_HS))
        self.assertEqual([b for b in watched if b.startswith("elsewhere")], [f"elsewhere {i}" for i in range(5)])
        self.assertIn("after the invite", watched)
        self.assertFalse([r for r in self.appservice.received if r.authorization == f"Bearer {QUIET_HS}"])
        # the metrics: nothing waits any more
        await until(lambda: metric("mxserver_appservice_queue_length", appservice="bridge") == 0, "an empty queue")
        self.assertGreater(metric("mxserver_appservice_last_success_timestamp_seconds", appservice="bridge"), 0)

    async def test_interest_follows_membership(self) -> None:
        human = await self.register("human")
        room = await self.create_room(human, preset="public_chat")
        await self.send_message(human, room, "before")
        # Interest is decided when the reader reads an event, with the room's members as they are
        # then (as Synapse does): wait until it read "before" (the watcher got it) before the join.
        await self.appservice.wait_until(lambda: "before" in bodies(self.appservice.delivered_events(WATCHER_HS)), "before")
        alice = await self.register_as_user("_bridge_alice")
        code, body = await self.post(self.as_path(f"{C}/join/{q(room)}", alice), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        await self.send_message(human, room, "while joined")
        code, body = await self.post(self.as_path(f"{C}/rooms/{q(room)}/leave", alice), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        await self.send_message(human, room, "after leaving")
        marker = await self.create_room(human, preset="public_chat")
        await self.join(self.bot, marker)
        await self.send_message(human, marker, "marker")
        await self.appservice.wait_until(lambda: "marker" in bodies(self.appservice.delivered_events()), "the marker")
        events = self.appservice.delivered_events()
        self.assertEqual(bodies(events), ["while joined", "marker"])
        memberships = [e["content"]["membership"] for e in events if e.get("state_key") == alice]
        self.assertEqual(memberships, ["join", "leave"])

    async def test_ephemeral_data_and_to_device(self) -> None:
        human = await self.register("human")
        room = await self.create_room(human, preset="public_chat")
        await self.join(self.bot, room)
        alice = await self.register_as_user("_bridge_alice")
        code, body = await self.put(self.as_path(f"{C}/devices/PHONE", alice), {}, AS_TOKEN)
        self.assertEqual(code, 201, body)
        code, body = await self.post(self.as_path(f"{C}/join/{q(room)}", alice), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        event_id = await self.send_message(human, room, "read me")

        code, body = await self.put(f"{C}/rooms/{q(room)}/typing/{q(human.user_id)}", {"typing": True, "timeout": 30000}, human)
        self.assertEqual(code, 200, body)
        # a private receipt of a human is not the service's business; its own user's is
        receipts = f"{C}/rooms/{q(room)}/receipt"
        code, body = await self.post(f"{receipts}/m.read.private/{q(event_id)}", {}, human)
        self.assertEqual(code, 200, body)
        code, body = await self.post(self.as_path(f"{receipts}/m.read.private/{q(event_id)}", alice), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        code, body = await self.post(f"{receipts}/m.read/{q(event_id)}", {}, human)
        self.assertEqual(code, 200, body)
        code, body = await self.put(f"{C}/presence/{q(human.user_id)}/status", {"presence": "online", "status_msg": "hi"}, human)
        self.assertEqual(code, 200, body)
        to_device = {"messages": {alice: {"PHONE": {"ciphertext": "x"}}, "@_bridge_bob:test": {"*": {"y": 1}}}}
        code, body = await self.put(f"{C}/sendToDevice/m.room.encrypted/t1", to_device, human)
        self.assertEqual(code, 200, body)
        everyone = {"messages": {alice: {"*": {"z": 2}}}}
        code, body = await self.put(f"{C}/sendToDevice/org.example.ping/t2", everyone, human)
        self.assertEqual(code, 200, body)

        def ephemeral_types() -> list[str]:
            return [e["type"] for e in self.appservice.delivered("ephemeral")]

        await self.appservice.wait_until(lambda: "m.presence" in ephemeral_types(), "presence")
        await self.appservice.wait_until(lambda: len(self.appservice.delivered("de.sorunome.msc2409.to_device")) >= 2, "to-device")
        ephemeral = self.appservice.delivered("ephemeral")
        typing = [e for e in ephemeral if e["type"] == "m.typing"]
        self.assertEqual(typing[0], {"type": "m.typing", "room_id": room, "content": {"user_ids": [human.user_id]}})
        receipt_entries = [e for e in ephemeral if e["type"] == "m.receipt"]
        self.assertEqual([e["room_id"] for e in receipt_entries], [room, room])
        kinds = [(t, u) for e in receipt_entries for t, by_user in e["content"][event_id].items() for u in by_user]
        self.assertEqual(kinds, [("m.read.private", alice), ("m.read", human.user_id)])
        self.assertIsInstance(receipt_entries[1]["content"][event_id]["m.read"][human.user_id]["ts"], int)
        [presence] = [e for e in ephemeral if e["type"] == "m.presence" and e["sender"] == human.user_id]
        self.assertEqual((presence["content"]["presence"], presence["content"].get("status_msg")), ("online", "hi"))
        # ephemeral data in the order it happened
        order = [e["type"] for e in ephemeral if e["type"] != "m.presence"]
        self.assertEqual(order[:3], ["m.typing", "m.receipt", "m.receipt"])
        messages = self.appservice.delivered("de.sorunome.msc2409.to_device")
        self.assertEqual(
            messages,
            [
                {"type": "m.room.encrypted", "sender": human.user_id, "content": {"ciphertext": "x"}, "to_user_id": alice, "to_device_id": "PHONE"},
                {"type": "org.example.ping", "sender": human.user_id, "content": {"z": 2}, "to_user_id": alice, "to_device_id": "PHONE"},
            ],
        )
        # the watcher did not ask for ephemeral data
        for r in self.appservice.transactions():
            if r.authorization == f"Bearer {WATCHER_HS}":
                self.assertEqual(set(r.body), {"events"})


class RetryTests(AppServiceTestCase):
    """Failures, retries and restarts, on a fake clock: the backoff is moved past by hand."""

    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        self.clock.advance(1_700_000_000)  # a plausible "now" for timestamps
        self.human = await self.register("human")
        self.room = await self.create_room(self.human, preset="public_chat")
        await self.join(self.bot, self.room)
        await self.appservice.wait_until(lambda: self.appservice.delivered_events(), "the bot's join")
        # Everything the setup made (events, ephemeral data) delivered: the next transaction
        # is the test's own.
        await until(self.idle, "the setup's deliveries")
        self.failed_before = metric("mxserver_appservice_transactions_total", appservice="bridge", outcome="failed")

    def idle(self) -> bool:
        [status] = [s for s in self.hs.appservice_sender.status() if s["id"] == "bridge"]
        return bool(status["queued"] == 0 and status["pending_txn_id"] is None)

    async def failures(self, count: int) -> None:
        """Wait until the bridge's ``count``-th failed attempt since the test began is handled
        (its backoff timer set)."""
        await until(
            lambda: metric("mxserver_appservice_transactions_total", appservice="bridge", outcome="failed")
            >= self.failed_before + count,
            f"{count} failed attempts",
        )

    def backing_off(self) -> bool:
        [status] = [s for s in self.hs.appservice_sender.status() if s["id"] == "bridge"]
        return bool(status["retry_interval_ms"] > 0)

    async def fail_next(self) -> None:
        self.appservice.txn_answer = (500, {"errcode": "M_UNKNOWN"})

    async def send(self, user: TestUser, body: str) -> str:
        return await self.send_message(user, self.room, body)

    async def test_retried_with_the_same_id_and_events_until_acknowledged(self) -> None:
        self.appservice.txn_answer = (500, {"errcode": "M_UNKNOWN"})
        await self.send(self.human, "one")
        await self.failures(1)
        self.assertTrue(self.backing_off())
        [failed] = [r for r in self.appservice.transactions() if r.code == 500]
        # while it backs off, more events queue up; none of them join the failed transaction
        await self.send(self.human, "two")
        await self.send(self.human, "three")
        await until(lambda: metric("mxserver_appservice_queue_length", appservice="bridge") >= 3, "the queue")
        # a 4xx is not an acknowledgement either
        self.appservice.txn_answer = (403, {"errcode": "M_FORBIDDEN"})
        self.clock.advance(3)  # the first interval: 2 s +- 20 %
        await self.failures(2)
        self.appservice.txn_answer = (200, {})
        self.clock.advance(6)  # the second interval: 4 s +- 20 %
        await self.appservice.wait_until(lambda: "three" in bodies(self.appservice.delivered_events()), "delivery")
        txns = self.appservice.transactions()
        retried = [r for r in txns if self.appservice.txn_id(r) == self.appservice.txn_id(failed)]
        self.assertEqual([r.code for r in retried], [500, 403, 200])
        # never altered: the same events (their `unsigned.age` is worked out at each attempt)
        self.assertTrue(all(ids(r.body) == ids(failed.body) for r in retried))
        self.assertEqual(bodies(failed.body["events"]), ["one"])
        self.assertEqual(bodies(self.appservice.delivered_events()), ["one", "two", "three"])
        later = [r for r in txns if int(self.appservice.txn_id(r)) > int(self.appservice.txn_id(failed))]
        self.assertEqual({r.code for r in later}, {200})
        await until(lambda: not self.backing_off(), "the end of the backoff")
        await until(lambda: metric("mxserver_appservice_queue_length", appservice="bridge") == 0, "an empty queue")

    async def test_restart_while_down_then_delivery_once(self) -> None:
        self.appservice.txn_answer = (500, {})
        await self.send(self.human, "one")
        await self.failures(1)
        failed = self.appservice.transactions()[-1]
        await self.send(self.human, "two")
        await self.send(self.human, "three")
        await until(lambda: metric("mxserver_appservice_queue_length", appservice="bridge") >= 3, "the queue")
        await self.restart()
        # still backing off after the restart (persisted): nothing is sent until it is over
        self.assertTrue(self.backing_off())
        self.appservice.txn_answer = (200, {})
        attempts = len(self.appservice.transactions())
        self.clock.advance(3)
        await self.appservice.wait_until(lambda: "three" in bodies(self.appservice.delivered_events()), "delivery")
        resent = self.appservice.transactions()[attempts]
        self.assertEqual((self.appservice.txn_id(resent), ids(resent.body)), (self.appservice.txn_id(failed), ids(failed.body)))
        self.assertEqual(bodies(self.appservice.delivered_events()), ["one", "two", "three"])
        # acknowledged is acknowledged: another restart sends nothing again
        await until(lambda: metric("mxserver_appservice_queue_length", appservice="bridge") == 0, "an empty queue")
        await self.restart()
        await self.send(self.human, "four")
        await self.appservice.wait_until(lambda: "four" in bodies(self.appservice.delivered_events()), "the next one")
        self.assertEqual(bodies(self.appservice.delivered_events()), ["one", "two", "three", "four"])
        last = self.appservice.acknowledged()[-1]
        self.assertEqual(bodies(last.body["events"]), ["four"])
        self.assertGreater(int(self.appservice.txn_id(last)), int(self.appservice.txn_id(resent)))

    async def test_events_sent_while_the_server_was_down_are_read_after_it_starts(self) -> None:
        """The reader's position is persisted: an event persisted just before a stop is read
        (and delivered) after the next start, once."""
        await self.hs.appservice_reader.stop()  # the reader falls behind: as if the process died
        await self.send(self.human, "unread")
        await self.restart()
        await self.appservice.wait_until(lambda: "unread" in bodies(self.appservice.delivered_events()), "catch-up")
        await self.send(self.human, "after")
        await self.appservice.wait_until(lambda: "after" in bodies(self.appservice.delivered_events()), "the next one")
        self.assertEqual(bodies(self.appservice.delivered_events()), ["unread", "after"])

    async def test_a_hanging_service_slows_no_send_and_no_sync(self) -> None:
        hanging: Deferred[tuple[int, Any]] = Deferred()
        self.addCleanup(lambda: hanging.called or hanging.callback((200, {})))
        self.appservice.txn_answer = lambda request: hanging
        await self.send(self.human, "stuck")
        await self.appservice.wait_until(lambda: len(self.appservice.transactions()) >= 1 + 1, "the hanging request")
        # sends and /sync go on while the service does not answer
        other = await self.register("other")
        await self.join(other, self.room)
        for i in range(5):
            await self.send(other, f"meanwhile {i}")
        sync = await self.sync(self.human)
        timeline = sync["rooms"]["join"][self.room]["timeline"]["events"]
        self.assertIn("meanwhile 4", bodies(timeline))
        # the request times out (60 s), then the backoff; then everything arrives, once
        self.appservice.txn_answer = (200, {})
        self.clock.advance(61)
        await self.failures(1)
        self.clock.advance(3)
        await self.appservice.wait_until(lambda: "meanwhile 4" in bodies(self.appservice.delivered_events()), "delivery")
        self.assertEqual(bodies(self.appservice.delivered_events()), ["stuck", *(f"meanwhile {i}" for i in range(5))])


class AliasInterestRaceTests(unittest.TestCase):
    """The reader judges a room by its aliases as of each event: an alias made while the reader
    is looking the room's aliases up (a room made and given an alias at once) does not make the
    events published before it the service's."""

    async def test_an_alias_made_during_the_lookup_counts_only_after_it(self) -> None:
        from mxserver.appservice.reader import AppServiceReader
        from mxserver.appservice.registration import parse_registration
        from mxserver.streams import RoomEventStream

        service = parse_registration(registration("http://127.0.0.1:1/as"), "test")
        stream = RoomEventStream()
        room = "!room:test"
        aliases: list[str] = []
        reader: AppServiceReader

        async def members(room_id: str) -> list[str]:
            return ["@human:test"]

        async def room_aliases(room_id: str) -> list[str]:
            if not aliases:
                # the alias is made (and announced) while this lookup is under way
                aliases.append("#_bridge_room:test")
                stream.position = 10
                reader.aliases_changed(room_id)
            return list(aliases)

        async def devices(user_id: str) -> list[str]:
            return []

        reader = AppServiceReader(
            lambda: [service], cast(Any, None), stream, cast(Any, None), members, room_aliases, devices, lambda: 10, reactor
        )
        reader.position = 5  # events 6 to 10 published, not read yet
        self.assertFalse(await reader.interested_in_room(service, room, 8))
        self.assertTrue(await reader.interested_in_room(service, room, 11))
        # once the reader is past the change, the alias is the room's for good
        reader.position = 11
        self.assertTrue(await reader.interested_in_room(service, room, 12))


class MemberInterestRaceTests(unittest.TestCase):
    """The reader judges a room by who was in it at each event: a service user who joined a
    moment after the room was made, before the reader read the room's first events (SyTest's
    "AS-ghosted users can use rooms via AS"), does not make those events the service's."""

    async def test_members_are_read_as_of_the_event(self) -> None:
        from types import SimpleNamespace

        from mxserver.appservice.reader import AppServiceReader
        from mxserver.appservice.registration import parse_registration
        from mxserver.streams import RoomEventStream

        service = parse_registration(registration("http://127.0.0.1:1/as"), "test")
        room = "!room:test"
        ghost = "@_bridge_ghost:test"
        # state snapshot 1: the room as made (the creator only); 2: after the ghost's join
        snapshots = {
            1: {("m.room.create", ""): "$create", ("m.room.member", "@human:test"): "$human"},
            2: {("m.room.create", ""): "$create", ("m.room.member", "@human:test"): "$human",
                ("m.room.member", ghost): "$ghost"},
        }
        member_events = {
            "$human": SimpleNamespace(state_key="@human:test", content={"membership": "join"}),
            "$ghost": SimpleNamespace(state_key=ghost, content={"membership": "join"}),
        }

        class Events:
            async def get_events(self, ids: Any, include_rejected: bool = True) -> dict[str, Any]:
                return {i: member_events[i] for i in ids if i in member_events}

        async def members_now(room_id: str) -> list[str]:
            return ["@human:test", ghost]  # the ghost is in the room by the time the reader reads

        async def state(nid: int) -> dict[tuple[str, str], str]:
            return snapshots[nid]

        async def nothing(key: str) -> list[str]:
            return []

        def reader() -> AppServiceReader:
            return AppServiceReader(lambda: [service], cast(Any, None), RoomEventStream(), cast(Any, Events()),
                                    members_now, nothing, nothing, lambda: 10, reactor, state=state)

        self.assertFalse(await reader().interested_in_room(service, room, 6, state_nid=1))
        self.assertTrue(await reader().interested_in_room(service, room, 8, state_nid=2))
        # asked about now (no event): who is in the room now
        self.assertTrue(await reader().interested_in_room(service, room))
