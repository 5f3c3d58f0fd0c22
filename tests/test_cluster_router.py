"""The cluster's forwarding proxy and router (issue 19), in front of stub backends.

The backends are small twisted.web sites of the test that answer who they are and what they
received, or hold a request until the test releases it.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IRequest

from mxserver.api.resource import MatrixSite
from mxserver.cluster.proxy import DEFAULT_TIMEOUT, Forwarder, deadline_for
from mxserver.cluster.router import Instance, RoleGate, Router
from mxserver.cluster.routes import ROUTES
from mxserver.request_info import client_ip
from tests.harness import free_port


class Backend(resource.Resource):
    """Answers ``{"name", "method", "uri", "headers", "body", "client"}``; a path in ``hold``
    waits until the test calls ``release``."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.hold: set[bytes] = set()
        self.held: list[IRequest] = []
        self.arrived: Deferred[IRequest] = Deferred()
        self.seen: list[dict[str, Any]] = []
        self.unhealthy = False

    def render(self, request: IRequest) -> Any:  # type: ignore[override]
        request.content.seek(0)
        seen = {
            "name": self.name,
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()},
            "body": request.content.read().decode(),
            "client": client_ip(request),
        }
        self.seen.append(seen)
        if request.path == b"/health":
            request.setResponseCode(503 if self.unhealthy else 200)
            return b"OK"
        if request.path in self.hold:
            self.held.append(request)
            arrived, self.arrived = self.arrived, Deferred()
            arrived.callback(request)
            return server.NOT_DONE_YET
        request.setResponseCode(201 if request.method == b"PUT" else 200)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"X-Backend", self.name.encode())
        return json.dumps(seen).encode()

    def release(self, body: bytes = b'{"next_batch": "s1"}') -> None:
        request = self.held.pop(0)
        request.setHeader(b"Content-Type", b"application/json")
        request.write(body)
        request.finish()


def listen(test: unittest.TestCase, root: resource.Resource, x_forwarded: bool = False) -> tuple[str, Any]:
    site = MatrixSite(root, max_json_body=1024, max_upload_body=1024, x_forwarded=x_forwarded, reactor=reactor)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}", port


class _Front(resource.Resource):
    isLeaf = True

    def __init__(self, forwarder: Forwarder, url: str) -> None:
        super().__init__()
        self.forwarder = forwarder
        self.url = url

    def render(self, request: IRequest) -> Any:  # type: ignore[override]
        return self.forwarder.forward(request, self.url)


class ProxyTestBase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.forwarder = Forwarder(reactor, clock=self.clock)
        self.addCleanup(self.forwarder.close)
        # The test's client connects from 127.0.0.2, so the backend can tell it from the proxy.
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=self.pool, bindAddress=("127.0.0.2", 0))

    async def call(
        self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        resp = await treq.request(
            method, url, data=body, headers={k: [v] for k, v in (headers or {}).items()}, agent=self.agent
        )
        content = await resp.content()
        ctype = resp.headers.getRawHeaders("content-type", [""])[0]
        return resp.code, (json.loads(content) if ctype.startswith("application/json") else content), resp.headers


class ProxyTests(ProxyTestBase):
    def front(self, target: str) -> str:
        url, _ = listen(self, _Front(self.forwarder, target))
        return url

    async def _pass_through(self) -> None:
        backend = Backend("b")
        target, _ = listen(self, backend, x_forwarded=True)
        front = self.front(target)
        path = "/_matrix/client/v3/rooms/%21r%3Ax/state/m.room.name/a%2Fb?foo=bar&x=%2F"
        code, body, headers = await self.call(
            "PUT", front + path, b'{"name": "n"}', {"X-Custom": "yes", "Authorization": "Bearer tok", "Content-Type": "application/json"}
        )
        self.assertEqual(code, 201)
        self.assertEqual(headers.getRawHeaders("x-backend"), ["b"])
        self.assertEqual((body["method"], body["uri"], body["body"]), ("PUT", path, '{"name": "n"}'))
        self.assertEqual(body["headers"]["x-custom"], ["yes"])
        self.assertEqual(body["headers"]["authorization"], ["Bearer tok"])
        # The backend, trusting X-Forwarded-For, sees the client's address, not the proxy's.
        self.assertEqual(body["headers"]["x-forwarded-for"], ["127.0.0.2"])
        self.assertEqual(body["client"], "127.0.0.2")
        # GET without a body, a client's own X-Forwarded-For entry kept before ours.
        code, body, _ = await self.call("GET", front + "/_matrix/client/v3/profile/%40a%3Ab", headers={"X-Forwarded-For": "10.9.9.9"})
        self.assertEqual((code, body["method"], body["body"]), (200, "GET", ""))
        self.assertEqual(body["headers"]["x-forwarded-for"], ["10.9.9.9, 127.0.0.2"])
        self.assertEqual(body["client"], "127.0.0.2")

    def test_method_path_headers_body_and_status_pass_through(self) -> Deferred[None]:
        return ensureDeferred(self._pass_through())

    async def _behind_a_proxy(self) -> None:
        # The proxy's own listener trusts X-Forwarded-For (it is behind nginx): the header
        # goes on as it came, naming the real client, not the nginx in front.
        backend = Backend("b")
        target, _ = listen(self, backend, x_forwarded=True)
        front, _ = listen(self, _Front(self.forwarder, target), x_forwarded=True)
        _, body, _ = await self.call("GET", front + "/_matrix/client/v3/x", headers={"X-Forwarded-For": "10.1.1.1"})
        self.assertEqual((body["headers"]["x-forwarded-for"], body["client"]), (["10.1.1.1"], "10.1.1.1"))

    def test_a_trusted_forwarded_for_goes_on_unchanged(self) -> Deferred[None]:
        return ensureDeferred(self._behind_a_proxy())

    async def _dead(self) -> None:
        front = self.front(f"http://127.0.0.1:{free_port()}")
        code, body, _ = await self.call("GET", front + "/_matrix/client/v3/sync")
        self.assertEqual(code, 502)
        self.assertEqual(body["errcode"], "M_UNKNOWN")
        self.assertIn("not reachable", body["error"])

    def test_a_dead_target_answers_502(self) -> Deferred[None]:
        return ensureDeferred(self._dead())

    async def _bug(self) -> None:
        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        self.forwarder.agent.request = broken  # type: ignore[method-assign]
        code, body, _ = await self.call("GET", self.front("http://127.0.0.1:1") + "/_matrix/client/v3/sync")
        self.assertEqual((code, body["errcode"]), (502, "M_UNKNOWN"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_bug_answers_502_not_a_traceback(self) -> Deferred[None]:
        return ensureDeferred(self._bug())

    async def _too_large(self) -> None:
        backend = Backend("b")
        target, _ = listen(self, backend)
        code, body, _ = await self.call("POST", self.front(target) + "/_matrix/client/v3/x", b"x" * 5000)
        self.assertEqual((code, body["errcode"]), (413, "M_TOO_LARGE"))
        self.assertEqual(backend.seen, [])

    def test_a_body_over_the_limit_is_refused_before_forwarding(self) -> Deferred[None]:
        return ensureDeferred(self._too_large())

    async def _long_poll(self) -> None:
        backend = Backend("b")
        backend.hold = {b"/_matrix/client/v3/sync", b"/_matrix/client/v3/slow"}
        target, _ = listen(self, backend)
        front = self.front(target)
        arrived = backend.arrived
        answer = ensureDeferred(self.call("GET", front + "/_matrix/client/v3/sync?timeout=30000"))
        await arrived
        # A 30 s long-poll gets its 30 s on top of the usual deadline: still waiting after 80 s.
        self.clock.advance(DEFAULT_TIMEOUT + 20)
        self.assertFalse(answer.called)
        backend.release()
        code, body, _ = await answer
        self.assertEqual((code, body), (200, {"next_batch": "s1"}))
        # A request that is no long-poll is given up at the deadline: 504, never a hang.
        arrived = backend.arrived
        answer = ensureDeferred(self.call("GET", front + "/_matrix/client/v3/slow"))
        await arrived
        self.clock.advance(DEFAULT_TIMEOUT + 1)
        code, body, _ = await answer
        self.assertEqual((code, body["errcode"]), (504, "M_UNKNOWN"))

    def test_a_long_poll_answer_arrives_and_a_silent_target_times_out(self) -> Deferred[None]:
        return ensureDeferred(self._long_poll())

    def test_deadlines(self) -> None:
        self.assertEqual(deadline_for(b"/_matrix/client/v3/sync"), DEFAULT_TIMEOUT)
        self.assertEqual(deadline_for(b"/_matrix/client/v3/sync?since=s&timeout=30000"), DEFAULT_TIMEOUT + 30)
        self.assertEqual(deadline_for(b"/x?timeout=bad"), DEFAULT_TIMEOUT)
        self.assertEqual(deadline_for(b"/x?timeout=99999999"), DEFAULT_TIMEOUT + 600)


#: one request each rule of the table claims (a new rule needs one here)
EXAMPLES = [
    ("GET", "/_matrix/client/v3/sync?timeout=0"),
    ("GET", "/_matrix/client/r0/sync"),
    ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"),
    ("GET", "/_matrix/client/v3/events?from=s1"),
    ("GET", "/_matrix/client/v3/initialSync"),
]
#: requests no rule claims: they go to main
TO_MAIN = [
    ("PUT", "/_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1"),
    ("POST", "/_matrix/client/v3/sync"),
    ("GET", "/_matrix/client/v3/rooms/%21r%3Ax/messages"),
    ("GET", "/_matrix/federation/v1/version"),
    ("GET", "/_matrix/client/v3/events/%24e"),
    ("GET", "/nothing/here"),
]


class RouterTests(ProxyTestBase):
    def cluster(self, workers: tuple[str, ...] = ("sync1", "sync2")) -> tuple[str, Router, dict[str, Backend]]:
        backends = {"main": Backend("main"), **{w: Backend(w) for w in workers}}
        self.ports = {}
        instances = []
        for name, backend in backends.items():
            url, self.ports[name] = listen(self, backend)
            instances.append(Instance(name, "main" if name == "main" else "sync", url))
        router = Router(instances, self.forwarder, self.clock)
        front, _ = listen(self, router)
        return front, router, backends

    async def _rules(self) -> None:
        front, _, _ = self.cluster()
        claimed = set()
        for method, path in EXAMPLES:
            code, body, _ = await self.call(method, front + path, b"{}" if method == "POST" else None)
            self.assertEqual(code, 200, path)
            self.assertIn(body["name"], ("sync1", "sync2"), (method, path))
            self.assertEqual(body["uri"], path)
            claimed |= {r for r in ROUTES if r.matches(method, path.split("?")[0])}
        self.assertEqual(claimed, set(ROUTES), "every rule of the table has an example here")
        for method, path in TO_MAIN:
            code, body, _ = await self.call(method, front + path, b"{}" if method in ("POST", "PUT") else None)
            self.assertEqual(body["name"], "main", (method, path))

    def test_each_rule_goes_to_its_role_and_the_rest_to_main(self) -> Deferred[None]:
        return ensureDeferred(self._rules())

    async def _sticky(self) -> None:
        front, _, _ = self.cluster()
        chosen: dict[str, set[str]] = {}
        for i in range(12):
            token = f"token-{i}"
            for how in ("header", "query"):
                if how == "header":
                    _, body, _ = await self.call("GET", front + "/_matrix/client/v3/sync", headers={"Authorization": f"Bearer {token}"})
                else:
                    _, body, _ = await self.call("GET", front + f"/_matrix/client/v3/sync?access_token={token}")
                chosen.setdefault(token, set()).add(body["name"])
        self.assertTrue(all(len(names) == 1 for names in chosen.values()), chosen)
        self.assertEqual(set().union(*chosen.values()), {"sync1", "sync2"})

    def test_one_user_sticks_to_one_instance(self) -> Deferred[None]:
        return ensureDeferred(self._sticky())

    async def _no_workers(self) -> None:
        front, _, _ = self.cluster(workers=())
        _, body, _ = await self.call("GET", front + "/_matrix/client/v3/sync")
        self.assertEqual(body["name"], "main")

    def test_a_role_without_instances_goes_to_main(self) -> Deferred[None]:
        return ensureDeferred(self._no_workers())

    async def _health(self) -> None:
        front, router, backends = self.cluster()
        code, body, headers = await self.call("GET", front + "/health")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertTrue(headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        await router.probe_all()
        code, status, _ = await self.call("GET", front + "/_mxserver/cluster/status")
        self.assertEqual(code, 200)
        self.assertEqual(
            [(i["name"], i["role"], i["up"]) for i in status["instances"]],
            [("main", "main", True), ("sync1", "sync", True), ("sync2", "sync", True)],
        )
        # sync2 stops answering its health check: the next probe marks it down, and its users
        # move to sync1.
        token = next(f"t{i}" for i in range(100) if router.instance_for("GET", "/_matrix/client/v3/sync", f"t{i}".encode()).name == "sync2")
        backends["sync2"].unhealthy = True
        await router.probe_all()
        _, status, _ = await self.call("GET", front + "/_mxserver/cluster/status")
        self.assertEqual([i["up"] for i in status["instances"]], [True, True, False])
        _, body, _ = await self.call("GET", front + "/_matrix/client/v3/sync", headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(body["name"], "sync1")

    def test_health_status_and_probes(self) -> Deferred[None]:
        return ensureDeferred(self._health())


class RoleGateTests(ProxyTestBase):
    async def _gate(self) -> None:
        local, main = Backend("local"), Backend("main")
        main_url, _ = listen(self, main)
        front, _ = listen(self, RoleGate("sync", local, main_url, self.forwarder))
        _, body, _ = await self.call("GET", front + "/_matrix/client/v3/sync")
        self.assertEqual(body["name"], "local")
        _, body, _ = await self.call("PUT", front + "/_matrix/client/v3/rooms/%21r%3Ax/send/m.room.message/1", b"{}")
        self.assertEqual(body["name"], "main")
        code, text, _ = await self.call("GET", front + "/health")
        self.assertEqual((code, text, [s["name"] for s in local.seen][-1]), (200, b"OK", "local"))

    def test_what_the_role_does_not_serve_goes_to_main(self) -> Deferred[None]:
        return ensureDeferred(self._gate())


class ClusterInstancesTests(unittest.TestCase):
    def test_a_config_names_main_and_its_workers(self) -> None:
        from mxserver.cluster.router import cluster_instances, main_client_url
        from mxserver.config import ConfigError, load_config_dict

        config = load_config_dict({
            "database": {"backend": "postgres", "dsn": "postgresql://mx@/mx"},
            "listeners": [{"port": 9000, "resources": ["metrics"]}, {"host": "0.0.0.0", "port": 8008, "resources": ["client"]}],
            "workers": {
                "sync1": {"role": "sync", "listeners": [{"port": 9101, "resources": ["metrics"]}, {"host": "::1", "port": 8101, "resources": ["client"]}]},
                "sync2": {"role": "sync", "listeners": [{"port": 8102, "resources": ["metrics"]}]},
            },
        })
        self.assertEqual(main_client_url(config), "http://127.0.0.1:8008")
        self.assertEqual(
            [(i.name, i.role, i.url) for i in cluster_instances(config)],
            [("main", "main", "http://127.0.0.1:8008"), ("sync1", "sync", "http://[::1]:8101")],
        )
        config.listeners = config.listeners[:1]
        with self.assertRaises(ConfigError):
            main_client_url(config)
