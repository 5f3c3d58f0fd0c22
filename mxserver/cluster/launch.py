"""``python -m mxserver cluster``: one command that runs a local cluster (issue 19).

From the operator's config F (Postgres only) it writes a derived config into F's data dir
(``cluster.yaml``): main moved to internal loopback ports (one per public listener, the same
resources, ``x_forwarded: true``) and a ``workers:`` map (``sync1``, ``sync2``, … each with one
loopback client listener). It starts main as ``twistd -n mxserver --config DERIVED --worker
main``, the workers once main answers ``/health``, and the router
(:class:`~mxserver.cluster.router.Router`) on F's public listeners once every process is up.
A process that dies is started again after a backoff (1 s, doubling to 30 s; back to 1 s
once it stayed up a minute). SIGINT/SIGTERM stop the router, then the workers, then main.

``--router-only`` fronts a cluster that already runs: F is that cluster's config (main's
``listeners`` and its ``workers:``); the router listens where ``--listen`` says.

Progress lines go to stdout, one per process as it comes up; the processes' own logs go to
stderr.
"""

from __future__ import annotations

import copy
import os
import socket
import sys
import typing
from collections.abc import Callable
from typing import Any

import attrs
import yaml
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxserver.api.resource import MatrixSite
from mxserver.cluster.proxy import Forwarder
from mxserver.cluster.router import Instance, Router, cluster_instances, listener_url, probe
from mxserver.config import WORKER_ROLES, ConfigError, HomeserverConfig, ListenerConfig

log = Logger()

#: the derived config's file name, in the data dir
DERIVED_NAME = "cluster.yaml"
#: restart backoff: first delay, ceiling (seconds), and how long up resets it
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
#: how often a starting process's /health is asked (seconds)
HEALTH_POLL = 0.25
#: how long a process may take to stop after SIGTERM before SIGKILL (seconds)
STOP_GRACE = 20.0


class ClusterError(Exception):
    """The cluster cannot be run as asked; the message says why, in one line."""


def parse_workers(spec: str) -> dict[str, int]:
    """``sync=2[,role=N...]`` as ``{role: N}``; roles must be built (config.WORKER_ROLES)."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        role, sep, count = part.partition("=")
        role = role.strip()
        if not sep or not count.strip().isdigit():
            raise ClusterError(f"--workers {spec}: expected role=N[,role=N]")
        if role not in WORKER_ROLES:
            raise ClusterError(f"--workers: role {role!r} is not built yet (known: {', '.join(WORKER_ROLES)})")
        if role in out:
            raise ClusterError(f"--workers: role {role!r} given twice")
        out[role] = int(count)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the process started on it binds it shortly after)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _absolute_paths(raw: Any, loaded: Any) -> Any:
    """``raw`` (F's YAML) with every path key replaced by the loaded config's resolved value,
    so the derived config, written elsewhere, names the same files."""
    if not attrs.has(type(loaded)) or not isinstance(raw, dict):
        return raw
    out = dict(raw)
    hints = typing.get_type_hints(type(loaded))
    for field in attrs.fields(type(loaded)):
        if field.name not in raw:
            continue
        value = getattr(loaded, field.name)
        if field.metadata.get("path"):
            if isinstance(value, list):
                out[field.name] = [os.path.abspath(v) for v in value]
            elif isinstance(value, str):
                out[field.name] = os.path.abspath(value)
        elif attrs.has(type(value)):
            out[field.name] = _absolute_paths(raw[field.name], value)
        elif isinstance(value, list) and isinstance(raw[field.name], list) and typing.get_origin(hints[field.name]) is list:
            out[field.name] = [_absolute_paths(r, v) for r, v in zip(raw[field.name], value, strict=False)]
    return out


@attrs.define
class Plan:
    """What ``cluster`` runs: the derived config and where each process listens."""

    derived: dict[str, Any]
    #: main's internal listener for each public listener of F, in order: (public, internal)
    main_listeners: list[tuple[ListenerConfig, ListenerConfig]]
    #: worker name -> (role, internal client URL)
    workers: dict[str, tuple[str, str]]


def plan_cluster(raw: dict[str, Any], config: HomeserverConfig, counts: dict[str, int], port: Callable[[], int] = free_port) -> Plan:
    """The derived config of a cluster with ``counts`` workers per role (see the module docstring)."""
    if config.database.backend != "postgres":
        raise ClusterError(
            f"the cluster needs database.backend: postgres (this config uses {config.database.backend}; "
            "SQLite is single-process; python -m mxserver port-db moves a server to Postgres)"
        )
    if not config.listeners:
        raise ClusterError("listeners: the router needs at least one public listener")
    derived = copy.deepcopy(_absolute_paths(raw, config))
    derived["data_dir"] = os.path.abspath(config.data_dir)
    derived.pop("worker", None)
    pairs = []
    for public in config.listeners:
        internal = ListenerConfig(port=port(), host="127.0.0.1", resources=list(public.resources), x_forwarded=True)
        pairs.append((public, internal))
    derived["listeners"] = [_listener_dict(internal) for _, internal in pairs]
    workers: dict[str, tuple[str, str]] = {}
    derived_workers: dict[str, Any] = {}
    for role, count in counts.items():
        for i in range(1, count + 1):
            listener = ListenerConfig(port=port(), host="127.0.0.1", resources=["client"], x_forwarded=True)
            name = f"{role}{i}"
            workers[name] = (role, listener_url(listener))
            derived_workers[name] = {"role": role, "listeners": [_listener_dict(listener)]}
    derived["workers"] = derived_workers
    return Plan(derived, pairs, workers)


def _listener_dict(listener: ListenerConfig) -> dict[str, Any]:
    return {"host": listener.host, "port": listener.port, "resources": list(listener.resources), "x_forwarded": listener.x_forwarded}


def endpoint_description(listener: ListenerConfig, config: HomeserverConfig) -> str:
    """The server endpoint string of a listener, as the homeserver opens it (TLS included)."""
    host = listener.host.replace(":", "\\:")
    if listener.tls:

        def esc(path: str | None) -> str:
            return (path or "").replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")

        return (
            f"ssl:port={listener.port}:interface={host}"
            f":certKey={esc(config.tls.certificate_path)}:privateKey={esc(config.tls.private_key_path)}"
        )
    return f"tcp:port={listener.port}:interface={host}"


# -- the processes ---------------------------------------------------------------------


class _Child(ProcessProtocol):
    def __init__(self, owner: Process) -> None:
        self.owner = owner

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.owner._ended(self, code, sig)


class Process:
    """One supervised mxserver process: started, watched until its /health answers, started
    again (with backoff) when it dies, stopped with SIGTERM."""

    def __init__(
        self,
        name: str,
        role: str,
        url: str,
        argv: list[str],
        reactor: Any,
        forwarder: Forwarder,
        say: Callable[[str], None],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.url = url
        self.argv = argv
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.forwarder = forwarder
        self.say = say
        self.env = env if env is not None else dict(os.environ)
        self.pid: int | None = None
        self.up = False
        self.stopping = False
        self.restarts = 0
        self._transport: Any = None
        self._protocol: _Child | None = None
        self._failures = 0
        self._started_at = 0.0
        self._restart_call: Any = None
        self._first_up: defer.Deferred[None] = defer.Deferred()
        self._ended_waiters: list[defer.Deferred[None]] = []

    def when_up(self) -> defer.Deferred[None]:
        """Fires the first time the process answers /health."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._first_up.called:
            d.callback(None)
        else:
            self._first_up.addCallback(lambda _: d.callback(None))
        return d

    def start(self) -> None:
        self._restart_call = None
        protocol = _Child(self)
        self._protocol = protocol
        self._transport = self.reactor.spawnProcess(
            protocol, self.argv[0], self.argv, env=self.env, childFDs={0: "w", 1: 2, 2: 2}
        )
        self.pid = self._transport.pid
        self._started_at = self.clock.seconds()
        defer.ensureDeferred(self._watch(protocol))

    async def _watch(self, protocol: _Child) -> None:
        """Ask /health until it answers 200 (or this run of the process ends)."""
        while self._protocol is protocol and not self.stopping:
            if await probe(self.forwarder.agent, self.clock, self.url, timeout=2.0):
                if self._protocol is protocol and not self.stopping:
                    self.up = True
                    self.say(f"{self.name} ({self.role}) up on {self.url} (pid {self.pid})")
                    if not self._first_up.called:
                        self._first_up.callback(None)
                return
            d: defer.Deferred[None] = defer.Deferred()
            self.clock.callLater(HEALTH_POLL, d.callback, None)
            await d

    def _ended(self, protocol: _Child, code: int | None, sig: int | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._transport = None
        self.up = False
        how = f"signal {sig}" if sig else f"code {code}"
        if self.stopping:
            self.say(f"{self.name} (pid {self.pid}) stopped ({how})")
            waiters, self._ended_waiters = self._ended_waiters, []
            for d in waiters:
                d.callback(None)
            return
        if self.clock.seconds() - self._started_at >= STABLE_AFTER:
            self._failures = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**self._failures)
        self._failures += 1
        self.restarts += 1
        self.say(f"{self.name} (pid {self.pid}) exited ({how}); restarting in {delay:g} s")
        self._restart_call = self.clock.callLater(delay, self.start)

    def stop(self) -> defer.Deferred[None]:
        """SIGTERM (SIGKILL after :data:`STOP_GRACE` s); fires once the process has ended."""
        self.stopping = True
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        if self._transport is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ended_waiters.append(d)
        transport = self._transport
        transport.signalProcess("TERM")

        def kill() -> None:
            if self._transport is transport:
                transport.signalProcess("KILL")

        timer = self.clock.callLater(STOP_GRACE, kill)

        def ended(result: None) -> None:
            if timer.active():
                timer.cancel()

        d.addCallback(ended)
        return d


def twistd_argv(config_path: str, name: str) -> list[str]:
    """The command of one process: ``twistd -n --pidfile= mxserver --config F --worker NAME``,
    twistd of this interpreter (the script beside it, else its module run directly)."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.access(twistd, os.X_OK):
        start = [twistd]
    else:
        start = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return [*start, "-n", "--pidfile=", "mxserver", "--config", config_path, "--worker", name]


class Cluster:
    """Runs the processes of a :class:`Plan` and the router in front of them."""

    def __init__(
        self,
        reactor: Any,
        config: HomeserverConfig,
        plan: Plan | None,
        derived_path: str | None,
        routers: list[tuple[ListenerConfig, Router]],
        say: Callable[[str], None],
        forwarder: Forwarder,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.plan = plan
        self.derived_path = derived_path
        self.routers = routers
        self.say = say
        self.forwarder = forwarder
        self.processes: list[Process] = []
        self._ports: list[Any] = []

    async def start(self) -> None:
        if self.plan is not None and self.derived_path is not None:
            main = Process(
                "main", "main", listener_url(self.plan.main_listeners[0][1]), twistd_argv(self.derived_path, "main"),
                self.reactor, self.forwarder, self.say,
            )
            self.processes.append(main)
            main.start()
            self.say(f"starting main (pid {main.pid}) on {main.url}")
            await main.when_up()
            for name, (role, url) in self.plan.workers.items():
                worker = Process(name, role, url, twistd_argv(self.derived_path, name), self.reactor, self.forwarder, self.say)
                self.processes.append(worker)
                worker.start()
                self.say(f"starting {name} ({role}, pid {worker.pid}) on {url}")
            await defer.gatherResults([p.when_up() for p in self.processes[1:]])
        for listener, router in self.routers:
            # Behind a reverse proxy of its own (x_forwarded), the router passes its
            # X-Forwarded-For on; else it adds its client's address.
            site = MatrixSite(
                router,
                max_json_body=self.config.limits.max_request_size,
                max_upload_body=self.config.media.max_upload_size,
                x_forwarded=listener.x_forwarded,
                reactor=self.reactor,
            )
            description = endpoint_description(listener, self.config)
            port = await endpoints.serverFromString(self.reactor, description).listen(site)
            self._ports.append(port)
            router.start_probing()
            address = port.getHost()
            self.say(f"router listening on {address.host}:{address.port}")
        self.say("cluster ready")

    async def stop(self) -> None:
        """The router first (no new requests), then the workers, then main."""
        self.say("stopping")
        for _, router in self.routers:
            router.stop_probing()
        ports, self._ports = self._ports, []
        for port in ports:
            await port.stopListening()
        workers = [p for p in self.processes if p.name != "main"]
        await defer.gatherResults([p.stop() for p in workers])
        for p in self.processes:
            if p.name == "main":
                await p.stop()
        await self.forwarder.close()
        self.say("stopped")


def build(
    reactor: Any,
    config_path: str,
    counts: dict[str, int] | None,
    router_only: bool,
    listen: list[ListenerConfig],
    say: Callable[[str], None],
) -> Cluster:
    """The :class:`Cluster` the command line asks for (writes the derived config)."""
    from mxserver.config import load_config

    config = load_config(config_path)
    forwarder = Forwarder(reactor)
    if router_only:
        if config.database.backend != "postgres":
            raise ClusterError(f"the cluster needs database.backend: postgres (this config uses {config.database.backend})")
        if not listen:
            raise ClusterError("--router-only needs --listen HOST:PORT (where the router listens)")
        router = Router(cluster_instances(config), forwarder, reactor)
        routers = [(listener, router) for listener in listen]
        return Cluster(reactor, config, None, None, routers, say, forwarder)
    with open(config_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    plan = plan_cluster(raw, config, counts or {})
    os.makedirs(config.data_dir, exist_ok=True)
    derived_path = os.path.join(os.path.abspath(config.data_dir), DERIVED_NAME)
    with open(derived_path, "w", encoding="utf-8") as f:
        f.write("# Written by python -m mxserver cluster from " + os.path.abspath(config_path) + "; do not edit.\n")
        yaml.safe_dump(plan.derived, f, sort_keys=False)
    # The derived config must load as every process will load it.
    try:
        load_config(derived_path)
    except ConfigError as e:
        raise ClusterError(f"the derived config {derived_path} is invalid: {e}") from None
    routers = []
    for public, internal in plan.main_listeners:
        instances = [Instance("main", "main", listener_url(internal))]
        if "client" in public.resources:
            instances += [Instance(name, role, url) for name, (role, url) in plan.workers.items()]
        routers.append((public, Router(instances, forwarder, reactor)))
    return Cluster(reactor, config, plan, derived_path, routers, say, forwarder)


def run(config_path: str, counts: dict[str, int] | None, router_only: bool, listen: list[ListenerConfig]) -> int:
    """Run the cluster until SIGINT/SIGTERM; the exit status."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from mxserver.logsetup import make_observer

    def say(line: str) -> None:
        sys.stdout.write(f"cluster: {line}\n")
        sys.stdout.flush()

    cluster = build(reactor, config_path, counts, router_only, listen, say)
    globalLogBeginner.beginLoggingTo([make_observer(cluster.config.log)], redirectStandardIO=False)
    status = [0]

    def failed(failure: Failure) -> None:
        say(f"cannot start: {failure.getErrorMessage()}")
        status[0] = 1
        reactor.stop()

    def started() -> None:
        defer.ensureDeferred(cluster.start()).addErrback(failed)

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(cluster.stop()))
    # SIGTERM and SIGINT stop the reactor (Twisted's handlers), which runs cluster.stop first.
    reactor.run()
    return status[0]

