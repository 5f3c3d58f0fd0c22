"""Typing notifications: the client API behind ``PUT /rooms/{roomId}/typing/{userId}`` and the "typing" stream.

Who is typing is kept by the ITyping module (expiry on the reactor clock). This handler adds the rules (only yourself, only in rooms you
are joined to) and the stream: an in-memory position bumped on every change
the module reports through its ``on_change`` callback, with the position of
each room's latest change, so /sync can ask which rooms changed since a
token. The stream is in memory: after a restart it starts again at 0, and a
token ahead of it is answered like an initial sync (what is typing now).
A module without ``on_change`` still works, but then only explicit changes
(not expiries) move the stream.

Every change is published as a :class:`~mxserver.streams.TypingChange` on the
typing stream (the notifier wakes the room's long-polls from it, the federation
sender tells the room's other servers); a local user saying again that they
are typing is published too, with ``refreshed`` set (other servers time typing
out on their own) and waking nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from mxserver.errors import forbidden
from mxserver.events.model import Event
from mxserver.interfaces import ITyping
from mxserver.streams import Stream, TypingChange

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.rooms.api import ReaderRooms

log = Logger()

#: the timeout used when a client says it is typing without one
DEFAULT_TIMEOUT_MS = 30_000


class TypingHandler:
    """``hs.typing_handler``; the Homeserver subscribes :meth:`on_room_events` to the room stream."""

    def __init__(self, module: ITyping, rooms: ReaderRooms, stream: Stream[TypingChange]) -> None:
        self._module = module
        self._rooms = rooms
        self._stream = stream
        self._position = 0
        #: room -> stream position of its latest typing change
        self._room_positions: dict[str, int] = {}
        # ITyping: the module reports every change, expiries included, through on_change.
        self._module.on_change = self._changed

    @property
    def current_position(self) -> int:
        return self._position

    # -- the client API --------------------------------------------------------------------

    async def set_typing(self, requester: Requester, room_id: str, user_id: str, typing: bool, timeout_ms: int | None) -> None:
        """typing.yaml: only for yourself, only in a room you are joined to (else 403)."""
        if user_id != requester.user_id:
            raise forbidden("You may only set your own typing state")
        if await self._rooms.get_room(room_id) is None:
            raise forbidden("You are not joined to this room")
        if await self._rooms.membership(room_id, user_id) != "join":
            raise forbidden("You are not joined to this room")
        was_typing = user_id in self._module.typing_in(room_id)
        self._module.set_typing(room_id, user_id, typing, DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms)
        if typing and was_typing:
            # A refresh is no change here, but other servers time typing out on their own.
            self._publish(room_id, refreshed=user_id)

    def set_remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        """An ``m.typing`` EDU from another server, already checked (its user, joined to the room)."""
        self._module.set_typing(room_id, user_id, typing, timeout_ms)

    # -- the stream -------------------------------------------------------------------------

    def _changed(self, room_id: str) -> None:
        self._position += 1
        self._room_positions[room_id] = self._position
        self._publish(room_id)

    def _publish(self, room_id: str, refreshed: str | None = None) -> None:
        self._stream.publish(
            TypingChange(room_id, frozenset(self._module.typing_in(room_id)), refreshed, self._room_positions.get(room_id, 0))
        )

    def snapshot(self) -> list[TypingChange]:
        """Every room whose typing changed since start, as a change at its position (a cluster's
        worker starting: typing lives in this process's memory)."""
        return [
            TypingChange(room_id, frozenset(self._module.typing_in(room_id)), position=position)
            for room_id, position in self._room_positions.items()
        ]

    def typing_for_rooms(self, room_ids: Iterable[str], since_pos: int | None) -> dict[str, dict[str, Any]]:
        """The ``m.typing`` ephemeral event of each room in ``room_ids`` whose typing changed after ``since_pos``.

        Initial sync (``since_pos`` None, or a token from before a restart):
        rooms where someone is typing now, and rooms whose typing changed since
        the server started, with their (possibly empty) list: Synapse does so
        (every room past typing position 0), and SyTest's 20typing waits for the
        empty list through syncs without ``since``. Incremental: every changed
        room, including those whose list became empty (clients replace their
        list, so an empty one is how typing stops).
        """
        initial = since_pos is None or since_pos > self._position
        out: dict[str, dict[str, Any]] = {}
        for room_id in room_ids:
            if initial:
                users = self._module.typing_in(room_id)
                if not users and room_id not in self._room_positions:
                    continue
            else:
                assert since_pos is not None
                if self._room_positions.get(room_id, 0) <= since_pos:
                    continue
                users = self._module.typing_in(room_id)
            out[room_id] = {"type": "m.typing", "content": {"user_ids": sorted(users)}}
        return out

    # -- leaving stops typing ------------------------------------------------------------------

    def on_room_events(self, events: list[Event]) -> None:
        """Room-stream subscriber: a user who leaves (or is kicked, banned...) stops typing."""
        for ev in events:
            if ev.type != "m.room.member" or ev.state_key is None or ev.membership == "join":
                continue
            if ev.state_key in self._module.typing_in(ev.room_id):
                self._module.set_typing(ev.room_id, ev.state_key, False, 0)

    def stop(self) -> None:
        """At shutdown: stop everyone typing, which cancels the module's expiry timers."""
        for room_id in list(self._room_positions):
            for user_id in self._module.typing_in(room_id):
                try:
                    self._module.set_typing(room_id, user_id, False, 0)
                except Exception:
                    log.failure("typing module failed to stop {user_id}", user_id=user_id)
