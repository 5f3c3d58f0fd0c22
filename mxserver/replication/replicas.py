"""What a ``sync`` worker holds in place of the writer's components: read-only, fed by replication.

* :class:`ReadOnlyRooms` answers the readers' room questions (:class:`~mxserver.rooms.api.ReaderRooms`)
  from the database: no sequencer, no writes; current state is cached per room until the next
  event of the room comes on the stream (or the writer says it was replaced).
* :class:`ReplicatedTyping` and :class:`ReplicatedPresence`: typing and presence live in the
  writer's memory; the worker keeps what the hints told it, at the writer's positions, so a
  token minted here means the same on ``main``.
* :class:`ReplicatedPushCounts`: unread counts as the writer's push reader stored them, once it
  has read up to the position ``/sync`` counts to.
* :class:`NoBackfill`: a worker never fetches history from other servers (that writes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from mxserver.config import PresenceConfig
from mxserver.ephemeral.presence import OFFLINE, PresenceHandler
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.errors import MatrixError, not_found
from mxserver.events.model import Event
from mxserver.interfaces import IPresence
from mxserver.storage.events import EventStore, RoomRecord
from mxserver.storage.profiles import ProfileStore
from mxserver.storage.push_actions import PushActionsStore, UnreadCounts
from mxserver.storage.state import StateKey, StateStore
from mxserver.stream_reader import WAIT_TIMEOUT_S
from mxserver.streams import PresenceChange, RoomEventStream, Stream, TypingChange

log = Logger()

JsonDict = dict[str, Any]


def _read_only() -> MatrixError:
    return MatrixError(500, "M_UNKNOWN", "This worker does not write rooms")


class ReadOnlyRooms:
    """The room reads of a worker (see the module docstring). It has no way to write a room."""

    def __init__(self, store: EventStore, state: StateStore, stream: RoomEventStream) -> None:
        self.store = store
        self.state = state
        self._stream = stream
        self._state: dict[str, dict[StateKey, str]] = {}
        #: per room, bumped whenever its cached state is dropped: a load that began before does not keep its answer
        self._generation: dict[str, int] = {}
        #: rooms whose state is being read (every reader of the room waits for the one read)
        self._loading: dict[tuple[str, int], list[Deferred[dict[StateKey, str]]]] = {}

    async def start(self) -> None:
        """Load the store's counters (a start hook): the stream starts at the database's position."""
        await self.store.load_counters()
        self._stream.position = self.store.max_stream

    @property
    def current_position(self) -> int:
        return self.store.max_stream

    def on_room_events(self, events: list[Event]) -> None:
        """Room-stream subscriber (first of the CACHES phase). Any new event may change the
        current state, not only state events (a merge of forks resolves state anew)."""
        for room_id in {event.room_id for event in events}:
            self.forget_state(room_id)

    def forget_state(self, room_id: str) -> None:
        self._state.pop(room_id, None)
        self._generation[room_id] = self._generation.get(room_id, 0) + 1

    def forget_room(self, room_id: str) -> None:
        """The room was purged on the writer."""
        self.forget_state(room_id)
        self.store.forget_room(room_id)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self.store.get_room(room_id)

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        cached = self._state.get(room_id)
        if cached is not None:
            return dict(cached)
        # Many long-polls woken by one event read the room at once: one read serves them all
        # (a read begun before the room's latest event is not joined, nor kept).
        key = (room_id, self._generation.get(room_id, 0))
        waiters = self._loading.get(key)
        if waiters is not None:
            d: Deferred[dict[StateKey, str]] = Deferred()
            waiters.append(d)
            return dict(await d)
        self._loading[key] = []
        try:
            state = await self._read_state(room_id)
        except BaseException as e:
            for waiter in self._loading.pop(key, []):
                if not waiter.called:  # not cancelled (its client went away)
                    waiter.errback(e)
            raise
        if self._generation.get(room_id, 0) == key[1]:
            self._state[room_id] = state
        for waiter in self._loading.pop(key, []):
            if not waiter.called:
                waiter.callback(state)
        return dict(state)

    async def _read_state(self, room_id: str) -> dict[StateKey, str]:
        room = await self.store.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        _, _, snapshot = await self.store.get_room_head(room.room_nid)
        return dict(await self.state.get_state(snapshot))

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]:
        state = await self.current_state_ids(room_id)
        wanted = state if keys is None else {k: state[k] for k in keys if k in state}
        events = await self.store.get_events(wanted.values())
        return {k: events[e] for k, e in wanted.items() if e in events}

    async def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> Event | None:
        return (await self.current_state_events(room_id, [(etype, state_key)])).get((etype, state_key))

    async def membership(self, room_id: str, user_id: str) -> str | None:
        member = await self.current_state_event(room_id, "m.room.member", user_id)
        return member.membership if member is not None else None


class NoBackfill:
    """A worker's history ends where the database's does (backfilling writes: main does it)."""

    async def backfill(self, room_id: str) -> int:
        return 0

    async def may_have_more(self, room_id: str) -> bool:
        return False


class ReplicatedTyping:
    """Who is typing, as the writer's hints said, at the writer's positions (the same
    answers as :class:`~mxserver.ephemeral.typing.TypingHandler`)."""

    def __init__(self, changes: Stream[TypingChange]) -> None:
        self._changes = changes
        self._position = 0
        self._typing: dict[str, frozenset[str]] = {}
        self._room_positions: dict[str, int] = {}

    @property
    def current_position(self) -> int:
        return self._position

    def apply(self, room_id: str, typing_now: Iterable[str], position: int) -> None:
        """The writer's typing stream moved to ``position`` with this room's change."""
        users = frozenset(typing_now)
        if users:
            self._typing[room_id] = users
        else:
            self._typing.pop(room_id, None)
        self._room_positions[room_id] = max(position, self._room_positions.get(room_id, 0))
        self._position = max(self._position, position)
        self._changes.publish(TypingChange(room_id, users, position=position))

    def typing_for_rooms(self, room_ids: Iterable[str], since_pos: int | None) -> dict[str, JsonDict]:
        initial = since_pos is None or since_pos > self._position
        out: dict[str, JsonDict] = {}
        for room_id in room_ids:
            users = self._typing.get(room_id, frozenset())
            if initial:
                if not users and room_id not in self._room_positions:
                    continue
            else:
                assert since_pos is not None
                if self._room_positions.get(room_id, 0) <= since_pos:
                    continue
            out[room_id] = {"type": "m.typing", "content": {"user_ids": sorted(users)}}
        return out


@implementer(IPresence)
class _ReplicatedStates:
    """The presence states the writer's hints carried (a presence "module" with no clock of its own)."""

    def __init__(self) -> None:
        self.states: dict[str, JsonDict] = {}
        self.on_change: Callable[[str], None] | None = None

    def set_state(self, user_id: str, presence: str, status_msg: str | None) -> None:
        raise _read_only()

    def get_state(self, user_id: str) -> JsonDict:
        return dict(self.states.get(user_id, {"presence": OFFLINE}))

    def user_active(self, user_id: str) -> None:
        pass


class ReplicatedPresence(PresenceHandler):
    """Presence as the writer's hints said, at the writer's positions. A ``/sync`` here marks its
    user online on the writer (``forward_synced``): the worker runs no presence timers and
    changes nothing itself."""

    def __init__(
        self,
        config: PresenceConfig,
        members: RoomMembers,
        profiles: ProfileStore,
        clock: IReactorTime,
        changes: Stream[PresenceChange],
        forward_synced: Callable[[str, str | None], None],
    ) -> None:
        self._states = _ReplicatedStates()
        super().__init__(self._states, config, members, profiles, clock, changes)
        self._forward_synced = forward_synced

    async def user_synced(self, user_id: str, set_presence: str | None) -> None:
        if self.enabled and set_presence != OFFLINE:
            self._forward_synced(user_id, set_presence)

    async def set_presence(self, requester: Any, user_id: str, presence: str, status_msg: str | None) -> None:
        raise _read_only()

    def profile_changed(self, user_id: str) -> None:
        pass  # the writer sends the user's presence again

    def apply(self, user_id: str, state: Mapping[str, Any], position: int) -> None:
        """The writer's presence stream moved to ``position`` with this user's change."""
        if not self.enabled:
            return
        self._states.states[user_id] = dict(state)
        self._user_positions[user_id] = max(position, self._user_positions.get(user_id, 0))
        self._position = max(self._position, position)
        d = Deferred.fromCoroutine(self._publish(user_id))
        d.addErrback(lambda f: log.failure("publishing the presence of {user_id} failed", f, user_id=user_id))


class ReplicatedPushCounts:
    """Unread counts (``/sync``'s ``unread_notifications``) read from what the writer's push
    reader stored, once it has read up to the position asked (or after a timeout, as the
    writer's own ``/sync`` does). ``ask(position)`` tells the writer someone waits for it."""

    def __init__(self, store: PushActionsStore, reader_name: str, clock: IReactorTime, ask: Callable[[int], None]) -> None:
        self._store = store
        self._reader_name = reader_name
        self._clock = clock
        self._ask = ask
        self.position = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []
        #: the highest position the writer was asked for (one request covers every sync waiting for less)
        self._asked = 0

    async def start(self) -> None:
        """A start hook: the reader's position as the writer last persisted it."""
        self.advanced((await self._store.reader_position(self._reader_name)) or 0)

    def advanced(self, position: int) -> None:
        """The writer's push reader has read (and stored what it gave) up to ``position``."""
        if position <= self.position:
            return
        self.position = position
        ready = [d for p, d in self._waiters if p <= position]
        self._waiters = [(p, d) for p, d in self._waiters if p > position]
        for d in ready:
            if not d.called:
                d.callback(None)

    def wait_for(self, position: int, timeout: float = WAIT_TIMEOUT_S) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if position <= self.position:
            d.callback(None)
            return d
        self._waiters.append((position, d))
        if position > self._asked:
            self._asked = position
            self._ask(position)

        def timed_out() -> None:
            if not d.called:
                log.warn("the writer's push reader is behind (at {position})", position=self.position)
                self._waiters = [(p, w) for p, w in self._waiters if w is not d]
                d.callback(None)

        call = self._clock.callLater(timeout, timed_out)
        d.addCallback(lambda _: call.cancel() if call.active() else None)
        return d

    async def unread_counts(
        self, user_id: str, rooms: Sequence[tuple[int, int]], upto: int
    ) -> dict[int, dict[str, UnreadCounts]]:
        if not rooms:
            return {}
        await self.wait_for(upto)
        return await self._store.unread_counts(user_id, rooms)


class PublishedRooms:
    """Whether a room is in the directory (the legacy ``/initialSync``'s ``visibility``)."""

    def __init__(self, is_published: Callable[[str], Awaitable[bool]]) -> None:
        self._is_published = is_published

    async def is_published(self, room_id: str) -> bool:
        return bool(await self._is_published(room_id))
