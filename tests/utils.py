"""Test support: a real Homeserver on a real port, on SQLite and on Postgres.

Every subclass of :class:`HomeserverTestCase` runs twice: as itself (SQLite)
and as a generated ``<Name>Postgres`` twin, which skips with the reason when
no Postgres can be started here.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from mxserver.config import HomeserverConfig, load_config_dict
from mxserver.homeserver import Homeserver
from tests import postgres


@attrs.frozen
class TestUser:
    user_id: str
    access_token: str
    device_id: str
    password: str


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def no_real_dns(hs: Homeserver) -> None:
    """Tests contact nothing but loopback: no SRV or A/AAAA look-ups in the real DNS.

    The federation sender sends local events of rooms with made-up remote users
    (``@bob:remote.example``) to their servers; here those names simply do not
    resolve (only IP literals and ``localhost`` do), so the sender backs off.
    """
    from tests.federation_helpers import FakeDNS, FakeNameResolver

    client = hs.federation_client
    client.discovery.dns_resolver = FakeDNS()
    client.connector.name_resolver = FakeNameResolver({"localhost": ["127.0.0.1"]})


class ClientHttp:
    """HTTP helpers for a test server's client listener at ``self.base_url`` (over ``self.pool``)."""

    base_url: str
    pool: HTTPConnectionPool
    last_headers: Any = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | TestUser | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON or raw bytes)`` of a request to the server at ``base_url``."""
        hdrs = dict(headers or {})
        if isinstance(token, TestUser):
            token = token.access_token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        resp = await treq.request(
            method,
            self.base_url + path,
            data=data,
            headers={k: [v] for k, v in hdrs.items()},
            pool=self.pool,
            reactor=reactor,
        )
        content = await resp.content()
        self.last_headers = resp.headers
        ctype = resp.headers.getRawHeaders("content-type", [""])[0]
        if ctype.startswith("application/json"):
            return resp.code, json.loads(content)
        return resp.code, content

    async def get(self, path: str, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("GET", path, token=token)

    async def post(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("POST", path, body if body is not None else {}, token=token)

    async def put(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("PUT", path, body if body is not None else {}, token=token)

    async def delete(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, token=token)


class HomeserverTestCase(ClientHttp, unittest.TestCase):
    """Starts a Homeserver listening on 127.0.0.1 (random port) for each test."""

    backend = "sqlite"
    server_name = "test"
    #: merged over the base test config (YAML-shaped dict)
    config_overrides: dict[str, Any] = {}
    #: pass a task.Clock to the Homeserver (self.clock) instead of the reactor's time
    use_fake_clock = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend == "sqlite" and not cls.__name__.endswith("Postgres"):
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
            self.hs = Homeserver(self.config, reactor, clock=self.clock if self.use_fake_clock else None)
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

    def assertMatrixError(self, result: tuple[int, Any], status: int, errcode: str) -> None:
        code, body = result
        self.assertEqual((code, body.get("errcode") if isinstance(body, dict) else body), (status, errcode), body)
        self.assertIsInstance(body.get("error"), str)

    # -- accounts -----------------------------------------------------------------------

    async def register(self, localpart: str, password: str = "correct horse", device_id: str | None = None) -> TestUser:
        """Register through the client API (m.login.dummy) and return the session."""
        body: dict[str, Any] = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        if device_id:
            body["device_id"] = device_id
        code, resp = await self.post("/_matrix/client/v3/register", body)
        self.assertEqual(code, 200, resp)
        return TestUser(resp["user_id"], resp["access_token"], resp["device_id"], password)
