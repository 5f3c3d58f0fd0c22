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
from mxserver.accounts.account import AccountHandler
from mxserver.accounts.auth import Auth
from mxserver.accounts.devices import DeviceHandler, DeviceHooks
from mxserver.accounts.login import LoginHandler
from mxserver.accounts.passwords import PasswordHasher
from mxserver.accounts.protocols import LoginFlow
from mxserver.accounts.registration import RegistrationHandler, UserRegistrar
from mxserver.accounts.shared_secret import SharedSecretRegistration
from mxserver.accounts.uia import UserInteractiveAuth
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
from mxserver.interfaces import ILoginFlow, IMediaStorage, IModule, IPresence, IStorageBackend, ITyping
from mxserver.module_api import EventHooks, ModuleApi
from mxserver.module_loader import LOGIN, MEDIA_STORAGE, MODULES, PRESENCE, STORAGE, TYPING, construct
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.rooms.room_server import RoomServer
from mxserver.storage.accounts import AccountStore
from mxserver.storage.events import EventStore
from mxserver.storage.migrations import prepare_database
from mxserver.storage.server_keys import ServerKeyStore
from mxserver.storage.state import StateStore
from mxserver.streams import EphemeralStreams, Phase, RoomEventStream
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
        # Removing or renaming a device (accounts) reaches the areas built after accounts, in
        # this order: the device's to-device queue goes, then its keys (and other servers hear).
        # (The ignores go once _build_user_data and _build_e2ee set these attributes themselves.)
        self.device_hooks.on_removed(self.to_device.delete_device_queues)  # type: ignore[attr-defined]
        self.device_hooks.on_removed(self.device_lists.devices_removed)  # type: ignore[attr-defined]
        self.device_hooks.on_changed(self.device_lists.device_changed)  # type: ignore[attr-defined]
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
        self.notifier = Notifier(self.clock)
        for stream in self.ephemeral_streams.all():
            stream.subscribe(self._notify_ephemeral, Phase.NOTIFY)

    def _build_accounts(self) -> None:
        """Accounts, passwords, the access-token check, modules and login flows, rate limits."""
        config = self.config
        self.accounts = AccountStore(self.db)
        self.passwords = PasswordHasher(config.password, self.reactor, self.accounts)
        self.auth = Auth(self.accounts, self.clock)

        #: module objects hooked into the event flow; the room server and _run_new_event_hooks read it
        self.event_hooks = EventHooks()
        self.module_api = ModuleApi(self.server_name, self.clock, self.passwords, self.event_hooks)
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

        self.uia = UserInteractiveAuth(self.clock, self.login_flows, config.registration, self.ratelimit_login)
        #: to-device queues and device keys are built later: __init__ subscribes them here
        self.device_hooks = DeviceHooks()
        self.devices = DeviceHandler(self.accounts, self.auth, self.uia, self.device_hooks, self.clock)
        self.registrar = UserRegistrar(self.server_name, config.password, self.accounts, self.passwords, self.clock)
        self.registration = RegistrationHandler(
            config.registration,
            config.password,
            server_name=self.server_name,
            store=self.accounts,
            passwords=self.passwords,
            registrar=self.registrar,
            uia=self.uia,
            devices=self.devices,
            ratelimit_register=self.ratelimit_register,
            clock=self.clock,
        )
        self.login = LoginHandler(
            self.accounts,
            self.login_flows,
            server_name=self.server_name,
            well_known=config.well_known,
            auth=self.auth,
            uia=self.uia,
            devices=self.devices,
            device_hooks=self.device_hooks,
            ratelimit_login=self.ratelimit_login,
            clock=self.clock,
        )
        self.account = AccountHandler(
            self.accounts, config.password, self.passwords, self.auth, self.uia, self.device_hooks
        )
        self.shared_secret_registration = SharedSecretRegistration(
            config.registration, self.server_name, self.registrar, self.devices, self.clock
        )

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
        self.room_server = RoomServer(
            self.event_store,
            self.state_store,
            self.room_stream,
            clock=self.clock,
            server_name=self.server_name,
            signing_key=self.signing_key,
            event_hooks=self.event_hooks,
        )
        self.start_hooks.append(self.room_server.start)
        self.event_serializer = EventSerializer(self.event_store, self.clock)
        self.room_stream.subscribe(self._run_new_event_hooks)
        self.notifier.register_stream("room", lambda: self.room_server.current_position)

    def _build_federation_rooms(self) -> None:
        """Rooms over federation: the servers in each room, filling gaps in a room's DAG, joining
        remote rooms, backfill, the resident side of membership."""
        from mxserver.federation.backfill import Backfiller
        from mxserver.federation.destinations import RoomServers
        from mxserver.federation.membership import FederationMembershipHandler
        from mxserver.federation.missing import GapFiller
        from mxserver.federation.remote_rooms import RemoteRooms
        from mxserver.storage.backfill import BackfillStore

        fed = self.config.federation
        # The servers in a room derive from the room-members cache, which _build_ephemeral builds
        # later. Nothing asks for them before start-up, so the cache is looked up when asked;
        # once RoomMembers (it needs only its store) is built in an earlier section, pass
        # self.room_members.members instead of the lambda.
        self.room_servers = RoomServers(
            lambda room_id: self.room_members.members(room_id)
        )
        self.room_stream.subscribe(self.room_servers.on_room_events, Phase.CACHES)
        self.federation_gaps = GapFiller(
            self.clock, self.room_server, self.event_store, self.state_store, self.federation_client, self.keyring
        )
        self.remote_rooms = RemoteRooms(
            self.server_name,
            self.signing_key,
            self.clock,
            self.room_server,
            self.event_store,
            self.federation_client,
            self.keyring,
            self.room_servers,
            self.federation_gaps,
        )
        # A join over federation replaces the room's state without a member event per change on
        # the room stream (the room-members cache follows it too: see _build_federation_sender).
        self.remote_rooms.joined_state.subscribe(lambda c: self.room_servers.invalidate(c.room_id), Phase.CACHES)
        self.backfiller = Backfiller(
            self.server_name,
            self.clock,
            fed,
            self.room_server,
            self.event_store,
            self.state_store,
            BackfillStore(self.db, self.event_store, self.state_store),
            self.federation_client,
            self.keyring,
            self.room_servers,
        )
        # Other servers' joins, leaves and knocks it accepts go on to the room's other servers:
        # its `accepted` stream is wired to the federation sender in _build_federation_sender.
        self.federation_membership = FederationMembershipHandler(
            self.server_name,
            self.signing_key,
            self.room_server,
            self.event_store,
            self.state_store,
            self.accounts,
            self.keyring,
            self.remote_rooms,
        )

    def _build_user_data(self) -> None:
        """Account data, push rules, filters (and, for now, to-device)."""
        from mxserver.sync.user_data import build_user_data_handlers

        build_user_data_handlers(self)

    def _build_ephemeral(self) -> None:
        """Room members cache, typing, receipts, presence, profiles, user directory."""
        from mxserver.ephemeral import EphemeralTimers
        from mxserver.ephemeral.presence import PresenceHandler
        from mxserver.ephemeral.profiles import ProfileHandler
        from mxserver.ephemeral.receipts import ReceiptsHandler
        from mxserver.ephemeral.room_members import RoomMembers
        from mxserver.ephemeral.typing import TypingHandler
        from mxserver.ephemeral.user_directory import UserDirectory
        from mxserver.storage.profiles import ProfileStore
        from mxserver.storage.receipts import ReceiptStore
        from mxserver.storage.room_members import RoomMembersStore
        from mxserver.storage.stream_positions import PersistedStream
        from mxserver.storage.user_directory import UserDirectoryStore

        streams = self.ephemeral_streams
        # Who is joined where, in memory: a cache of the room stream, so it must see every
        # batch before any reader of the stream asks it something.
        self.room_members = RoomMembers(RoomMembersStore(self.db))
        self.room_stream.subscribe(self.room_members.on_room_events, Phase.CACHES)

        self.typing_handler = TypingHandler(self.typing, self.room_server, streams.typing)
        self.room_stream.subscribe(self.typing_handler.on_room_events)  # leaving stops typing
        self.notifier.register_stream("typing", lambda: self.typing_handler.current_position)

        receipts_position = PersistedStream(self.db, "receipts")
        self.receipts = ReceiptsHandler(
            ReceiptStore(self.db, receipts_position),
            receipts_position,
            self.room_server,
            self.event_store,
            # (ignore: attached by build_user_data_handlers until _build_user_data builds it here)
            self.account_data,  # type: ignore[attr-defined]
            self.clock,
            streams.receipts,
        )
        self.notifier.register_stream("receipts", lambda: self.receipts.current_position)
        self.start_hooks.append(self.receipts.start)

        profile_store = ProfileStore(self.db)
        self.presence_handler = PresenceHandler(
            self.presence, self.config.presence, self.room_members, profile_store, self.clock, streams.presence
        )
        self.notifier.register_stream("presence", lambda: self.presence_handler.current_position)

        self.user_directory = UserDirectory(
            self.server_name, UserDirectoryStore(self.db), profile_store, self.room_members
        )
        self.room_stream.subscribe(self.user_directory.on_room_events)
        self.room_members.subscribe_memberships(self.user_directory.membership_changed)

        self.profiles = ProfileHandler(
            self.server_name,
            profile_store,
            self.room_server,
            self.room_members,
            self.remote_queries,
            self.presence_handler,
            self.user_directory,
        )
        # Nothing stays scheduled on the reactor after the Homeserver stops.
        EphemeralTimers(self.typing_handler, self.presence_handler).setServiceParent(self)

    def _build_e2ee(self) -> None:
        """Device lists, device and one-time keys, cross-signing, key backup, dehydrated devices."""
        from mxserver.e2ee import build_e2ee_handlers

        build_e2ee_handlers(self)

    def _build_room_handlers(self) -> None:
        """Client-facing room handlers: creation, membership, directory, history, upgrades, spaces.

        In this order: the directory (aliases), membership (resolves aliases through the
        directory), creation and upgrades (both use membership and the directory), sending
        (checks canonical aliases with the directory), reading history, the space hierarchy.
        """
        from mxserver.room_handlers.creation import RoomCreationHandler
        from mxserver.room_handlers.directory import DirectoryHandler
        from mxserver.room_handlers.hierarchy import HierarchyHandler, RemoteHierarchy
        from mxserver.room_handlers.history import HistoryHandler
        from mxserver.room_handlers.membership import MembershipHandler
        from mxserver.room_handlers.messages import MessageHandler
        from mxserver.room_handlers.upgrade import RoomUpgradeHandler
        from mxserver.rooms.visibility import HistoryVisibility
        from mxserver.storage.directory import DirectoryStore
        from mxserver.storage.history import HistoryStore
        from mxserver.storage.memberships import MembershipStore

        rooms, server_name = self.room_server, self.server_name
        remote_rooms = self.remote_rooms
        self.directory_store = DirectoryStore(self.db)
        self.membership_store = MembershipStore(self.db)
        self.history_store = HistoryStore(self.db, self.event_store)

        self.directory = DirectoryHandler(
            self.directory_store,
            self.membership_store,
            rooms,
            self.accounts,
            remote_rooms,
            self.remote_queries,
            self.config.room_directory,
            self.clock,
            server_name,
        )
        self.room_membership = MembershipHandler(
            rooms,
            self.accounts,
            self.membership_store,
            self.directory,
            remote_rooms,
            self.room_servers,
            server_name,
        )
        self.room_creation = RoomCreationHandler(
            rooms,
            self.accounts,
            self.room_membership,
            self.directory,
            remote_rooms,
            self.config.room_directory,
            self.config.default_room_version,
            server_name,
        )
        self.room_upgrade = RoomUpgradeHandler(rooms, self.room_membership, self.directory)
        self.room_messages = MessageHandler(rooms, self.event_store, self.ratelimit_message, self.directory)
        self.history_visibility = HistoryVisibility(rooms, self.event_store, self.state_store, self.history_store)
        self.room_history = HistoryHandler(
            rooms,
            self.event_store,
            self.state_store,
            self.history_store,
            self.history_visibility,
            self.event_serializer,
            self.backfiller,
        )
        self.hierarchy = HierarchyHandler(
            rooms,
            self.membership_store,
            self.room_servers,
            RemoteHierarchy(self.federation_client, self.clock, server_name),
            self.clock,
            server_name,
        )

    def _build_sync(self) -> None:
        """The /sync handler over the registered sync sources."""
        from mxserver.sync.handler import SyncHandler

        self.sync_handler = SyncHandler(self)

    def _build_federation_inbound(self) -> None:
        """Inbound transactions and EDUs, the federation read endpoints."""
        from mxserver.federation.edus import build_inbound_edus

        build_inbound_edus(self)
        from mxserver.federation.receiver import build_federation_inbound

        build_federation_inbound(self)

    def _build_federation_sender(self) -> None:
        """The outbound sender: per-destination queues fed by the room and ephemeral streams."""
        from mxserver.federation.outbound_edus import OutboundEdus
        from mxserver.storage.federation_sender import FederationSenderStore

        fed = self.config.federation
        room_members = self.room_members
        # The room-members cache (built in _build_ephemeral, after _build_federation_rooms) follows
        # the state a join over federation adopts, like the room servers do.
        self.remote_rooms.joined_state.subscribe(lambda c: room_members.state_replaced(c.room_id, c.joined), Phase.CACHES)

        sender = self.federation_sender = FederationSender(
            self.server_name,
            self.clock,
            fed,
            FederationSenderStore(self.db),
            self.room_servers,
            self.room_server,
            self.event_store,
            self.federation_client,
        )
        sender.setServiceParent(self)
        self.start_hooks.append(sender.start)
        if fed.enabled:
            # Our new events go to the servers in their rooms (READERS: after the member caches).
            self.room_stream.subscribe(sender.on_room_events, Phase.READERS)
            # A server that sends us a signed request is up: stop backing off from it.
            self.federation_auth.on_authenticated.append(sender.destination_is_up)
        # The resident server sends other servers' joins, leaves and knocks on to the room.
        self.federation_membership.accepted.subscribe(lambda m: sender.send_pdu(m.event, exclude=[m.origin]))
        # Typing, receipts, presence and to-device of our users, as EDUs (READERS phase).
        self.outbound_edus = OutboundEdus(self.server_name, sender, room_members)
        self.outbound_edus.subscribe(self.ephemeral_streams)
        # TRANSITIONAL: for the to-device writer (sync/to_device.py), which still calls
        # hs.federation_sender.edus rather than publish ToDeviceSent; delete with
        # FederationSender.edus once it publishes.
        sender.edus = self.outbound_edus

    def _build_media(self) -> None:
        """The media repository: storage module, uploads, thumbnails, remote media, previews."""
        from mxserver.media.preview import SafeFetcher, UrlPreviewer
        from mxserver.media.remote import RemoteMediaFetcher
        from mxserver.media.repository import MediaRepository
        from mxserver.media.thumbnails import Thumbnails
        from mxserver.storage.media import MediaStore

        config = self.config
        name, module_config = config.module_config(MEDIA_STORAGE, "file")
        storage_config = dict(module_config)
        if name == "file":
            storage_config.setdefault("path", config.media_path)
        storage = construct(MEDIA_STORAGE, name, IMediaStorage, storage_config, self.module_api)
        self.media_store = MediaStore(self.db)
        thumbnails = Thumbnails(self.server_name, config.media, self.media_store, storage)
        fetcher = SafeFetcher(self.reactor, self.clock, self.federation_client.ip_filter, config.media.url_preview)
        self.remote_media = RemoteMediaFetcher(
            config.media, self.clock, self.media_store, storage, thumbnails, self.federation_client, fetcher
        )
        self.media_repository = MediaRepository(
            self.server_name, config.media, self.clock, self.media_store, storage, thumbnails, self.remote_media
        )
        self.media_repository.setServiceParent(self)
        self.url_previewer = UrlPreviewer(self.media_repository, fetcher, config.media.url_preview)

    def _load_login_flows(self) -> dict[str, LoginFlow]:
        """Every login flow named in ``modules`` (group mxserver.login); ``password`` by default."""
        entries = [(m.name, m.config) for m in self.config.modules if m.group == LOGIN]
        if not entries:
            entries = [("password", {})]
        flows: dict[str, LoginFlow] = {}
        for name, conf in entries:
            flow = construct(LOGIN, name, ILoginFlow, conf, self.module_api)
            flows[flow.login_type] = flow
        return flows

    # -- servlets ---------------------------------------------------------------------------

    def servlets(self, api: str) -> list[Any]:
        """The servlets of one API (``client``, ``federation`` or ``media``), e.g. to mount them elsewhere."""
        if api == "federation":
            return self._federation_servlets()
        if api == "media":
            return self._media_servlets()
        return [
            *self._account_servlets(),
            *self._room_servlets(),
            *self._user_data_servlets(),
            *self._e2ee_servlets(),
            *self._ephemeral_servlets(),
            *self._sync_servlets(),
            *self._client_media_servlets(),
        ]

    def _build_apps(self) -> dict[str, Any]:
        return {api: build_app(self.servlets(api)).resource() for api in ("client", "federation", "media")}

    def _account_servlets(self) -> list[Any]:
        from mxserver.api.client import account, admin, devices, federation_admin, login, register, versions

        return [
            versions.VersionsServlet(
                self.auth,
                self.login_flows,
                self.config.default_room_version,
                self.config.well_known.client_base_url or self.config.base_url,
            ),
            register.RegisterServlet(self.registration),
            login.LoginServlet(self.auth, self.login),
            account.AccountServlet(self.auth, self.account),
            devices.DevicesServlet(self.auth, self.devices),
            admin.AdminRegisterServlet(self.shared_secret_registration),
            federation_admin.FederationAdminServlet(self.auth, self.accounts, self.federation_sender),
        ]

    def _room_servlets(self) -> list[Any]:
        from mxserver.api.client import directory, hierarchy, membership, room_events, rooms_create

        auth = self.auth
        return [
            room_events.RoomEventsServlet(auth, self.room_messages, self.room_history),
            rooms_create.CreateRoomServlet(auth, self.room_creation, self.room_upgrade),
            membership.MembershipServlet(auth, self.room_membership),
            directory.DirectoryServlet(auth, self.directory, self.config.room_directory),
            hierarchy.HierarchyServlet(auth, self.hierarchy),
        ]

    def _user_data_servlets(self) -> list[Any]:
        from mxserver.api.client import account_data, filters, push_rules

        return [
            account_data.AccountDataServlet(self),
            filters.FilterServlet(self),
            push_rules.PushRulesServlet(self),
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
            typing.TypingServlet(self.auth, self.typing_handler),
            receipts.ReceiptsServlet(self.auth, self.receipts),
            presence.PresenceServlet(self.auth, self.presence_handler),
            profile.ProfileServlet(self.auth, self.profiles),
            user_directory.UserDirectoryServlet(self.auth, self.user_directory),
        ]

    def _sync_servlets(self) -> list[Any]:
        from mxserver.api.client import sync

        return [sync.SyncServlet(self)]

    def _client_media_servlets(self) -> list[Any]:
        from mxserver.api.media.media import AuthenticatedMediaServlet

        return [AuthenticatedMediaServlet(self.auth, self.media_repository, self.url_previewer, self.config.media)]

    def _federation_servlets(self) -> list[Any]:
        from mxserver.api.federation import events, hierarchy, keys, membership, query, transactions, user_keys, version
        from mxserver.api.media.federation import FederationMediaServlet

        return [
            version.FederationVersionServlet(self),
            membership.FederationMembershipServlet(self.federation_auth, self.federation_membership),
            keys.KeyServerServlet(self),
            user_keys.UserKeysServlet(self),
            transactions.TransactionServlet(self),
            events.FederationEventsServlet(self),
            query.FederationQueryServlet(self),
            hierarchy.FederationHierarchyServlet(self.federation_auth, self.hierarchy),
            FederationMediaServlet(self.federation_auth, self.media_repository, self.server_name),
        ]

    def _media_servlets(self) -> list[Any]:
        from mxserver.api.media.media import MediaServlet

        return [MediaServlet(self.auth, self.media_repository, self.url_previewer, self.config.media)]

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
