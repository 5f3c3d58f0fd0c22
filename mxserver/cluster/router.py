"""The router in front of a cluster (issue 19): each request to the process of its role.

:class:`Router` asks the routing table (:func:`~mxserver.cluster.routes.role_for`) which role
serves a request, picks one instance of that role for the requester
(:func:`~mxserver.cluster.routes.pick_instance`, keyed by the access token) among those
whose last health probe answered, and forwards the request there
(:class:`~mxserver.cluster.proxy.Forwarder`). ``main`` serves what no rule claims, and a
role without instances.

The router answers two paths itself: ``GET /health`` (``OK`` once it listens) and
``GET /_mxserver/cluster/status`` (each instance, its role and whether its last probe of
``/health`` answered 200; probes run every :data:`PROBE_INTERVAL` seconds on the clock).

:class:`RoleGate` is the other direction, for a worker's own listeners: what the table gives
the worker's role is served locally, the rest goes to main.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.client import readBody
from twisted.web.iweb import IRequest

from mxserver.cluster.proxy import Forwarder
from mxserver.cluster.routes import DEFAULT_ROLE, pick_instance, role_for
from mxserver.config import ConfigError, HomeserverConfig, ListenerConfig

log = Logger()

#: seconds between two health probes of every instance
PROBE_INTERVAL = 5.0
#: seconds a probe may take before the instance counts as down
PROBE_TIMEOUT = 3.0

HEALTH_PATH = b"/health"
STATUS_PATH = b"/_mxserver/cluster/status"


@attrs.define
class Instance:
    """One process of the cluster as the router sees it."""

    name: str
    role: str
    #: where its client listener is, ``http://host:port``
    url: str
    #: whether its last health probe answered 200 (instances count as up until probed)
    up: bool = True
    #: the clock's time of the last probe (None: not probed yet)
    last_probe: float | None = None


def access_token(request: IRequest) -> bytes | None:
    """The request's access token: ``Authorization: Bearer``, else ``?access_token=``
    (client-server-api §Using access tokens); None without one."""
    header = request.getHeader(b"authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    values = (request.args or {}).get(b"access_token")
    return values[0] if values else None


def _text(request: IRequest, code: int, text: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return text


class Router(resource.Resource):
    """Forwards each request to an instance of its role (see the module docstring)."""

    isLeaf = True

    def __init__(self, instances: Sequence[Instance], forwarder: Forwarder, clock: IReactorTime) -> None:
        super().__init__()
        if not any(i.role == DEFAULT_ROLE for i in instances):
            raise ValueError("a cluster needs its main process")
        self.instances = list(instances)
        self.forwarder = forwarder
        self.clock = clock
        self._by_name = {i.name: i for i in self.instances}
        self._roles: dict[str, list[Instance]] = {}
        for i in self.instances:
            self._roles.setdefault(i.role, []).append(i)
        self._probes = LoopingCall(self.probe_all)
        self._probes.clock = clock

    # -- choosing --------------------------------------------------------------------

    def instance_for(self, method: str, path: str, token: bytes | None) -> Instance:
        """The instance that serves ``method path`` (raw path) for the holder of ``token``."""
        role = role_for(method, path)
        candidates = self._roles.get(role) or self._roles[DEFAULT_ROLE]
        # Stick to the instances that answer; if none does, try the table's choice anyway.
        live = [i for i in candidates if i.up] or candidates
        return self._by_name[pick_instance([i.name for i in live], token)]

    # -- twisted.web -----------------------------------------------------------------

    def render(self, request: server.Request) -> Any:  # type: ignore[override]
        path = request.path
        if path == HEALTH_PATH and request.method in (b"GET", b"HEAD"):
            return _text(request, 200, b"OK")
        if path == STATUS_PATH and request.method == b"GET":
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Cache-Control", b"no-store")
            return json.dumps(self.status()).encode()
        target = self.instance_for(request.method.decode("latin-1"), path.decode("latin-1"), access_token(request))
        return self.forwarder.forward(request, target.url)

    # -- health ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``/_mxserver/cluster/status`` answers."""
        return {
            "instances": [
                {
                    "name": i.name,
                    "role": i.role,
                    "url": i.url,
                    "up": i.up,
                    "last_probe_ts": None if i.last_probe is None else int(i.last_probe * 1000),
                }
                for i in self.instances
            ]
        }

    def start_probing(self, interval: float = PROBE_INTERVAL) -> None:
        self._probes.start(interval, now=True).addErrback(
            lambda f: log.failure("health probes stopped", failure=f)
        )

    def stop_probing(self) -> None:
        if self._probes.running:
            self._probes.stop()

    def probe_all(self) -> defer.Deferred[Any]:
        """Probe every instance's ``/health`` once (what the clock runs)."""
        return defer.gatherResults([defer.ensureDeferred(self._probe(i)) for i in self.instances], consumeErrors=True)

    async def _probe(self, instance: Instance) -> None:
        up = await probe(self.forwarder.agent, self.clock, instance.url)
        if up != instance.up:
            log.info("{name} ({role}) is {state}", name=instance.name, role=instance.role, state="up" if up else "down")
        instance.up = up
        instance.last_probe = self.clock.seconds()


async def probe(agent: Any, clock: IReactorTime, url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``url``'s ``/health`` answers 200 within ``timeout`` seconds."""
    d = agent.request(b"GET", url.rstrip("/").encode() + HEALTH_PATH)
    timer = clock.callLater(timeout, d.cancel)
    try:
        response = await d
        await readBody(response)
        return bool(response.code == 200)
    except Exception:
        return False
    finally:
        if timer.active():
            timer.cancel()


class RoleGate(resource.Resource):
    """A worker's root: requests the routing table gives ``role`` are served by ``local``;
    every other one is forwarded to main (``main_url``), which can serve everything.

    ``/health`` is always the worker's own.
    """

    isLeaf = True

    def __init__(self, role: str, local: resource.Resource, main_url: str, forwarder: Forwarder) -> None:
        super().__init__()
        self.role = role
        self.local = local
        self.main_url = main_url
        self.forwarder = forwarder

    def render(self, request: server.Request) -> Any:  # type: ignore[override]
        path = request.path
        if path == HEALTH_PATH or role_for(request.method.decode("latin-1"), path.decode("latin-1")) == self.role:
            return self.local.render(request)
        return self.forwarder.forward(request, self.main_url)


def listener_url(listener: ListenerConfig) -> str:
    """``http://host:port`` of a listener, as another process on this machine reaches it."""
    host = listener.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{listener.port}"


def main_client_url(config: HomeserverConfig) -> str:
    """Where main serves the client API (its first ``client`` listener): where a worker sends
    what its role does not serve (:class:`RoleGate`)."""
    for listener in config.listeners:
        if "client" in listener.resources and not listener.tls:
            return listener_url(listener)
    raise ConfigError("listeners: main has no plain-HTTP client listener for the workers to forward to")


def cluster_instances(config: HomeserverConfig) -> list[Instance]:
    """A router's view of the cluster a config describes: main (its first client listener)
    and each worker with a client listener (its first one)."""
    instances = [Instance("main", DEFAULT_ROLE, main_client_url(config))]
    for name, entry in config.workers.items():
        for listener in entry.listeners:
            if "client" in listener.resources and not listener.tls:
                instances.append(Instance(name, entry.role, listener_url(listener)))
                break
    return instances
