"""What a module may use of the server: a small, stable surface.

Modules receive a :class:`ModuleApi` at construction; they should use only
what it offers, so the core can change behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred

if TYPE_CHECKING:
    from mxserver.homeserver import Homeserver


class ModuleApi:
    """The server as modules see it."""

    def __init__(self, hs: Homeserver) -> None:
        self._hs = hs

    @property
    def server_name(self) -> str:
        return self._hs.server_name

    @property
    def clock(self) -> Any:
        """The reactor's IReactorTime (a ``Clock`` in tests)."""
        return self._hs.clock

    def canonical_user_id(self, user: str) -> str:
        """``alice`` or ``@alice:server`` → ``@alice:server`` (local users)."""
        if user.startswith("@"):
            return user
        return f"@{user}:{self._hs.server_name}"

    def check_password(self, user_id: str, password: str) -> Deferred[bool]:
        """Whether ``password`` is the (active, local) user's password; runs off the reactor thread."""
        return ensureDeferred(self._hs.passwords.check_user_password(user_id, password))

    def register_event_hook(self, hook: Any) -> None:
        """Add an object with ``on_new_event(event)`` and/or ``check_event_allowed(event, state)``."""
        self._hs.event_hooks.append(hook)
