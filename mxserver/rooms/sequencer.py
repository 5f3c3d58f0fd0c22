"""The room server's sequencer: room heads, per-room locks, and the batching persister.

For each room it keeps a *head* in memory (forward extremities, depth, current
state map) with the lock its writers take. A writer (the local event builder, the
inbound receiver, the remote-membership hooks) plans its events on the head under
that lock and hands the planned :class:`~mxserver.storage.events.PersistItem`\\ s to
:meth:`RoomSequencer.enqueue`; the persister writes everything queued so far in one
database transaction and only then answers the writers, so an acknowledged event
is always committed, and a busy room costs one commit per batch rather than per
event. After the commit the events are published on the room event stream.

A failed write drops the heads of its rooms (they are reloaded from the database)
and fails the writes queued after it in those rooms: they were built on the lost
events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.errors import MatrixError, not_found
from mxserver.rooms.room_head import RoomHead
from mxserver.storage.events import EventStore, PersistItem
from mxserver.storage.state import StateStore
from mxserver.streams import RoomEventStream

log = Logger()
_T = TypeVar("_T")

#: events written in one transaction at most (a batch takes whole writes, so it may exceed it)
MAX_BATCH = 500


class RoomSequencer:
    """Room heads and their locks; persists planned writes in order, in batches, then publishes."""

    def __init__(self, store: EventStore, state: StateStore, stream: RoomEventStream, clock: IReactorTime) -> None:
        self.store = store
        self.state = state
        self.stream = stream
        self.clock = clock
        self._heads: dict[str, RoomHead] = {}
        self._head_loading: dict[str, list[Deferred[RoomHead]]] = {}
        self._queue: list[tuple[list[PersistItem], Deferred[None]]] = []
        self._persisting = False
        self._commit_listeners: list[Callable[[Sequence[PersistItem]], None]] = []

    async def start(self) -> None:
        """Load the store's counters (after migrations); the stream starts at the last position."""
        await self.store.load_counters()
        self.stream.position = self.store.max_stream

    @property
    def current_position(self) -> int:
        """The highest room-stream position whose events (and all before) are persisted."""
        return self.store.max_stream

    def on_commit(self, listener: Callable[[Sequence[PersistItem]], None]) -> None:
        """Call ``listener(items)`` after each committed batch, before it is published."""
        self._commit_listeners.append(listener)

    # -- heads ----------------------------------------------------------------------------

    async def get_head(self, room_id: str) -> RoomHead:
        """The room's head, loaded once from the database (404 for an unknown room)."""
        head = self._heads.get(room_id)
        if head is not None:
            return head
        waiters = self._head_loading.get(room_id)
        if waiters is not None:
            d: Deferred[RoomHead] = Deferred()
            waiters.append(d)
            return await d
        self._head_loading[room_id] = []
        try:
            head = await self._load_head(room_id)
        except BaseException as e:
            for waiter in self._head_loading.pop(room_id):
                waiter.errback(e)
            raise
        for waiter in self._head_loading.pop(room_id):
            waiter.callback(head)
        return head

    async def _load_head(self, room_id: str) -> RoomHead:
        room = await self.store.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        extremities, depth, snapshot = await self.store.get_room_head(room.room_nid)
        state = dict(await self.state.get_state(snapshot))
        head = RoomHead(room, extremities, depth, snapshot, state)
        self._heads.setdefault(room_id, head)
        return self._heads[room_id]

    def is_current(self, head: RoomHead) -> bool:
        """False once ``head`` was dropped (a failed write) or replaced: a writer that waited
        for its lock must then take the reloaded head."""
        return self._heads.get(head.room.room_id) is head

    def set_head(self, head: RoomHead) -> None:
        """Make ``head`` the room's head (a new room, or one whose state was adopted wholesale)."""
        self._heads[head.room.room_id] = head

    def forget_head(self, room_id: str) -> None:
        """Drop the room's head: the next writer reloads it from the database."""
        self._heads.pop(room_id, None)

    async def lock_existing_head(self, room_id: str) -> RoomHead:
        """The room's current head with its lock held (the caller releases it)."""
        while True:
            head = await self.get_head(room_id)
            await head.lock.acquire()
            if self.is_current(head):
                return head
            head.lock.release()

    async def run_locked(self, room_id: str, fn: Callable[[RoomHead], Awaitable[_T]]) -> _T:
        """Run ``fn(head)`` holding the room's lock, once every write queued before is committed.

        For writers whose checks read earlier events back from the store (the inbound
        receiver) and writers of room *history* with their own store (backfill): events they
        store are never extremities nor current state, but must not race a receive of the
        same event, and their reads must see everything queued before.
        """
        while True:
            head = await self.get_head(room_id)
            await head.lock.acquire()
            try:
                if not self.is_current(head):
                    continue  # dropped after a failed write while we waited: reload
                if self.busy:
                    await self.enqueue([])
                    if not self.is_current(head):
                        continue
                return await fn(head)
            finally:
                head.lock.release()

    # -- persistence -----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Writes are queued or being written."""
        return self._persisting or bool(self._queue)

    async def wait_for_queued(self) -> None:
        """Return once every write queued so far is committed (or failed)."""
        if self.busy:
            await self.enqueue([])

    def enqueue(self, items: list[PersistItem]) -> Deferred[None]:
        """Persist ``items`` (planned on their heads, under the lock) after everything queued
        before them; the Deferred fires once they are committed, and fails if they are not."""
        d: Deferred[None] = Deferred()
        self._queue.append((items, d))
        if not self._persisting:
            self._drain()
        return d

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _drain(self) -> None:
        if not self._queue:
            self._persisting = False
            return
        self._persisting = True
        batch: list[tuple[list[PersistItem], Deferred[None]]] = []
        count = 0
        while self._queue and count < MAX_BATCH:
            items, d = self._queue.pop(0)
            batch.append((items, d))
            count += len(items)
        all_items = [i for items, _ in batch for i in items]
        d = self.store.persist(all_items, self._now_ms())

        def ok(_: Any) -> None:
            self.store.persisted(all_items)
            for listener in self._commit_listeners:
                listener(all_items)
            events = [i.event for i in all_items if i.stream_ordering is not None]
            if events:
                self.stream.publish_events(events, self.store.max_stream)
            for _, waiter in batch:
                waiter.callback(None)

        def failed(failure: Any) -> None:
            log.failure("persisting {n} events failed", failure, n=len(all_items))
            rooms = {i.room.room_id for i in all_items}
            for room_id in rooms:
                self.forget_head(room_id)
            self.state.invalidate_planned()
            err = MatrixError(500, "M_UNKNOWN", "Could not store the event")
            for _, waiter in batch:
                waiter.errback(err)
            # Later queued events of those rooms were built on the lost ones: fail them too.
            keep = []
            for items, waiter in self._queue:
                if any(i.room.room_id in rooms for i in items):
                    waiter.errback(err)
                else:
                    keep.append((items, waiter))
            self._queue = keep

        d.addCallbacks(ok, failed)
        d.addBoth(lambda _: self._drain())
