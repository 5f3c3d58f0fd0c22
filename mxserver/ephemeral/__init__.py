"""Ephemeral data and per-user sources of /sync: typing, receipts, presence, profiles, user directory.

The Homeserver builds them (``Homeserver._build_ephemeral``):

==========================  ===================================================
``hs.room_members``         joined members per room / users sharing a room (in memory)
``hs.typing_handler``       typing API and the in-memory "typing" stream
``hs.receipts``             receipts, read markers, the persisted "receipts" stream
``hs.presence_handler``     presence API, idle timeouts, the in-memory "presence" stream
``hs.profiles``             display names and avatars, propagated to member events
``hs.user_directory``       user search
==========================  ===================================================

The writers (typing, receipts, presence) publish their changes on the
ephemeral streams (:class:`~mxserver.streams.EphemeralStreams`); they call no
reader. The receipts stream position is loaded by a start hook (after
migrations, before the listeners open); :class:`EphemeralTimers`, a child
service of the Homeserver, cancels the typing and presence timers at shutdown
(nothing stays scheduled on the reactor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application import service

if TYPE_CHECKING:
    from mxserver.ephemeral.presence import PresenceHandler
    from mxserver.ephemeral.typing import TypingHandler


class EphemeralTimers(service.Service):
    """Cancels the typing and presence timers when its parent service stops."""

    def __init__(self, typing: TypingHandler, presence: PresenceHandler) -> None:
        self._typing = typing
        self._presence = presence
        self.setName("ephemeral")

    def stopService(self) -> None:
        self._typing.stop()
        self._presence.stop()
        super().stopService()
