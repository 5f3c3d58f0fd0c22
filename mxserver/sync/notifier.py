"""The notifier: wakes exactly the long-polls that have something new.

A waiting ``/sync`` registers the user and the rooms it is in. A new event in
a room wakes the waiters of that room; per-user data (account data, to-device,
own membership changes) wakes that user's waiters. A waiter costs a Deferred
and a few set entries; a client that disconnects cancels its Deferred, which
removes the waiter at once.

The current token is read from the registered sync sources
(:class:`~mxserver.sync.sources.SyncSources`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from mxserver.streams import Stream
from mxserver.sync.sources import SyncSources
from mxserver.sync.tokens import StreamToken


class _Waiter:
    __slots__ = ("user_id", "rooms", "deferred", "timer")

    def __init__(self, user_id: str, rooms: frozenset[str], deferred: Deferred[None]) -> None:
        self.user_id = user_id
        self.rooms = rooms
        self.deferred = deferred
        self.timer: IDelayedCall | None = None


class Notifier:
    """Stream positions and long-poll wake-ups."""

    def __init__(self, clock: IReactorTime, sources: SyncSources) -> None:
        self._clock = clock
        self._sources = sources
        self._by_user: dict[str, set[_Waiter]] = defaultdict(set)
        self._by_room: dict[str, set[_Waiter]] = defaultdict(set)
        # Counted, not summed over _by_user: it is published on every start and end of a
        # long-poll, and a fan-out ends hundreds of them at once.
        self._waiting = 0
        #: :attr:`waiting` after a long-poll started or ended (woken, timed out or cancelled);
        #: nothing in the server reads it: an observer (a test, metrics) can follow it instead of polling
        self.waiting_changes: Stream[int] = Stream("notifier_waiting")

    # -- positions ------------------------------------------------------------------

    def current_token(self) -> StreamToken:
        """Every registered stream at its current position."""
        return self._sources.current_token()

    # -- waking ---------------------------------------------------------------------

    def notify(self, user_ids: Iterable[str] = (), room_ids: Iterable[str] = ()) -> None:
        """Something new for these users, or for everyone in these rooms."""
        woken: set[_Waiter] = set()
        for user_id in user_ids:
            woken |= self._by_user.get(user_id, set())
        for room_id in room_ids:
            woken |= self._by_room.get(room_id, set())
        for waiter in woken:
            self._wake(waiter)

    def notify_all(self) -> None:
        """Wake every long-poll (something new for whom is unknown: a replication catch-up after
        a lost hint); each looks again and waits on if it has nothing new."""
        for waiter in {w for waiters in self._by_user.values() for w in waiters}:
            self._wake(waiter)

    def _wake(self, waiter: _Waiter) -> None:
        self._remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        if not waiter.deferred.called:
            waiter.deferred.callback(None)

    def _remove(self, waiter: _Waiter) -> None:
        users = self._by_user.get(waiter.user_id)
        if users is None or waiter not in users:
            return  # removed already
        users.discard(waiter)
        if not users:
            del self._by_user[waiter.user_id]
        for room_id in waiter.rooms:
            room = self._by_room.get(room_id)
            if room is not None:
                room.discard(waiter)
                if not room:
                    del self._by_room[room_id]
        self._waiting -= 1
        self.waiting_changes.publish(self._waiting)

    async def wait(self, user_id: str, rooms: Iterable[str], timeout_ms: int) -> None:
        """Return when something may be new for ``user_id`` or after ``timeout_ms``.

        Cancelling the awaiting call (the client went away) removes the waiter.
        """
        waiter = _Waiter(user_id, frozenset(rooms), Deferred(canceller=lambda d: None))
        self._by_user[user_id].add(waiter)
        for room_id in waiter.rooms:
            self._by_room[room_id].add(waiter)
        timer = waiter.timer = self._clock.callLater(max(0, timeout_ms) / 1000, self._wake, waiter)
        self._waiting += 1
        self.waiting_changes.publish(self._waiting)
        try:
            await waiter.deferred
        except CancelledError:
            self._remove(waiter)
            if timer.active():
                timer.cancel()
            raise

    @property
    def waiting(self) -> int:
        """How many long-polls are waiting (for metrics and tests)."""
        return self._waiting

    @property
    def watched_rooms(self) -> int:
        """How many rooms have a waiting long-poll: the size of the per-room index, which must
        shrink as waiters leave (for metrics and tests)."""
        return len(self._by_room)
