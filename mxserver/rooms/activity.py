"""Which rooms had events since a stream position, answered from memory.

/sync and the device-list changes both ask "has this room had an event since
the client's token?" for every room a user is in; asking the database each
time would cost a query per room per sync. :class:`RoomActivity` follows the
room stream instead and remembers each room's latest position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from mxserver.events.model import Event


class _Positioned(Protocol):
    @property
    def current_position(self) -> int: ...


class RoomActivity:
    """The room-stream position of each room's latest event since start-up.

    Subscribe :meth:`on_room_events` to the room stream in the CACHES phase and
    run :meth:`start` after the room server's start hook. A room without an
    event since start-up counts as changed at the start-up position, which is
    always safe to over-report.
    """

    def __init__(self, rooms: _Positioned) -> None:
        self._rooms = rooms
        self._latest: dict[str, int] = {}
        self._baseline = 0
        #: counts the updates of ``_latest``; ``_touched`` holds each room's last update's number,
        #: least recently updated first (an update moves the room to the end)
        self._sequence = 0
        self._touched: dict[str, int] = {}

    async def start(self) -> None:
        self._baseline = self._rooms.current_position

    @property
    def current_position(self) -> int:
        """The room stream's position now."""
        return self._rooms.current_position

    def on_room_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            pos = ev.metadata.stream_ordering or 0
            if pos > self._latest.get(ev.room_id, 0):
                self._latest[ev.room_id] = pos
                self._sequence += 1
                self._touched.pop(ev.room_id, None)
                self._touched[ev.room_id] = self._sequence

    @property
    def sequence(self) -> int:
        """The number of the latest update: :meth:`touched_since` takes it."""
        return self._sequence

    def touched_since(self, sequence: int, limit: int) -> list[str] | None:
        """The rooms whose latest position moved after update number ``sequence`` (most recent
        first), or None when there are more than ``limit`` of them: a caller that orders a few
        rooms by activity updates only those (however many rooms exist), and starts over when
        it is that far behind."""
        out: list[str] = []
        if sequence >= self._sequence:
            return out
        for room_id, seq in reversed(self._touched.items()):
            if seq <= sequence:
                break
            if len(out) >= limit:
                return None
            out.append(room_id)
        return out

    def latest(self, room_id: str) -> int | None:
        """The position of the room's latest event since start-up (None: none seen since)."""
        return self._latest.get(room_id)

    def latest_by_room(self) -> Mapping[str, int]:
        """Every room's latest position since start-up, as a read-only view (a room list of
        thousands looks each up without a call per room)."""
        return MappingProxyType(self._latest)

    def changed_since(self, room_id: str, position: int) -> bool:
        """Whether the room may have had an event after ``position``."""
        return self._latest.get(room_id, self._baseline) > position
