"""The seam every reader of the room event stream uses: batches, a persisted position, catch-up.

A reader (push evaluation, application services, ...) subscribes to the room server's
stream. What is published is queued and read a moment later (``batch_window``), outside the
publish: the sender's answer and the woken ``/sync``\\ s go first, and the events of that
moment are read together (one write for many sends). The reader keeps its position (the
last stream position it has read, persisted by the subclass with what it writes); after a
restart, or when the stream moved on while it was not looking, it catches up from the
store a page at a time. Everything is read once, in stream order.

Subclasses supply :meth:`_process` (read these events, persist ``upto`` with the results)
and :meth:`_event_ids_after` (the timeline events after a position, for catch-up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.streams import RoomEventStream

log = Logger()

#: events read per query while catching up
CATCH_UP_PAGE = 500


class EventSource(Protocol):
    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]: ...


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
    ) -> None:
        """``name`` (logs), ``current_position``: the stream's committed position,
        ``reactor``: runs the reads (the real one even where tests fake the clock)."""
        self._reader_name = name
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
        stream.subscribe(self.on_room_events)

    # -- for subclasses -------------------------------------------------------------------------

    async def _process(self, events: Sequence[Event], upto: int) -> None:
        """Read ``events`` and persist ``upto`` as the position with what they gave (or not,
        when nothing did and re-reading them after a restart finds the same nothing)."""
        raise NotImplementedError

    async def _event_ids_after(self, after: int, upto: int, limit: int) -> list[str]:
        """The timeline events in ``(after, upto]``, in stream order, at most ``limit``."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------------

    def _begin(self, position: int) -> None:
        """Start reading from ``position`` (the persisted one), catching up first."""
        self.position = position
        self._started = True
        self._kick()

    async def _halt(self) -> None:
        """Finish the batch being read and take no more; the rest is read after the next start."""
        self._started = False
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
            ids = await self._event_ids_after(self.position, upto, CATCH_UP_PAGE)
            if not ids:
                await self._process([], upto)
                return
            found = await self._events.get_events(ids, include_rejected=False)
            batch = [found[i] for i in ids if i in found]
            last = max((e.metadata.stream_ordering or 0 for e in batch), default=upto)
            await self._process(batch, upto if len(ids) < CATCH_UP_PAGE else last)
