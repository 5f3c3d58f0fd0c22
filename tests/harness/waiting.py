"""Waiting for what the servers do, not for time to pass.

A test that must wait for something a server does in the background (an event
arriving over federation, a device list update applied, a sender backing off)
waits with :func:`wait_until`: it runs an async check, and runs it again each
time something is *published* on the servers involved -- their room stream,
their ephemeral streams (typing, receipts, presence, to-device, device lists),
their federation sender's :attr:`~mxserver.federation.sender.FederationSender.status_changes`
-- until the check answers something truthy. There is no sleep and no polling
interval: between publications the test is idle. A generous overall timeout
fails the test with a message naming what it waited for.

Race-free by construction: it subscribes before the first check, and a check
that fails while something was published during it runs again at once (so a
change can never slip in between a check and the wait).

What the check awaits must be in place by the time of the last publication it
depends on (every writer publishes after its write is done); work a server
does in the background after publishing must be awaited inside the check
(e.g. ``device_lists.settle()``).

Where a client could see the thing awaited, prefer a ``/sync`` long poll:
:meth:`~tests.harness.client.ClientHttp.sync_until`. Where the test has a fake
clock (``use_fake_clock``), advance the clock instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from mxserver.homeserver import Homeserver
from mxserver.streams import Phase, Stream

T = TypeVar("T")

#: seconds before a wait fails the test: generous, it is only reached when something is broken
DEFAULT_TIMEOUT = 30.0


def server_streams(hs: Homeserver) -> list[Stream[Any]]:
    """What :func:`wait_until` follows on one server: everything its writers publish."""
    streams: list[Stream[Any]] = [hs.room_stream, *hs.ephemeral_streams.all()]
    sender = getattr(hs, "federation_sender", None)
    if sender is not None:
        streams.append(sender.status_changes)
    return streams


class Changes:
    """Counts publications on some streams (subscribed in the NOTIFY phase: after every other
    reader has seen the item); :meth:`next` waits for the next one."""

    def __init__(self, streams: Iterable[Stream[Any]]) -> None:
        self.count = 0
        self._streams = list(streams)
        self._waiters: list[Deferred[bool]] = []
        for stream in self._streams:
            stream.subscribe(self._changed, Phase.NOTIFY)

    def close(self) -> None:
        for stream in self._streams:
            stream.unsubscribe(self._changed)
        self._streams = []

    def _changed(self, item: Any) -> None:
        self.count += 1
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            # Resumed on the next reactor turn, not inside the publisher's call.
            reactor.callLater(0, lambda d=d: d.called or d.callback(True))  # type: ignore[misc]

    def next(self, timeout: float) -> Deferred[bool]:
        """Fires True at the next publication, or False after ``timeout`` seconds without one."""
        d: Deferred[bool] = Deferred()
        self._waiters.append(d)

        def timed_out() -> None:
            if not d.called:
                if d in self._waiters:
                    self._waiters.remove(d)
                d.callback(False)

        timer = reactor.callLater(max(0.0, timeout), timed_out)

        def stop_timer(changed: bool) -> bool:
            if timer.active():
                timer.cancel()
            return changed

        d.addCallback(stop_timer)
        return d


async def wait_until(
    check: Callable[[], Awaitable[T]],
    what: str,
    streams: Iterable[Stream[Any]],
    timeout: float = DEFAULT_TIMEOUT,
) -> T:
    """Run ``check`` now and after each publication on ``streams`` until it answers something
    truthy; that answer. Fails the test (AssertionError naming ``what``) after ``timeout`` seconds."""
    changes = Changes(streams)
    try:
        deadline = reactor.seconds() + timeout
        while True:
            seen = changes.count
            result = await check()
            if result:
                return result
            if changes.count != seen:
                continue  # something happened while checking: check again before waiting
            remaining = deadline - reactor.seconds()
            if remaining <= 0 or not await changes.next(remaining):
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last check: {result!r})")
    finally:
        changes.close()


async def wait_on_servers(
    check: Callable[[], Awaitable[T]],
    what: str,
    homeservers: Iterable[Homeserver],
    timeout: float = DEFAULT_TIMEOUT,
) -> T:
    """:func:`wait_until` following everything published on ``homeservers`` (:func:`server_streams`)."""
    streams = [s for hs in homeservers for s in server_streams(hs)]
    return await wait_until(check, what, streams, timeout)


async def until_waiting(hs: Homeserver, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until exactly ``count`` long-polls are parked on the server's notifier
    (a ``/sync`` that has nothing to return yet has registered, or a cancelled one has gone)."""
    notifier = hs.notifier

    async def parked() -> bool:
        return notifier.waiting == count

    await wait_until(
        parked,
        f"{count} long-poll(s) waiting on the notifier",
        [notifier.waiting_changes],
        timeout,
    )
