"""``python -m mxserver port-db``: a real server's SQLite database moved into Postgres.

The source is made by a server on SQLite through the client API (users, devices, rooms with
a couple of thousand events, threads and reactions, media and a thumbnail, device keys,
account data, tags, push rules, receipts, filters, a key backup, an alias, search); it is
ported, a server is started on the Postgres copy, and it must answer /sync, /messages, keys,
media and the rest as the SQLite server did, and go on allocating IDs and stream positions
after the copied ones. Then the refusals (a server running on the source, a target holding
data), resuming after an interruption, and the detection of a target that differs.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import psycopg
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from mxserver.__main__ import main
from mxserver.port_db import PortInterrupted, port, render_checks, verify
from mxserver.storage.port_db import PROGRESS_TABLE, Checksum, PortError, TableShape, Target, converter
from mxserver.storage.search import tsvector_document
from tests.harness import C, HomeserverTestCase, TestUser, deep_merge, no_real_dns, postgres, q
from tests.test_keys import FakeDevice
from tests.test_media import png

#: the timeline of the big room (the test's ~2,000 events)
MESSAGES = 1_900


def _stable(obj: Any) -> Any:
    """A response without what depends on the time it is asked at."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in ("age", "last_active_ago", "currently_active", "last_seen_ts")}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    return obj


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r:.200} != {b!r:.200}"]


def _pg(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else []


class PortDbTestCase(HomeserverTestCase):
    """The server under test runs on SQLite: it makes the source database."""

    postgres_twin = False

    def new_target(self, empty: bool = False) -> str:
        reason = postgres.unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cluster = postgres.cluster()
        assert cluster is not None
        dsn = cluster.new_empty_database() if empty else cluster.new_database()
        self.addCleanup(cluster.drop_database, dsn)
        return dsn

    async def small_source(self) -> tuple[TestUser, str]:
        alice = await self.register("alice")
        room = await self.create_room(alice, name="small")
        for i in range(40):
            await self.send_message(alice, room, f"m{i}")
        code, _ = await self.put(f"{C}/user/{q(alice.user_id)}/account_data/org.example.x", {"n": 1}, alice)
        self.assertEqual(code, 200)
        await self.readers_caught_up()
        return alice, room

    def port_in_thread(self, dsn: str, **kwargs: Any) -> Any:
        return deferToThread(port, self.config.sqlite_path, dsn, **kwargs)

    async def switch_to_postgres(self, dsn: str) -> None:
        """Start the server again, on the ported database (the SQLite one is left alone)."""
        await self.hs.stopService()
        self.config_overrides = deep_merge(self.config_overrides, {"database": {"backend": "postgres", "dsn": dsn}})
        self.config = self.make_config()
        self.assertEqual(self.config.database.backend, "postgres")
        self.hs = self.make_homeserver(self.config)
        no_real_dns(self.hs)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.base_url = f"http://127.0.0.1:{self.hs.listening_ports[0].getHost().port}"


class PortServesTheSameTests(PortDbTestCase):
    async def populate(self) -> dict[str, Any]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        code, login = await self.post(f"{C}/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "alice"}, "password": alice.password, "device_id": "PHONE"})
        self.assertEqual(code, 200, login)
        phone = TestUser(alice.user_id, login["access_token"], "PHONE", alice.password)
        self.assertEqual((await self.put(f"{C}/devices/PHONE", {"display_name": "phone"}, alice))[0], 200)
        await self.set_profile(alice, displayname="Alice")

        room = await self.create_room(alice, name="big", topic="many events")
        await self.invite_and_join(alice, room, bob)
        self.assertEqual((await self.put(f"{C}/directory/room/{q('#big:test')}", {"room_id": room}, alice))[0], 200)
        other = await self.create_room(bob, name="bob's")
        await self.invite(bob, other, alice)  # alice stays invited

        events = []
        for i in range(MESSAGES):
            sender = alice if i % 3 else bob
            events.append(await self.send_message(sender, room, f"message number {i} about ports"))
        root = events[10]
        for i in range(5):
            await self.send_message(bob, room, f"thread reply {i}", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": events[20], "key": "👍"}}
        path = f"{C}/rooms/{q(room)}/send/m.reaction/r1"
        self.assertEqual((await self.put(path, reaction, bob))[0], 200)
        self.assertEqual((await self.put(f"{C}/rooms/{q(room)}/redact/{q(events[30])}/x1", {"reason": "no"}, alice))[0], 200)

        # receipts, account data, tags, push rules, filters
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(events[-1])}", {}, bob))[0], 200)
        self.assertEqual((await self.put(f"{C}/user/{q(alice.user_id)}/account_data/org.example.a", {"a": [1, 2]}, alice))[0], 200)
        path = f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/account_data/org.example.r"
        self.assertEqual((await self.put(path, {"r": True}, alice))[0], 200)
        path = f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/m.favourite"
        self.assertEqual((await self.put(path, {"order": 0.5}, alice))[0], 200)
        rule = {"actions": ["notify"], "pattern": "ports"}
        self.assertEqual((await self.put(f"{C}/pushrules/global/content/ports", rule, alice))[0], 200)
        path = f"{C}/pushrules/global/override/.m.rule.suppress_notices/enabled"
        self.assertEqual((await self.put(path, {"enabled": False}, alice))[0], 200)
        code, flt = await self.post(f"{C}/user/{q(alice.user_id)}/filter", {"room": {"timeline": {"limit": 7}}}, alice)
        self.assertEqual(code, 200, flt)

        # end-to-end keys, a to-device message, a key backup
        device = FakeDevice(alice)
        body = {"device_keys": device.device_keys(), "one_time_keys": device.one_time_keys(5),
                "fallback_keys": device.fallback_keys()}
        self.assertEqual((await self.post(f"{C}/keys/upload", body, alice))[0], 200)
        bob_device = FakeDevice(bob)
        self.assertEqual((await self.post(f"{C}/keys/upload", {"device_keys": bob_device.device_keys()}, bob))[0], 200)
        messages = {"messages": {alice.user_id: {"PHONE": {"hello": "phone"}}}}
        self.assertEqual((await self.put(f"{C}/sendToDevice/org.example.ping/t1", messages, bob))[0], 200)
        backup = {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}}
        code, version = await self.post(f"{C}/room_keys/version", backup, alice)
        self.assertEqual(code, 200, version)

        session = {"first_message_index": 0, "forwarded_count": 0, "is_verified": True,
                   "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"}}
        path = f"{C}/room_keys/keys/{q(room)}/S1?version={version['version']}"
        self.assertEqual((await self.put(path, session, alice))[0], 200)

        # the room directory, a content report, a sliding sync connection
        self.assertEqual((await self.put(f"{C}/directory/list/room/{q(room)}", {"visibility": "public"}, alice))[0], 200)
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/report/{q(events[5])}", {"reason": "spam"}, bob))[0], 200)
        sliding = {"conn_id": "c1", "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 2, "required_state": []}}}
        code, ss = await self.post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", sliding, alice)
        self.assertEqual(code, 200, ss)

        # media, with a thumbnail
        code, up = await self.request("POST", "/_matrix/media/v3/upload?filename=red.png", raw=png(64, 48), token=alice,
                                      headers={"Content-Type": "image/png"})
        self.assertEqual(code, 200, up)
        mxc = up["content_uri"][len("mxc://"):]
        code, _ = await self.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=scale", alice)
        self.assertEqual(code, 200)

        await self.readers_caught_up()
        return {"alice": alice, "bob": bob, "phone": phone, "room": room, "other": other, "root": root,
                "events": events, "mxc": mxc, "filter": flt["filter_id"], "backup": version["version"]}

    async def observe(self, d: dict[str, Any]) -> dict[str, Any]:
        """What clients see, over every kind of data the source holds."""
        alice, bob, room = d["alice"], d["bob"], d["room"]
        seen: dict[str, Any] = {}
        for who in ("alice", "bob", "phone"):
            seen[f"sync {who}"] = _stable(await self.sync(d[who]))
        seen["timeline"] = [_stable(e) for e in await self.room_events(alice, room)]
        code, page = await self.messages(bob, room, dir="b", limit=30)
        seen["messages back"] = (code, _stable(page))
        reads = [
            f"{C}/rooms/{q(room)}/threads",
            f"{C}/rooms/{q(room)}/relations/{q(d['root'])}",
            f"{C}/rooms/{q(room)}/state",
            f"{C}/user/{q(alice.user_id)}/account_data/org.example.a",
            f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags",
            f"{C}/pushrules/",
            f"{C}/user/{q(alice.user_id)}/filter/{d['filter']}",
            f"{C}/room_keys/version",
            f"{C}/room_keys/keys?version={{version}}",
            f"{C}/directory/list/room/{q(room)}",
            f"{C}/profile/{q(alice.user_id)}",
            f"{C}/directory/room/{q('#big:test')}",
            f"{C}/devices",
            f"{C}/joined_rooms",
        ]
        for path in reads:
            path = path.replace("{version}", d["backup"])
            seen[path] = _stable(await self.get(path, alice))
        code, keys = await self.post(f"{C}/keys/query", {"device_keys": {alice.user_id: [], bob.user_id: []}}, bob)
        seen["keys/query"] = (code, keys)
        seen["otk counts"] = await self.post(f"{C}/keys/upload", {}, alice)
        code, found = await self.post(f"{C}/search", {"search_categories": {"room_events": {"search_term": "number 1234"}}}, alice)
        for result in found["search_categories"]["room_events"]["results"]:
            result.pop("rank")  # each backend ranks by its own formula (BM25, cover density)
        seen["search"] = (code, _stable(found))
        seen["media"] = await self.get(f"/_matrix/client/v1/media/download/{d['mxc']}", alice)
        seen["thumbnail"] = await self.get(f"/_matrix/client/v1/media/thumbnail/{d['mxc']}?width=32&height=32&method=scale", alice)
        return seen

    async def test_a_server_on_the_ported_database_serves_the_same_and_continues_after_it(self) -> None:
        d = await self.populate()
        # What a server started again on the SQLite database serves (a restart alone forgets
        # what lives in memory: presence, the transaction IDs of recent sends).
        await self.restart()
        before = await self.observe(d)
        self.assertGreater(len(before["timeline"]), MESSAGES + 5 + 1 + 1)  # + replies, reaction, redaction, set-up
        self.assertEqual(before["search"][0], 200)
        self.assertEqual(before["search"][1]["search_categories"]["room_events"]["count"], 1)
        next_batch = before["sync alice"]["next_batch"]

        dsn = self.new_target()  # has the schema already (as if the server had started on it once)
        await self.hs.stopService()
        bars = io.StringIO()
        result = await self.port_in_thread(dsn, batch_size=500, progress=bars)
        self.assertTrue(result.ok, render_checks(result.checks))
        self.assertGreater(result.rows_copied, MESSAGES)
        events = next(c for c in result.checks if c.table == "events")
        self.assertEqual(events.source_rows, events.target_rows)
        self.assertIn("events", bars.getvalue())
        self.assertIn("rows/s", bars.getvalue())
        self.assertEqual(_pg(dsn, "SELECT to_regclass(%s)", PROGRESS_TABLE), [(None,)])  # bookkeeping dropped

        await self.switch_to_postgres(dsn)
        after = await self.observe(d)
        self.maxDiff = None
        differences = {key: _differences(before[key], after[key]) for key in before}
        self.assertEqual({k: v for k, v in differences.items() if v}, {})

        # New writes go after the copied ones: the old token sees exactly them.
        alice, bob, room = d["alice"], d["bob"], d["room"]
        new_event = await self.send_message(bob, room, "first on postgres")
        self.assertEqual((await self.put(f"{C}/user/{q(alice.user_id)}/account_data/org.example.b", {"b": 1}, alice))[0], 200)
        new_room = await self.create_room(alice, name="new")
        sync = await self.sync(alice, since=next_batch)
        timeline = sync["rooms"]["join"][room]["timeline"]["events"]
        self.assertEqual([e["event_id"] for e in timeline], [new_event])
        self.assertIn(new_room, sync["rooms"]["join"])
        self.assertEqual([e["type"] for e in sync["account_data"]["events"]], ["org.example.b"])
        code, page = await self.messages(alice, room, dir="b", limit=2)
        self.assertEqual([e["event_id"] for e in page["chunk"]], [new_event, before["timeline"][-1]["event_id"]])
        code, login = await self.post(f"{C}/login", {"type": "m.login.password", "identifier": {
            "type": "m.id.user", "user": "bob"}, "password": bob.password})
        self.assertEqual(code, 200, login)


class PortDbTests(PortDbTestCase):
    async def test_into_a_database_without_tables(self) -> None:
        alice, room = await self.small_source()
        dsn = self.new_target(empty=True)
        await self.hs.stopService()
        result = await self.port_in_thread(dsn)
        self.assertTrue(result.ok, render_checks(result.checks))
        await self.switch_to_postgres(dsn)
        bodies = await self.visible_bodies(alice, room)
        self.assertEqual(bodies, [f"m{i}" for i in range(40)])

    async def test_refuses_while_a_server_runs_on_the_source(self) -> None:
        await self.small_source()
        dsn = self.new_target()
        with self.assertRaisesRegex(PortError, "in use .*stop the server first"):
            await self.port_in_thread(dsn)
        # nothing was written to the target
        self.assertEqual(_pg(dsn, "SELECT count(*) FROM events"), [(0,)])
        self.assertEqual(_pg(dsn, "SELECT to_regclass(%s)", PROGRESS_TABLE), [(None,)])

    async def test_refuses_a_target_holding_data(self) -> None:
        await self.small_source()
        await self.hs.stopService()
        dsn = self.new_target()
        self.assertTrue((await self.port_in_thread(dsn)).ok)
        with self.assertRaisesRegex(PortError, "already holds data"):
            await self.port_in_thread(dsn)
        # A counter advanced by a server that ran on it is data too, even in an empty table set.
        fresh = self.new_target()
        _pg(fresh, "UPDATE stream_positions SET position = 3 WHERE stream = 'account_data'")
        with self.assertRaisesRegex(PortError, "table stream_positions: .* rows that the migrations did not make"):
            await self.port_in_thread(fresh)
        # Another application's tables: refused, untouched.
        foreign = self.new_target(empty=True)
        _pg(foreign, "CREATE TABLE invoices (id BIGINT PRIMARY KEY)")
        with self.assertRaisesRegex(PortError, "not empty .*invoices"):
            await self.port_in_thread(foreign)
        self.assertEqual(_pg(foreign, "SELECT to_regclass('events')"), [(None,)])

    async def test_resumes_after_an_interruption(self) -> None:
        alice, room = await self.small_source()
        await self.hs.stopService()
        dsn = self.new_target()
        with self.assertRaises(PortInterrupted):
            await self.port_in_thread(dsn, batch_size=7, stop_after_batches=12)
        progress = dict(_pg(dsn, f"SELECT table_name, rows_done FROM {PROGRESS_TABLE}"))
        self.assertTrue(progress)
        self.assertLess(sum(progress.values()), 12 * 7 + 1)

        # A crash inside a batch (after its rows were sent, before the commit) leaves none of it.
        def crash(table: str, number: int) -> None:
            if number == 3:
                raise RuntimeError("power cut")

        copied = dict(_pg(dsn, f"SELECT table_name, rows_done FROM {PROGRESS_TABLE}"))
        with self.assertRaisesRegex(RuntimeError, "power cut"):
            await self.port_in_thread(dsn, batch_size=7, before_commit=crash)
        after_crash = dict(_pg(dsn, f"SELECT table_name, rows_done FROM {PROGRESS_TABLE}"))
        self.assertGreater(sum(after_crash.values()), sum(copied.values()))  # the batches before it stayed
        for table, rows_done in after_crash.items():
            self.assertEqual(_pg(dsn, f'SELECT count(*) FROM "{table}"'), [(rows_done,)], table)

        result = await self.port_in_thread(dsn, batch_size=7)
        self.assertTrue(result.ok, render_checks(result.checks))
        self.assertEqual(_pg(dsn, "SELECT to_regclass(%s)", PROGRESS_TABLE), [(None,)])
        await self.switch_to_postgres(dsn)
        self.assertEqual(await self.visible_bodies(alice, room), [f"m{i}" for i in range(40)])

    async def test_an_unfinished_port_of_another_database_is_refused(self) -> None:
        await self.small_source()
        await self.hs.stopService()
        dsn = self.new_target()
        with self.assertRaises(PortInterrupted):
            await self.port_in_thread(dsn, batch_size=5, stop_after_batches=2)
        other = os.path.join(self.data_dir, "other.db")
        with open(self.config.sqlite_path, "rb") as src, open(other, "wb") as dst:
            dst.write(src.read())
        with self.assertRaisesRegex(PortError, "unfinished port of another SQLite database"):
            await deferToThread(port, other, dsn)

    async def test_a_target_that_differs_is_caught(self) -> None:
        await self.small_source()
        await self.hs.stopService()
        dsn = self.new_target()
        self.assertTrue((await self.port_in_thread(dsn)).ok)
        checks = await deferToThread(verify, self.config.sqlite_path, dsn, None)
        self.assertTrue(all(c.ok for c in checks))
        # one value changed, one row gone
        _pg(dsn, "UPDATE events SET json = replace(json, 'm39', 'mXX') WHERE json LIKE '%%\"m39\"%%'")
        _pg(dsn, "DELETE FROM account_data")
        checks = await deferToThread(verify, self.config.sqlite_path, dsn, None)
        bad = {c.table: c for c in checks if not c.ok}
        self.assertEqual(set(bad), {"events", "account_data"})
        self.assertEqual(bad["events"].source_rows, bad["events"].target_rows)
        self.assertNotEqual(bad["events"].source_sum, bad["events"].target_sum)
        self.assertEqual(bad["account_data"].target_rows, bad["account_data"].source_rows - 1)
        table = render_checks(checks)
        self.assertRegex(table, r"events\s+\d+\s+\d+\s+MISMATCH \(\w+ != \w+\)")
        self.assertRegex(table, r"account_data\s+\d+\s+\d+\s+MISMATCH \(row count\)")

    async def test_refuses_a_source_in_use_even_by_a_reader(self) -> None:
        # Any open connection counts (a server keeps its readers' connections open when idle).
        await self.small_source()
        await self.hs.stopService()
        import sqlite3

        reader = sqlite3.connect(self.config.sqlite_path)
        reader.execute("SELECT count(*) FROM events").fetchone()
        try:
            with self.assertRaisesRegex(PortError, "in use"):
                await self.port_in_thread(self.new_target())
        finally:
            reader.close()


class PortDbCommandTests(PortDbTestCase):
    def write_config(self) -> str:
        path = os.path.join(self.data_dir, "homeserver.yaml")
        with open(path, "w") as f:
            f.write(f"server_name: test\ndata_dir: {self.data_dir}\n")
        return path

    def run_command(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        try:
            main(["port-db", *argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                err.write(e.code)
        return code, out.getvalue(), err.getvalue()

    async def test_command_ports_verifies_and_prints_the_config(self) -> None:
        await self.small_source()
        await self.hs.stopService()
        config, dsn = self.write_config(), self.new_target()
        code, out, err = await deferToThread(self.run_command, "--config", config, "--to-dsn", dsn, "--batch-size", "10")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"events\s+\d+\s+\d+\s+ok")
        self.assertIn(f"database:\n  backend: postgres\n  dsn: {dsn}\n", out)
        self.assertIn("rows/s", out)
        self.assertRegex(err, r"events.*\d+/\d+")  # the progress bar: done/total
        # the printed block is a config the server accepts
        block = out.split("replace the database section with:\n\n", 1)[1].split("\n\n", 1)[0]
        with open(config, "a") as f:
            f.write(block)
        code, out, err = await deferToThread(self.run_command, "--config", config, "--to-dsn", dsn)
        self.assertEqual(code, 1)
        self.assertIn("not sqlite", err)

    async def test_command_fails_on_refusal_and_on_a_mismatch(self) -> None:
        await self.small_source()
        config, dsn = self.write_config(), self.new_target()
        code, _, err = await deferToThread(self.run_command, "--config", config, "--to-dsn", dsn)
        self.assertEqual(code, 1)
        self.assertIn("is in use", err)
        await self.hs.stopService()
        code, _, err = await deferToThread(self.run_command, "--config", config, "--to-dsn", dsn)
        self.assertEqual(code, 0, err)
        _pg(dsn, "UPDATE users SET is_admin = NOT is_admin")
        code, out, err = await deferToThread(self.run_command, "--config", config, "--to-dsn", dsn, "--verify-only")
        self.assertEqual(code, 1)
        self.assertRegex(out, r"users\s+1\s+1\s+MISMATCH")
        self.assertIn("differs", err)


class StoreTests(unittest.TestCase):
    """The rules of mxserver.storage.port_db that the server's own schema does not exercise."""

    def setUp(self) -> None:
        reason = postgres.unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cluster = postgres.cluster()
        assert cluster is not None
        self.dsn = cluster.new_empty_database()
        self.addCleanup(cluster.drop_database, self.dsn)

    def test_sequences_move_past_the_copied_values(self) -> None:
        _pg(self.dsn, "CREATE TABLE a (id BIGSERIAL PRIMARY KEY, x TEXT)")
        _pg(self.dsn, "CREATE TABLE b (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)")
        _pg(self.dsn, "INSERT INTO a (id, x) VALUES (41, 'copied')")
        _pg(self.dsn, "INSERT INTO b (id) VALUES (7)")
        target = Target(psycopg.connect(self.dsn))
        try:
            self.assertEqual(target.fix_sequences(), [("a", "id", 42), ("b", "id", 8)])
        finally:
            target.close()
        self.assertEqual(_pg(self.dsn, "INSERT INTO a (x) VALUES ('new') RETURNING id"), [(42,)])
        self.assertEqual(_pg(self.dsn, "INSERT INTO b DEFAULT VALUES RETURNING id"), [(8,)])

    def test_converted_values_checksum_like_postgres_stores_them(self) -> None:
        _pg(self.dsn, "CREATE TABLE t (f BOOLEAN, b BYTEA, n BIGINT, s TEXT, v TSVECTOR)")
        types = ("boolean", "bytea", "bigint", "text", "tsvector")
        sqlite_row = (1, b"\x00\xff", 5, "caf\u00e9 {\"json\": true}", "zeta alpha zeta beta")
        row = tuple(converter(t)(v) for t, v in zip(types, sqlite_row, strict=True))  # type: ignore[misc]
        self.assertEqual(row[:4], (True, b"\x00\xff", 5, "caf\u00e9 {\"json\": true}"))
        self.assertEqual(row[4], tsvector_document(["zeta", "alpha", "zeta", "beta"]))
        _pg(self.dsn, "INSERT INTO t VALUES (%s, %s, %s, %s, CAST(%s AS tsvector))", *row)
        (stored,) = _pg(self.dsn, "SELECT f, b, n, s, CAST(v AS TEXT) FROM t")
        shape = TableShape("t", ("f", "b", "n", "s", "v"), ("f", "b", "n", "s", "v"), types,
                           tuple(converter(t) for t in types), ("rowid",))
        mine, theirs = Checksum(), Checksum()
        mine.add(shape.normalise(row))
        theirs.add(shape.normalise(stored))
        self.assertEqual(mine, theirs)
        self.assertEqual(converter("boolean")(0), False)
        self.assertEqual(converter("bytea")("text in a blob column"), b"text in a blob column")
        with self.assertRaisesRegex(PortError, "NUL"):
            converter("text")("a\x00b")  # type: ignore[misc]
