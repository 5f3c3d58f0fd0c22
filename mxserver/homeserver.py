"""The Homeserver: builds every component once, wires them, and runs them.

``Homeserver(config, reactor)`` is an ``IService``. Start it (directly, under
twistd, or as a child of an application's service) and it migrates the
database, then opens the configured listeners. ``resource()`` returns a
``twisted.web`` resource serving the Matrix APIs, for embedding in an
existing ``Site``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
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
from mxserver.streams import EphemeralStreams, Phase, RoomEventStream
from mxserver.sync.notifier import Notifier
from mxserver.sync.sources import SyncSources

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
        #: awaited in this order at start-up, after migrations (e.g. loading stream positions)
        self.start_hooks: list[Callable[[], Awaitable[Any]]] = []

        # The build order. Each section builds its components from those of the sections
        # above it and passes every collaborator explicitly; nothing below this file sees
        # the Homeserver.
        self._build_core()
        self._build_accounts()
        self._build_federation_transport()
        self._build_room_server()
        self._build_federation_rooms()
        self._build_user_data()
        self._build_ephemeral()
        self._build_e2ee()
        self._build_room_handlers()
        self._build_sync()
        self._build_federation_inbound()
        self._build_federation_sender()
        self._build_media()
        # Waking a long-polling /sync runs it inside the publish, so every other subscriber
        # (membership and room caches) must have seen the events first: the NOTIFY phase.
        self.room_stream.subscribe(self._notify_room_events, Phase.NOTIFY)
        self._apps = self._build_apps()
        self._lag = metrics.ReactorLagMonitor(self.clock)

    # -- construction, in build order ---------------------------------------------------

    def _build_core(self) -> None:
        """Signing key, database, the streams and the notifier."""
        config = self.config
        os.makedirs(config.data_dir, exist_ok=True)
        self.signing_key = load_or_generate_signing_key(config.signing_key_file)
        self.signing_key_id = key_id(self.signing_key)
        self.storage_backend = construct(STORAGE, config.database.backend, IStorageBackend)
        self.db = self.storage_backend.connect(self.reactor, config)
        self.room_stream = RoomEventStream()
        self.ephemeral_streams = EphemeralStreams()
        #: what /sync reads, one source per stream (registered in _build_sync); tokens come from it
        self.sync_sources = SyncSources()
        self.notifier = Notifier(self.clock, self.sync_sources)
        for stream in self.ephemeral_streams.all():
            stream.subscribe(self._notify_ephemeral, Phase.NOTIFY)

    def _build_accounts(self) -> None:
        """Accounts, passwords, the access-token check, modules and login flows, rate limits."""
        config = self.config
        self.module_api = ModuleApi(self)
        self.event_hooks: list[Any] = []

        self.accounts = AccountStore(self.db)
        self.passwords = PasswordHasher(config.password, self.reactor, self.accounts)
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

        from mxserver.accounts.handlers import build_account_handlers

        build_account_handlers(self)

    def _build_federation_transport(self) -> None:
        """Outbound requests, server keys, inbound request signatures, remote queries."""
        fed = self.config.federation
        self.server_keys = ServerKeyStore(self.db)
        self.federation_client = FederationClient(self.reactor, self.clock, fed, self.server_name, self.signing_key)
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

    def _build_room_server(self) -> None:
        """The event and state stores and the room server, the only writer of room state."""
        self.state_store = StateStore(self.db)
        self.event_store = EventStore(self.db, self.state_store)
        self.room_server = RoomServer(self, self.event_store, self.state_store, self.room_stream)
        self.start_hooks.append(self.room_server.start)
        self.event_serializer = EventSerializer(self.event_store, self.clock)
        self.room_stream.subscribe(self._run_new_event_hooks)

    def _build_federation_rooms(self) -> None:
        """Rooms over federation: joining remote rooms, backfill, the resident side of membership."""
        from mxserver.federation.membership import build_federation_membership

        build_federation_membership(self)

    def _build_user_data(self) -> None:
        """Account data, push rules, filters (and, for now, to-device)."""
        from mxserver.storage.account_data import AccountDataStore
        from mxserver.storage.filters import FilterStore
        from mxserver.storage.push_rules import PushRulesStore
        from mxserver.storage.stream_positions import PersistedStream
        from mxserver.storage.to_device import ToDeviceStore
        from mxserver.sync.account_data import AccountDataHandler
        from mxserver.sync.filtering import FilterHandler
        from mxserver.sync.push_rules import PushRulesHandler
        from mxserver.sync.to_device import ToDeviceHandler

        # Push rules changes are positions on the account_data stream too (/sync resends the rules).
        account_data_stream = PersistedStream(self.db, "account_data")
        self.push_rules = PushRulesHandler(PushRulesStore(self.db, account_data_stream), self.notifier)
        self.account_data = AccountDataHandler(
            AccountDataStore(self.db, account_data_stream), account_data_stream, self.push_rules, self.notifier
        )
        self.filters = FilterHandler(FilterStore(self.db))
        self.start_hooks.append(account_data_stream.load)

        to_device_stream = PersistedStream(self.db, "to_device")
        self.to_device = ToDeviceHandler(self, ToDeviceStore(self.db, to_device_stream), to_device_stream)
        self.start_hooks.append(to_device_stream.load)

    def _build_ephemeral(self) -> None:
        """Room members cache, typing, receipts, presence, profiles, user directory."""
        from mxserver.ephemeral import build_ephemeral_handlers

        build_ephemeral_handlers(self)

    def _build_e2ee(self) -> None:
        """Device lists, device and one-time keys, cross-signing, key backup, dehydrated devices."""
        from mxserver.e2ee import build_e2ee_handlers

        build_e2ee_handlers(self)

    def _build_room_handlers(self) -> None:
        """Client-facing room handlers: creation, membership, directory, history, upgrades, spaces."""
        from mxserver.room_handlers import build_room_handlers

        build_room_handlers(self)
        from mxserver.room_handlers.history import build_room_event_handlers

        build_room_event_handlers(self)
        from mxserver.room_handlers.hierarchy import HierarchyHandler

        self.hierarchy = HierarchyHandler(self)

    def _build_sync(self) -> None:
        """The sync sources of every stream (tokens and /sync read them) and the /sync handler."""
        from mxserver.storage.sync import SyncStore
        from mxserver.sync import source_adapters as sources
        from mxserver.sync.handler import SyncHandler

        sync_store = SyncStore(self.db)
        self.sync_room_source = sources.RoomStreamSource(self.room_server, sync_store)
        # Before anything reads which rooms changed: the CACHES phase.
        self.room_stream.subscribe(self.sync_room_source.on_room_events, Phase.CACHES)
        self.start_hooks.append(self.sync_room_source.start)
        # TRANSITIONAL: the ignores below are for attributes still attached by the build_* functions
        # of the ephemeral, e2ee and room-handler sections (mypy cannot see them until those are inlined).
        for source in (
            self.sync_room_source,
            sources.TypingSource(self.typing_handler),  # type: ignore[attr-defined]
            sources.ReceiptsSource(self.receipts),  # type: ignore[attr-defined]
            sources.PresenceSource(self.presence_handler),  # type: ignore[attr-defined]
            sources.AccountDataSource(self.account_data),
            sources.ToDeviceSource(self.to_device),
            sources.DeviceListsSource(self.device_lists),  # type: ignore[attr-defined]
        ):
            self.sync_sources.register(source)

        self.sync_handler = SyncHandler(
            store=sync_store,
            events=self.event_store,
            state=self.state_store,
            serializer=self.event_serializer,
            visibility=self.history_visibility,  # type: ignore[attr-defined]
            rooms=self.room_server,
            room_source=self.sync_room_source,
            sources=self.sync_sources,
            notifier=self.notifier,
            read_positions=self.receipts,  # type: ignore[attr-defined]
            on_sync=self.presence_handler.user_synced,  # type: ignore[attr-defined]
            clock=self.clock,
        )

    def _build_federation_inbound(self) -> None:
        """Inbound transactions and EDUs, the federation read endpoints."""
        from mxserver.federation.edus import build_inbound_edus

        build_inbound_edus(self)
        from mxserver.federation.receiver import build_federation_inbound

        build_federation_inbound(self)

    def _build_federation_sender(self) -> None:
        """The outbound sender: per-destination queues fed by the room and ephemeral streams."""
        # It follows hs.room_members, and subscribes to the room stream after it.
        self.federation_sender = FederationSender(self)
        self.federation_sender.setServiceParent(self)
        self.start_hooks.append(self.federation_sender.start)
        # TRANSITIONAL (removed when OutboundEdus subscribes to the streams itself): local
        # ephemeral changes published on the streams reach the federation sender's hooks.
        edus = self.federation_sender.edus
        streams = self.ephemeral_streams
        streams.typing.subscribe(lambda c: edus.typing_changed(c.room_id, c.typing_now, c.refreshed))
        streams.receipts.subscribe(
            lambda c: edus.receipt(c.room_id, c.receipt_type, c.user_id, c.event_id, c.thread_id, c.ts)
        )
        streams.presence.subscribe(lambda c: edus.presence_changed(c.user_id, dict(c.state)))
        streams.to_device.subscribe(
            lambda c: edus.to_device(
                c.sender, c.sender_device, c.event_type, c.txn_id, {u: dict(m) for u, m in c.messages.items()}
            )
        )

    def _build_media(self) -> None:
        """The media repository: storage module, uploads, thumbnails, remote media, previews."""
        from mxserver.media import build_media

        build_media(self)

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

    # -- servlets ---------------------------------------------------------------------------

    def _build_apps(self) -> dict[str, Any]:
        client = [
            *self._account_servlets(),
            *self._room_servlets(),
            *self._user_data_servlets(),
            *self._e2ee_servlets(),
            *self._ephemeral_servlets(),
            *self._sync_servlets(),
            *self._client_media_servlets(),
        ]
        return {
            "client": build_app(client).resource(),
            "federation": build_app(self._federation_servlets()).resource(),
            "media": build_app(self._media_servlets()).resource(),
        }

    def _account_servlets(self) -> list[Any]:
        from mxserver.api.client import account, admin, devices, federation_admin, login, register, versions

        return [
            versions.VersionsServlet(self),
            register.RegisterServlet(self),
            login.LoginServlet(self),
            account.AccountServlet(self),
            devices.DevicesServlet(self),
            admin.AdminRegisterServlet(self),
            federation_admin.FederationAdminServlet(self),
        ]

    def _room_servlets(self) -> list[Any]:
        from mxserver.api.client import directory, hierarchy, membership, room_events, rooms_create

        return [
            room_events.RoomEventsServlet(self),
            rooms_create.CreateRoomServlet(self),
            membership.MembershipServlet(self),
            directory.DirectoryServlet(self),
            hierarchy.HierarchyServlet(self),
        ]

    def _user_data_servlets(self) -> list[Any]:
        from mxserver.api.client import account_data, filters, push_rules

        return [
            account_data.AccountDataServlet(self.auth, self.account_data),
            filters.FilterServlet(self.auth, self.filters),
            push_rules.PushRulesServlet(self.auth, self.push_rules),
        ]

    def _e2ee_servlets(self) -> list[Any]:
        from mxserver.api.client import keys, room_keys, to_device

        return [
            to_device.ToDeviceServlet(self),
            room_keys.RoomKeysServlet(self),
            keys.KeysServlet(self),
            keys.DehydratedDeviceServlet(self),
        ]

    def _ephemeral_servlets(self) -> list[Any]:
        from mxserver.api.client import presence, profile, receipts, typing, user_directory

        return [
            typing.TypingServlet(self),
            receipts.ReceiptsServlet(self),
            presence.PresenceServlet(self),
            profile.ProfileServlet(self),
            user_directory.UserDirectoryServlet(self),
        ]

    def _sync_servlets(self) -> list[Any]:
        from mxserver.api.client import sync

        return [sync.SyncServlet(self.auth, self.sync_handler, self.filters)]

    def _client_media_servlets(self) -> list[Any]:
        from mxserver.api.media import client_media_servlets

        return client_media_servlets(self)

    def _federation_servlets(self) -> list[Any]:
        from mxserver.api.federation import events, hierarchy, keys, membership, query, transactions, user_keys, version
        from mxserver.api.media import federation_media_servlets

        return [
            version.FederationVersionServlet(self),
            membership.FederationMembershipServlet(self),
            keys.KeyServerServlet(self),
            user_keys.UserKeysServlet(self),
            transactions.TransactionServlet(self),
            events.FederationEventsServlet(self),
            query.FederationQueryServlet(self),
            hierarchy.FederationHierarchyServlet(self),
            *federation_media_servlets(self),
        ]

    def _media_servlets(self) -> list[Any]:
        from mxserver.api.media import media_servlets

        return media_servlets(self)

    # -- stream subscribers of the Homeserver itself ------------------------------------------

    def _notify_room_events(self, events: list[Any]) -> None:
        rooms = {e.room_id for e in events}
        # A membership change concerns its target even before they are in the room (invites).
        users = {e.state_key for e in events if e.type == "m.room.member"}
        self.notifier.notify(user_ids=users, room_ids=rooms)

    def _notify_ephemeral(self, change: Any) -> None:
        users, rooms = change.wakes
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
