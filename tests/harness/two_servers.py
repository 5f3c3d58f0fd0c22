"""Test support: two real Homeservers in one test process, federating over TLS on loopback.

:class:`TwoServerTestCase` starts server A (``self.a``) and server B
(``self.b``) for each test. Each has a plain-HTTP client listener on a random
port and a TLS federation listener (a self-signed certificate) on a port
chosen up front, because the server name is ``127.0.0.1:<federation port>``:
an IP literal with a port is contacted directly, without ``.well-known`` or
SRV (server-server-api §Resolving server names). Both trust loopback
(``federation.ip_range_whitelist``) and skip certificate checks
(``verify_tls: false``).

Like every :class:`~tests.harness.server.HomeserverTestCase`, each subclass also runs as
a ``<Name>Postgres`` twin; both servers then use their own Postgres database.
``self.hs``/``self.request``/``self.register`` of the base class talk to A.

Typical use::

    class JoinTests(TwoServerTestCase):
        async def test_join(self):
            alice = await self.a.register("alice")
            bob = await self.b.register("bob")
            code, body = await self.b.post("/_matrix/client/v3/createRoom", {}, bob)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from mxserver.config import HomeserverConfig, load_config_dict
from mxserver.federation.client import FederationClient, RequestFailed
from mxserver.homeserver import Homeserver
from tests.harness import postgres
from tests.harness.client import ClientHttp
from tests.harness.network import free_port, make_cert
from tests.harness.server import HomeserverTestCase, deep_merge
from tests.harness.waiting import DEFAULT_TIMEOUT, wait_on_servers, wait_until

T = TypeVar("T")

#: what both servers need to reach each other on loopback
LOOPBACK_FEDERATION = {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}



def _sending(hs: Homeserver) -> bool:
    if not hs.running:
        return False
    return any(
        (d["pending_pdus"] or d["pending_edus"] or d["in_flight"]) and not d["backing_off"]
        for d in hs.federation_sender.destinations_status()
    )


class TestServer(ClientHttp):
    """One of the two servers: its Homeserver, names and ports, and HTTP helpers for its client API."""

    def __init__(self, test: unittest.TestCase, label: str, hs: Homeserver, federation_port: int) -> None:
        self.test = test
        self.label = label
        self.hs = hs
        self.server_name: str = hs.server_name
        self.federation_port = federation_port
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.last_headers: Any = None
        self._bind(hs)

    def _bind(self, hs: Homeserver) -> None:
        self.hs = hs
        client_port = hs.listening_ports[0].getHost().port
        self.base_url = f"http://127.0.0.1:{client_port}"

    def __repr__(self) -> str:
        return f"<TestServer {self.label} {self.server_name}>"

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    # -- conveniences ---------------------------------------------------------------------------


class ControlledTransport:
    """A server's federation transport the test steers (hand it in from :meth:`TwoServerTestCase.make_server`).

    ``mode`` "send" (the default) puts each transaction for real over the server's federation
    client; "drop" answers as if the destination had accepted it (the events never arrive, and
    nothing is retried); "fail" raises as an unreachable destination would (the sender backs off
    and catches up later).
    """

    def __init__(self) -> None:
        self.client: FederationClient | None = None
        self.mode = "send"

    def attach(self, hs: Homeserver) -> Homeserver:
        """Send through ``hs``'s federation client; ``hs``."""
        self.client = hs.federation_client
        return hs

    async def __call__(self, destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        if self.mode == "drop":
            return {"pdus": {}}
        if self.mode == "fail":
            raise RequestFailed(destination, "unreachable (the test took it down)")
        assert self.client is not None
        return await self.client.put_json(destination, f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}", body)


class TwoServerTestCase(HomeserverTestCase):
    """Starts two federating Homeservers, ``self.a`` and ``self.b``, for each test."""


    #: merged over both servers' configs (after the base test config); see also :meth:`server_overrides`
    config_overrides: dict[str, Any] = {}

    def server_overrides(self, label: str) -> dict[str, Any]:
        """Extra config for server ``label`` ("a" or "b"), merged last; override to differ."""
        return {}

    def _server_config(self, label: str, data_dir: str, port: int, cert: tuple[str, str]) -> Any:
        base: dict[str, Any] = {
            "server_name": f"127.0.0.1:{port}",
            "data_dir": data_dir,
            "listeners": [
                {"host": "127.0.0.1", "port": 0, "resources": ["client", "media"]},
                {"host": "127.0.0.1", "port": port, "resources": ["federation"], "tls": True},
            ],
            "tls": {"certificate_path": cert[0], "private_key_path": cert[1]},
            "federation": dict(LOOPBACK_FEDERATION),
            "registration": {"enabled": True},
            "password": {"scheme": "bcrypt", "bcrypt_rounds": 4},
            "rate_limits": {"enabled": False},
            "log": {"level": "WARNING"},
        }
        if self.backend == "postgres":
            base["database"] = {"backend": "postgres", "dsn": self._dsns[label]}
        merged = deep_merge(deep_merge(base, self.config_overrides), self.server_overrides(label))
        return load_config_dict(merged)

    def make_server(self, label: str, config: HomeserverConfig) -> Homeserver:
        """Server ``label`` ("a" or "b"); override to hand fakes in through the constructor's seams."""
        return Homeserver(config, reactor)

    async def _start_server(self, label: str, cert: tuple[str, str]) -> TestServer:
        data_dir = tempfile.mkdtemp(prefix=f"mxserver-test-{label}-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        # The federation port is chosen before binding (it is in the server name): another
        # process may take it meanwhile, so a failed start is retried with a new port.
        for attempt in range(3):
            port = free_port()
            hs = self.make_server(label, self._server_config(label, data_dir, port, cert))
            hs.startService()
            try:
                await hs.when_ready()
                break
            except RuntimeError:
                await hs.stopService()
                if attempt == 2:
                    raise
        self.addCleanup(hs.stopService)
        server = TestServer(self, label, hs, port)
        self.addCleanup(server.pool.closeCachedConnections)
        return server

    async def _set_up(self) -> None:
        if self.use_fake_clock:
            raise unittest.SkipTest("TwoServerTestCase runs on the reactor's real time")
        self.data_dir = tempfile.mkdtemp(prefix="mxserver-test-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)
        self._dsns: dict[str, str] = {}
        if self.backend == "postgres":
            reason = postgres.unavailable_reason()
            if reason:
                raise unittest.SkipTest(reason)
            cluster = postgres.cluster()
            assert cluster is not None
            for label in ("a", "b"):
                dsn = cluster.new_database()
                self.addCleanup(cluster.drop_database, dsn)
                self._dsns[label] = dsn
        self.clock = reactor
        cert = make_cert(self.data_dir)
        self.a = await self._start_server("a", cert)
        self.b = await self._start_server("b", cert)
        # The base class's helpers (self.request, self.register, ...) talk to A.
        self.hs = self.a.hs
        self.config = self.hs.config
        self.server_name = self.a.server_name
        self.base_url = self.a.base_url
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        # Runs before the servers stop (cleanups run last-in first-out): a transaction still
        # on its way would otherwise be cut off mid-request and log errors into the next test.
        self.addCleanup(self.settle)

    async def wait_until(
        self, check: Callable[[], Awaitable[T]], what: str, timeout: float = DEFAULT_TIMEOUT
    ) -> T:
        """Run ``check`` now and again whenever either server publishes something (room events,
        ephemeral changes, federation sender status) until it answers something truthy; that answer.

        See :mod:`tests.harness.waiting`. Fails the test naming ``what`` after ``timeout`` seconds.
        """
        return await wait_on_servers(check, what, (self.a.hs, self.b.hs), timeout)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` seconds) until neither server has federation traffic queued or in flight.

        Re-checked each time a sender reports a destination's status changed (a transaction
        done, a loop stopped): :attr:`~mxserver.federation.sender.FederationSender.status_changes`.
        Best effort (it runs in the clean-up): still busy after ``timeout``, it returns anyway.
        """
        servers = [s.hs for s in (self.a, self.b)]

        async def idle() -> bool:
            return not any(_sending(hs) for hs in servers)

        try:
            await wait_until(
                idle,
                "both federation senders idle",
                [hs.federation_sender.status_changes for hs in servers],
                timeout,
            )
        except AssertionError:
            pass

    async def restart(self, server: TestServer) -> None:
        """Stop ``server`` and start it again on the same database, key and federation port."""
        config = server.hs.config
        await server.hs.stopService()
        hs = self.make_server(server.label, config)
        hs.startService()
        self.addCleanup(hs.stopService)
        await hs.when_ready()
        server._bind(hs)
        if server is self.a:
            self.hs = hs
            self.base_url = server.base_url

    def other(self, server: TestServer) -> TestServer:
        return self.b if server is self.a else self.a

    def now_ms(self) -> int:
        return int(reactor.seconds() * 1000)

