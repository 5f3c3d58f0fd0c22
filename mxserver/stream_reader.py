"""The seam every reader of the room event stream uses: batches, a persisted position, catch-up.

A reader (push evaluation, application services, ...) subscribes to the room server's
stream. What is published is queued and read a moment later (``batch_window``), outside the
publish: the sender's answer and the woken ``/sync``\\ s go first, and the events of that
moment are read together (one write for many sends). The reader keeps its position (the
last stream position it has read, persisted by the subclass with what it writes); after a
restart, or when the stream moved on while it was not looking, it catches up from the
store a page at a time. Everything is read once, in stream order.

Subclasses supply :meth:`_process` (read these events, persist ``upto`` with the results,
then :meth:`_advance`), and start from :meth:`_start_from`. Whoever needs a reader's results
for everything up to a position (``/sync``'s counts, ``/search``) waits with :meth:`wait_for`,
which reads what is queued at once rather than after the batch window.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.streams import RoomEventStream

log = Logger()

#: events read per query while catching up
CATCH_UP_PAGE = 500
#: stream positions a batch that gave nothing may move a reader before it persists them
PERSIST_EVERY = 1000
#: the longest :meth:`StreamReader.wait_for` waits before answering without the reader
WAIT_TIMEOUT_S = 10.0
#: the longest a reader works through a batch before it lets the reactor serve requests
SLICE_S = 0.004


def in_timeline(event: Event) -> bool:
    """A new event of the timeline, as readers take them: at a position above 0 (backfilled
    history sits below), not rejected, not soft-failed, not an outlier."""
    meta = event.metadata
    return bool(meta.stream_ordering and meta.stream_ordering > 0) and not (
        meta.rejected_reason or meta.soft_failed or meta.outlier
    )


class EventSource(Protocol):
    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]: ...

    def timeline_event_ids_after(self, position: int, upto: int, limit: int) -> Awaitable[list[str]]: ...


class StreamReader:
    """A batching reader of the room event stream (see the module docstring)."""

    def __init__(
        self,
        name: str,
        stream: RoomEventStream,
        events: EventSource,
        current_position: Callable[[], int],
        reactor: IReactorTime,
        batch_window: float,
        clock: IReactorTime | None = None,
    ) -> None:
        """``name`` (logs, and its row in ``stream_readers``), ``current_position``: the stream's
        committed position, ``reactor``: runs the reads (the real one even where tests fake the
        clock), ``clock``: times :meth:`wait_for` out (the reactor unless given)."""
        self._reader_name = name
        self._clock = clock if clock is not None else reactor
        self._stream = stream
        self._events = events
        self._current_position = current_position
        self._reactor = reactor
        self._batch_window = batch_window
        #: the last stream position read
        self.position = 0
        self._started = False
        self._queue: list[tuple[list[Event], int]] = []
        self._draining = False
        self._pending_kick: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []
        #: the position last persisted with the reader's results
        self._persisted = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self._slice_start = 0.0
        self._advance_listeners: list[Callable[[int], None]] = []
        stream.subscribe(self.on_room_events)

    # -- for subclasses -------------------------------------------------------------------------

    async def _process(self, events: Sequence[Event], upto: int) -> None:
        """Read ``events`` and persist ``upto`` as the position with what they gave (or not,
        when nothing did and re-reading them after a restart finds the same nothing)."""
        raise NotImplementedError

    def _advance(self, position: int) -> None:
        """Everything up to ``position`` is read (and what it gave persisted): wake the waiters."""
        moved = position > self.position
        self.position = max(self.position, position)
        if moved:
            for fn in self._advance_listeners:
                fn(self.position)
        ready = [d for p, d in self._waiters if p <= self.position]
        self._waiters = [(p, d) for p, d in self._waiters if p > self.position]
        for d in ready:
            if not d.called:
                d.callback(None)

    async def _share_reactor(self) -> None:
        """Let the reactor serve what waits (requests, other readers) when this batch has had it
        for :data:`SLICE_S`: a big batch is read in slices, not in one stall of every request."""
        now = self._reactor.seconds()
        if now - self._slice_start < SLICE_S:
            return
        d: Deferred[None] = Deferred()
        self._reactor.callLater(0, d.callback, None)
        await d
        self._slice_start = self._reactor.seconds()

    def _persist_due(self, upto: int) -> bool:
        """Whether a batch that gave nothing should still persist ``upto``: reading it again after
        a restart would find the same nothing, but not more than :data:`PERSIST_EVERY` of it."""
        return upto - self._persisted >= PERSIST_EVERY

    def on_advanced(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(position)`` whenever the reader has read (and persisted what it gave) further
        (a cluster's workers wait on the push reader's position)."""
        self._advance_listeners.append(fn)

    # -- lifecycle --------------------------------------------------------------------------------

    async def _start_from(self, stored: int | None, record: Callable[[int], Awaitable[None]]) -> None:
        """Start from the persisted position ``stored``; without one (a new database, or one from
        before this reader) from the stream's current position, recorded with ``record``: what
        happened before is not news."""
        if stored is None:
            stored = self._current_position()
            await record(stored)
        self._persisted = stored
        self._begin(stored)

    def _begin(self, position: int) -> None:
        """Start reading from ``position`` (the persisted one), catching up first."""
        self.position = position
        self._started = True
        self._kick()

    async def _halt(self) -> None:
        """Finish the batch being read and take no more; the rest is read after the next start."""
        self._started = False
        # those waiting go on without this reader; the rest is read after the next start
        waiting, self._waiters = self._waiters, []
        for _, w in waiting:
            if not w.called:
                w.callback(None)
        self._queue.clear()
        if self._pending_kick is not None and self._pending_kick.active():
            self._pending_kick.cancel()
        while self._draining:
            d: Deferred[None] = Deferred()
            self._idle_waiters.append(d)
            await d

    # -- the stream -------------------------------------------------------------------------------

    def on_room_events(self, events: list[Event]) -> None:
        self._queue.append((events, self._stream.position))
        if self._pending_kick is None or not self._pending_kick.active():
            self._pending_kick = self._reactor.callLater(self._batch_window, self._kick)

    def _read_now(self) -> None:
        """Read what is queued at once, not after the batch window (someone waits for it)."""
        if self._pending_kick is not None and self._pending_kick.active():
            self._pending_kick.cancel()
            self._kick()

    def wait_for(self, position: int, timeout: float = WAIT_TIMEOUT_S) -> Deferred[None]:
        """Fires once everything up to ``position`` is read (or after ``timeout`` seconds, or
        when the reader stops: then the caller goes on without it)."""
        position = min(position, self._stream.position)
        d: Deferred[None] = Deferred()
        if position <= self.position or not self._started:
            d.callback(None)
            return d
        self._waiters.append((position, d))
        self._read_now()

        def timed_out() -> None:
            if not d.called:
                log.warn("the {name} reader is behind (at {position})", name=self._reader_name, position=self.position)
                self._waiters = [(p, w) for p, w in self._waiters if w is not d]
                d.callback(None)

        call = self._clock.callLater(timeout, timed_out)

        def stop_timer(result: None) -> None:
            if call.active():
                call.cancel()

        d.addCallback(stop_timer)
        return d

    def _kick(self) -> None:
        if self._started and not self._draining:
            self._draining = True
            d: Deferred[None] = Deferred.fromCoroutine(self._drain())
            d.addErrback(lambda f: log.failure("the {name} reader stopped", f, name=self._reader_name))

    async def _drain(self) -> None:
        try:
            while self._started:
                if self._queue:
                    # Everything published meanwhile goes as one batch (one write): under load,
                    # one transaction for many sends, not one each.
                    batches, self._queue = self._queue, []
                    upto = max(position for _, position in batches)
                    events = [event for batch, _ in batches for event in batch]
                    if upto <= self.position:
                        continue
                    # Catch up first if the stream moved on while this reader was not looking.
                    first = min((e.metadata.stream_ordering or 0 for e in events), default=upto)
                    if first > self.position + 1:
                        await self._catch_up(first - 1)
                    self._slice_start = self._reactor.seconds()
                    await self._process([e for e in events if (e.metadata.stream_ordering or 0) > self.position], upto)
                elif self._current_position() > self.position:
                    await self._catch_up(self._current_position())
                    if not self._queue:
                        break
                else:
                    break
        finally:
            self._draining = False
            idle, self._idle_waiters = self._idle_waiters, []
            for d in idle:
                d.callback(None)

    async def _catch_up(self, upto: int) -> None:
        while self.position < upto and self._started:
            ids = await self._events.timeline_event_ids_after(self.position, upto, CATCH_UP_PAGE)
            if not ids:
                await self._process([], upto)
                return
            found = await self._events.get_events(ids, include_rejected=False)
            batch = [found[i] for i in ids if i in found]
            last = max((e.metadata.stream_ordering or 0 for e in batch), default=upto)
            await self._process(batch, upto if len(ids) < CATCH_UP_PAGE else last)
