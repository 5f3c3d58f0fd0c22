"""The ordered room-event stream that readers subscribe to.

The room server publishes every batch of newly persisted events here, in
stream order; readers (the sync notifier, the federation sender, module
hooks) subscribe and never call each other. This is the seam where mxserver
could later fan out across processes without changing readers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from mxserver.events.model import Event

log = Logger()

Subscriber = Callable[[list[Event]], Any]


class RoomEventStream:
    """Publish/subscribe for persisted room events."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.position = 0

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def publish(self, events: list[Event], position: int) -> None:
        self.position = max(self.position, position)
        for fn in self._subscribers:
            try:
                fn(events)
            except Exception:
                log.failure("room event subscriber {fn!r} failed", fn=fn)
