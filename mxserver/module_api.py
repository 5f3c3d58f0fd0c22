"""What a module may use of the server: a small, stable surface.

Modules receive a :class:`ModuleApi` at construction; they should use only
what it offers, so the core can change behind it. It is built from exactly
the parts it exposes (never from the whole server): the server name, the
clock, a password checker and the :class:`EventHooks` registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime


class PasswordChecker(Protocol):
    """What :meth:`ModuleApi.check_password` asks of the password hasher."""

    async def check_user_password(self, user_id: str, password: str) -> bool: ...


class EventHooks:
    """Module objects hooked into the event flow (``mxserver.modules``, ``register_event_hook``).

    A hook may have ``check_event_allowed(event, state)`` (read by the room server at
    every local send) and/or ``on_new_event(event)`` (called after persistence). Hooks
    may be added after start-up, so readers iterate this registry at each use.
    """

    def __init__(self) -> None:
        self._hooks: list[object] = []

    def append(self, hook: object) -> None:
        self._hooks.append(hook)

    def pop(self, index: int = -1) -> object:
        return self._hooks.pop(index)

    def __iter__(self) -> Iterator[object]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)


class ModuleApi:
    """The server as modules see it."""

    def __init__(
        self, server_name: str, clock: IReactorTime, passwords: PasswordChecker, event_hooks: EventHooks
    ) -> None:
        self._server_name = server_name
        self._clock = clock
        self._passwords = passwords
        self._event_hooks = event_hooks

    @property
    def server_name(self) -> str:
        return self._server_name

    @property
    def clock(self) -> IReactorTime:
        """The reactor's IReactorTime (a ``Clock`` in tests)."""
        return self._clock

    def canonical_user_id(self, user: str) -> str:
        """``alice`` or ``@alice:server`` → ``@alice:server`` (local users)."""
        if user.startswith("@"):
            return user
        return f"@{user}:{self._server_name}"

    def check_password(self, user_id: str, password: str) -> Deferred[bool]:
        """Whether ``password`` is the (active, local) user's password; runs off the reactor thread."""
        return ensureDeferred(self._passwords.check_user_password(user_id, password))

    def register_event_hook(self, hook: object) -> None:
        """Add an object with ``on_new_event(event)`` and/or ``check_event_allowed(event, state)``."""
        self._event_hooks.append(hook)
