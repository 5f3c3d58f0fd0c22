"""Ephemeral data and per-user sources of /sync: typing, receipts, presence, profiles, user directory.

:func:`build_ephemeral_handlers` attaches them to the Homeserver:

==========================  ===================================================
``hs.room_members``         joined members per room / users sharing a room (in memory)
``hs.typing_handler``       typing API and the in-memory "typing" stream
``hs.receipts``             receipts, read markers, the persisted "receipts" stream
``hs.presence_handler``     presence API, idle timeouts, the in-memory "presence" stream
``hs.profiles``             display names and avatars, propagated to member events
``hs.user_directory``       user search
==========================  ===================================================

The receipts stream position is loaded by a start hook (after migrations,
before the listeners open); a child service of the Homeserver cancels the
typing and presence timers at shutdown (nothing stays scheduled on the reactor).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service


def build_ephemeral_handlers(hs: Any) -> None:
    """Attach the handlers listed above; needs ``hs.room_server``, ``hs.notifier``,
    ``hs.room_stream``, ``hs.typing``, ``hs.presence`` and ``hs.db``."""
    from mxserver.ephemeral.presence import PresenceHandler
    from mxserver.ephemeral.profiles import ProfileHandler
    from mxserver.ephemeral.receipts import ReceiptsHandler
    from mxserver.ephemeral.room_members import RoomMembers
    from mxserver.ephemeral.typing import TypingHandler
    from mxserver.ephemeral.user_directory import UserDirectory

    hs.room_members = RoomMembers(hs)
    hs.typing_handler = TypingHandler(hs)
    hs.receipts = ReceiptsHandler(hs)
    hs.presence_handler = PresenceHandler(hs)
    hs.profiles = ProfileHandler(hs)
    hs.user_directory = UserDirectory(hs)
    hs.start_hooks.append(hs.receipts.start)
    _EphemeralService(hs).setServiceParent(hs)


class _EphemeralService(service.Service):
    """Cancels the typing and presence timers when the Homeserver stops."""

    def __init__(self, hs: Any) -> None:
        self._hs = hs
        self.setName("ephemeral")

    def stopService(self) -> Any:
        self._hs.typing_handler.stop()
        self._hs.presence_handler.stop()
        return super().stopService()
