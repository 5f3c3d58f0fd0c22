"""Per-connection state: what each room has been sent, persisted, behind ``pos`` tokens.

MSC4186 §Connections: a connection is (user, device, ``conn_id``); each response
carries a ``pos``, and the server must not assume the client got a response until
a request comes back with its ``pos``. So the state a request starts from is the
one at its ``pos``: the confirmed base, or a pending response's changes on top of
it (which the request confirms: the others become void). A retry with the base
``pos`` voids every pending response.

A pos is ``<stream token>~<position>``: the stream token is where the response's
streams stopped (usable as a ``/messages`` ``from``), the position names the
connection state (0: none stored). Both belong to the requesting user and device
only: anything else is ``M_UNKNOWN_POS`` (400), which tells the client to start a
new connection.

State lives in the database (schema 0028: a restart keeps connections) and, for
the connections in use, in a bounded in-memory cache that mirrors it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxserver.errors import MatrixError
from mxserver.sliding_sync.request import RoomConfig
from mxserver.storage.sliding_sync import StoredConnection
from mxserver.sync.tokens import StreamToken

#: a stream status meaning "sent up to the position of the request's pos"
LIVE = -1
#: connections kept in memory (the rest are read back from the database when used) ...
MAX_CACHED_CONNECTIONS = 1_000
#: ... and room entries across them: the least recently used connections go first
MAX_CACHED_ROOM_ENTRIES = 200_000
#: MSC4186 §Security considerations: a device's and a user's connections are capped (the oldest go)
MAX_CONNECTIONS_PER_DEVICE = 10
MAX_CONNECTIONS_PER_USER = 50
#: a connection unused this long is removed (Synapse: 7 days), checked this often
CONNECTION_EXPIRY_MS = 7 * 24 * 3600 * 1000
EXPIRY_INTERVAL_S = 3600.0
#: how stale a connection's last-used time may get before a request writes it again
TOUCH_INTERVAL_MS = 3600 * 1000
#: lazily-loaded members remembered per room (Synapse remembers 100 state keys per type)
MAX_LAZY_MEMBERS = 100
#: distinct room configs shared by the entries in memory (most rooms share a few)
MAX_INTERNED_CONFIGS = 10_000

log = Logger()
_configs: dict[RoomConfig, RoomConfig] = {}


def intern_config(config: RoomConfig) -> RoomConfig:
    """One object per distinct config: a thousand rooms of one list share theirs in memory."""
    found = _configs.get(config)
    if found is not None:
        return found
    if len(_configs) >= MAX_INTERNED_CONFIGS:
        _configs.clear()
    _configs[config] = config
    return config


_config_texts: dict[RoomConfig, str] = {}


def _config_json(config: RoomConfig) -> str:
    text = _config_texts.get(config)
    if text is None:
        if len(_config_texts) >= MAX_INTERNED_CONFIGS:
            _config_texts.clear()
        text = _config_texts[config] = json.dumps(config.to_json(), separators=(",", ":"))
    return text


def unknown_pos(msg: str = "Unknown position") -> MatrixError:
    """MSC4186 §Connections: the client must start a new connection (no ``pos``)."""
    return MatrixError(400, "M_UNKNOWN_POS", msg)


@attrs.frozen
class Pos:
    token: StreamToken
    position: int

    def serialize(self) -> str:
        return f"{self.token.serialize()}~{self.position}"

    @classmethod
    def parse(cls, raw: str) -> Pos:
        """A pos we handed out; anything else is M_UNKNOWN_POS (a token we cannot read is one we
        do not know: the client recovers by starting again)."""
        token_part, sep, position_part = raw.rpartition("~")
        if not sep or not position_part.isdigit() or len(position_part) > 18:
            raise unknown_pos("Unknown pos format")
        try:
            token = StreamToken.parse(token_part)
        except MatrixError:
            raise unknown_pos("Unknown pos format") from None
        return cls(token, int(position_part))


@attrs.frozen
class RoomEntry:
    """What a connection has sent of one room.

    Each stream status is None (never sent), :data:`LIVE` (up to the request's pos) or the
    stream position the room was last brought up to (updates after it were not sent).
    """

    room: int | None = None
    receipts: int | None = None
    account_data: int | None = None
    #: the room config the client's copy of the room was built with
    config: RoomConfig | None = None
    #: members whose membership event the client has from lazy loading
    lazy_members: frozenset[str] = frozenset()

    def to_json(self) -> str:
        out: dict[str, Any] = {}
        for key, value in (("r", self.room), ("rc", self.receipts), ("ad", self.account_data)):
            if value is not None:
                out[key] = value
        if self.lazy_members:
            out["lm"] = sorted(self.lazy_members)
        text = json.dumps(out, separators=(",", ":"))
        if self.config is None:
            return text
        # The config's JSON is made once per distinct config (most rooms share a few).
        return '{"c":' + _config_json(self.config) + ("}" if text == "{}" else "," + text[1:])

    @classmethod
    def from_json(cls, raw: str) -> RoomEntry:
        obj = json.loads(raw)
        return cls(
            room=obj.get("r"),
            receipts=obj.get("rc"),
            account_data=obj.get("ad"),
            config=intern_config(RoomConfig.from_json(obj["c"])) if "c" in obj else None,
            lazy_members=frozenset(obj.get("lm", ())),
        )


class ConnectionStore(Protocol):
    """The SQL of connection state (:class:`~mxserver.storage.sliding_sync.SlidingSyncStore`)."""

    def load_connection(self, user_id: str, device_id: str, conn_id: str) -> Deferred[StoredConnection | None]: ...

    def create_connection(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        entries: Mapping[str, str],
        now_ms: int,
        max_per_device: int,
        max_per_user: int,
        unused_since_ms: int,
    ) -> Deferred[tuple[int, int, list[tuple[str, str]]]]: ...

    def add_position(
        self, conn_key: int, base_position: int, entries: Mapping[str, str], now_ms: int
    ) -> Deferred[int | None]: ...

    def confirm_position(self, conn_key: int, position: int, now_ms: int) -> Deferred[bool]: ...

    def drop_pending(self, conn_key: int, now_ms: int) -> Deferred[None]: ...

    def delete_connections(self, user_id: str, device_ids: Sequence[str] | None) -> Deferred[list[tuple[str, str]]]: ...

    def delete_unused(self, unused_since_ms: int) -> Deferred[list[tuple[str, str, str]]]: ...


ConnKey = tuple[str, str, str]


@attrs.define
class _Cached:
    conn_key: int
    base_position: int
    rooms: dict[str, RoomEntry]
    pending: dict[int, dict[str, RoomEntry]]
    last_used_ms: int
    #: entries counted in the cache's total (rooms and pending change in place)
    counted: int = 0


@attrs.frozen
class OpenConnection:
    """The state a request starts from (a copy: later requests do not change it)."""

    key: ConnKey
    #: None: no state stored yet (a new connection is created when something is sent)
    conn_key: int | None
    position: int
    rooms: Mapping[str, RoomEntry]


class Connections(service.Service):
    """Connection state: opened at a request's pos, committed with the response's changes.

    A child service of the Homeserver: while running, it removes connections unused for
    :data:`CONNECTION_EXPIRY_MS`.
    """

    def __init__(
        self,
        store: ConnectionStore,
        clock: IReactorTime,
        *,
        max_cached: int = MAX_CACHED_CONNECTIONS,
        max_cached_entries: int = MAX_CACHED_ROOM_ENTRIES,
        max_per_device: int = MAX_CONNECTIONS_PER_DEVICE,
        max_per_user: int = MAX_CONNECTIONS_PER_USER,
        expiry_ms: int = CONNECTION_EXPIRY_MS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_cached = max_cached
        self._max_cached_entries = max_cached_entries
        self._max_per_device = max_per_device
        self._max_per_user = max_per_user
        self._expiry_ms = expiry_ms
        self._cache: OrderedDict[ConnKey, _Cached] = OrderedDict()
        self._cached_entries = 0
        self._expiry = LoopingCall(lambda: ensureDeferred(self.expire()))
        self._expiry.clock = clock

    def startService(self) -> None:
        super().startService()
        # Not now: the database is migrated after the services start.
        self._expiry.start(EXPIRY_INTERVAL_S, now=False)

    def stopService(self) -> Any:
        if self._expiry.running:
            self._expiry.stop()
        return super().stopService()

    async def expire(self) -> int:
        """Remove the connections unused for too long; how many."""
        try:
            removed = await self._store.delete_unused(self._now_ms() - self._expiry_ms)
        except Exception:
            log.failure("expiring sliding sync connections failed")
            return 0
        for key in removed:
            self._drop(key)
        return len(removed)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    @property
    def cached_connections(self) -> int:
        """How many connections are in memory (for tests and metrics)."""
        return len(self._cache)

    @property
    def cached_entries(self) -> int:
        """How many room entries those hold (for tests and metrics)."""
        return self._cached_entries

    async def open(self, user_id: str, device_id: str, conn_id: str, position: int | None) -> OpenConnection:
        """The connection's state at ``position`` (None or 0: a fresh start); M_UNKNOWN_POS if the
        position is not this connection's base or one of its pending responses."""
        key = (user_id, device_id, conn_id)
        if not position:
            return OpenConnection(key, None, 0, {})
        cached = await self._get(key)
        if cached is None:
            raise unknown_pos()
        now = self._now_ms()
        if cached.base_position == position:
            if cached.pending:
                # A retry of the request that made them: those responses never arrived.
                cached.pending.clear()
                cached.last_used_ms = now
                await self._store.drop_pending(cached.conn_key, now)
            elif now - cached.last_used_ms > TOUCH_INTERVAL_MS:
                # In use, though nothing changed for a while: not to be expired.
                cached.last_used_ms = now
                await self._store.drop_pending(cached.conn_key, now)  # (no pending: a touch)
        elif position in cached.pending:
            changes = cached.pending[position]
            cached.rooms.update(changes)
            cached.base_position = position
            cached.pending.clear()
            cached.last_used_ms = now
            if not await self._store.confirm_position(cached.conn_key, position, now):
                self._drop(key)
                raise unknown_pos()
        else:
            raise unknown_pos()
        self._account(key)
        return OpenConnection(key, cached.conn_key, position, dict(cached.rooms))

    async def commit(self, opened: OpenConnection, changes: Mapping[str, RoomEntry]) -> int:
        """Store a response's changes; the position for its pos (the same one if nothing changed)."""
        if not changes:
            return opened.position
        entries = {room_id: entry.to_json() for room_id, entry in changes.items()}
        now = self._now_ms()
        user_id, device_id, conn_id = opened.key
        if opened.conn_key is None:
            conn_key, position, removed = await self._store.create_connection(
                user_id, device_id, conn_id, entries, now, self._max_per_device, self._max_per_user, now - self._expiry_ms
            )
            for dev, cid in removed:
                self._drop((user_id, dev, cid))
            self._put(opened.key, _Cached(conn_key, 0, {}, {position: dict(changes)}, now))
            return position
        new_position = await self._store.add_position(opened.conn_key, opened.position, entries, now)
        cached = self._cache.get(opened.key)
        if new_position is None:
            # Another request on this connection confirmed a newer pos meanwhile: this response
            # belongs to a request its client already gave up on.
            self._drop(opened.key)
            raise unknown_pos("The connection moved on")
        if cached is not None and cached.conn_key == opened.conn_key and cached.base_position == opened.position:
            cached.pending[new_position] = dict(changes)
            self._account(opened.key)
        else:
            self._drop(opened.key)
        return new_position

    async def devices_removed(self, user_id: str, device_ids: list[str] | None) -> None:
        """A removed device's connections go with it (device hooks)."""
        for dev, cid in await self._store.delete_connections(user_id, device_ids):
            self._drop((user_id, dev, cid))

    async def _get(self, key: ConnKey) -> _Cached | None:
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        stored = await self._store.load_connection(*key)
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # loaded by a concurrent request meanwhile: that copy may have moved on
        if stored is None:
            return None
        rooms = {room_id: RoomEntry.from_json(raw) for room_id, raw in stored.rows.get(0, {}).items()}
        pending = {
            position: {room_id: RoomEntry.from_json(raw) for room_id, raw in rows.items()}
            for position, rows in stored.rows.items()
            if position != 0
        }
        loaded = _Cached(stored.conn_key, stored.base_position, rooms, pending, stored.last_used_ts)
        self._put(key, loaded)
        return loaded

    def _put(self, key: ConnKey, value: _Cached) -> None:
        self._drop(key)
        self._cache[key] = value
        self._account(key)

    def _account(self, key: ConnKey) -> None:
        """Count the entries of ``key`` again, then drop the least recently used connections
        (never ``key``) until the cache is within its bounds."""
        cached = self._cache.get(key)
        if cached is not None:
            size = len(cached.rooms) + sum(len(p) for p in cached.pending.values())
            self._cached_entries += size - cached.counted
            cached.counted = size
        while len(self._cache) > 1 and (
            len(self._cache) > self._max_cached or self._cached_entries > self._max_cached_entries
        ):
            oldest = next(iter(self._cache))
            if oldest == key:
                self._cache.move_to_end(key)
                continue
            self._drop(oldest)

    def _drop(self, key: ConnKey) -> None:
        dropped = self._cache.pop(key, None)
        if dropped is not None:
            self._cached_entries -= dropped.counted
