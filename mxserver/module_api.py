"""What a module may use of the server: a small, stable surface.

Modules receive a :class:`ModuleApi` at construction; they should use only
what it offers, so the core can change behind it. It is built from exactly
the parts it exposes (never from the whole server): the server name, the
clock, a password checker and the :class:`EventHooks` registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.interfaces import IEventChecker, INewEventListener

log = Logger()


class PasswordChecker(Protocol):
    """What :meth:`ModuleApi.check_password` asks of the password hasher."""

    async def check_user_password(self, user_id: str, password: str) -> bool: ...


class EventHooks:
    """Module objects hooked into the event flow (``mxserver.modules``, ``register_event_hook``).

    A hook provides :class:`~mxserver.interfaces.IEventChecker` (asked by the room
    server at every local send) and/or :class:`~mxserver.interfaces.INewEventListener`
    (told after persistence); the interfaces it declares say which. Hooks may be
    added after start-up, so this registry is read at each use.
    """

    def __init__(self) -> None:
        self._hooks: list[object] = []

    def append(self, hook: object) -> None:
        if not (IEventChecker.providedBy(hook) or INewEventListener.providedBy(hook)):
            raise TypeError(f"{hook!r} provides neither IEventChecker nor INewEventListener")
        self._hooks.append(hook)

    def pop(self, index: int = -1) -> object:
        return self._hooks.pop(index)

    def __iter__(self) -> Iterator[object]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    async def check_allowed(self, event: Event, state: Mapping[Any, str]) -> bool:
        """Whether every checker allows ``event`` (False from any one refuses it)."""
        for hook in list(self._hooks):
            if IEventChecker.providedBy(hook):
                allowed = hook.check_event_allowed(event, state)  # type: ignore[attr-defined]
                if isinstance(allowed, Deferred) or inspect.isawaitable(allowed):
                    allowed = await allowed
                if allowed is False:
                    return False
        return True

    def on_new_events(self, events: list[Event]) -> None:
        """Tell every listener of ``events``; a failing listener is logged and skipped."""
        for hook in list(self._hooks):
            if not INewEventListener.providedBy(hook):
                continue
            for event in events:
                try:
                    hook.on_new_event(event)  # type: ignore[attr-defined]
                except Exception:
                    log.failure("module {hook!r} failed in on_new_event", hook=hook)


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
        """Add an object providing ``IEventChecker`` and/or ``INewEventListener`` (TypeError otherwise)."""
        self._event_hooks.append(hook)
