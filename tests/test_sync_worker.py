"""A ``sync`` worker beside ``main`` on one Postgres database (issue 19): what main writes reaches
the worker's ``/sync`` through the replication bus, with the answers main would give.

Both processes run in this trial process: ``self.hs`` is main (listed ``workers:``, so it publishes
on the bus) and ``self.worker`` the ``sync1`` worker, each on its own port. Waits are long-polls
on the worker or waits on published changes, never on time.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from mxserver.homeserver import Homeserver
from mxserver.replication.bus import TO_WORKERS, InProcessBus, JsonDict
from tests.harness import (
    C,
    ClientHttp,
    HomeserverTestCase,
    TestUser,
    deep_merge,
    no_real_dns,
    postgres,
    q,
    until_waiting,
    wait_until,
)

SYNC1 = {"role": "sync", "listeners": [{"host": "127.0.0.1", "port": 0, "resources": ["client"]}]}


class WorkerClient(ClientHttp):
    """Requests to the worker's listener."""

    def __init__(self, base_url: str, pool: HTTPConnectionPool) -> None:
        self.base_url = base_url
        self.pool = pool


def timeline(sync: dict[str, Any], room: str) -> list[dict[str, Any]]:
    return sync.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])


def without_age(value: Any) -> Any:
    """``value`` without the events' ``unsigned.age`` (it depends on when each server answered)."""
    if isinstance(value, dict):
        return {k: without_age(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [without_age(v) for v in value]
    return value


def bodies(sync: dict[str, Any], room: str) -> list[str]:
    return [e["content"].get("body") for e in timeline(sync, room) if e["type"] == "m.room.message"]


class SyncWorkerTests(HomeserverTestCase):
    backend = "postgres"
    postgres_twin = False
    #: presence off (a sync marking its user online would wake the long-polls the tests park)
    config_overrides: dict[str, Any] = {"workers": {"sync1": SYNC1}, "presence": {"enabled": False}}
    #: an in-process bus shared by both (tests that drop hints); None: Postgres LISTEN/NOTIFY
    shared_bus = False

    def make_homeserver(self, config: Any) -> Homeserver:
        return Homeserver(config, reactor, replication_bus=self._bus)

    def setUp(self) -> Any:
        if postgres.unavailable_reason():
            raise unittest.SkipTest(postgres.unavailable_reason())
        self._bus: InProcessBus | None = InProcessBus(reactor) if self.shared_bus else None
        return ensureDeferred(self._set_up_cluster())

    async def _set_up_cluster(self) -> None:
        await self._set_up()
        self.worker = await self.start_worker()

    async def start_worker(self) -> Homeserver:
        """Start (again) the sync1 worker on main's database; its client is ``self.w``."""
        config = self.make_config_for("sync1")
        worker = Homeserver(config, reactor, replication_bus=self._bus)
        no_real_dns(worker)
        worker.startService()
        self.addCleanup(worker.stopService)
        await worker.when_ready()
        self.w = WorkerClient(f"http://127.0.0.1:{worker.listening_ports[0].getHost().port}", self.pool)
        return worker

    def make_config_for(self, name: str) -> Any:
        """The config of worker ``name``: main's, with main's listener on the port it got (a
        worker forwards what its role does not serve there)."""
        saved = self.config_overrides
        main_port = self.hs.listening_ports[0].getHost().port
        listeners = [{"host": "127.0.0.1", "port": main_port, "resources": ["client", "federation", "media"]}]
        self.config_overrides = deep_merge(saved, {"worker": {"name": name}, "listeners": listeners})
        try:
            return self.make_config()
        finally:
            self.config_overrides = saved

    async def pair(self) -> tuple[TestUser, TestUser, str]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob)
        await self.worker_caught_up()
        return alice, bob, room

    async def worker_caught_up(self) -> None:
        """Wait until the worker has read the room stream as far as main has written it."""
        target = self.hs.room_stream.position

        async def there() -> bool:
            return self.worker.room_stream.position >= target

        await wait_until(there, f"the worker at room position {target}", [self.worker.room_stream])

    async def worker_sync_until(self, user: TestUser, found: Any, what: str, since: str | None, **params: Any) -> Any:
        return await self.w.sync_until(user, found, what, since=since, **params)


class WorkerServesSyncTests(SyncWorkerTests):
    async def test_the_worker_builds_no_writer(self) -> None:
        for name in ("room_server", "push_notifications", "search_indexer", "federation_sender", "pusher_pool",
                     "appservice_reader", "background_jobs", "media_repository", "typing_handler", "presence_handler"):
            self.assertFalse(hasattr(self.worker, name), name)
        self.assertFalse(hasattr(self.worker.reader_rooms, "send"))
        # What the routing table does not give its role, the worker forwards to main: a write
        # sent to it is main's (main answers; the worker has no writer to answer with).
        alice = await self.register("alice")
        room = await self.create_room(alice)
        code, body = await self.w.put(f"{C}/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "x"}, alice)
        self.assertEqual(code, 200, body)
        stored = await self.hs.event_store.get_event(body["event_id"])
        self.assertEqual(stored.content["body"] if stored is not None else None, "x")
        code, body = await self.w.put(f"{C}/rooms/!nowhere:test/send/m.room.message/2", {"body": "x"}, alice)
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))  # main's answer, passed back

    async def test_bundles_on_the_worker_follow_relations_made_on_main(self) -> None:
        alice, bob, room = await self.pair()
        root = await self.send_message(alice, room, "root")
        await self.worker_caught_up()

        def thread_of(sync: dict[str, Any]) -> Any:
            event = next(e for e in timeline(sync, room) if e["event_id"] == root)
            return event.get("unsigned", {}).get("m.relations", {}).get("m.thread")

        def last(n: int) -> str:
            # a limited timeline: /sync bundles only then (client-server-api §Aggregations)
            return json.dumps({"room": {"timeline": {"limit": n}}})

        self.assertIsNone(thread_of(await self.w.sync(bob, filter=last(1))))  # the worker has read no children
        reply = await self.send_message(alice, room, "in thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        await self.worker_caught_up()
        thread = thread_of(await self.w.sync(bob, filter=last(2)))
        self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (1, reply))

    async def test_a_redaction_on_main_reaches_events_the_worker_has_cached(self) -> None:
        alice, bob, room = await self.pair()
        secret = await self.send_message(alice, room, "secret")
        await self.worker_caught_up()
        self.assertIn("secret", bodies(await self.w.sync(bob), room))  # the worker has read it
        code, body = await self.put(f"{C}/rooms/{room}/redact/{secret}/r1", {}, alice)
        self.assertEqual(code, 200, body)
        await self.worker_caught_up()
        event = next(e for e in timeline(await self.w.sync(bob), room) if e["event_id"] == secret)
        self.assertEqual(event["content"], {})

    async def test_a_message_on_main_wakes_a_long_poll_on_the_worker(self) -> None:
        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        pending = ensureDeferred(self.w.sync(bob, since, timeout_ms=30_000))
        await until_waiting(self.worker, 1)
        self.assertFalse(pending.called)
        event_id = await self.send_message(alice, room, "hi from main")
        sync = await pending
        self.assertEqual([e["event_id"] for e in timeline(sync, room)], [event_id])
        # Tokens mean the same on both: main, from the worker's token, has nothing more.
        again = await self.sync(bob, sync["next_batch"])
        self.assertEqual(timeline(again, room), [])
        # ... and the worker, from main's token, neither.
        self.assertEqual(timeline(await self.w.sync(bob, again["next_batch"]), room), [])
        # The same answer as main for an initial sync, filters and lazy members included.
        lazy = '{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}'
        on_main, on_worker = await self.sync(bob, filter=lazy), await self.w.sync(bob, filter=lazy)
        self.assertEqual(without_age(on_worker["rooms"]["join"][room]), without_age(on_main["rooms"]["join"][room]))

    async def test_sliding_sync_and_the_legacy_event_stream(self) -> None:
        alice, bob, room = await self.pair()
        await self.send_message(alice, room, "one")
        await self.worker_caught_up()
        ss = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
        request = {"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}}}

        def room_and_last(body: Any) -> Any:
            return body["rooms"][room]["timeline"][-1]["content"].get("body")

        code, on_worker = await self.w.post(f"{ss}?timeout=0", request, bob)
        code_main, on_main = await self.post(f"{ss}?timeout=0", request, bob)
        self.assertEqual((code, code_main), (200, 200), on_worker)
        self.assertEqual(room_and_last(on_worker), room_and_last(on_main))
        # Legacy /events, woken by main's write.
        code, initial = await self.w.get(f"{C}/initialSync?limit=1", bob)
        self.assertEqual(code, 200, initial)
        self.assertIn(room, [r["room_id"] for r in initial["rooms"]])
        pending = ensureDeferred(self.w.get(f"{C}/events?{urlencode({'from': initial['end'], 'timeout': 30000})}", bob))
        await until_waiting(self.worker, 1)
        await self.send_message(alice, room, "two")
        code, events = await pending
        self.assertEqual(code, 200, events)
        self.assertIn("two", [e["content"].get("body") for e in events["chunk"]])

    async def test_ephemeral_streams_reach_the_worker(self) -> None:
        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        # Typing (in main's memory: the hint carries it).
        await self.put(f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 30000}, alice)

        def typing(sync: Any) -> Any:
            for e in sync.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", []):
                if e["type"] == "m.typing" and e["content"]["user_ids"] == [alice.user_id]:
                    return sync
            return None

        sync = await self.worker_sync_until(bob, typing, "alice typing", since)
        # Receipts.
        event_id = await self.send_message(alice, room, "read me")
        await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(event_id)}", {}, alice)

        def receipt(sync: Any) -> Any:
            for e in sync.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", []):
                if e["type"] == "m.receipt" and event_id in e["content"]:
                    return sync
            return None

        sync = await self.worker_sync_until(bob, receipt, "alice's receipt", sync["next_batch"])
        # Account data.
        await self.put(f"{C}/user/{q(bob.user_id)}/account_data/org.example.x", {"v": 1}, bob)

        def account_data(sync: Any) -> Any:
            found = [e for e in sync.get("account_data", {}).get("events", []) if e["type"] == "org.example.x"]
            return sync if found and found[0]["content"] == {"v": 1} else None

        sync = await self.worker_sync_until(bob, account_data, "bob's account data", sync["next_batch"])
        # To-device.
        await self.put(f"{C}/sendToDevice/org.example.ping/t1", {"messages": {bob.user_id: {"*": {"n": 1}}}}, alice)

        def to_device(sync: Any) -> Any:
            events = sync.get("to_device", {}).get("events", [])
            return sync if any(e["type"] == "org.example.ping" for e in events) else None

        sync = await self.worker_sync_until(bob, to_device, "alice's to-device message", sync["next_batch"])
        # Device lists: alice renames her device.
        await self.put(f"{C}/devices/{q(alice.device_id)}", {"display_name": "phone"}, alice)

        def device_lists(sync: Any) -> Any:
            return sync if alice.user_id in sync.get("device_lists", {}).get("changed", []) else None

        await self.worker_sync_until(bob, device_lists, "alice's device list change", sync["next_batch"])


    async def test_unread_counts_match_main(self) -> None:
        alice, bob, room = await self.pair()
        for i in range(3):
            await self.send_message(alice, room, f"m{i}")
        await self.readers_caught_up()
        await self.worker_caught_up()

        def counts(sync: Any) -> Any:
            return sync["rooms"]["join"][room]["unread_notifications"]

        on_main = counts(await self.sync(bob))
        self.assertEqual(on_main["notification_count"], 3)
        self.assertEqual(counts(await self.w.sync(bob)), on_main)
        # A new message: the worker waits for main's push reader before counting.
        since = (await self.w.sync(bob))["next_batch"]
        await self.send_message(alice, room, "m3")
        sync = await self.worker_sync_until(bob, lambda s: s if bodies(s, room) else None, "m3", since)
        self.assertEqual(counts(sync)["notification_count"], 4)

    async def test_cache_invalidation_across_processes(self) -> None:
        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        # A display-name change on main: the member event, and the room state the worker caches.
        await self.set_profile(alice, displayname="Alice A.")

        def renamed(sync: Any) -> Any:
            members = [e for e in timeline(sync, room) if e["type"] == "m.room.member"]
            return sync if any(e["content"].get("displayname") == "Alice A." for e in members) else None

        sync = await self.worker_sync_until(bob, renamed, "alice's new display name", since)
        # The room's current state as the worker serves it (its cached state was dropped).
        code, member = await self.get(f"{C}/rooms/{q(room)}/state/m.room.member/{q(alice.user_id)}", bob)
        self.assertEqual(member["displayname"], "Alice A.")
        one = '{"room":{"timeline":{"limit":1}}}'
        on_worker, on_main = await self.w.sync(bob, filter=one), await self.sync(bob, filter=one)
        self.assertEqual(without_age(on_worker["rooms"]["join"][room]), without_age(on_main["rooms"]["join"][room]))
        # A push-rule change on main shows in the worker's account data.
        code, body = await self.put(f"{C}/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}, bob)
        self.assertEqual(code, 200, body)

        def master_on(sync: Any) -> Any:
            for e in sync.get("account_data", {}).get("events", []):
                if e["type"] == "m.push_rules":
                    rules = e["content"]["global"]["override"]
                    return any(r["rule_id"] == ".m.rule.master" and r["enabled"] for r in rules)
            return False

        await self.worker_sync_until(bob, master_on, "the master rule enabled", sync["next_batch"])
        # A logout on main: the worker, which knew the token, refuses it now.
        self.assertEqual((await self.w.get(f"{C}/sync?timeout=0", alice))[0], 200)
        invalidated: Deferred[None] = Deferred()
        self.worker.invalidations.subscribe(lambda change: invalidated.called or invalidated.callback(None))
        self.assertEqual((await self.post(f"{C}/logout", {}, alice))[0], 200)
        await invalidated
        code, body = await self.w.get(f"{C}/sync?timeout=0", alice)
        self.assertEqual((code, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_a_restarted_worker_resumes_from_its_token(self) -> None:
        alice, bob, room = await self.pair()
        await self.send_message(alice, room, "before")
        await self.worker_caught_up()
        since = (await self.w.sync(bob))["next_batch"]
        await self.worker.stopService()
        for i in range(3):
            await self.send_message(alice, room, f"while down {i}")
        self.worker = await self.start_worker()
        await self.send_message(alice, room, "after")
        seen: list[str] = []

        def collect(sync: Any) -> Any:
            seen.extend(bodies(sync, room))
            return "after" in seen

        await self.worker_sync_until(bob, collect, "every message", since)
        self.assertEqual(seen, ["while down 0", "while down 1", "while down 2", "after"])

    async def test_the_bus_reconnects_after_its_connection_is_killed(self) -> None:
        import psycopg

        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        bus = self.worker.replication_bus
        assert bus is not None
        back: Deferred[None] = Deferred()
        bus.on_reconnect(lambda: back.called or back.callback(None))
        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (bus.backend_pid,))  # type: ignore[attr-defined]
        # Sent while the worker's connection may be down: caught up from the database once back.
        await self.send_message(alice, room, "while reconnecting")
        await back
        self.assertEqual(bus.connections, 2)  # type: ignore[attr-defined]
        seen: list[str] = []

        def collect(sync: Any) -> Any:
            seen.extend(bodies(sync, room))
            return "after" in seen

        await self.send_message(alice, room, "after")
        await self.worker_sync_until(bob, collect, "both messages", since)
        self.assertEqual(seen, ["while reconnecting", "after"])


class LostHintTests(SyncWorkerTests):
    shared_bus = True

    def drop_room_hints(self, count: int) -> list[JsonDict]:
        """Drop the next ``count`` hints that move the room stream (as lost notifications)."""
        dropped: list[JsonDict] = []
        assert self._bus is not None
        last = self.hs.room_stream.position

        def drop(channel: str, hint: JsonDict) -> bool:
            nonlocal last
            if channel != TO_WORKERS or len(dropped) >= count or hint["p"]["room"] <= last:
                return False
            last = hint["p"]["room"]
            dropped.append(hint)
            return True

        self._bus.drop = drop
        return dropped

    async def test_a_lost_hint_is_caught_up_by_the_next(self) -> None:
        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        dropped = self.drop_room_hints(1)
        await self.send_message(alice, room, "lost")
        self.assertEqual(len(dropped), 1)
        await self.send_message(alice, room, "next")
        seen: list[str] = []

        def collect(sync: Any) -> Any:
            seen.extend(bodies(sync, room))
            return "next" in seen

        await self.worker_sync_until(bob, collect, "both messages", since)
        self.assertEqual(seen, ["lost", "next"])

    async def test_a_lost_hint_is_caught_up_by_the_periodic_check(self) -> None:
        alice, bob, room = await self.pair()
        await self.w.sync(alice)
        since = (await self.w.sync(bob))["next_batch"]
        pending = ensureDeferred(self.w.sync(bob, since, timeout_ms=30_000))
        await until_waiting(self.worker, 1)
        dropped = self.drop_room_hints(1)
        event_id = await self.send_message(alice, room, "lost")
        self.assertEqual(len(dropped), 1)
        self.assertFalse(pending.called)
        await self.worker.replication.check()  # what the clock runs every few seconds
        sync = await pending
        self.assertEqual([e["event_id"] for e in timeline(sync, room)], [event_id])

    async def test_a_token_from_main_ahead_of_the_worker_is_reached_first(self) -> None:
        alice, bob, room = await self.pair()
        assert self._bus is not None
        self._bus.drop = lambda channel, hint: channel == TO_WORKERS  # every hint is lost for now
        await self.send_message(alice, room, "lost")
        ahead = await self.sync(bob)  # main's token: past the message the worker has not heard of
        self.assertIn("lost", bodies(ahead, room))
        answer = await self.w.sync(bob, ahead["next_batch"])
        self.assertEqual(bodies(answer, room), [])
        self._bus.drop = None
        await self.worker.replication.check()
        # Nothing the client saw on main comes again from the worker's token.
        self.assertEqual(bodies(await self.w.sync(bob, answer["next_batch"]), room), [])

    async def test_an_initial_sync_on_the_worker_sees_a_write_made_through_main(self) -> None:
        alice, bob, room = await self.pair()
        assert self._bus is not None
        self._bus.drop = lambda channel, hint: channel == TO_WORKERS  # the worker hears nothing
        await self.send_message(alice, room, "just sent")
        # Read-your-writes: the worker catches up with the database before an initial sync.
        self.assertIn("just sent", bodies(await self.w.sync(alice), room))

    async def test_a_lost_account_data_hint_wakes_the_long_polls(self) -> None:
        alice, bob, room = await self.pair()
        since = (await self.w.sync(bob))["next_batch"]
        pending = ensureDeferred(self.w.sync(bob, since, timeout_ms=30_000))
        await until_waiting(self.worker, 1)
        assert self._bus is not None
        self._bus.drop = lambda channel, hint: channel == TO_WORKERS and any(r["s"] == "account_data" for r in hint["r"])
        await self.put(f"{C}/user/{q(bob.user_id)}/account_data/org.example.x", {"v": 2}, bob)
        self._bus.drop = None
        await self.worker.replication.check()
        sync = await pending
        self.assertIn("org.example.x", [e["type"] for e in sync["account_data"]["events"]])


class WorkerPresenceTests(SyncWorkerTests):
    config_overrides = {"workers": {"sync1": SYNC1}}

    async def test_a_sync_on_the_worker_makes_the_user_online_on_main(self) -> None:
        alice, bob, room = await self.pair()
        bob_since = (await self.w.sync(bob))["next_batch"]
        await self.w.sync(alice, set_presence="online")

        async def online() -> Any:
            code, body = await self.get(f"{C}/presence/{q(alice.user_id)}/status", bob)
            return code == 200 and body.get("presence") == "online"

        await wait_until(online, "alice online on main", [self.hs.ephemeral_streams.presence])

        def alice_online(sync: Any) -> Any:
            events = sync.get("presence", {}).get("events", [])
            return any(e["sender"] == alice.user_id and e["content"]["presence"] == "online" for e in events)

        await self.worker_sync_until(bob, alice_online, "alice's presence on the worker", bob_since)




    async def test_a_worker_started_later_learns_typing_and_presence_from_main(self) -> None:
        alice, bob, room = await self.pair()
        await self.worker.stopService()
        code, body = await self.put(f"{C}/presence/{q(alice.user_id)}/status", {"presence": "online", "status_msg": "here"}, alice)
        self.assertEqual(code, 200, body)
        await self.put(f"{C}/rooms/{q(room)}/typing/{q(alice.user_id)}", {"typing": True, "timeout": 30000}, alice)
        self.worker = await self.start_worker()
        seen: dict[str, Any] = {}

        def both(sync: Any) -> Any:
            for e in sync.get("presence", {}).get("events", []):
                if e["sender"] == alice.user_id:
                    seen["presence"] = e["content"]
            for e in sync.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", []):
                if e["type"] == "m.typing":
                    seen["typing"] = e["content"]["user_ids"]
            return len(seen) == 2

        await self.worker_sync_until(bob, both, "alice's presence and typing", None)
        self.assertEqual((seen["presence"]["presence"], seen["presence"].get("status_msg")), ("online", "here"))
        self.assertEqual(seen["typing"], [alice.user_id])


class WorkerPreflightTests(unittest.TestCase):
    def test_a_worker_starts_only_on_a_database_main_has_migrated(self) -> None:
        import shutil
        import tempfile

        from mxserver.config import load_config_dict
        from mxserver.homeserver import preflight
        from mxserver.storage.migrations import SchemaError

        reason = postgres.unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cluster = postgres.cluster()
        assert cluster is not None
        dsn = cluster.new_empty_database()
        self.addCleanup(cluster.drop_database, dsn)
        data_dir = tempfile.mkdtemp(prefix="mxserver-test-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        base = {"server_name": "test", "data_dir": data_dir, "database": {"backend": "postgres", "dsn": dsn}, "workers": {"sync1": SYNC1}}
        worker = load_config_dict({**base, "worker": {"name": "sync1"}})
        with self.assertRaises(SchemaError) as caught:
            preflight(worker)
        self.assertIn("start the main process first", str(caught.exception))
        preflight(load_config_dict(base))  # main migrates
        preflight(worker)
