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
from typing import TYPE_CHECKING, Any

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
from mxserver.accounts.erasure import ErasedUsers
from mxserver.accounts.identity_client import IdentityServerClient
from mxserver.accounts.login import LoginHandler
from mxserver.accounts.openid import OpenIdTokens
from mxserver.accounts.passwords import PasswordHasher
from mxserver.accounts.protocols import LoginFlow
from mxserver.accounts.registration import RegistrationHandler, UserRegistrar
from mxserver.accounts.registration_tokens import RegistrationTokens
from mxserver.accounts.shared_secret import SharedSecretRegistration
from mxserver.accounts.threepids import ThreepidHandler, ThreepidValidator
from mxserver.accounts.uia import UserInteractiveAuth
from mxserver.api.http import build_app, render_error
from mxserver.api.ratelimit import RateLimiter
from mxserver.api.resource import MatrixResource, MatrixSite
from mxserver.appservice.registration import AppServiceRegistry, ReloadResult
from mxserver.cluster.registry import WorkerRegistry
from mxserver.config import HomeserverConfig
from mxserver.crypto.keys import key_id, load_or_generate_signing_key
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.errors import MatrixError
from mxserver.federation.auth import FederationAuth
from mxserver.federation.client import FederationClient
from mxserver.federation.keyring import Keyring
from mxserver.federation.sender import FederationSender, Transport
from mxserver.interfaces import ILoginFlow, IMediaStorage, IModule, IPresence, IStorageBackend, ITyping
from mxserver.module_api import EventHooks, ModuleApi
from mxserver.module_loader import LOGIN, MEDIA_STORAGE, MODULES, PRESENCE, STORAGE, TYPING, construct
from mxserver.room_handlers.deactivation import DeactivatedUserParter
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.room_handlers.mutual_rooms import MutualRooms
from mxserver.rooms.activity import RoomActivity
from mxserver.rooms.policy_server import PolicyServerSigner
from mxserver.rooms.room_server import RoomServer
from mxserver.storage.accounts import AccountStore
from mxserver.storage.events import EventStore
from mxserver.storage.migrations import prepare_database, require_current_schema
from mxserver.storage.openid import OpenIdStore
from mxserver.storage.registration_tokens import RegistrationTokenStore
from mxserver.storage.room_members import RoomMembersStore
from mxserver.storage.server_keys import ServerKeyStore
from mxserver.storage.state import StateStore
from mxserver.storage.sync import SyncStore
from mxserver.storage.workers import WorkerStore
from mxserver.streams import EphemeralStreams, Invalidation, Phase, RoomEventStream, Stream
from mxserver.sync.notifier import Notifier
from mxserver.sync.sources import SyncSources

if TYPE_CHECKING:
    from mxserver.ephemeral.presence import PresenceHandler
    from mxserver.replication.bus import IReplicationBus
    from mxserver.room_handlers.history import HistoryHandler
    from mxserver.rooms.api import ReaderRooms
    from mxserver.sync.handler import NotificationCounts
    from mxserver.sync.legacy import Published
    from mxserver.sync.source_adapters import TypingReader
    from mxserver.sync.tokens import StreamToken

log = Logger()

#: connections kept open per push gateway: most pushers share one gateway (Sygnal), and each
#: pusher with news sends at once
PUSH_CONNECTIONS_PER_GATEWAY = 16
#: connections kept open per application service: one transaction in flight, plus queries
APPSERVICE_CONNECTIONS = 4


class Homeserver(service.MultiService):
    """One Matrix homeserver: its config, database, components and listeners.

    ``clock``: where time comes from (the reactor by default; tests pass a ``task.Clock``).
    ``federation_transport``: how the federation sender delivers a transaction
    (:data:`~mxserver.federation.sender.Transport`); by default ``PUT /send`` over the
    federation client. An embedding application may route outbound transactions itself
    (through a proxy, a queue, or a recorder); the sender's queues, backoff and catch-up
    work the same whatever delivers them.

    ``config.worker_role`` decides what is built (issue 19): ``main`` builds everything, and
    with ``workers:`` configured publishes its commits on the replication bus; a ``sync``
    worker builds only what ``/sync``, sliding sync and the legacy event stream read, with a
    read-only room interface, fed by the writer's hints (:meth:`_build_sync_worker`).
    ``replication_bus``: the bus between the processes (Postgres ``LISTEN/NOTIFY`` on the
    configured database by default; tests may share an in-process one).
    """

    def __init__(
        self,
        config: HomeserverConfig,
        reactor: Any = None,
        clock: Any = None,
        *,
        federation_transport: Transport | None = None,
        replication_bus: IReplicationBus | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        # Time comes from ``clock`` (the reactor unless a test passes a task.Clock).
        self.clock = clock if clock is not None else reactor
        self.server_name = config.server_name
        self._federation_transport = federation_transport
        self._replication_bus = replication_bus
        #: the bus this process publishes or listens on; None in a single process
        self.replication_bus: IReplicationBus | None = None
        self.setName("mxserver")
        self._ready: Deferred[None] | None = None
        self.is_ready = False
        #: set by the twistd plugin: a failed start stops the process
        self.stop_reactor_on_failure = False
        self._listening: list[Any] = []
        self._forwarder: Any = None  # a sync worker's way to main (built when it listens)
        #: awaited in this order at start-up, after migrations (e.g. loading stream positions)
        self.start_hooks: list[Callable[[], Awaitable[Any]]] = []

        if config.worker_role == "sync":
            self._build_sync_worker()
        else:
            self._build_main()
        self._apps = self._build_apps()
        self._lag = metrics.ReactorLagMonitor(self.clock)

    # -- construction, in build order ---------------------------------------------------

    def _build_main(self) -> None:
        """The writer: everything, in build order."""
        # The build order. Each section builds its components from those of the sections
        # above it and passes every collaborator explicitly; nothing below this file sees
        # the Homeserver.
        self._build_core()
        # Before accounts: identity-server requests (3PID binding) go through federation's
        # IP filter, TLS policy and request signing.
        self._build_federation_transport()
        self._build_accounts()
        self._build_appservice_api()
        self._build_room_server()
        self._build_user_data()
        self._build_federation_rooms()
        self._build_ephemeral()
        self._build_e2ee()
        self._build_room_handlers()
        self._build_push()
        self._build_sync(
            self.room_server,
            self.typing_handler,
            self.presence_handler,
            self.push_notifications,
            self.room_history,
            self.directory,
        )
        self._build_federation_inbound()
        self._build_federation_sender()
        self._build_media()
        self._build_pushers()
        self._build_appservices()
        self._build_admin_rooms()
        # Removing or renaming a device (accounts) reaches the areas built after accounts, in
        # this order: the device's to-device queue goes, then its keys (and other servers hear).
        self.device_hooks.on_removed(self.to_device.delete_device_queues)
        self.device_hooks.on_removed(self.device_lists.devices_removed)
        self.device_hooks.on_changed(self.device_lists.device_changed)
        self._notify_on_room_events()
        if self.config.workers:
            self._build_replication_publisher()

    def _notify_on_room_events(self) -> None:
        # Waking a long-polling /sync runs it inside the publish, so every other subscriber
        # (membership and room caches) must have seen the events first: the NOTIFY phase.
        self.room_stream.subscribe(self._notify_room_events, Phase.NOTIFY)

    def _build_sync_worker(self) -> None:
        """A ``sync`` worker (issue 19): what /sync, sliding sync and the legacy event stream read,
        on the shared database, kept current by the writer's hints (:mod:`mxserver.replication`).

        It writes no room: it holds a read-only room interface (no room server, no sequencer),
        replicas of the writer's typing, presence and push counts, and runs no background jobs,
        no persisting stream reader (push, search, application services, pushers, federation
        sender), no presence or typing timers and no media store.
        """
        from mxserver.ephemeral.receipts import ReceiptsHandler
        from mxserver.push.notifications import READER_NAME as PUSH_READER
        from mxserver.replication.client import ReplicationClient, forward_to_main
        from mxserver.replication.replicas import (
            NoBackfill,
            PublishedRooms,
            ReadOnlyRooms,
            ReplicatedPresence,
            ReplicatedPushCounts,
            ReplicatedTyping,
        )
        from mxserver.room_handlers.aggregations import BundledAggregations
        from mxserver.room_handlers.history import HistoryHandler
        from mxserver.rooms.visibility import HistoryVisibility
        from mxserver.storage.aggregations import AggregationsStore
        from mxserver.storage.directory import DirectoryStore
        from mxserver.storage.history import HistoryStore
        from mxserver.storage.profiles import ProfileStore
        from mxserver.storage.push_actions import PushActionsStore
        from mxserver.storage.receipts import ReceiptStore
        from mxserver.storage.relations import RelationsStore
        from mxserver.storage.replication import ReplicationStore
        from mxserver.storage.stream_positions import PersistedStream

        self._build_core()
        self._build_federation_transport()  # device lists ask other servers for keys
        self._build_accounts()
        bus = self.replication_bus = self._make_replication_bus()
        synced, push_wanted = forward_to_main(bus)

        # Rooms, read-only: the room stream is fed by the replication client.
        self.state_store = StateStore(self.db)
        self.event_store = EventStore(self.db, self.state_store)
        rooms = self.reader_rooms = ReadOnlyRooms(self.event_store, self.state_store, self.room_stream)
        self.start_hooks.append(rooms.start)
        self.room_stream.subscribe(rooms.on_room_events, Phase.CACHES)
        self.event_serializer = EventSerializer(self.event_store, self.clock)
        members_store = RoomMembersStore(self.db)
        self.room_members = RoomMembers(members_store)
        self.room_stream.subscribe(self.room_members.on_room_events, Phase.CACHES)
        self.room_activity = RoomActivity(rooms)
        self.start_hooks.append(self.room_activity.start)
        self.room_stream.subscribe(self.room_activity.on_room_events, Phase.CACHES)

        self._build_user_data()
        streams = self.ephemeral_streams
        typing = ReplicatedTyping(streams.typing)
        self.receipts_position = PersistedStream(self.db, "receipts")
        self.receipts = ReceiptsHandler(
            ReceiptStore(self.db, self.receipts_position),
            self.receipts_position,
            rooms,
            self.event_store,
            self.account_data,
            self.clock,
            streams.receipts,
        )
        self.start_hooks.append(self.receipts.start)
        presence = ReplicatedPresence(
            self.config.presence, self.room_members, ProfileStore(self.db), self.clock, streams.presence, synced
        )
        self._build_e2ee_streams()

        self.history_store = HistoryStore(self.db, self.event_store)
        self.history_visibility = HistoryVisibility(
            rooms, self.event_store, self.state_store, self.history_store, self.erased_users
        )
        aggregations_store = AggregationsStore(self.db)
        # main's relation changes arrive as "relations" invalidations (ReplicationClient)
        self.event_store.relation_changes.subscribe(aggregations_store.invalidate, Phase.CACHES)
        self.bundled_aggregations = BundledAggregations(
            aggregations_store,
            RelationsStore(self.db, self.event_store),
            self.event_store,
            self.history_visibility,
            self.account_data,
        )
        history = HistoryHandler(
            rooms,
            self.event_store,
            self.state_store,
            self.history_store,
            self.history_visibility,
            self.event_serializer,
            self.bundled_aggregations,
            NoBackfill(),
            self.account_data,
        )
        counts = ReplicatedPushCounts(PushActionsStore(self.db), PUSH_READER, self.clock, push_wanted)
        self.start_hooks.append(counts.start)
        self.replication = ReplicationClient(
            bus,
            ReplicationStore(self.db),
            PUSH_READER,
            self.room_stream,
            self.event_store,
            rooms,
            streams,
            {
                "receipts": self.receipts_position,
                "account_data": self.account_data_stream,
                "to_device": self.to_device_stream,
                "device_lists": self.device_lists_stream,
            },
            typing,
            presence,
            counts,
            self.room_members,
            members_store,
            self.account_data,
            self.auth,
            self.erased_users,
            self.notifier,
            self.clock,
        )
        published = PublishedRooms(DirectoryStore(self.db).is_published)
        self._build_sync(rooms, typing, presence, counts, history, published, self.replication.reach)
        self._notify_on_room_events()
        # Last: every position is loaded from the database before it listens and catches up.
        self.start_hooks.append(self.replication.start)

    def _make_replication_bus(self) -> IReplicationBus:
        """The bus between the cluster's processes: the one handed in, else Postgres ``LISTEN/NOTIFY``."""
        if self._replication_bus is not None:
            return self._replication_bus
        from mxserver.replication.postgres import PostgresBus

        assert self.config.database.dsn is not None  # workers need postgres (config)
        return PostgresBus(self.config.database.dsn, self.reactor, self.clock)

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
        #: what memory holds that changes other than through a stream (revoked tokens, purged
        #: rooms): a cluster's writer tells its workers
        self.invalidations: Stream[Invalidation] = Stream("invalidations")
        #: what /sync reads, one source per stream (registered in _build_sync); tokens come from it
        self.sync_sources = SyncSources()
        self.notifier = Notifier(self.clock, self.sync_sources)
        # This process in the cluster's worker registry (issue 19; a single process is main).
        self.worker_registry = WorkerRegistry(
            WorkerStore(self.db), self.clock, config.worker.name, config.worker_role, os.getpid()
        )
        for stream in self.ephemeral_streams.all():
            stream.subscribe(self._notify_ephemeral, Phase.NOTIFY)

    def _build_accounts(self) -> None:
        """Accounts, passwords, the access-token check, modules and login flows, rate limits."""
        config = self.config
        self.accounts = AccountStore(self.db)
        self.passwords = PasswordHasher(config.password, self.reactor, self.accounts)
        #: the application services' registrations (tokens, namespaces): auth, registration and
        #: rate limits ask it, so it comes first
        self.appservices = AppServiceRegistry(self.server_name, config.app_service_config_files)
        self.auth = Auth(self.accounts, self.clock, self.appservices, self.invalidations)

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
        from mxserver.admin.server_notices import system_user_id

        # The server notices' system user is never limited (a notice to every user at once).
        notices_user = system_user_id(config.server_notices, self.server_name)
        appservice_exempt = self.appservices.rate_limit_exempt
        self.ratelimit_message = RateLimiter(
            self.clock,
            rl.message.per_second,
            rl.message.burst,
            rl.enabled,
            exempt=lambda user_id: user_id == notices_user or appservice_exempt(user_id),
        )
        self.ratelimit_report = RateLimiter(self.clock, rl.report.per_second, rl.report.burst, rl.enabled)

        #: registration tokens: the config file's and those the admin API makes (in the database)
        self.registration_tokens = RegistrationTokens(
            config.registration, RegistrationTokenStore(self.db), self.clock
        )
        self._build_threepid_validation()
        #: the one client of identity servers (3PID binding, invite lookups, key validity)
        self.identity_servers = self._identity_server_client()
        self.uia = UserInteractiveAuth(
            self.clock,
            self.login_flows,
            config.registration,
            self.ratelimit_login,
            self.registration_tokens,
            self.threepid_validator,
        )
        self.threepids = ThreepidHandler(
            self.threepid_store, self.threepid_validator, self.uia, self.identity_servers, self.clock
        )
        #: to-device queues and device keys are built later: __init__ subscribes them here
        self.device_hooks = DeviceHooks()
        self.devices = DeviceHandler(
            self.accounts, self.auth, self.uia, self.device_hooks, self.clock, config.sessions
        )
        self.registrar = UserRegistrar(
            self.server_name,
            config.password,
            self.accounts,
            self.passwords,
            self.clock,
            self.appservices,
            server_users=frozenset(u for u in [notices_user] if u is not None),
        )
        self.registration = RegistrationHandler(
            config.registration,
            config.password,
            server_name=self.server_name,
            store=self.accounts,
            passwords=self.passwords,
            registrar=self.registrar,
            uia=self.uia,
            devices=self.devices,
            auth=self.auth,
            ratelimit_register=self.ratelimit_register,
            clock=self.clock,
            tokens=self.registration_tokens,
            threepid_validator=self.threepid_validator,
            threepids=self.threepids,
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
            threepids=self.threepid_validator,
        )
        #: accounts deactivated with erase: history visibility and federation reads ask it
        self.erased_users = ErasedUsers(self.accounts, self.invalidations)
        self.account = AccountHandler(
            self.accounts,
            config.password,
            self.passwords,
            self.auth,
            self.uia,
            self.device_hooks,
            self.erased_users,
            self.threepids,
            self.threepid_validator,
        )
        self.shared_secret_registration = SharedSecretRegistration(
            config.registration, self.server_name, self.registrar, self.devices, self.clock
        )
        self.openid_tokens = OpenIdTokens(self.server_name, OpenIdStore(self.db), self.clock)

    def _build_threepid_validation(self) -> None:
        """The 3PID store and the homeserver's e-mail validation sessions (e-mail when configured)."""
        from mxserver.accounts.mailer import Mailer
        from mxserver.storage.threepids import ThreepidStore

        config = self.config
        self.threepid_store = ThreepidStore(self.db)
        mailer = Mailer(config.email, self.reactor, self.clock, self.server_name) if config.email.enabled else None
        # E-mails sent count against the registration limit (rate_limits.register), per client and address.
        self.threepid_validator = ThreepidValidator(
            config.email, config.base_url, self.server_name, self.threepid_store, mailer, self.clock, self.ratelimit_register
        )

    def _identity_server_client(self) -> IdentityServerClient:
        """Requests to identity servers: through federation's IP filter and TLS policy (see
        :mod:`mxserver.accounts.identity_client`), signed with the server's key where the spec asks."""
        from mxserver.media.preview import SafeFetcher

        client = self.federation_client
        fetcher = SafeFetcher(self.reactor, self.clock, client.ip_filter, self.config.media.url_preview, client.tls.creator_for)
        return IdentityServerClient(fetcher.agent, self.clock, self.server_name, client.authorization_header, fetcher.close)

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

        self.remote_queries = RemoteQueries(self.federation_client, self.clock)
        from mxserver.federation.edus import EduRegistry

        #: inbound EDU handlers by type (the /send transaction handler dispatches through it)
        self.federation_edus = EduRegistry()

    def _build_appservice_api(self) -> None:
        """Requests to application services (queries here; transactions in _build_appservices),
        through an IP-filtered agent like push gateways' (federation.ip_range_blacklist, with
        federation.ip_range_whitelist and app_service_ip_range_whitelist as exceptions)."""
        from mxserver.appservice.api import AppServiceApi
        from mxserver.appservice.queries import AppServiceQueries
        from mxserver.federation.ip_filter import IPRangeFilter
        from mxserver.media.preview import SafeFetcher

        config, fed = self.config, self.config.federation
        ip_filter = IPRangeFilter(fed.ip_range_blacklist, [*fed.ip_range_whitelist, *config.app_service_ip_range_whitelist])
        fetcher = SafeFetcher(
            self.reactor,
            self.clock,
            ip_filter,
            config.media.url_preview,
            self.federation_client.tls.verified_creator_for,
            keep_per_host=APPSERVICE_CONNECTIONS,
        )
        self.appservice_api = AppServiceApi(fetcher.agent, self.clock, fetcher.close)
        self.appservice_queries = AppServiceQueries(self.appservices, self.appservice_api, self.clock)

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
            policy_signer=PolicyServerSigner(self.event_store, self.federation_client, self.server_name),
        )
        self.start_hooks.append(self.room_server.start)
        self.event_serializer = EventSerializer(self.event_store, self.clock)
        # Who is joined where, in memory: a cache of the room stream (CACHES phase), so every
        # reader of the stream sees it up to date; the servers in a room derive from it.
        self.room_members = RoomMembers(RoomMembersStore(self.db))
        self.room_stream.subscribe(self.room_members.on_room_events, Phase.CACHES)
        # Which rooms had events since a position (for /sync and device-list changes).
        self.room_activity = RoomActivity(self.room_server)
        self.start_hooks.append(self.room_activity.start)
        self.room_stream.subscribe(self.room_activity.on_room_events, Phase.CACHES)
        self.room_stream.subscribe(self.event_hooks.on_new_events)

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
        # The servers in a room derive from the room-members cache (subscribed before them).
        self.room_servers = RoomServers(self.room_members.members)
        self.room_stream.subscribe(self.room_servers.on_room_events, Phase.CACHES)
        self.federation_gaps = GapFiller(
            self.clock,
            self.room_server,
            self.event_store,
            self.state_store,
            self.federation_client,
            self.keyring,
            timeout=fed.gap_fetch_timeout_ms / 1000,
            rejoin_max_events=fed.rejoin_gap_max_events,
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
        # the room stream: the member cache adopts the new state, then the servers are re-derived.
        room_members = self.room_members
        self.remote_rooms.joined_state.subscribe(lambda c: room_members.state_replaced(c.room_id, c.joined), Phase.CACHES)
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
            self.invite_permissions,
        )

    def _build_user_data(self) -> None:
        """Account data, push rules, filters."""
        from mxserver.accounts.invite_permission import InvitePermissions
        from mxserver.storage.account_data import AccountDataStore
        from mxserver.storage.filters import FilterStore
        from mxserver.storage.push_rules import PushRulesStore
        from mxserver.storage.stream_positions import PersistedStream
        from mxserver.sync.account_data import AccountDataHandler
        from mxserver.sync.filtering import FilterHandler
        from mxserver.sync.push_rules import PushRulesHandler

        # Push rules changes are positions on the account_data stream too (/sync resends the rules).
        account_data_stream = self.account_data_stream = PersistedStream(self.db, "account_data")
        self.push_rules = PushRulesHandler(PushRulesStore(self.db, account_data_stream), self.ephemeral_streams.account_data)
        account_data_store = AccountDataStore(self.db, account_data_stream)
        self.account_data = AccountDataHandler(
            account_data_store, account_data_stream, self.push_rules, self.ephemeral_streams.account_data
        )
        # client-server-api §Invite permission (v1.18): who blocks invites
        self.invite_permissions = InvitePermissions(account_data_store, self.server_name)
        self.filters = FilterHandler(FilterStore(self.db))
        self.start_hooks.append(account_data_stream.load)

    def _build_ephemeral(self) -> None:
        """Typing, receipts, presence, profiles, user directory."""
        from mxserver.ephemeral import EphemeralTimers
        from mxserver.ephemeral.presence import PresenceHandler
        from mxserver.ephemeral.profiles import ProfileHandler
        from mxserver.ephemeral.receipts import ReceiptsHandler
        from mxserver.ephemeral.typing import TypingHandler
        from mxserver.ephemeral.user_directory import UserDirectory
        from mxserver.storage.profiles import ProfileStore
        from mxserver.storage.receipts import ReceiptStore
        from mxserver.storage.stream_positions import PersistedStream
        from mxserver.storage.user_directory import UserDirectoryStore

        streams = self.ephemeral_streams
        self.typing_handler = TypingHandler(self.typing, self.room_server, streams.typing)
        self.room_stream.subscribe(self.typing_handler.on_room_events)  # leaving stops typing

        receipts_position = self.receipts_position = PersistedStream(self.db, "receipts")
        self.receipts = ReceiptsHandler(
            ReceiptStore(self.db, receipts_position),
            receipts_position,
            self.room_server,
            self.event_store,
            self.account_data,
            self.clock,
            streams.receipts,
        )
        self.start_hooks.append(self.receipts.start)

        profile_store = ProfileStore(self.db)
        self.presence_handler = PresenceHandler(
            self.presence, self.config.presence, self.room_members, profile_store, self.clock, streams.presence
        )

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
            self.appservice_queries,
        )
        # Nothing stays scheduled on the reactor after the Homeserver stops.
        EphemeralTimers(self.typing_handler, self.presence_handler).setServiceParent(self)

    def _build_e2ee_streams(self) -> None:
        """To-device queues and device lists: what /sync reads of them (a sync worker too)."""
        from mxserver.e2ee.device_lists import DeviceListHandler
        from mxserver.storage.e2ee_device_lists import DeviceListStore
        from mxserver.storage.e2ee_keys import E2eKeyStore
        from mxserver.storage.stream_positions import PersistedStream
        from mxserver.storage.sync import SyncStore
        from mxserver.storage.to_device import ToDeviceStore
        from mxserver.sync.to_device import ToDeviceHandler

        # Send-to-device: queued per device on the persisted to_device stream; every batch is
        # published on ephemeral_streams.to_device (the notifier and the federation sender follow it).
        to_device_stream = self.to_device_stream = PersistedStream(self.db, "to_device")
        self.to_device = ToDeviceHandler(
            self.server_name,
            ToDeviceStore(self.db, to_device_stream),
            to_device_stream,
            self.ephemeral_streams.to_device,
            self.clock,
        )
        self.start_hooks.append(to_device_stream.load)

        # Device lists: changes published on ephemeral_streams.device_lists (the notifier, and
        # the outbound EDUs built in _build_federation_sender, follow it).
        device_lists_stream = self.device_lists_stream = PersistedStream(self.db, "device_lists")
        self.e2e_key_store = E2eKeyStore(self.db, device_lists_stream)
        self.device_lists = DeviceListHandler(
            self.server_name,
            DeviceListStore(self.db, device_lists_stream),
            self.e2e_key_store,
            device_lists_stream,
            self.ephemeral_streams.device_lists,
            self.room_members,
            self.room_activity,
            SyncStore(self.db),
            self.federation_client,
            clock=self.clock,
        )
        self.start_hooks.append(self.device_lists.start)

    def _build_e2ee(self) -> None:
        """To-device messages, device lists, device and one-time keys, cross-signing, key backup,
        dehydrated devices."""
        from mxserver.e2ee.backup import KeyBackupHandler
        from mxserver.e2ee.cross_signing import CrossSigningHandler
        from mxserver.e2ee.dehydrated import DehydratedDeviceHandler
        from mxserver.e2ee.device_lists import DEVICE_LIST_UPDATE, SIGNING_KEY_UPDATE
        from mxserver.e2ee.keys import E2eKeysHandler
        from mxserver.storage.e2ee_backup import KeyBackupStore
        from mxserver.storage.e2ee_dehydrated import DehydratedDeviceStore

        self._build_e2ee_streams()
        self.room_members.subscribe_memberships(self.device_lists.membership_changed)
        self.federation_edus.register(DEVICE_LIST_UPDATE, self.device_lists.on_device_list_update)
        self.federation_edus.register(SIGNING_KEY_UPDATE, self.device_lists.on_signing_key_update)

        self.e2e_keys = E2eKeysHandler(
            self.server_name, self.e2e_key_store, self.device_lists, self.federation_client, self.clock
        )
        self.cross_signing = CrossSigningHandler(
            self.server_name,
            self.e2e_key_store,
            self.device_lists,
            self.uia,
        )
        self.key_backup = KeyBackupHandler(KeyBackupStore(self.db))
        self.dehydrated_devices = DehydratedDeviceHandler(
            DehydratedDeviceStore(self.db),
            self.devices,
            self.e2e_keys,
            self.to_device,
            self.clock,
        )

    def _build_room_handlers(self) -> None:
        """Client-facing room handlers: creation, membership, directory, history, upgrades, spaces.

        In this order: the directory (aliases), membership (resolves aliases through the
        directory), creation and upgrades (both use membership and the directory), sending
        (checks canonical aliases with the directory), reading history and relations, search (and
        the start-up job that indexes events stored before the search index), the space hierarchy.
        """
        from mxserver.room_handlers.aggregations import BundledAggregations
        from mxserver.room_handlers.creation import RoomCreationHandler
        from mxserver.room_handlers.directory import DirectoryHandler
        from mxserver.room_handlers.guest_access import GuestAccessEnforcer
        from mxserver.room_handlers.hierarchy import HierarchyHandler, RemoteHierarchy
        from mxserver.room_handlers.history import HistoryHandler
        from mxserver.room_handlers.membership import MembershipHandler
        from mxserver.room_handlers.messages import MessageHandler
        from mxserver.room_handlers.relations import RelationsHandler
        from mxserver.room_handlers.reports import ReportsHandler
        from mxserver.room_handlers.room_summary import RoomSummaryHandler
        from mxserver.room_handlers.search import SearchHandler
        from mxserver.room_handlers.search_index import SearchIndexer
        from mxserver.room_handlers.threads import ThreadsHandler
        from mxserver.room_handlers.upgrade import RoomUpgradeHandler
        from mxserver.rooms.visibility import HistoryVisibility
        from mxserver.storage.aggregations import AggregationsStore
        from mxserver.storage.background_jobs import BackgroundJobs
        from mxserver.storage.directory import DirectoryStore
        from mxserver.storage.history import HistoryStore
        from mxserver.storage.memberships import MembershipStore
        from mxserver.storage.relations import RelationsStore
        from mxserver.storage.reports import ReportsStore
        from mxserver.storage.search import INDEX_JOB, SearchStore, index_existing_events_txn
        from mxserver.storage.threads import ThreadsStore

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
            namespaces=self.appservices,
            alias_queries=self.appservice_queries,
        )
        from mxserver.storage.admin_rooms import BlockedRoomsStore
        from mxserver.storage.server_notices import ServerNoticeRoomsStore

        #: rooms a server admin blocked (admin API); membership refuses joins to them
        self.blocked_rooms = BlockedRoomsStore(self.db)
        #: each user's server notices room; membership refuses to reject its invite
        self.server_notice_rooms = ServerNoticeRoomsStore(self.db)
        self.room_membership = MembershipHandler(
            rooms,
            self.accounts,
            self.membership_store,
            self.directory,
            remote_rooms,
            self.room_servers,
            server_name,
            self.invite_permissions,
            tags=self.account_data,
            blocked=self.blocked_rooms,
            notice_rooms=self.server_notice_rooms,
            user_queries=self.appservice_queries,
        )
        self.account.on_deactivated(DeactivatedUserParter(self.event_store, self.room_membership).part)
        self.guest_access = GuestAccessEnforcer(rooms, self.accounts, self.room_members, server_name)
        self.room_stream.subscribe(self.guest_access.on_room_events)
        self._build_third_party_invites()
        self.room_creation = RoomCreationHandler(
            rooms,
            self.accounts,
            self.room_membership,
            self.directory,
            remote_rooms,
            self.config.room_directory,
            self.config.default_room_version,
            server_name,
            third_party=self.third_party_invites,
        )
        self.room_upgrade = RoomUpgradeHandler(rooms, self.room_membership, self.directory)
        self.room_messages = MessageHandler(
            rooms, self.event_store, self.ratelimit_message, self.directory, self.invite_permissions
        )
        self.history_visibility = HistoryVisibility(
            rooms, self.event_store, self.state_store, self.history_store, self.erased_users
        )
        self.reports_store = ReportsStore(self.db)
        self.reports = ReportsHandler(
            self.reports_store, self.history_visibility, rooms, self.accounts, server_name, self.clock
        )
        relations_store = RelationsStore(self.db, self.event_store)
        #: bundled aggregations (unsigned m.relations) of the room events served to clients
        aggregations_store = AggregationsStore(self.db)
        # its cache of each parent's children forgets a parent once a commit changed them
        self.event_store.relation_changes.subscribe(aggregations_store.invalidate, Phase.CACHES)
        self.bundled_aggregations = BundledAggregations(
            aggregations_store, relations_store, self.event_store, self.history_visibility, self.account_data
        )
        self.room_history = HistoryHandler(
            rooms,
            self.event_store,
            self.state_store,
            self.history_store,
            self.history_visibility,
            self.event_serializer,
            self.bundled_aggregations,
            self.backfiller,
            self.account_data,
        )
        self.mutual_rooms = MutualRooms(self.event_store)
        self.relations = RelationsHandler(
            rooms,
            self.event_store,
            relations_store,
            self.history_visibility,
            self.event_serializer,
            self.bundled_aggregations,
        )
        self.threads = ThreadsHandler(
            rooms,
            ThreadsStore(self.db, self.event_store),
            self.history_visibility,
            self.event_serializer,
            self.bundled_aggregations,
            self.account_data,
        )
        search_store = SearchStore(self.db, self.event_store)
        # The index is kept by a reader of the stream, not by the persisters: sends do not wait
        # for it, a burst is one index write, and a search waits for it to catch up.
        self.search_indexer = SearchIndexer(
            search_store, self.room_stream, self.event_store, lambda: self.event_store.max_stream, self.reactor, self.clock
        )
        self.start_hooks.append(self.search_indexer.start)
        self.search = SearchHandler(
            search_store,
            self.search_indexer.caught_up,
            self.history_store,
            self.event_store,
            self.state_store,
            rooms,
            self.history_visibility,
            self.event_serializer,
            self.account_data,
            self.bundled_aggregations,
        )
        #: started once the server is up (_start), stopped before the database closes
        self.background_jobs = BackgroundJobs(self.db, {INDEX_JOB: index_existing_events_txn}, self.clock)
        self.hierarchy = HierarchyHandler(
            rooms,
            self.membership_store,
            self.room_servers,
            RemoteHierarchy(self.federation_client, self.clock, server_name),
            self.clock,
            server_name,
        )
        self.room_summaries = RoomSummaryHandler(self.hierarchy, self.directory, rooms)

    def _build_third_party_invites(self) -> None:
        """Third-party invites (after membership): the identity server client and the handler.

        Identity servers and the key validity URLs of invites are reached like federation
        peers: through the federation IP filter, with federation's TLS policy."""
        from mxserver.accounts.identity_lookup import IdentityLookup
        from mxserver.room_handlers.third_party_invites import ThirdPartyInviteHandler

        self.identity_lookup = IdentityLookup(self.identity_servers)
        self.third_party_invites = ThirdPartyInviteHandler(
            self.room_server,
            self.room_membership,
            self.remote_rooms,
            self.federation_client,
            self.identity_lookup,
            self.server_name,
        )

    def _build_admin_rooms(self) -> None:
        """The admin API's rooms: the room list, reading any room, blocking and deleting rooms
        (last: a purge waits for every reader of the room stream)."""
        from mxserver.admin.purge_history import PurgeHistoryHandler
        from mxserver.admin.reports import AdminReportsHandler
        from mxserver.admin.room_deletion import RoomDeletionHandler
        from mxserver.admin.rooms import AdminRoomsHandler
        from mxserver.admin.server_notices import ServerNoticesHandler
        from mxserver.admin.tasks import RoomTaskRunner
        from mxserver.storage.admin_rooms import AdminRoomStore, RoomTaskStore

        self.admin_room_store = AdminRoomStore(self.db, self.server_name)
        self.admin_rooms = AdminRoomsHandler(
            self.admin_room_store, self.room_server, self.event_store, self.event_serializer, self.room_history
        )
        self.admin_room_tasks = RoomTaskRunner(RoomTaskStore(self.db), self.clock)
        self.start_hooks.append(self.admin_room_tasks.start)
        self.room_deletion = RoomDeletionHandler(
            self.admin_room_store,
            self.admin_room_tasks,
            self.blocked_rooms,
            self.room_server,
            self.room_membership,
            self.room_creation,
            self.room_messages,
            self.directory,
            self.clock,
            self.server_name,
        )
        self.admin_reports = AdminReportsHandler(self.reports_store, self.room_server, self.event_store)
        self.server_notices = ServerNoticesHandler(
            self.config.server_notices,
            self.server_name,
            self.server_notice_rooms,
            self.accounts,
            self.clock,
            self.profiles,
            self.room_server,
            self.room_creation,
            self.room_membership,
            self.room_messages,
            self.account_data,
        )
        self.purge_history = PurgeHistoryHandler(
            self.admin_room_store, self.admin_room_tasks, self.room_server, self.event_store, self.room_deletion
        )
        # A purged room's remote members are no longer anywhere in memory.
        room_members, room_servers = self.room_members, self.room_servers
        self.room_deletion.purged_listeners.append(lambda room_id: room_members.state_replaced(room_id, ()))
        self.room_deletion.purged_listeners.append(room_servers.invalidate)
        readers = (self.push_notifications, self.search_indexer, self.appservice_reader)
        sender = self.federation_sender

        async def readers_caught_up() -> None:
            position = self.room_stream.position
            for reader in readers:
                await reader.wait_for(position)
            await sender.routed()
            await sender.flush_writes()

        self.room_deletion.before_purge.append(readers_caught_up)

    def _build_replication_publisher(self) -> None:
        """``main`` in a cluster: publish every commit on the bus for the sync workers, and
        serve what they ask (a /sync there marks its user online here)."""
        from mxserver.replication.publisher import ReplicationPublisher

        bus = self.replication_bus = self._make_replication_bus()
        presence, push = self.presence_handler, self.push_notifications

        def presence_synced(user_id: str, set_presence: str | None) -> None:
            d = ensureDeferred(presence.user_synced(user_id, set_presence))
            d.addErrback(lambda f: log.failure("a worker's /sync presence failed", f))

        self.replication_publisher = ReplicationPublisher(
            bus,
            self.room_stream,
            self.ephemeral_streams,
            self.invalidations,
            {
                "room": lambda: self.room_stream.position,
                "push": lambda: push.position,
                "receipts": lambda: self.receipts.current_position,
                "account_data": lambda: self.account_data.current_position,
                "to_device": lambda: self.to_device.current_position,
                "device_lists": lambda: self.device_lists.current_position,
            },
            self.reactor,
            presence_synced,
            push.wait_for,
            self.typing_handler.snapshot,
            presence.snapshot,
        )
        push.on_advanced(self.replication_publisher.push_advanced)
        # What changes other than through a stream: purged rooms, state replaced by a join over federation.
        invalidations = self.invalidations
        self.room_deletion.purged_listeners.append(lambda room_id: invalidations.publish(Invalidation("room_purged", (room_id,))))
        self.remote_rooms.joined_state.subscribe(
            lambda change: invalidations.publish(Invalidation("room_state", (change.room_id,)))
        )

        # The workers' bundled aggregations forget a parent whose children changed here; many
        # parents at once (a backfill, a purge): all of them ("*"), which keeps the hint small.
        def relations_changed(parents: frozenset[str] | None) -> None:
            keys = ("*",) if parents is None or len(parents) > MAX_RELATION_KEYS else tuple(sorted(parents))
            invalidations.publish(Invalidation("relations", keys))

        self.event_store.relation_changes.subscribe(relations_changed)
        self.start_hooks.append(bus.start)

    def _build_push(self) -> None:
        """Push: the reader that evaluates every new event's push rules (counts, notifications)."""
        from mxserver.push.notifications import NotificationReader
        from mxserver.storage.push_actions import PushActionsStore

        self.push_notifications = NotificationReader(
            self.server_name,
            PushActionsStore(self.db),
            self.room_stream,
            self.event_store,
            self.room_members.members,
            self.room_server,
            self.push_rules,
            self.account_data.ignored_users_of,
            lambda: self.event_store.max_stream,
            self.clock,
            self.reactor,
        )
        self.push_rules.on_changed(self.push_notifications.rules_changed)
        self.start_hooks.append(self.push_notifications.start)

    def _build_pushers(self) -> None:
        """Pushers: delivery to push gateways (one destination each), the pushers API, /notifications.

        After federation (the gateways are reached through the same IP-filtered agent as URL
        previews, which trusts federation.ca_certificates).
        """
        from mxserver.media.preview import SafeFetcher
        from mxserver.push.gateway import PushGatewayClient
        from mxserver.push.notification_list import NotificationList
        from mxserver.push.pusher_pool import PusherPool
        from mxserver.push.pushers import PushersHandler
        from mxserver.storage.pushers import PusherStore

        store = PusherStore(self.db)
        fetcher = SafeFetcher(
            self.reactor,
            self.clock,
            self.federation_client.ip_filter,
            self.config.media.url_preview,
            self.federation_client.tls.verified_creator_for,
            keep_per_host=PUSH_CONNECTIONS_PER_GATEWAY,
        )
        self.pusher_pool = PusherPool(
            store,
            PushGatewayClient(fetcher.agent, self.clock, fetcher.close),
            self.event_store,
            self.room_server,
            self.clock,
        )
        self.pushers = PushersHandler(
            store,
            self.pusher_pool,
            self.federation_client.ip_filter,
            self.config.push.allow_http_gateways,
            lambda: self.event_store.max_stream,
            self.clock,
        )
        self.notification_list = NotificationList(store, self.event_store, self.event_serializer)
        self.push_notifications.on_recorded(self.pusher_pool.on_notifications)
        self.ephemeral_streams.receipts.subscribe(self.pusher_pool.on_receipt)
        self.device_hooks.on_removed(self.pushers.devices_removed)
        self.start_hooks.append(self.pusher_pool.start)
        self.pusher_pool.setServiceParent(self)

    def _build_appservices(self) -> None:
        """Delivery to application services: the reader that queues what each is interested in
        (room stream, ephemeral streams), the sender (one destination each), their sender users."""
        from mxserver.appservice.reader import AppServiceReader
        from mxserver.appservice.sender import AppServiceSender
        from mxserver.storage.appservices import AppServiceStore

        store = AppServiceStore(self.db)
        accounts = self.accounts

        async def devices_of(user_id: str) -> list[str]:
            return [d.device_id for d in await accounts.get_devices(user_id)]

        reader = self.appservice_reader = AppServiceReader(
            self.appservices.with_url,
            store,
            self.room_stream,
            self.event_store,
            self.room_members.members,
            self.directory_store.get_aliases_for_room,
            devices_of,
            lambda: self.event_store.max_stream,
            self.reactor,
            state=self.state_store.get_state,
        )
        sender = self.appservice_sender = AppServiceSender(
            self.appservices.with_url, store, self.appservice_api, self.event_store, self.event_serializer, self.clock
        )
        reader.on_queued(sender.on_queued)
        # A room's interest is worked out again when its aliases change or a join over federation
        # replaces its state (its member events do not come on the room stream).
        self.directory.alias_changes.subscribe(reader.aliases_changed)
        self.remote_rooms.joined_state.subscribe(lambda change: reader.room_changed(change.room_id))
        streams = self.ephemeral_streams
        streams.typing.subscribe(reader.on_typing)
        streams.receipts.subscribe(reader.on_receipt)
        streams.presence.subscribe(reader.on_presence)
        streams.to_device.subscribe(reader.on_to_device)
        self.appservices.on_reload(reader.services_changed)
        self.appservices.on_reload(sender.services_changed)
        self.start_hooks.append(self._ensure_appservice_senders)
        self.start_hooks.append(sender.start)  # before the reader: it hands the sender what it queues
        self.start_hooks.append(reader.start)
        sender.setServiceParent(self)

    async def _ensure_appservice_senders(self) -> None:
        from mxserver.appservice.sender_users import ensure_sender_users

        await ensure_sender_users(self.appservices.services, self.accounts, self.clock)

    async def reload_appservices(self) -> ReloadResult:
        """Read the registration files again (admin API, SIGHUP); RegistrationError if one is bad
        (the registrations in force stay)."""
        result = self.appservices.reload()
        await self._ensure_appservice_senders()
        log.info(
            "application services reloaded: added {added}, removed {removed}, changed {changed}",
            added=list(result.added),
            removed=list(result.removed),
            changed=list(result.changed),
        )
        return result

    def _build_sync(
        self,
        rooms: ReaderRooms,
        typing: TypingReader,
        presence: PresenceHandler,
        counts: NotificationCounts,
        history: HistoryHandler,
        published: Published,
        reach: Callable[[StreamToken | None], Awaitable[None]] | None = None,
    ) -> None:
        """The sync sources of every stream (tokens and /sync read them) and the /sync handler.

        What they read of rooms, typing, presence, unread counts, history and the directory is
        the writer's own components in ``main``, their replicas in a sync worker (whose /sync
        first reaches a token minted elsewhere)."""
        from mxserver.storage.sync import SyncStore
        from mxserver.sync import source_adapters as sources
        from mxserver.sync.handler import SyncHandler
        from mxserver.sync.legacy import LegacySyncHandler

        sync_store = SyncStore(self.db)
        self.sync_room_source = sources.RoomStreamSource(self.room_activity, sync_store)
        # Before anything reads which rooms changed: the CACHES phase.
        self.room_stream.subscribe(self.sync_room_source.on_room_events, Phase.CACHES)
        for source in (
            self.sync_room_source,
            sources.TypingSource(typing),
            sources.ReceiptsSource(self.receipts),
            sources.PresenceSource(presence, self.sync_room_source, self.room_members, sync_store),
            sources.AccountDataSource(self.account_data),
            sources.ToDeviceSource(self.to_device),
            sources.DeviceListsSource(self.device_lists),
        ):
            self.sync_sources.register(source)

        self.sync_handler = SyncHandler(
            store=sync_store,
            events=self.event_store,
            state=self.state_store,
            serializer=self.event_serializer,
            aggregations=self.bundled_aggregations,
            visibility=self.history_visibility,
            rooms=rooms,
            room_source=self.sync_room_source,
            sources=self.sync_sources,
            notifier=self.notifier,
            counts=counts,
            ignored=self.account_data,
            invite_permissions=self.invite_permissions,
            on_sync=presence.user_synced,
            clock=self.clock,
            reach=reach,
        )
        self.legacy_sync_handler = LegacySyncHandler(
            sources=self.sync_sources,
            room_source=self.sync_room_source,
            notifier=self.notifier,
            rooms=history,
            timeline=self.history_store,
            events=self.event_store,
            serializer=self.event_serializer,
            visibility=self.history_visibility,
            members=self.room_members,
            presence=presence,
            directory=published,
            on_sync=presence.user_synced,
            clock=self.clock,
        )
        self._build_sliding_sync(sync_store, rooms, typing, presence, counts)

    def _build_sliding_sync(
        self,
        sync_store: SyncStore,
        rooms: ReaderRooms,
        typing: TypingReader,
        presence: PresenceHandler,
        counts: NotificationCounts,
    ) -> None:
        """Simplified sliding sync (MSC4186): the same sources, notifier and stores as /sync."""
        from mxserver.sliding_sync.connections import Connections
        from mxserver.sliding_sync.extensions import Extensions
        from mxserver.sliding_sync.handler import SlidingSyncHandler
        from mxserver.sliding_sync.room_lists import RoomIndex, RoomLists
        from mxserver.sliding_sync.rooms import RoomResults
        from mxserver.storage.sliding_sync import SlidingSyncStore

        store = SlidingSyncStore(self.db)
        self.sliding_sync_connections = Connections(store, self.clock)
        self.sliding_sync_connections.setServiceParent(self)  # expires unused connections
        # A removed device's connections go with it.
        self.device_hooks.on_removed(self.sliding_sync_connections.devices_removed)
        index = RoomIndex(self.room_activity, store)
        self.room_stream.subscribe(index.on_room_events, Phase.CACHES)
        self.sliding_sync_handler = SlidingSyncHandler(
            connections=self.sliding_sync_connections,
            room_lists=RoomLists(index, self.account_data, self.event_store, self.invite_permissions),
            rooms=RoomResults(
                sync_store=sync_store,
                store=store,
                events=self.event_store,
                state=self.state_store,
                serializer=self.event_serializer,
                visibility=self.history_visibility,
                counts=counts,
                index=index,
                rooms=rooms,
                aggregations=self.bundled_aggregations,
            ),
            extensions=Extensions(
                to_device=self.to_device,
                device_lists=self.device_lists,
                account_data=self.account_data,
                receipts=self.receipts,
                typing=typing,
            ),
            index=index,
            memberships=self.sync_room_source,
            sync_store=sync_store,
            receipts=self.receipts,
            notifier=self.notifier,
            ignored=self.account_data,
            on_sync=presence.user_synced,
            clock=self.clock,
        )

    def _build_federation_inbound(self) -> None:
        """Inbound transactions and EDUs, the federation read endpoints."""
        from mxserver.federation.edus import InboundEdus
        from mxserver.federation.events_api import FederationEventsHandler
        from mxserver.federation.receiver import TransactionReceiver
        from mxserver.federation.room_access import RoomAccess
        from mxserver.storage.federation_txns import FederationTxnStore

        InboundEdus(
            self.server_name,
            self.clock,
            self.room_server,
            self.room_members,
            self.typing_handler,
            self.receipts,
            self.presence_handler,
            self.to_device,
            self.remote_rooms,
        ).register(self.federation_edus)
        txns = FederationTxnStore(self.db)
        self.federation_receiver = TransactionReceiver(
            txns,
            self.room_server,
            self.keyring,
            self.federation_edus,
            self.federation_gaps,
            self.remote_rooms,
            self.clock,
        )
        access = RoomAccess(self.room_server, self.state_store, self.event_store, self.room_servers, self.erased_users)
        self.federation_events = FederationEventsHandler(
            self.server_name, self.clock, self.event_store, self.state_store, access, txns
        )

    def _build_federation_sender(self) -> None:
        """The outbound sender: per-destination queues fed by the room and ephemeral streams."""
        from mxserver.federation.outbound_edus import OutboundEdus
        from mxserver.storage.federation_sender import FederationSenderStore

        fed = self.config.federation
        room_members = self.room_members

        #: the sender's persisted state (the admin API reads its rooms per destination too)
        self.federation_sender_store = FederationSenderStore(self.db)
        sender = self.federation_sender = FederationSender(
            self.server_name,
            self.clock,
            fed,
            self.federation_sender_store,
            self.room_servers,
            self.room_server,
            self.event_store,
            self.federation_client,
            transport=self._federation_transport,
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
        self.outbound_edus = OutboundEdus(self.server_name, sender, room_members, self.presence_handler)
        self.outbound_edus.subscribe(self.ephemeral_streams)
        if fed.enabled:
            # New joins: the presence of the users who now share a room (READERS: after the member caches).
            self.room_stream.subscribe(self.outbound_edus.on_room_events, Phase.READERS)
            self.remote_rooms.joined_state.subscribe(
                lambda c: self.outbound_edus.on_joined_state(c.room_id, c.joined), Phase.READERS
            )

        # Local users' device-list changes, sent to the servers sharing a room with them.
        from mxserver.e2ee.outbound_device_lists import OutboundDeviceLists

        self.outbound_device_lists = OutboundDeviceLists(
            self.server_name,
            self.e2e_key_store,
            self.room_members,
            self.room_servers.servers_in_room,
            self.federation_sender,
        )
        self.ephemeral_streams.device_lists.subscribe(self.outbound_device_lists.on_change)

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
        # Previews trust federation.ca_certificates too (and obey its IP filter).
        fetcher = SafeFetcher(
            self.reactor,
            self.clock,
            self.federation_client.ip_filter,
            config.media.url_preview,
            self.federation_client.tls.verified_creator_for,
        )
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
        """The servlets of one API (``client``, ``federation`` or ``media``), e.g. to mount them elsewhere.

        A sync worker serves the long-polling reads the routing table sends it (issue 19); the
        router sends it nothing else."""
        if self.is_sync_worker:
            return self._sync_servlets() if api == "client" else []
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
            *self._admin_servlets(),
            *self._admin_console_servlets(),
        ]

    def _admin_servlets(self) -> list[Any]:
        """The server admin API (``/_synapse/admin``, ``/_mxserver/admin``): admins only."""
        from mxserver.admin.federation import AdminFederationHandler
        from mxserver.admin.media import AdminMedia
        from mxserver.admin.users import AdminUsers
        from mxserver.api.admin import AdminGate, media, registration_tokens, server_version, users
        from mxserver.api.admin import federation as admin_federation
        from mxserver.api.admin import reports as admin_reports
        from mxserver.api.admin import rooms as admin_rooms
        from mxserver.api.admin import server_notices as admin_notices
        from mxserver.api.admin.workers import AdminWorkersServlet
        from mxserver.api.client.account_moderation import AccountModerationServlet

        gate = AdminGate(self.auth, self.accounts)
        admin_users = AdminUsers(
            self.server_name,
            self.accounts,
            registrar=self.registrar,
            account=self.account,
            devices=self.devices,
            profiles=self.profiles,
            members=self.room_members,
            auth=self.auth,
            passwords=self.passwords,
            password_config=self.config.password,
            erasure=self.erased_users,
            password_login="m.login.password" in self.login_flows,
            clock=self.clock,
        )
        return [
            server_version.ServerVersionServlet(gate),
            users.AdminUsersServlet(gate, admin_users, self.pushers),
            AccountModerationServlet(gate, admin_users),
            registration_tokens.RegistrationTokensServlet(gate, self.registration_tokens),
            media.AdminMediaServlet(gate, AdminMedia(self.server_name, self.media_repository, admin_users, self.event_store)),
            admin_rooms.AdminRoomsServlet(gate, self.admin_rooms),
            admin_rooms.AdminRoomDeletionServlet(gate, self.room_deletion),
            admin_rooms.AdminPurgeHistoryServlet(gate, self.purge_history),
            admin_reports.AdminEventReportsServlet(gate, self.admin_reports),
            admin_notices.ServerNoticesServlet(gate, self.server_notices),
            admin_federation.AdminFederationServlet(
                gate, AdminFederationHandler(self.federation_sender, self.federation_sender_store, self.server_name)
            ),
            AdminWorkersServlet(gate, self.worker_registry),
        ]

    def _admin_console_servlets(self) -> list[Any]:
        """The web admin console (``/_mxserver/admin/``) and the figures it shows live."""
        from mxserver.admin_console import ConsoleFiles
        from mxserver.api.admin import AdminGate
        from mxserver.api.admin.console import AdminConsoleServlet
        from mxserver.api.admin.metrics import AdminMetricsServlet

        gate = AdminGate(self.auth, self.accounts)
        return [AdminConsoleServlet(ConsoleFiles()), AdminMetricsServlet(gate, self.clock)]

    def _build_apps(self) -> dict[str, Any]:
        return {api: build_app(self.servlets(api)).resource() for api in ("client", "federation", "media")}

    @property
    def is_sync_worker(self) -> bool:
        return self.config.worker_role == "sync"

    def _account_servlets(self) -> list[Any]:
        from mxserver.api.client import (
            account,
            admin,
            appservice,
            devices,
            federation_admin,
            login,
            openid,
            register,
            thirdparty,
            threepids,
            versions,
        )

        return [
            versions.VersionsServlet(
                self.auth,
                self.accounts,
                self.login_flows,
                self.config.default_room_version,
                self.config.well_known.client_base_url or self.config.base_url,
                self.config.well_known.support_contacts,
                self.config.well_known.support_page,
            ),
            register.RegisterServlet(self.auth, self.registration),
            login.LoginServlet(self.auth, self.login),
            account.AccountServlet(self.auth, self.account),
            threepids.ThreepidServlet(self.auth, self.threepids, self.threepid_validator, self.registration),
            openid.OpenIdServlet(self.auth, self.openid_tokens, self.ratelimit_login),
            devices.DevicesServlet(self.auth, self.devices),
            admin.AdminRegisterServlet(self.shared_secret_registration),
            federation_admin.FederationAdminServlet(
                self.auth, self.accounts, self.federation_sender, self.appservice_sender.status
            ),
            appservice.AppServiceServlet(
                self.auth,
                self.accounts,
                self.appservice_queries,
                self.reload_appservices,
                self.appservice_sender.status,
            ),
            thirdparty.ThirdPartyServlet(self.auth, self.appservice_queries),
        ]

    def _room_servlets(self) -> list[Any]:
        from mxserver.api.client import (
            directory,
            hierarchy,
            membership,
            mutual_rooms,
            relations,
            reports,
            room_events,
            room_summary,
            rooms_create,
            search,
            threads,
        )

        auth = self.auth
        return [
            room_events.RoomEventsServlet(auth, self.room_messages, self.room_history),
            relations.RelationsServlet(auth, self.relations),
            reports.ReportsServlet(auth, self.reports, self.ratelimit_report),
            threads.ThreadsServlet(auth, self.threads),
            search.SearchServlet(auth, self.search),
            rooms_create.CreateRoomServlet(auth, self.room_creation, self.room_upgrade),
            membership.MembershipServlet(auth, self.room_membership, self.third_party_invites),
            directory.DirectoryServlet(auth, self.directory, self.config.room_directory),
            hierarchy.HierarchyServlet(auth, self.hierarchy),
            room_summary.RoomSummaryServlet(auth, self.room_summaries),
            mutual_rooms.MutualRoomsServlet(auth, self.mutual_rooms),
        ]

    def _user_data_servlets(self) -> list[Any]:
        from mxserver.api.client import account_data, filters, push_rules, pushers

        return [
            account_data.AccountDataServlet(self.auth, self.account_data),
            filters.FilterServlet(self.auth, self.filters),
            push_rules.PushRulesServlet(self.auth, self.push_rules),
            pushers.PushersServlet(self.auth, self.pushers, self.notification_list),
        ]

    def _e2ee_servlets(self) -> list[Any]:
        from mxserver.api.client import keys, room_keys, to_device

        return [
            to_device.ToDeviceServlet(self.auth, self.to_device),
            room_keys.RoomKeysServlet(self.auth, self.key_backup),
            keys.KeysServlet(self.auth, self.e2e_keys, self.device_lists, self.cross_signing),
            keys.DehydratedDeviceServlet(self.auth, self.dehydrated_devices),
        ]

    def _ephemeral_servlets(self) -> list[Any]:
        from mxserver.api.client import presence, profile, receipts, typing, user_directory, voip
        from mxserver.voip import TurnCredentials

        return [
            typing.TypingServlet(self.auth, self.typing_handler),
            receipts.ReceiptsServlet(self.auth, self.receipts),
            presence.PresenceServlet(self.auth, self.presence_handler),
            profile.ProfileServlet(self.auth, self.profiles),
            user_directory.UserDirectoryServlet(self.auth, self.user_directory),
            voip.VoipServlet(self.auth, TurnCredentials(self.config.voip, self.clock)),
        ]

    def _sync_servlets(self) -> list[Any]:
        from mxserver.api.client import legacy, sliding_sync, sync

        return [
            sync.SyncServlet(self.auth, self.sync_handler, self.filters),
            legacy.LegacySyncServlet(self.auth, self.legacy_sync_handler),
            sliding_sync.SlidingSyncServlet(self.auth, self.sliding_sync_handler),
        ]

    def _client_media_servlets(self) -> list[Any]:
        from mxserver.api.media.media import AuthenticatedMediaServlet

        return [AuthenticatedMediaServlet(self.auth, self.media_repository, self.url_previewer, self.config.media)]

    def _federation_servlets(self) -> list[Any]:
        from mxserver.api.federation import (
            events,
            hierarchy,
            keys,
            membership,
            openid,
            query,
            third_party_invite,
            transactions,
            user_keys,
            version,
        )
        from mxserver.api.media.federation import FederationMediaServlet

        return [
            version.FederationVersionServlet(self.config.well_known),
            membership.FederationMembershipServlet(self.federation_auth, self.federation_membership),
            third_party_invite.FederationThirdPartyInviteServlet(self.federation_auth, self.third_party_invites),
            keys.KeyServerServlet(self.server_name, self.signing_key, self.keyring, self.clock),
            user_keys.UserKeysServlet(self.server_name, self.federation_auth, self.device_lists, self.e2e_keys),
            transactions.TransactionServlet(self.federation_auth, self.federation_receiver, self.config.limits),
            events.FederationEventsServlet(self.federation_auth, self.federation_events),
            query.FederationQueryServlet(
                self.server_name, self.federation_auth, self.profiles, self.directory, self.config.room_directory
            ),
            hierarchy.FederationHierarchyServlet(self.federation_auth, self.hierarchy),
            FederationMediaServlet(self.federation_auth, self.media_repository, self.server_name),
            openid.OpenIdUserInfoServlet(self.openid_tokens),
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
        # The writer migrates; a worker waits for it to have done so (issue 19).
        schema = require_current_schema if self.is_sync_worker else prepare_database
        await self.db.run_with_connection(schema, self.db.dialect)
        for hook in self.start_hooks:
            await hook()
        # Work left by migrations (indexing events stored before an index existed) runs in the
        # background: the server serves meanwhile (the writer's work: not on a worker).
        if not self.is_sync_worker:
            self.background_jobs.start()
        self._lag.start()
        await self.worker_registry.start()
        for listener in self.config.own_listeners:
            self._listening.append(await self._listen(listener))
        self.is_ready = True
        log.info("mxserver {name} ready", name=self.server_name)

    async def _listen(self, listener: Any) -> Any:
        apis = tuple(listener.resources)
        root: Any = self.resource(apis)
        if self.is_sync_worker and "client" in apis:
            # What the routing table does not give this worker's role goes on to main: a
            # misrouted request is served, not refused (the table is the router's contract).
            from mxserver.cluster.proxy import Forwarder
            from mxserver.cluster.router import RoleGate, main_client_url

            if self._forwarder is None:
                self._forwarder = Forwarder(self.reactor)
            root = RoleGate(self.config.worker_role, root, main_client_url(self.config), self._forwarder)
        site = MatrixSite(
            root,
            max_json_body=self.config.limits.max_request_size,
            max_upload_body=self.config.media.max_upload_size,
            x_forwarded=listener.x_forwarded,
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
        await self.worker_registry.stop()
        ports, self._listening = self._listening, []
        for port in ports:
            await port.stopListening()
        if self.is_sync_worker:
            await self._stop_sync_worker()
        else:
            await self._stop_main()
        self.is_ready = False
        self.db.close()

    async def _stop_sync_worker(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.close()
        await self.replication.stop()
        await super().stopService()
        await self.device_lists.settle()

    async def _stop_main(self) -> None:
        await self.push_notifications.stop()
        await self.appservice_reader.stop()
        await self.search_indexer.stop()
        # Child services stop: the federation client abandons requests in flight, so that
        # background work waiting on another server (device-list resyncs) ends now.
        await super().stopService()
        # That work may still write what it learnt: let it finish before the database closes.
        await self.device_lists.settle()
        await self.guest_access.settle()
        await self.admin_room_tasks.settle()
        await self.background_jobs.stop()
        if self.replication_bus is not None:
            await self.replication_bus.stop()


#: parents named in one relations invalidation for the workers; more: forget them all
MAX_RELATION_KEYS = 64


def _escape(path: str | None) -> str:
    return (path or "").replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class _ReadyGate(MatrixResource):
    """A MatrixResource that answers 503 until its Homeserver has finished starting; its
    ``GET /health`` answers ``OK`` (200) once ready, 503 before."""

    def __init__(self, hs: Homeserver, apis: dict[str, Any], extra: dict[bytes, Any]) -> None:
        super().__init__(apis, extra)
        self._hs = hs

    def render(self, request: Request) -> Any:  # type: ignore[override]
        if request.path == b"/health":
            # For routers, load balancers and supervisors (issue 19): plain text, no auth.
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            if not self._hs.is_ready:
                request.setResponseCode(503)
                return b"starting"
            return b"OK"
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
        if config.worker_role == "main":
            prepare_database(conn, backend.dialect)
        else:
            require_current_schema(conn, backend.dialect)
    finally:
        conn.close()
