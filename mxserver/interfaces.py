"""The zope.interface contracts that pluggable modules implement.

Implementations are found through entry points (see :mod:`mxserver.modules`):

=====================  ======================  ==========================
entry-point group      interface               first-party default
=====================  ======================  ==========================
``mxserver.storage``   :class:`IStorageBackend`  ``sqlite``, ``postgres``
``mxserver.login``     :class:`ILoginFlow`       ``password``
``mxserver.presence``  :class:`IPresence`        ``default``
``mxserver.typing``    :class:`ITyping`          ``default``
``mxserver.modules``   :class:`IModule` (+ :class:`IEventChecker`, :class:`INewEventListener`)  none
``mxserver.media_storage``  :class:`IMediaStorage`  ``file``
=====================  ======================  ==========================

Every entry point names a factory called as ``factory(config: dict, api:
ModuleApi)``; the object it returns must provide the group's interface.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IStorageBackend(Interface):
    """A database: connection pools, the SQL dialect, and schema bootstrap."""

    name = Attribute("short name, e.g. 'sqlite'")
    dialect = Attribute("an mxserver.storage.dialect.Dialect")

    def connect(reactor, config):  # type: ignore[no-untyped-def]
        """Return an ``mxserver.storage.database.Database`` (pools opened, not yet migrated)."""

    def connect_sync(config):  # type: ignore[no-untyped-def]
        """Return a plain DB-API connection (for admin commands and start-up checks)."""


class ILoginFlow(Interface):
    """A login type (``m.login.password``, ...) usable for /login and as a UIA stage."""

    login_type = Attribute("the Matrix login type it handles, e.g. 'm.login.password'")

    def check_login(submission):  # type: ignore[no-untyped-def]
        """Validate a /login or UIA submission dict.

        Returns a Deferred firing with the canonical user ID it authenticates,
        or raising ``mxserver.errors.MatrixError`` (``M_FORBIDDEN``...).
        """


class ITyping(Interface):
    """Typing notifications: who is typing where, expiring on the reactor clock."""

    def set_typing(room_id, user_id, typing, timeout_ms):  # type: ignore[no-untyped-def]
        """Record that a user started (``typing=True``) or stopped typing."""

    def typing_in(room_id):  # type: ignore[no-untyped-def]
        """The user IDs typing in ``room_id`` now (a frozenset)."""

    on_change = Attribute(
        "None until the server sets it to a callable(room_id); the module calls it on every"
        " change, expiries included (the server publishes typing on its stream from there)"
    )


class IPresence(Interface):
    """Presence: set and read a user's presence, and the idle rules."""

    def set_state(user_id, presence, status_msg):  # type: ignore[no-untyped-def]
        """Set a user's presence (``online``, ``unavailable``, ``offline``)."""

    def get_state(user_id):  # type: ignore[no-untyped-def]
        """A dict of the user's presence as the client API shows it."""

    def user_active(user_id):  # type: ignore[no-untyped-def]
        """Note activity by the user (a sync or a send)."""

    on_change = Attribute(
        "None until the server sets it to a callable(user_id); the module calls it whenever a"
        " user's state changes (the server publishes presence on its stream from there)"
    )


class IModule(Interface):
    """A generic module (``mxserver.modules``).

    It hooks into the event flow by also providing :class:`IEventChecker`
    and/or :class:`INewEventListener` (``@implementer(IModule, IEventChecker)``);
    the server calls exactly the hooks a module declares.
    """


class IEventChecker(Interface):
    """May refuse a local event before it is accepted."""

    def check_event_allowed(event, state):  # type: ignore[no-untyped-def]
        """Return False (or a Deferred/coroutine of False) to refuse ``event``; ``state`` is the room's current state map."""


class INewEventListener(Interface):
    """Told of every persisted event."""

    def on_new_event(event):  # type: ignore[no-untyped-def]
        """Called after ``event`` is persisted and published, in stream order."""


class IMediaStorage(Interface):
    """Keeps media bytes under keys (see mxserver.media.storage: relative, sharded, never ``..``).

    Implementations are constructed as ``factory(config: dict, api: ModuleApi)``
    and must not block the reactor thread.
    """

    def store(key, data):  # type: ignore[no-untyped-def]
        """Store ``data`` (bytes) under ``key``, replacing any old value; Deferred[None]."""

    def fetch(key):  # type: ignore[no-untyped-def]
        """The bytes stored under ``key``; Deferred[bytes | None] (None: nothing stored)."""

    def delete(key):  # type: ignore[no-untyped-def]
        """Remove ``key`` if it exists; Deferred[None]."""
