"""The test case of the harness: a real Homeserver on a real port, on SQLite and on Postgres.

Every subclass of :class:`HomeserverTestCase` runs twice: as itself (SQLite)
and as a generated ``<Name>Postgres`` twin, which skips with the reason when
no Postgres can be started here.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from mxserver.config import HomeserverConfig, load_config_dict
from mxserver.events.versions import get_room_version
from mxserver.homeserver import Homeserver
from mxserver.rooms.local_events import EventSpec
from tests.harness import postgres
from tests.harness.client import ClientHttp, TestUser


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def serve_servlets(test: unittest.TestCase, api: str, servlets: Sequence[Any]) -> str:
    """Serve ``servlets`` as the ``api`` ("client", "federation", "media") of a MatrixResource,
    on a loopback port until ``test`` ends; the base URL. For HTTP handlers built by the test itself."""
    from mxserver.api.http import build_app
    from mxserver.api.resource import MatrixResource, MatrixSite

    root = MatrixResource({api: build_app(list(servlets)).resource()})
    site = MatrixSite(root, max_json_body=1024**2, max_upload_body=50 * 1024**2, reactor=reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


def no_real_dns(hs: Homeserver) -> None:
    """Tests contact nothing but loopback: no SRV or A/AAAA look-ups in the real DNS.

    The federation sender sends local events of rooms with made-up remote users
    (``@bob:remote.example``) to their servers; here those names simply do not
    resolve (only IP literals and ``localhost`` do), so the sender backs off.
    """
    from tests.harness.network import FakeDNS, FakeNameResolver

    client = hs.federation_client
    client.discovery.dns_resolver = FakeDNS()
    client.connector.name_resolver = FakeNameResolver({"localhost": ["127.0.0.1"]})


class HomeserverTestCase(ClientHttp, unittest.TestCase):
    """Starts a Homeserver listening on 127.0.0.1 (random port) for each test."""

    backend = "sqlite"
    server_name = "test"
    #: merged over the base test config (YAML-shaped dict)
    config_overrides: dict[str, Any] = {}
    #: pass a task.Clock to the Homeserver (self.clock) instead of the reactor's time
    use_fake_clock = False
    #: False for tests whose server must run on SQLite (port-db's source): no Postgres twin
    postgres_twin = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend == "sqlite" and cls.postgres_twin and not cls.__name__.endswith("Postgres"):
            twin = type(cls.__name__ + "Postgres", (cls,), {"backend": "postgres", "__module__": cls.__module__})
            setattr(sys.modules[cls.__module__], twin.__name__, twin)

    def make_config(self) -> HomeserverConfig:
        base: dict[str, Any] = {
            "server_name": self.server_name,
            "data_dir": self.data_dir,
            "listeners": [{"host": "127.0.0.1", "port": 0, "resources": ["client", "federation", "media"]}],
            "registration": {"enabled": True},
            "password": {"scheme": "bcrypt", "bcrypt_rounds": 4},
            "rate_limits": {"enabled": False},
            "log": {"level": "WARNING"},
        }
        if self.backend == "postgres":
            base["database"] = {"backend": "postgres", "dsn": self.pg_dsn}
        return load_config_dict(deep_merge(base, self.config_overrides))

    def make_homeserver(self, config: HomeserverConfig) -> Homeserver:
        """The server under test; override to hand fakes in through the constructor's seams."""
        return Homeserver(config, reactor, clock=self.clock if self.use_fake_clock else None)

    def setUp(self) -> Any:
        return ensureDeferred(self._set_up())

    async def _set_up(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="mxserver-test-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)
        if self.backend == "postgres":
            reason = postgres.unavailable_reason()
            if reason:
                raise unittest.SkipTest(reason)
            cluster = postgres.cluster()
            assert cluster is not None
            self.pg_dsn = cluster.new_database()
            self.addCleanup(cluster.drop_database, self.pg_dsn)
        self.clock = Clock() if self.use_fake_clock else reactor
        # Tests that pick fixed ports (server names like 127.0.0.1:PORT) can lose a port
        # to another process between choosing and binding it: try again with a new one.
        for attempt in range(3):
            self.config = self.make_config()
            self.hs = self.make_homeserver(self.config)
            no_real_dns(self.hs)
            self.hs.startService()
            try:
                await self.hs.when_ready()
                break
            except RuntimeError:
                await self.hs.stopService()
                if attempt == 2:
                    raise
        self.addCleanup(self.hs.stopService)
        port = self.hs.listening_ports[0].getHost().port
        self.base_url = f"http://127.0.0.1:{port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    async def readers_caught_up(self) -> None:
        """Every reader of the room stream (push, search, appservices) has read what was
        published: none of them is left to run in the background of what comes next."""
        hs = self.hs
        position = hs.room_stream.position
        for reader in (hs.push_notifications, hs.search_indexer, hs.appservice_reader):
            await reader.wait_for(position)

    async def restart(self, config_overrides: dict[str, Any] | None = None) -> Homeserver:
        """Stop the server and start a new one on the same database and data dir, its config
        changed by ``config_overrides`` (merged over this test's), as an operator would between runs."""
        await self.hs.stopService()
        if config_overrides:
            self.config_overrides = deep_merge(self.config_overrides, config_overrides)
        self.config = self.make_config()
        self.hs = self.make_homeserver(self.config)
        no_real_dns(self.hs)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.base_url = f"http://127.0.0.1:{self.hs.listening_ports[0].getHost().port}"
        return self.hs

    def assertMatrixError(self, result: tuple[int, Any], status: int, errcode: str) -> None:
        code, body = result
        self.assertEqual((code, body.get("errcode") if isinstance(body, dict) else body), (status, errcode), body)
        self.assertIsInstance(body.get("error"), str)

    def _before_create_room(self) -> None:
        if self.use_fake_clock:
            # v12 room IDs hash the create event: two identical ones in the same millisecond collide.
            self.clock.advance(0.001)

    # -- the server's side: shapes the client API cannot make, and waiting on it ----------------

    async def create_room_from(self, creator: TestUser, specs: Sequence[EventSpec], version: str | None = None) -> str:
        """A room whose initial events after the create event are exactly ``specs`` (through the room server).

        For rooms ``createRoom`` cannot make (no history visibility event at all, a
        hand-picked event list); everything else goes through :meth:`create_room`.
        """
        rv = get_room_version(version or self.config.default_room_version)
        assert rv is not None
        self._before_create_room()
        room_id, _ = await self.hs.room_server.create_room(creator.user_id, rv, {}, list(specs))
        return room_id

    async def room_state(self, room: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """The content of the room's current state event as the server holds it, or None."""
        ev = await self.hs.room_server.current_state_event(room, event_type, state_key)
        return ev.content if ev is not None else None

    async def membership(self, room: str, user: TestUser | str) -> str | None:
        """The user's current membership of the room as the server holds it."""
        return await self.hs.room_server.membership(room, user if isinstance(user, str) else user.user_id)

    def waiter(self, user: TestUser | str, rooms: tuple[str, ...] | list[str] = (), timeout_ms: int = 60_000) -> Deferred[None]:
        """A /sync-style long poll on the notifier for ``user``; it must fire, or be cancelled by the cleanup."""
        user_id = user if isinstance(user, str) else user.user_id
        d = ensureDeferred(self.hs.notifier.wait(user_id, rooms, timeout_ms))
        self.addCleanup(lambda: d.called or d.cancel())
        d.addErrback(lambda f: None)
        return d
