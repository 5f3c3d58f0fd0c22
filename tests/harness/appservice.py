"""An application service on loopback for tests: records what the homeserver sends it and answers
what the test scripts, and :class:`AppServiceTestCase`, a homeserver registered with it.

The registration file is written into the test's data directory before the server starts (and
again before each restart), and ``app_service_ip_range_whitelist`` lets the server reach
127.0.0.1, as an operator running a bridge on the same machine would set it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import attrs
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web import resource, server

from tests.harness.client import TestUser
from tests.harness.server import HomeserverTestCase, deep_merge

#: how long a test waits for the homeserver to send something (seconds)
WAIT_S = 20.0

AS_TOKEN = "as-secret-token"
HS_TOKEN = "hs-secret-token"

#: an answer: (code, JSON body), or a callable(request info) giving one or an awaitable of one
Answer = Any


@attrs.define
class Received:
    """One request the homeserver made."""

    method: str
    path: str
    args: dict[str, list[str]]
    authorization: str | None
    body: Any
    #: the status it was answered with (None while unanswered)
    code: int | None = None


class FakeAppService(resource.Resource):
    """Answers ``/_matrix/app/v1/...``: ``answers`` maps a path prefix (after the prefix) to an
    :data:`Answer`; transactions are answered by ``txn_answer`` (200 ``{}`` by default)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.answers: dict[str, Answer] = {}
        self.txn_answer: Answer = (200, {})
        self._waiters: list[Deferred[None]] = []
        self.port: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def listen(self, port: int = 0) -> None:
        self.site = _TrackingSite(self)
        self.port = reactor.listenTCP(port, self.site, interface="127.0.0.1")

    async def stop(self) -> None:
        """Go down: stop listening and drop the connections kept open (the service is gone)."""
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped
        for protocol in list(self.site.connections):
            channel = getattr(protocol, "_channel", protocol)
            if channel.transport is not None:
                channel.transport.abortConnection()

    def render(self, request: Any) -> Any:
        raw = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path = unquote(request.path.decode())
        auth = request.getHeader(b"authorization")
        received = Received(
            request.method.decode(),
            path,
            {k.decode(): [v.decode() for v in vs] for k, vs in (request.args or {}).items()},
            auth.decode() if auth else None,
            body,
        )
        self.received.append(received)
        rel = path.removeprefix("/_matrix/app/v1")
        if rel.startswith("/transactions/"):
            answer = self.txn_answer
        else:
            answer = next((a for prefix, a in self.answers.items() if rel.startswith(prefix)), (404, {"errcode": "M_NOT_FOUND"}))
        if callable(answer):
            answer = answer(received)
        d = ensureDeferred(_resolve(answer))

        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def finish(result: tuple[int, Any]) -> None:
            code, payload = result
            if not gone:  # the homeserver may have given up on the request (a timeout)
                received.code = code
                request.setResponseCode(code)
                request.setHeader(b"content-type", b"application/json")
                request.write(json.dumps(payload).encode() if not isinstance(payload, bytes) else payload)
                request.finish()
            self._wake()

        def failed(f: Any) -> None:
            if not gone:
                received.code = 500
                request.setResponseCode(500)
                request.finish()
            self._wake()
            return None

        d.addCallbacks(finish, failed)
        return server.NOT_DONE_YET

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            reactor.callLater(0, lambda d=d: d.called or d.callback(None))

    # -- what arrived ----------------------------------------------------------------------------

    def transactions(self) -> list[Received]:
        return [r for r in self.received if r.path.startswith("/_matrix/app/v1/transactions/")]

    def txn_id(self, received: Received) -> str:
        return received.path.rsplit("/", 1)[1]

    def acknowledged(self, hs_token: str | None = None) -> list[Received]:
        """The transactions answered 2xx (of the service with ``hs_token``: the test bridge's by
        default), in the order they arrived."""
        token = f"Bearer {hs_token or HS_TOKEN}"
        return [r for r in self.transactions() if r.code is not None and 200 <= r.code < 300 and r.authorization == token]

    def delivered_events(self, hs_token: str | None = None) -> list[dict[str, Any]]:
        """Every event of every acknowledged transaction, in order."""
        return [e for r in self.acknowledged(hs_token) for e in r.body.get("events", [])]

    def delivered(self, key: str, hs_token: str | None = None) -> list[dict[str, Any]]:
        """Every entry of ``key`` (``ephemeral``, ...) of every acknowledged transaction, in order."""
        return [e for r in self.acknowledged(hs_token) for e in r.body.get(key, [])]

    async def wait_until(self, check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Wait until ``check()`` is truthy (re-checked at each request and every 0.1 s)."""
        deadline = reactor.seconds() + timeout
        while True:
            result = check()
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {what}; received {[(r.method, r.path) for r in self.received]}")
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            timer = reactor.callLater(0.1, lambda d=d: d.called or d.callback(None))
            await d
            if timer.active():
                timer.cancel()

    async def events_of_type(self, event_type: str, count: int, hs_token: str | None = None) -> list[dict[str, Any]]:
        """Wait for ``count`` delivered events of ``event_type``; all of them."""

        def found() -> list[dict[str, Any]] | None:
            events = [e for e in self.delivered_events(hs_token) if e["type"] == event_type]
            return events if len(events) >= count else None

        return await self.wait_until(found, f"{count} {event_type} events")


class _TrackingSite(server.Site):
    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.connections: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        site = self
        lost = protocol.connectionLost

        def connection_lost(reason: Any) -> None:
            site.connections.discard(protocol)
            lost(reason)

        protocol.connectionLost = connection_lost
        self.connections.add(protocol)
        return protocol


async def _resolve(answer: Any) -> tuple[int, Any]:
    if inspect.isawaitable(answer):
        answer = await answer
    return answer  # type: ignore[no-any-return]


def registration(url: str | None, **overrides: Any) -> dict[str, Any]:
    """The test bridge's registration: users ``@_bridge_*``, aliases ``#_bridge_*``, protocol ``gitter``."""
    base: dict[str, Any] = {
        "id": "bridge",
        "url": url,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "_bridge_bot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": "@_bridge_.*:test"}],
            "aliases": [{"exclusive": True, "regex": "#_bridge_.*:test"}],
            "rooms": [],
        },
        "rate_limited": False,
        "protocols": ["gitter"],
        "receive_ephemeral": True,
    }
    return {**base, **overrides}


class AppServiceTestCase(HomeserverTestCase):
    """A homeserver with the registrations of :meth:`registrations` (the bridge by default),
    talking to a :class:`FakeAppService` on loopback (``self.appservice``)."""

    #: merged over the base test config, like ``config_overrides``
    appservice_config: dict[str, Any] = {"app_service_ip_range_whitelist": ["127.0.0.0/8"]}

    def registrations(self) -> list[dict[str, Any]]:
        return [registration(self.appservice.url)]

    async def _set_up(self) -> None:
        self.appservice = FakeAppService()
        self.appservice.listen()
        self.addCleanup(self.appservice.stop)
        await super()._set_up()
        self.bot = self.as_user("@_bridge_bot:test")

    def make_config(self) -> Any:
        paths = []
        for i, reg in enumerate(self.registrations()):
            path = f"{self.data_dir}/registration-{i}.yaml"
            with open(path, "w") as f:
                yaml.safe_dump(reg, f)
            paths.append(path)
        self.config_overrides = deep_merge(
            deep_merge(self.config_overrides, self.appservice_config), {"app_service_config_files": paths}
        )
        return super().make_config()

    def write_registration(self, index: int, reg: dict[str, Any]) -> None:
        """Replace one registration file (a reload or restart reads it)."""
        with open(f"{self.data_dir}/registration-{index}.yaml", "w") as f:
            yaml.safe_dump(reg, f)

    def as_user(self, user_id: str, token: str = AS_TOKEN) -> TestUser:
        """A session that is the application service acting as ``user_id`` (its as_token; the
        ``user_id`` query parameter is added by :meth:`as_path`)."""
        return TestUser(user_id, token, "", "")

    @staticmethod
    def as_path(path: str, user_id: str | None = None, device_id: str | None = None) -> str:
        from urllib.parse import urlencode

        params = {k: v for k, v in (("user_id", user_id), ("device_id", device_id)) if v is not None}
        if not params:
            return path
        return path + ("&" if "?" in path else "?") + urlencode(params)

    async def register_as_user(self, localpart: str, inhibit_login: bool = True) -> str:
        """Register ``@{localpart}:test`` as the application service; the user ID."""
        code, body = await self.post(
            "/_matrix/client/v3/register",
            {"type": "m.login.application_service", "username": localpart, "inhibit_login": inhibit_login},
            AS_TOKEN,
        )
        assert code == 200, (code, body)
        return str(body["user_id"])
