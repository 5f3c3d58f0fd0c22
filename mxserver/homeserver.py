"""The Homeserver: builds every component once, wires them, and runs them.

``Homeserver(config, reactor)`` is an ``IService``. Start it (directly, under
twistd, or as a child of an application's service) and it migrates the
database, then opens the configured listeners. ``resource()`` returns a
``twisted.web`` resource serving the Matrix APIs, for embedding in an
existing ``Site``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.web.server import Request

from mxserver import metrics
from mxserver.accounts.auth import Auth
from mxserver.accounts.passwords import PasswordHasher
from mxserver.api.http import build_app, render_error
from mxserver.api.ratelimit import RateLimiter
from mxserver.api.resource import MatrixResource, MatrixSite
from mxserver.config import HomeserverConfig
from mxserver.crypto.keys import key_id, load_or_generate_signing_key
from mxserver.errors import MatrixError
from mxserver.federation.auth import FederationAuth
from mxserver.federation.client import FederationClient
from mxserver.federation.keyring import Keyring
from mxserver.federation.sender import FederationSender
from mxserver.interfaces import ILoginFlow, IModule, IPresence, IStorageBackend, ITyping
from mxserver.module_api import ModuleApi
from mxserver.module_loader import LOGIN, MODULES, PRESENCE, STORAGE, TYPING, construct
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.rooms.room_server import RoomServer
from mxserver.storage.accounts import AccountStore
from mxserver.storage.events import EventStore
from mxserver.storage.migrations import prepare_database
from mxserver.storage.server_keys import ServerKeyStore
from mxserver.storage.state import StateStore
from mxserver.streams import RoomEventStream
from mxserver.sync.notifier import Notifier

log = Logger()


class Homeserver(service.MultiService):
    """One Matrix homeserver: its config, database, components and listeners."""

    def __init__(self, config: HomeserverConfig, reactor: Any = None, clock: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        # Time comes from ``clock`` (the reactor unless a test passes a task.Clock).
        self.clock = clock if clock is not None else reactor
        self.server_name = config.server_name
        self.setName("mxserver")
        self._ready: Deferred[None] | None = None
        self.is_ready = False
        #: set by the twistd plugin: a failed start stops the process
        self.stop_reactor_on_failure = False
        self._listening: list[Any] = []

        os.makedirs(config.data_dir, exist_ok=True)
        self.signing_key = load_or_generate_signing_key(config.signing_key_file)
        self.signing_key_id = key_id(self.signing_key)

        self.storage_backend = construct(STORAGE, config.database.backend, IStorageBackend)
        self.db = self.storage_backend.connect(reactor, config)
        self.module_api = ModuleApi(self)
        self.event_hooks: list[Any] = []

        self.accounts = AccountStore(self.db)
        self.passwords = PasswordHasher(config.password, reactor, self.accounts)
        self.auth = Auth(self.accounts, self.clock)

        self.login_flows = self._load_login_flows()
        typing_name, typing_config = config.module_config(TYPING, "default")
        self.typing = construct(TYPING, typing_name, ITyping, typing_config, self.module_api)
        presence_name, presence_config = config.module_config(PRESENCE, "default")
        self.presence = construct(PRESENCE, presence_name, IPresence, presence_config, self.module_api)
        for entry in config.modules:
            if entry.group == MODULES:
                self.event_hooks.append(construct(MODULES, entry.name, IModule, entry.config, self.module_api))

        rl = config.rate_limits
        self.ratelimit_login = RateLimiter(self.clock, rl.login.per_second, rl.login.burst, rl.enabled)
        self.ratelimit_register = RateLimiter(self.clock, rl.register.per_second, rl.register.burst, rl.enabled)
        self.ratelimit_message = RateLimiter(self.clock, rl.message.per_second, rl.message.burst, rl.enabled)

        fed = config.federation
        self.server_keys = ServerKeyStore(self.db)
        self.federation_client = FederationClient(reactor, self.clock, fed, self.server_name, self.signing_key)
        self.federation_client.setServiceParent(self)  # stopping the server closes its connections
        self.keyring = Keyring(
            self.server_name, self.signing_key, self.server_keys, self.federation_client, self.clock, fed.trusted_key_servers
        )
        self.federation_auth = FederationAuth(self.server_name, self.keyring, self.clock, fed.enabled)
        from mxserver.federation.remote_queries import RemoteQueries

        self.remote_queries = RemoteQueries(self)
        from mxserver.federation.edus import EduRegistry

        #: inbound EDU handlers by type (the /send transaction handler dispatches through it)
        self.federation_edus = EduRegistry()

        self.state_store = StateStore(self.db)
        self.event_store = EventStore(self.db, self.state_store)
        self.room_stream = RoomEventStream()
        self.room_server = RoomServer(self, self.event_store, self.state_store, self.room_stream)
        self.event_serializer = EventSerializer(self.event_store, self.clock)
        self.room_stream.subscribe(self._run_new_event_hooks)
        self.notifier = Notifier(self.clock)
        self.notifier.register_stream("room", lambda: self.room_server.current_position)

        #: awaited in order at start-up, after migrations (e.g. loading stream positions)
        self.start_hooks: list[Any] = []
        self._build_handlers()
        # After the handlers: it follows hs.room_members, and subscribes to the room stream after it.
        self.federation_sender = FederationSender(self)
        self.federation_sender.setServiceParent(self)
        self.start_hooks.append(self.federation_sender.start)
        # Last: waking a long-polling /sync runs it inside this publish, so every other
        # subscriber (membership and room caches) must have seen the events first.
        self.room_stream.subscribe(self._notify_room_events)
        self._apps = self._build_apps()
        self._lag = metrics.ReactorLagMonitor(self.clock)

    # -- construction -------------------------------------------------------------

    def _load_login_flows(self) -> dict[str, Any]:
        """Every login flow named in ``modules`` (group mxserver.login); ``password`` by default."""
        entries = [(m.name, m.config) for m in self.config.modules if m.group == LOGIN]
        if not entries:
            entries = [("password", {})]
        flows = {}
        for name, conf in entries:
            flow = construct(LOGIN, name, ILoginFlow, conf, self.module_api)
            flows[flow.login_type] = flow
        return flows

    def _build_handlers(self) -> None:
        from mxserver.accounts.handlers import build_account_handlers

        build_account_handlers(self)
        from mxserver.room_handlers import build_room_handlers

        build_room_handlers(self)
        from mxserver.federation.membership import build_federation_membership

        build_federation_membership(self)
        from mxserver.room_handlers.history import build_room_event_handlers

        build_room_event_handlers(self)
        from mxserver.sync.user_data import build_user_data_handlers

        build_user_data_handlers(self)
        from mxserver.ephemeral import build_ephemeral_handlers

        build_ephemeral_handlers(self)
        from mxserver.e2ee import build_e2ee_handlers

        build_e2ee_handlers(self)
        from mxserver.federation.edus import build_inbound_edus

        build_inbound_edus(self)
        from mxserver.federation.receiver import build_federation_inbound

        build_federation_inbound(self)
        from mxserver.sync.handler import SyncHandler

        self.sync_handler = SyncHandler(self)
        from mxserver.media import build_media

        build_media(self)
        from mxserver.room_handlers.hierarchy import HierarchyHandler

        self.hierarchy = HierarchyHandler(self)

    def _build_apps(self) -> dict[str, Any]:
        from mxserver.api.client import client_servlets
        from mxserver.api.federation import federation_servlets
        from mxserver.api.media import media_servlets

        return {
            "client": build_app(client_servlets(self)).resource(),
            "federation": build_app(federation_servlets(self)).resource(),
            "media": build_app(media_servlets(self)).resource(),
        }

    def _notify_room_events(self, events: list[Any]) -> None:
        rooms = {e.room_id for e in events}
        # A membership change concerns its target even before they are in the room (invites).
        users = {e.state_key for e in events if e.type == "m.room.member"}
        self.notifier.notify(user_ids=users, room_ids=rooms)

    def _run_new_event_hooks(self, events: list[Any]) -> None:
        for hook in self.event_hooks:
            on_new_event = getattr(hook, "on_new_event", None)
            if on_new_event is None:
                continue
            for event in events:
                try:
                    on_new_event(event)
                except Exception:
                    log.failure("module {hook!r} failed in on_new_event", hook=hook)

    # -- embedding ------------------------------------------------------------------

    def resource(self, apis: tuple[str, ...] = ("client", "federation", "media")) -> MatrixResource:
        """A twisted.web resource serving ``apis``; mount it anywhere in a Site."""
        extra = {}
        if "metrics" in apis:
            extra[b"/metrics"] = metrics.metrics_resource()
        return _ReadyGate(self, {a: self._apps[a] for a in apis if a in self._apps}, extra)

    def when_ready(self) -> Deferred[None]:
        """Fires once the database is migrated and the server serves requests."""
        if self.is_ready:
            return succeed(None)
        if self._ready is None:
            raise RuntimeError("the Homeserver service has not been started")
        d: Deferred[None] = Deferred()

        def relay(result: Any) -> Any:
            if self.is_ready:
                d.callback(None)
            else:
                d.errback(RuntimeError("mxserver failed to start"))
            return result

        self._ready.addBoth(relay)
        return d

    # -- lifecycle --------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._ready = ensureDeferred(self._start())
        self._ready.addErrback(self._start_failed)

    async def _start(self) -> None:
        await self.db.run_with_connection(prepare_database, self.db.dialect)
        await self.room_server.start()
        for hook in self.start_hooks:
            await hook()
        self._lag.start()
        for listener in self.config.listeners:
            self._listening.append(await self._listen(listener))
        self.is_ready = True
        log.info("mxserver {name} ready", name=self.server_name)

    async def _listen(self, listener: Any) -> Any:
        apis = tuple(listener.resources)
        root = self.resource(apis)
        site = MatrixSite(
            root,
            max_json_body=self.config.limits.max_request_size,
            max_upload_body=self.config.media.max_upload_size,
            reactor=self.reactor,
        )
        host = listener.host.replace(":", "\\:")
        if listener.tls:
            desc = (
                f"ssl:port={listener.port}:interface={host}"
                f":certKey={_escape(self.config.tls.certificate_path)}"
                f":privateKey={_escape(self.config.tls.private_key_path)}"
            )
        else:
            desc = f"tcp:port={listener.port}:interface={host}"
        port = await endpoints.serverFromString(self.reactor, desc).listen(site)
        log.info("listening on {host}:{port} for {apis}", host=listener.host, port=port.getHost().port, apis=apis)
        return port

    @property
    def listening_ports(self) -> list[Any]:
        """The IListeningPorts opened for the configured listeners."""
        return list(self._listening)

    def _start_failed(self, failure: Any) -> None:
        log.critical("mxserver cannot start: {reason}", reason=failure.getErrorMessage())
        if IReactorCore.providedBy(self.reactor) and getattr(self, "stop_reactor_on_failure", False):
            self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        if not self.running:
            return succeed(None)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._lag.stop()
        ports, self._listening = self._listening, []
        for port in ports:
            await port.stopListening()
        await super().stopService()
        self.is_ready = False
        self.db.close()


def _escape(path: str | None) -> str:
    return (path or "").replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class _ReadyGate(MatrixResource):
    """A MatrixResource that answers 503 until its Homeserver has finished starting."""

    def __init__(self, hs: Homeserver, apis: dict[str, Any], extra: dict[bytes, Any]) -> None:
        super().__init__(apis, extra)
        self._hs = hs

    def render(self, request: Request) -> Any:  # type: ignore[override]
        if not self._hs.is_ready:
            request.setHeader(b"Retry-After", b"1")
            return render_error(request, MatrixError(503, "M_UNKNOWN", "Server is starting"))
        return super().render(request)


def preflight(config: HomeserverConfig) -> None:
    """Synchronous start-up checks for twistd: data dir, signing key, modules, schema.

    Raises an exception whose message is one clear line; the caller prints it.
    """
    os.makedirs(config.data_dir, exist_ok=True)
    load_or_generate_signing_key(config.signing_key_file)
    backend = construct(STORAGE, config.database.backend, IStorageBackend)
    conn = backend.connect_sync(config)
    try:
        prepare_database(conn, backend.dialect)
    finally:
        conn.close()
