"""The one mechanism every outbound destination shares: backoff state, the retry timer and
one request in flight.

A sender keeps a :class:`DestinationState` (or a subclass with its own queue) per
destination and hands it to :class:`DeliveryLoops`, which:

- runs the sender's ``run(dest)`` coroutine when :meth:`DeliveryLoops.kick` finds work
  (``has_work(dest)``), never twice at once for one destination (one request in flight);
- keeps a destination that failed quiet until its backoff is over, then lets one
  attempt through (:attr:`DestinationState.retry_allowed`); the backoff itself is
  cleared only by a success;
- computes the backoff (:class:`RetryPolicy`: exponential, with jitter) and hands each
  change to a :class:`BackoffWriter`, so the sender's store persists it and a restart
  neither hammers a dead destination nor forgets it was failing.

What a request is, how it is built, sent and judged stays with each sender.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with jitter: ``min_ms``, then ×``multiplier`` per failure, capped
    at ``max_ms``, each interval multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    min_ms: int
    max_ms: int
    multiplier: float = 2
    jitter: float = 0.2

    def next_interval(self, current_ms: int, rng: random.Random) -> int:
        base = self.min_ms if current_ms <= 0 else current_ms * self.multiplier
        jittered = int(base * rng.uniform(1 - self.jitter, 1 + self.jitter))
        return max(self.min_ms, min(self.max_ms, jittered))


@attrs.define(eq=False)
class DestinationState:
    """Backoff and loop state of one destination (senders subclass it to add their queue)."""

    name: str
    #: when the current run of failures began (ms); None while healthy
    failure_ts: int | None = None
    #: when the last attempt failed (ms)
    retry_last_ts: int | None = None
    #: how long to wait after ``retry_last_ts`` (ms); 0 while healthy
    retry_interval: int = 0
    last_success_ts: int | None = None
    #: the loop is running
    running: bool = False
    timer: IDelayedCall | None = None
    #: the backoff timer fired: one attempt may go ahead although the backoff is still set
    retry_allowed: bool = False
    #: why the last attempt failed (admin views)
    last_error: str | None = None
    #: the request in flight (cancelled on shutdown)
    request: Deferred[Any] | None = None
    #: the running loop (a stop waits for it)
    loop: Deferred[None] | None = None

    @property
    def next_retry_ts(self) -> int | None:
        if self.retry_interval <= 0 or self.retry_last_ts is None:
            return None
        return self.retry_last_ts + self.retry_interval

    @property
    def backing_off(self) -> bool:
        return self.retry_interval > 0


class BackoffWriter(Protocol):
    """Persists backoff changes (each sender's store, through its ordered writer)."""

    def backoff_started(self, dest: Any, failure_ts: int, retry_last_ts: int, retry_interval: int) -> None: ...

    def backoff_ended(self, dest: Any, now_ms: int) -> None: ...


D = TypeVar("D", bound=DestinationState)


class DeliveryLoops(Generic[D]):
    """Per-destination loops with one request in flight and persisted backoff (module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        policy: RetryPolicy,
        has_work: Callable[[D], bool],
        run: Callable[[D], Coroutine[Any, Any, None]],
        writer: BackoffWriter,
        on_stopped: Callable[[D], None] = lambda dest: None,
        kind: str = "destination",
    ) -> None:
        self.clock = clock
        self.policy = policy
        self.random = random.Random()
        self._has_work = has_work
        self._run = run
        self._writer = writer
        self._on_stopped = on_stopped
        self._kind = kind
        #: loops only run while started (after the state is loaded, until shutdown)
        self.started = False

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def load(self, dest: D, failure_ts: int | None, retry_last_ts: int | None, retry_interval: int) -> None:
        """Restore persisted backoff state (at start-up)."""
        dest.failure_ts, dest.retry_last_ts, dest.retry_interval = failure_ts, retry_last_ts, retry_interval

    def kick(self, dest: D) -> None:
        """Start the destination's loop unless it runs, has nothing to do, or backs off."""
        if not self.started or dest.running or not self._has_work(dest):
            return
        if dest.retry_interval > 0 and not dest.retry_allowed:
            due = dest.next_retry_ts or 0
            if due > self.now_ms():
                self.schedule_retry(dest, due)
                return
        dest.running = True
        d: Deferred[None] = ensureDeferred(self._run(dest))
        d.addErrback(lambda f: log.failure("{kind} loop for {dest} failed", f, kind=self._kind, dest=dest.name))

        def done(_: Any) -> None:
            dest.running = False
            dest.loop = None
            self._on_stopped(dest)

        d.addBoth(done)
        if dest.running:  # the loop may have finished already, within this call
            dest.loop = d

    def schedule_retry(self, dest: D, due_ms: int) -> None:
        if dest.timer is not None and dest.timer.active():
            return
        delay = max(0.0, (due_ms - self.now_ms()) / 1000)
        dest.timer = self.clock.callLater(delay, self._retry_due, dest)

    def _retry_due(self, dest: D) -> None:
        dest.timer = None
        # The backoff stays set until a request succeeds; the loop may now try once.
        dest.retry_allowed = True
        self.kick(dest)

    def retry_soon(self, dest: D, gap_ms: int) -> None:
        """The destination showed signs of life: one attempt as soon as ``gap_ms`` after the last
        failure (should it fail, the backoff grows from where it was)."""
        if dest.retry_interval <= 0 or dest.retry_allowed:
            return
        self.cancel_timer(dest)
        due = (dest.retry_last_ts or 0) + gap_ms
        if due > self.now_ms():
            dest.timer = self.clock.callLater((due - self.now_ms()) / 1000, self._retry_due, dest)
            return
        dest.retry_allowed = True
        self.kick(dest)

    def cancel_timer(self, dest: D) -> None:
        if dest.timer is not None and dest.timer.active():
            dest.timer.cancel()
        dest.timer = None

    def succeeded(self, dest: D) -> bool:
        """A request went through: the backoff ends (persisted if there was one). Whether the
        destination had been failing."""
        was_failing = dest.retry_interval > 0 or dest.failure_ts is not None
        dest.retry_allowed = False
        dest.last_error = None
        dest.failure_ts = dest.retry_last_ts = None
        dest.retry_interval = 0
        dest.last_success_ts = self.now_ms()
        if was_failing:
            self._writer.backoff_ended(dest, dest.last_success_ts)
        return was_failing

    def failed(self, dest: D, reason: str) -> None:
        """A request failed: the backoff starts or grows (persisted), and a retry is scheduled."""
        now = self.now_ms()
        if dest.failure_ts is None:
            dest.failure_ts = now
        dest.retry_interval = self.policy.next_interval(dest.retry_interval, self.random)
        dest.retry_last_ts = now
        dest.retry_allowed = False
        dest.last_error = reason
        self._writer.backoff_started(dest, dest.failure_ts, now, dest.retry_interval)
        self.cancel_timer(dest)
        if self.started:
            self.schedule_retry(dest, now + dest.retry_interval)

    def stop(self, dests: Any) -> Deferred[None]:
        """Shutdown: no new loops; timers and requests in flight are cancelled. Fires once the
        running loops have ended: a loop whose request was answered just before records the
        outcome (a position, a backoff) on its way out, and the caller's final flush of its
        writes must come after that, or the outcome is lost (a push sent again after a restart)."""
        self.started = False
        loops: list[Deferred[None]] = []
        for dest in dests:
            self.cancel_timer(dest)
            if dest.request is not None:
                dest.request.cancel()
            if dest.loop is not None:
                loops.append(dest.loop)
        done: Deferred[None] = Deferred()
        DeferredList(loops, consumeErrors=True).addBoth(lambda _: done.callback(None))
        return done
