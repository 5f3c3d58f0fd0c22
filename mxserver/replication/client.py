"""The sync worker's side of replication: hints in, the database read, the local streams fed.

:class:`ReplicationClient` takes the writer's hints (:mod:`mxserver.replication.publisher`) and
brings the worker up to the positions they name: room events are read from the database from the
worker's last position, a page at a time, and only up to the position the hint names (committed
on the writer), then published on the worker's own :class:`~mxserver.streams.RoomEventStream`;
the per-user streams' positions move and their change records are published on the worker's
:class:`~mxserver.streams.EphemeralStreams`; typing and presence records are applied to the
replicas. Every cache and the notifier subscribe to those streams as in one process.

A lost hint is caught up by the next one (each carries every position) and by a periodic check
of the database's positions (:data:`CHECK_INTERVAL_S`, on the clock), and after the bus
reconnects. A per-user stream that moved without its change record wakes every long-poll (who
it concerns is unknown; each looks and waits on).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.accounts.auth import Auth
from mxserver.accounts.erasure import ErasedUsers
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.replication.bus import TO_MAIN, TO_WORKERS, IReplicationBus, JsonDict
from mxserver.replication.replicas import ReadOnlyRooms, ReplicatedPresence, ReplicatedPushCounts, ReplicatedTyping
from mxserver.storage.events import EventStore
from mxserver.storage.replication import ReplicationStore
from mxserver.storage.room_members import RoomMembersStore
from mxserver.storage.stream_positions import PersistedStream
from mxserver.stream_reader import CATCH_UP_PAGE
from mxserver.streams import (
    AccountDataChange,
    DeviceListChange,
    EphemeralStreams,
    ReceiptChange,
    RoomEventStream,
    ToDeviceSent,
)
from mxserver.sync.account_data import AccountDataHandler
from mxserver.sync.notifier import Notifier
from mxserver.sync.tokens import StreamToken

log = Logger()

#: how often the worker compares its positions with the database's (a lost hint is caught up then at the latest)
CHECK_INTERVAL_S = 5.0


class ReplicationClient:
    """Keeps a sync worker up to date with the writer (see the module docstring)."""

    def __init__(
        self,
        bus: IReplicationBus,
        store: ReplicationStore,
        push_reader_name: str,
        room_stream: RoomEventStream,
        events: EventStore,
        rooms: ReadOnlyRooms,
        streams: EphemeralStreams,
        persisted: Mapping[str, PersistedStream],
        typing: ReplicatedTyping,
        presence: ReplicatedPresence,
        counts: ReplicatedPushCounts,
        members: RoomMembers,
        members_store: RoomMembersStore,
        account_data: AccountDataHandler,
        auth: Auth,
        erased: ErasedUsers,
        notifier: Notifier,
        clock: IReactorTime,
    ) -> None:
        self._bus = bus
        self._store = store
        self._push_reader_name = push_reader_name
        self._room_stream = room_stream
        self._events = events
        self._rooms = rooms
        self._streams = streams
        self._persisted = persisted
        self._typing = typing
        self._presence = presence
        self._counts = counts
        self._members = members
        self._members_store = members_store
        self._account_data = account_data
        self._auth = auth
        self._erased = erased
        self._notifier = notifier
        self._clock = clock
        self._started = False
        #: the room position the writer has committed, as far as this worker knows
        self._room_target = 0
        self._catching_up = False
        #: fired when the room catch-up under way ends (tests and the periodic check wait on it)
        self._idle: list[Deferred[None]] = []
        self._check_call: IDelayedCall | None = None
        bus.subscribe(TO_WORKERS, self.on_hint)
        bus.on_reconnect(self._reconnected)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """A start hook, after the stores loaded their positions (the database's current ones):
        listen, then look once more (hints sent before the listening began are not lost)."""
        await self._bus.start()
        self._started = True
        self._bus.publish(TO_MAIN, {"k": "snapshot"})
        await self.check()

    def stop(self) -> Deferred[None]:
        self._started = False
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
        return self._bus.stop()

    def _schedule_check(self) -> None:
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
        self._check_call = self._clock.callLater(CHECK_INTERVAL_S, self._periodic)

    def _periodic(self) -> None:
        d = Deferred.fromCoroutine(self.check())
        d.addErrback(lambda f: log.failure("replication: the periodic check failed", f))

    def _reconnected(self) -> None:
        log.info("replication: the bus is back; catching up from the database")
        self._bus.publish(TO_MAIN, {"k": "snapshot"})
        self._periodic()

    async def check(self) -> None:
        """Compare with the database's committed positions and catch up (periodic, after a
        reconnection, and at start-up); returns once the room stream is caught up."""
        if not self._started:
            return
        try:
            positions = await self._store.positions(self._push_reader_name)
            self._positions(positions)
            await self.caught_up()
        finally:
            if self._started:
                self._schedule_check()

    async def reach(self, token: StreamToken | None) -> None:
        """Return once this worker is at least at ``token``'s room and per-user positions (a
        token minted by ``main``, or by a worker ahead of this one): answering from behind it
        would hand the client a token before its own and repeat what it has seen.

        Without a token (an initial sync) the worker first catches up with what main has
        committed: a client that has just written through main sees its write in the initial
        sync it then makes here (one query of the positions; an initial sync is heavy anyway)."""
        if token is None:
            if self._started:
                await self.check()
            return
        behind = token.room > self._room_stream.position or any(
            getattr(token, name) > stream.current for name, stream in self._persisted.items()
        )
        if behind and self._started:
            await self.check()

    # -- hints -------------------------------------------------------------------------------------

    def on_hint(self, hint: JsonDict) -> None:
        if not self._started:
            return  # start() looks at the database once listening
        records = hint.get("r")
        for record in records if isinstance(records, list) else ():
            if isinstance(record, dict):
                try:
                    self._record(record)
                except Exception:
                    log.failure("replication: a {stream} record failed", stream=record.get("s"))
        positions = hint.get("p")
        if isinstance(positions, dict):
            self._positions({k: v for k, v in positions.items() if isinstance(v, int)})

    def _record(self, r: JsonDict) -> None:
        stream, position = r.get("s"), r.get("p")
        if stream == "invalidate":
            self._invalidate(str(r["cache"]), [str(k) for k in r["keys"]])
            return
        if not isinstance(position, int):
            return
        streams = self._streams
        if stream == "typing":
            self._typing.apply(r["room"], r["users"], position)
        elif stream == "presence":
            self._presence.apply(r["user"], r["state"], position)
        elif stream == "receipts":
            self._persisted["receipts"].replicated(position)
            streams.receipts.publish(ReceiptChange(r["room"], r["type"], r["user"], r["event"], r.get("thread"), int(r["ts"])))
        elif stream == "account_data":
            self._persisted["account_data"].replicated(position)
            self._account_data.forget_user(r["user"])
            streams.account_data.publish(AccountDataChange(r["user"]))
        elif stream == "to_device":
            self._persisted["to_device"].replicated(position)
            streams.to_device.publish(ToDeviceSent(r["sender"], None, r["type"], "", {}, frozenset(r["users"])))
        elif stream == "device_lists":
            self._persisted["device_lists"].replicated(position)
            users = r.get("users")
            if isinstance(users, list):
                streams.device_lists.publish(DeviceListChange(r["user"], (), frozenset(users)))
            else:
                d = Deferred.fromCoroutine(self._device_list_change(r["user"]))
                d.addErrback(lambda f: log.failure("replication: a device-list change failed", f))

    async def _device_list_change(self, user_id: str) -> None:
        users = set(await self._members.users_sharing_rooms(user_id))
        users.add(user_id)
        self._streams.device_lists.publish(DeviceListChange(user_id, (), frozenset(users)))

    def _positions(self, positions: Mapping[str, int]) -> None:
        """Catch up to the writer's committed ``positions``."""
        lost = False
        for name, stream in self._persisted.items():
            position = positions.get(name)
            if position is not None and position > stream.current:
                stream.replicated(position)
                lost = True
        if lost:
            # Changes whose records never came (lost, or too big for a hint): wake everyone.
            self._notifier.notify_all()
        push = positions.get("push")
        if push is not None:
            self._counts.advanced(push)
        room = positions.get("room")
        if room is not None and room > self._room_target:
            self._room_target = room
            self._catch_up()

    # -- the room stream ---------------------------------------------------------------------------

    def caught_up(self) -> Deferred[None]:
        """Fires once the room stream is read up to the last position the writer named."""
        d: Deferred[None] = Deferred()
        if not self._catching_up and self._room_stream.position >= self._room_target:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    def _catch_up(self) -> None:
        if self._catching_up or not self._started:
            return
        self._catching_up = True
        d = Deferred.fromCoroutine(self._read_room_events())

        def done(ok: bool) -> None:
            self._catching_up = False
            if ok and self._started and self._room_stream.position < self._room_target:
                self._catch_up()  # the target moved while the last page was read
                return
            idle, self._idle = self._idle, []
            for w in idle:
                w.callback(None)

        d.addCallback(done)

    async def _read_room_events(self) -> bool:
        """Read the writer's events after this worker's position, never past the position the
        writer named (committed), in pages; publish each page on the worker's room stream.
        False if reading failed (the next hint or check tries again)."""
        stream, events = self._room_stream, self._events
        try:
            while stream.position < self._room_target and self._started:
                upto = self._room_target
                ids = await events.timeline_event_ids_after(stream.position, upto, CATCH_UP_PAGE)
                found = await events.get_events(ids, include_rejected=False)
                page = [found[i] for i in ids if i in found]
                if len(ids) >= CATCH_UP_PAGE and page:
                    upto = max(e.metadata.stream_ordering or 0 for e in page)
                events.replicated(page, upto)
                if page:
                    stream.publish_events(page, upto)
                else:
                    stream.position = max(stream.position, upto)
            return True
        except Exception:
            log.failure("replication: reading room events failed")
            return False

    # -- cache invalidations ------------------------------------------------------------------------

    def _invalidate(self, cache: str, keys: list[str]) -> None:
        if cache == "tokens":
            self._auth.invalidate(keys)
        elif cache == "user":
            for user_id in keys:
                self._auth.invalidate_user(user_id)
        elif cache == "erased":
            for user_id in keys:
                self._erased.erased(user_id)
        elif cache == "not_erased":
            for user_id in keys:
                self._erased.not_erased(user_id)
        elif cache == "room_purged":
            for room_id in keys:
                self._rooms.forget_room(room_id)
                self._members.state_replaced(room_id, ())
        elif cache == "room_state":
            for room_id in keys:
                self._rooms.forget_state(room_id)
                d = Deferred.fromCoroutine(self._members_replaced(room_id))
                d.addErrback(lambda f: log.failure("replication: reloading a room's members failed", f))
        elif cache == "relations":
            # bundled aggregations: the children of these parents changed on main
            self._events.relation_changes.publish(None if "*" in keys else frozenset(keys))
        else:
            log.warn("replication: unknown cache {cache}", cache=cache)

    async def _members_replaced(self, room_id: str) -> None:
        joined = await self._members_store.joined_members([room_id])
        self._members.state_replaced(room_id, joined.get(room_id, set()))


def forward_to_main(bus: IReplicationBus) -> tuple[Callable[[str, str | None], None], Callable[[int], None]]:
    """What a worker tells the writer: ``synced(user_id, set_presence)`` (a /sync here marks
    the user online there) and ``push_wanted(position)`` (a /sync here waits for the push reader)."""

    def synced(user_id: str, set_presence: str | None) -> None:
        bus.publish(TO_MAIN, {"k": "synced", "user": user_id, "set_presence": set_presence})

    def push_wanted(position: int) -> None:
        bus.publish(TO_MAIN, {"k": "push", "p": position})

    return synced, push_wanted
