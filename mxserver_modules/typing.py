"""In-memory typing notifications (``mxserver.typing`` entry point ``default``).

Each typing user expires on the reactor clock after its timeout; a listener
callback (set by the server's ephemeral streams) is told of every change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from mxserver.interfaces import ITyping


@implementer(ITyping)
class InMemoryTyping:
    """``config``: ``max_timeout_ms`` (default 30000) caps the timeout clients ask for."""

    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self._clock = api.clock
        self._max_timeout_ms = int(config.get("max_timeout_ms", 30_000))
        self._typing: dict[str, dict[str, Any]] = {}  # room -> user -> IDelayedCall
        self.on_change: Callable[[str], None] | None = None

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        users = self._typing.setdefault(room_id, {})
        old = users.pop(user_id, None)
        if old is not None and old.active():
            old.cancel()
        if typing:
            timeout = min(max(timeout_ms, 0), self._max_timeout_ms) / 1000
            users[user_id] = self._clock.callLater(timeout, self._expire, room_id, user_id)
        elif not users:
            self._typing.pop(room_id, None)
        if old is not None or typing:
            self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id, {})
        if users.pop(user_id, None) is not None:
            if not users:
                self._typing.pop(room_id, None)
            self._changed(room_id)

    def typing_in(self, room_id: str) -> frozenset[str]:
        return frozenset(self._typing.get(room_id, ()))

    def _changed(self, room_id: str) -> None:
        if self.on_change is not None:
            self.on_change(room_id)
