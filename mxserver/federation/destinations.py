"""Which servers are in a room: where the federation sender sends a room's events and EDUs.

A server is "in" a room when at least one of its users is joined in the room's
current state (server-server-api §PDUs: events are sent to every server with a
joined member; our own server is part of the answer, the sender skips it).

The joined members come from the room-members cache (kept in memory from the
room event stream, no query once a room is loaded); the server set derived
from them is cached per room here and dropped whenever a membership in that
room changes, so a busy room costs one set lookup per event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable

from mxserver.events.model import Event

#: the users joined to a room (``RoomMembers.members``)
JoinedMembers = Callable[[str], Awaitable[Collection[str]]]


class RoomServers:
    """The server names with joined members, per room, cached (``hs.room_servers``).

    Kept current by two inputs the Homeserver wires: :meth:`on_room_events` (a
    room-stream subscriber, caches phase) and :meth:`invalidate` for a room whose
    state was replaced as a whole (a join over federation adopts the resident's
    state, with no member event per change on the stream).
    """

    def __init__(self, members: JoinedMembers) -> None:
        self._members = members
        self._cache: dict[str, frozenset[str]] = {}
        # bumped per room on every membership change: a computation that overlapped one is not cached
        self._generation: dict[str, int] = {}

    async def servers_in_room(self, room_id: str) -> frozenset[str]:
        """The servers with joined members in ``room_id``'s current state, our own included.

        Empty for a room this server does not know.
        """
        cached = self._cache.get(room_id)
        if cached is not None:
            return cached
        generation = self._generation.get(room_id, 0)
        members = await self._members(room_id)
        servers = frozenset(filter(None, (user_server(u) for u in members)))
        if self._generation.get(room_id, 0) == generation:
            self._cache[room_id] = servers
        return servers

    def invalidate(self, room_id: str) -> None:
        self._cache.pop(room_id, None)
        self._generation[room_id] = self._generation.get(room_id, 0) + 1

    def on_room_events(self, events: Iterable[Event]) -> None:
        """Room-stream subscriber: a member event may change the room's servers.

        Every member event invalidates, whatever the members cache makes of it: that
        is a superset of the joins and leaves it applies.
        """
        for ev in events:
            if ev.type == "m.room.member":
                self.invalidate(ev.room_id)


def user_server(user_id: str) -> str | None:
    """The server part of a user ID, or None if it has none."""
    _, sep, server = user_id.partition(":")
    return server if sep and server else None
