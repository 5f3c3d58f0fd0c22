"""Default presence (``mxserver.presence`` entry point ``default``).

Keeps each user's presence in memory: ``online`` while active, ``unavailable``
after ``idle_after_ms`` without activity. Who may see whom is decided by the
server (users sharing a room), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zope.interface import implementer

from mxserver.interfaces import IPresence

VALID_STATES = ("online", "unavailable", "offline")


@implementer(IPresence)
class DefaultPresence:
    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self._clock = api.clock
        self._idle_after_ms = int(config.get("idle_after_ms", 5 * 60_000))
        self._states: dict[str, dict[str, Any]] = {}
        self.on_change: Callable[[str], None] | None = None

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def set_state(self, user_id: str, presence: str, status_msg: str | None = None) -> None:
        if presence not in VALID_STATES:
            raise ValueError(f"unknown presence {presence!r}")
        entry = self._states.setdefault(user_id, {"last_active": self._now_ms()})
        changed = entry.get("presence") != presence or entry.get("status_msg") != status_msg
        entry["presence"] = presence
        entry["status_msg"] = status_msg
        if presence == "online":
            entry["last_active"] = self._now_ms()
        if changed and self.on_change is not None:
            self.on_change(user_id)

    def user_active(self, user_id: str) -> None:
        entry = self._states.setdefault(user_id, {"presence": "online", "status_msg": None})
        entry["last_active"] = self._now_ms()

    def get_state(self, user_id: str) -> dict[str, Any]:
        entry = self._states.get(user_id)
        if entry is None:
            return {"presence": "offline"}
        now = self._now_ms()
        ago = now - entry["last_active"]
        presence = entry.get("presence", "online")
        if presence == "online" and ago > self._idle_after_ms:
            presence = "unavailable"
        out: dict[str, Any] = {"presence": presence, "last_active_ago": ago}
        if presence == "online":
            out["currently_active"] = ago < 60_000
        if entry.get("status_msg") is not None:
            out["status_msg"] = entry["status_msg"]
        return out
