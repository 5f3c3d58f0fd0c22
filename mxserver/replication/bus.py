"""The replication bus: small JSON hints on named channels, between the processes of a cluster.

:class:`IReplicationBus` is the contract; :class:`InProcessBus` delivers within one process (tests,
a single process), :class:`~mxserver.replication.postgres.PostgresBus` through Postgres
``LISTEN/NOTIFY``. A hint says that something changed, never what the database holds: a
subscriber that may have missed hints (the bus reconnected) is told to catch up from the database
(:meth:`IReplicationBus.on_reconnect`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger()

JsonDict = dict[str, Any]

#: main -> workers: positions, change records, cache invalidations
TO_WORKERS = "mx_repl"
#: workers -> main: what a worker asks of the writer (a /sync marks its user online, ...)
TO_MAIN = "mx_repl_main"

#: Postgres refuses NOTIFY payloads of 8000 bytes or more; hints stay well under it
MAX_PAYLOAD = 6000


def encode(hint: JsonDict) -> str:
    return json.dumps(hint, separators=(",", ":"), ensure_ascii=False)


class IReplicationBus(Interface):
    """Publish small JSON hints on channels; subscribe to them."""

    def publish(channel, hint):  # type: ignore[no-untyped-def]
        """Send ``hint`` (a JSON object, encoded under :data:`MAX_PAYLOAD` bytes) to every
        subscriber of ``channel`` in every process, this one included. Never blocks; a hint
        that cannot be sent (the bus is down) is dropped: the database is the truth."""

    def subscribe(channel, fn):  # type: ignore[no-untyped-def]
        """Call ``fn(hint)`` for each hint published on ``channel`` from now on."""

    def on_reconnect(fn):  # type: ignore[no-untyped-def]
        """Call ``fn()`` whenever hints may have been lost (the bus reconnected): catch up from the database."""

    def start():  # type: ignore[no-untyped-def]
        """Connect; a Deferred firing once subscriptions are live."""

    def stop():  # type: ignore[no-untyped-def]
        """Disconnect; a Deferred."""


class _Subscribers:
    """The subscribers of each channel, and of reconnections (shared by the implementations)."""

    def __init__(self) -> None:
        self.channels: dict[str, list[Callable[[JsonDict], Any]]] = {}
        self.reconnect_listeners: list[Callable[[], Any]] = []

    def deliver(self, channel: str, hint: JsonDict) -> None:
        for fn in list(self.channels.get(channel, ())):
            try:
                fn(hint)
            except Exception:
                log.failure("replication subscriber {fn!r} of {channel} failed", fn=fn, channel=channel)

    def reconnected(self) -> None:
        for fn in list(self.reconnect_listeners):
            try:
                fn()
            except Exception:
                log.failure("replication reconnect listener {fn!r} failed", fn=fn)


@implementer(IReplicationBus)
class InProcessBus:
    """A bus within one process: hints are delivered on the next reactor turn (as over the
    network: never inside the publisher's call). ``drop`` (tests) discards hints whose
    predicate is true, as a lost notification would."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._subs = _Subscribers()
        self.drop: Callable[[str, JsonDict], bool] | None = None

    def publish(self, channel: str, hint: JsonDict) -> None:
        if len(encode(hint).encode()) >= MAX_PAYLOAD:
            raise ValueError(f"replication hint too large for {channel}")
        if self.drop is not None and self.drop(channel, hint):
            return
        self._reactor.callLater(0, self._subs.deliver, channel, json.loads(encode(hint)))

    def subscribe(self, channel: str, fn: Callable[[JsonDict], Any]) -> None:
        self._subs.channels.setdefault(channel, []).append(fn)

    def on_reconnect(self, fn: Callable[[], Any]) -> None:
        self._subs.reconnect_listeners.append(fn)

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)
