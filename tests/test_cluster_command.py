"""``python -m mxserver cluster`` (issue 19): the derived config, and the command run for real on
Postgres: main, workers and the router come up, a client works through the router, a process
that dies is started again, SIGTERM stops everything.

The end-to-end tests wait on the command's progress lines and on answers, never on time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from mxserver.cluster.launch import ClusterError, parse_workers, plan_cluster
from mxserver.config import load_config, load_config_dict
from tests.harness import postgres

ROOT = Path(__file__).resolve().parent.parent
SECRET = "cluster-secret"


class PlanTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mxserver-cluster-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_workers_option(self) -> None:
        self.assertEqual(parse_workers("sync=2"), {"sync": 2})
        self.assertEqual(parse_workers("sync=0"), {"sync": 0})
        for bad, message in [
            ("sync", "expected role=N"),
            ("sync=x", "expected role=N"),
            ("pusher=1", "role 'pusher' is not built yet"),
            ("sync=1,sync=2", "given twice"),
        ]:
            with self.assertRaises(ClusterError) as caught:
                parse_workers(bad)
            self.assertIn(message, str(caught.exception))

    def test_sqlite_is_refused(self) -> None:
        raw = {"server_name": "example.org"}
        with self.assertRaises(ClusterError) as caught:
            plan_cluster(raw, load_config_dict(raw), {"sync": 2})
        self.assertIn("needs database.backend: postgres", str(caught.exception))

    def test_the_derived_config(self) -> None:
        raw = {
            "server_name": "example.org",
            "data_dir": "data",
            "signing_key_path": "keys/signing.key",
            "database": {"backend": "postgres", "dsn": "postgresql://mx@/mx"},
            "listeners": [
                {"host": "0.0.0.0", "port": 8008, "resources": ["client", "federation"]},
                {"port": 9000, "resources": ["metrics"]},
            ],
            "worker": {"name": "main"},
        }
        config = load_config_dict(raw, self.dir)
        ports = iter(range(20001, 20100))
        plan = plan_cluster(raw, config, {"sync": 2}, port=lambda: next(ports))
        derived = plan.derived
        # Paths are absolute (the file is written elsewhere), main is on loopback behind the router.
        self.assertEqual(derived["data_dir"], os.path.join(self.dir, "data"))
        self.assertEqual(derived["signing_key_path"], os.path.join(self.dir, "keys/signing.key"))
        self.assertEqual(
            derived["listeners"],
            [
                {"host": "127.0.0.1", "port": 20001, "resources": ["client", "federation"], "x_forwarded": True},
                {"host": "127.0.0.1", "port": 20002, "resources": ["metrics"], "x_forwarded": True},
            ],
        )
        self.assertEqual(
            derived["workers"],
            {
                "sync1": {"role": "sync", "listeners": [{"host": "127.0.0.1", "port": 20003, "resources": ["client"], "x_forwarded": True}]},
                "sync2": {"role": "sync", "listeners": [{"host": "127.0.0.1", "port": 20004, "resources": ["client"], "x_forwarded": True}]},
            },
        )
        self.assertNotIn("worker", derived)
        self.assertEqual(plan.workers, {"sync1": ("sync", "http://127.0.0.1:20003"), "sync2": ("sync", "http://127.0.0.1:20004")})
        self.assertEqual([p.port for p, _ in plan.main_listeners], [8008, 9000])
        # It is a valid config every process of the cluster can load.
        path = os.path.join(self.dir, "cluster.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(derived, f)
        loaded = load_config(path)
        self.assertEqual(sorted(loaded.workers), ["sync1", "sync2"])
        self.assertEqual(loaded.signing_key_file, os.path.join(self.dir, "keys/signing.key"))


class RouterOnlyTests(unittest.TestCase):
    """``--router-only``: the router in front of the processes a config describes (here stub
    backends standing in for main and two sync workers)."""

    async def _router_only(self) -> None:
        from mxserver.cluster.launch import build
        from mxserver.tap import parse_listen
        from tests.test_cluster_router import Backend, listen

        backends = {name: Backend(name) for name in ("main", "sync1", "sync2")}
        ports = {}
        for name, backend in backends.items():
            _, port = listen(self, backend)
            ports[name] = port.getHost().port
        tmp = tempfile.mkdtemp(prefix="mxserver-cluster-")
        self.addCleanup(shutil.rmtree, tmp, True)
        config = {
            "server_name": "cluster.test",
            "data_dir": tmp,
            "database": {"backend": "postgres", "dsn": "postgresql://mx@/unused"},
            "listeners": [{"port": ports["main"], "resources": ["client", "federation"], "x_forwarded": True}],
            "workers": {
                name: {"role": "sync", "listeners": [{"port": ports[name], "resources": ["client"], "x_forwarded": True}]}
                for name in ("sync1", "sync2")
            },
        }
        path = os.path.join(tmp, "homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        said: list[str] = []
        cluster = build(reactor, path, None, True, [parse_listen("127.0.0.1:0")], said.append)
        await cluster.start()
        stopped = False
        try:
            port = cluster._ports[0].getHost().port
            self.assertIn(f"router listening on 127.0.0.1:{port}", said)
            self.assertEqual(said[-1], "cluster ready")
            router = f"http://127.0.0.1:{port}"
            pool = HTTPConnectionPool(reactor, persistent=False)
            self.addCleanup(pool.closeCachedConnections)
            served = set()
            for i in range(8):
                resp = await treq.get(router + "/_matrix/client/v3/sync", headers={"Authorization": [f"Bearer t{i}"]}, pool=pool)
                served.add(json.loads(await resp.content())["name"])
            self.assertEqual(served, {"sync1", "sync2"})
            resp = await treq.get(router + "/_matrix/client/v3/profile/%40a%3Ab", pool=pool)
            self.assertEqual(json.loads(await resp.content())["name"], "main")
            await cluster.stop()
            stopped = True
            self.assertEqual(said[-1], "stopped")
        finally:
            if not stopped:
                await cluster.stop()

    def test_router_only(self) -> Deferred[None]:
        return ensureDeferred(self._router_only())

    def test_router_only_needs_somewhere_to_listen(self) -> None:
        from mxserver.cluster.launch import build

        tmp = tempfile.mkdtemp(prefix="mxserver-cluster-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"server_name": "x", "data_dir": tmp}, f)
        with self.assertRaises(ClusterError) as caught:
            build(reactor, path, None, True, [], lambda line: None)
        self.assertIn("needs database.backend: postgres", str(caught.exception))


class _Lines(ProcessProtocol):
    """The command's stdout, line by line; ``wait(regex)`` fires with the first line (from
    now on, or already seen since ``mark``) that matches."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._buf = b""
        self._waiters: list[tuple[re.Pattern[str], int, Deferred[re.Match[str]]]] = []
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.lines.append(line.decode(errors="replace"))
            self._check()

    def _check(self) -> None:
        for item in list(self._waiters):
            rx, start, d = item
            for line in self.lines[start:]:
                m = rx.search(line)
                if m:
                    self._waiters.remove(item)
                    d.callback(m)
                    break

    def wait(self, pattern: str, since: int = 0) -> Deferred[re.Match[str]]:
        d: Deferred[re.Match[str]] = Deferred()
        self._waiters.append((re.compile(pattern), since, d))
        self._check()
        return d

    def processEnded(self, reason: Failure) -> None:
        for _, _, d in self._waiters:
            d.errback(AssertionError("the cluster command ended; its output:\n" + "\n".join(self.lines)))
        self._waiters = []
        self.ended.callback(getattr(reason.value, "exitCode", None))


class ClusterCommandTests(unittest.TestCase):
    """The command for real on Postgres (skipped where no Postgres can run)."""

    timeout = 240

    def setUp(self) -> None:
        reason = postgres.unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cluster = postgres.cluster()
        assert cluster is not None
        self.dsn = cluster.new_database()
        self.addCleanup(cluster.drop_database, self.dsn)
        self.dir = tempfile.mkdtemp(prefix="mxserver-cluster-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    def start(self, workers: str) -> _Lines:
        config = {
            "server_name": "cluster.test",
            "data_dir": os.path.join(self.dir, "data"),
            "database": {"backend": "postgres", "dsn": self.dsn},
            "listeners": [{"host": "127.0.0.1", "port": 0, "resources": ["client", "federation", "media"]}],
            "registration": {"enabled": True, "shared_secret": SECRET},
            "password": {"scheme": "bcrypt", "bcrypt_rounds": 4},
            "rate_limits": {"enabled": False},
            "log": {"level": "WARNING", "path": os.path.join(self.dir, "cluster.log")},
        }
        path = os.path.join(self.dir, "homeserver.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        lines = _Lines()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")  # noqa: SIM115
        self.addCleanup(self.stderr.close)
        transport = reactor.spawnProcess(
            lines,
            sys.executable,
            [sys.executable, "-m", "mxserver", "cluster", "--config", path, "--workers", workers],
            env=env,
            childFDs={0: "w", 1: "r", 2: self.stderr.fileno()},
        )
        self.transport = transport

        def stop_if_running() -> Deferred[Any] | None:
            if lines.ended.called:
                return None
            transport.signalProcess("KILL")
            return lines.ended

        self.addCleanup(stop_if_running)
        return lines

    async def call(self, method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {token}"]} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        resp = await treq.request(method, url, data=data, headers=headers, pool=self.pool)
        content = await resp.content()
        if resp.headers.getRawHeaders("content-type", [""])[0].startswith("application/json"):
            return resp.code, json.loads(content)
        return resp.code, content

    async def register(self, router: str, name: str) -> str:
        code, body = await self.call(
            "POST", router + "/_matrix/client/v3/register", {"username": name, "password": "pw-pw-pw-pw", "auth": {"type": "m.login.dummy"}}
        )
        self.assertEqual(code, 200, body)
        return str(body["access_token"])

    async def register_admin(self, router: str) -> str:
        from tests.test_admin_register import mac_for

        _, body = await self.call("GET", router + "/_synapse/admin/v1/register")
        nonce = body["nonce"]
        code, body = await self.call(
            "POST",
            router + "/_synapse/admin/v1/register",
            {"nonce": nonce, "username": "root", "password": "pw-pw-pw-pw", "admin": True,
             "mac": mac_for(nonce, "root", "pw-pw-pw-pw", True, SECRET)},
        )
        self.assertEqual(code, 200, body)
        return str(body["access_token"])

    async def workers(self, router: str, admin: str) -> dict[str, tuple[str, int, bool]]:
        """The worker registry through the admin API: name -> (role, pid, alive)."""
        code, body = await self.call("GET", router + "/_mxserver/admin/v1/workers", token=admin)
        self.assertEqual(code, 200, body)
        return {w["name"]: (w["role"], w["pid"], w["alive"]) for w in body["workers"]}

    async def _main_only(self) -> None:
        lines = self.start("sync=0")
        main = await lines.wait(r"main \(main\) up on (\S+) \(pid (\d+)\)")
        main_url, main_pid = main.group(1), int(main.group(2))
        router = "http://127.0.0.1:" + (await lines.wait(r"router listening on 127\.0\.0\.1:(\d+)")).group(1)
        await lines.wait(r"cluster ready")
        # Every process answers /health; the router's status shows main up.
        self.assertEqual(await self.call("GET", router + "/health"), (200, b"OK"))
        self.assertEqual(await self.call("GET", main_url + "/health"), (200, b"OK"))
        code, status = await self.call("GET", router + "/_mxserver/cluster/status")
        self.assertEqual([(i["name"], i["role"]) for i in status["instances"]], [("main", "main")])
        # A client registers, creates a room, sends and syncs through the router.
        token = await self.register(router, "alice")
        code, body = await self.call("POST", router + "/_matrix/client/v3/createRoom", {}, token)
        self.assertEqual(code, 200, body)
        room = body["room_id"]
        code, body = await self.call("PUT", router + f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}, token)
        self.assertEqual(code, 200, body)
        code, body = await self.call("GET", router + "/_matrix/client/v3/sync?timeout=0", token=token)
        self.assertEqual(code, 200, body)
        bodies = [e["content"].get("body") for e in body["rooms"]["join"][room]["timeline"]["events"]]
        self.assertIn("hi", bodies)
        # main is killed: the command says so and starts it again; the client carries on.
        mark = len(lines.lines)
        os.kill(main_pid, signal.SIGKILL)
        await lines.wait(rf"main \(pid {main_pid}\) exited \(signal 9\); restarting in 1 s", since=mark)
        again = await lines.wait(r"main \(main\) up on (\S+) \(pid (\d+)\)", since=mark)
        new_pid = int(again.group(2))
        self.assertNotEqual(new_pid, main_pid)
        code, body = await self.call("GET", router + "/_matrix/client/v3/account/whoami", token=token)
        self.assertEqual((code, body.get("user_id")), (200, "@alice:cluster.test"))
        # The worker registry has main's new process, alive.
        self.assertEqual(await self.workers(router, await self.register_admin(router)), {"main": ("main", new_pid, True)})
        # SIGTERM stops the router, then every process, and the command ends cleanly.
        self.transport.signalProcess("TERM")
        self.assertEqual(await lines.ended, 0)
        self.assertIn("cluster: stopped", lines.lines)
        self.assertTrue(any(re.search(rf"main \(pid {new_pid}\) stopped", line) for line in lines.lines), lines.lines)
        with self.assertRaises(ProcessLookupError):
            os.kill(new_pid, 0)

    def test_main_and_the_router(self) -> Deferred[None]:
        return ensureDeferred(self._main_only())

    async def _two_sync_workers(self) -> None:
        lines = self.start("sync=2")
        await lines.wait(r"main \(main\) up on")
        sync = {}
        for name in ("sync1", "sync2"):
            m = await lines.wait(rf"{name} \(sync\) up on (\S+) \(pid (\d+)\)")
            sync[name] = (m.group(1), int(m.group(2)))
        router = "http://127.0.0.1:" + (await lines.wait(r"router listening on 127\.0\.0\.1:(\d+)")).group(1)
        await lines.wait(r"cluster ready")
        for url, _ in sync.values():
            self.assertEqual(await self.call("GET", url + "/health"), (200, b"OK"))
        _, status = await self.call("GET", router + "/_mxserver/cluster/status")
        self.assertEqual(
            [(i["name"], i["role"], i["up"]) for i in status["instances"]],
            [("main", "main", True), ("sync1", "sync", True), ("sync2", "sync", True)],
        )
        # Clients write through main and read through the sync workers.
        tokens = [await self.register(router, f"user{i}") for i in range(4)]
        for token in tokens:
            code, body = await self.call("POST", router + "/_matrix/client/v3/createRoom", {"name": "r"}, token)
            self.assertEqual(code, 200, body)
            room = body["room_id"]
            code, body = await self.call("PUT", router + f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"}, token)
            self.assertEqual(code, 200, body)
            code, body = await self.call("GET", router + "/_matrix/client/v3/sync?timeout=10000", token=token)
            self.assertEqual(code, 200, body)
            self.assertIn(room, body["rooms"]["join"])
        # A write sent straight to a worker (not through the router) is forwarded to main, and
        # the worker's own /sync then shows it.
        worker_url = sync["sync2"][0]
        code, body = await self.call("PUT", worker_url + f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t2", {"msgtype": "m.text", "body": "direct"}, token)
        self.assertEqual(code, 200, body)
        direct = body["event_id"]
        code, body = await self.call("GET", worker_url + "/_matrix/client/v3/sync?timeout=10000", token=token)
        self.assertEqual(code, 200, body)
        self.assertIn(direct, [e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]])
        # Every process is in the worker registry.
        self.assertEqual(
            {name: (role, alive) for name, (role, _, alive) in (await self.workers(router, await self.register_admin(router))).items()},
            {"main": ("main", True), "sync1": ("sync", True), "sync2": ("sync", True)},
        )
        # A sync worker killed is started again.
        mark = len(lines.lines)
        url, pid = sync["sync1"]
        os.kill(pid, signal.SIGKILL)
        await lines.wait(rf"sync1 \(pid {pid}\) exited", since=mark)
        await lines.wait(r"sync1 \(sync\) up on", since=mark)
        self.transport.signalProcess("TERM")
        self.assertEqual(await lines.ended, 0)

    def test_main_two_sync_workers_and_the_router(self) -> Deferred[None]:
        return ensureDeferred(self._two_sync_workers())
