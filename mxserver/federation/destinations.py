"""Which servers are in a room: where the federation sender sends a room's events and EDUs.

A server is "in" a room when at least one of its users is joined in the room's
current state (server-server-api §PDUs: events are sent to every server with a
joined member; our own server is part of the answer, the sender skips it).

The joined members come from ``hs.room_members`` (kept in memory from the room
event stream, no query once a room is loaded); the server set derived from
them is cached per room here and dropped whenever a membership in that room
changes, so a busy room costs one set lookup per event.
"""

from __future__ import annotations

from typing import Any

from mxserver.streams import Phase


class RoomServers:
    """``hs.room_servers``: the server names with joined members, per room, cached."""

    def __init__(self, hs: Any) -> None:
        self._members = hs.room_members
        self._cache: dict[str, frozenset[str]] = {}
        # bumped per room on every membership change: a computation that overlapped one is not cached
        self._generation: dict[str, int] = {}
        self._members.listeners.append(self._membership_changed)
        # Member events also invalidate directly: a listener is only told about real changes,
        # and a membership change caused by state resolution has no member event of its own.
        hs.room_stream.subscribe(self._on_events, Phase.CACHES)

    async def servers_in_room(self, room_id: str) -> frozenset[str]:
        cached = self._cache.get(room_id)
        if cached is not None:
            return cached
        generation = self._generation.get(room_id, 0)
        members = await self._members.members(room_id)
        servers = frozenset(filter(None, (user_server(u) for u in members)))
        if self._generation.get(room_id, 0) == generation:
            self._cache[room_id] = servers
        return servers

    def invalidate(self, room_id: str) -> None:
        self._cache.pop(room_id, None)
        self._generation[room_id] = self._generation.get(room_id, 0) + 1

    def _membership_changed(self, room_id: str, user_id: str, joined: bool) -> None:
        self.invalidate(room_id)

    def _on_events(self, events: list[Any]) -> None:
        for ev in events:
            if ev.type == "m.room.member":
                self.invalidate(ev.room_id)


def _room_servers(hs: Any) -> RoomServers:
    rs = getattr(hs, "room_servers", None)
    if rs is None:
        rs = hs.room_servers = RoomServers(hs)
    return rs


async def servers_in_room(hs: Any, room_id: str) -> set[str]:
    """The servers with joined members in ``room_id``'s current state, our own included.

    Empty for a room this server does not know.
    """
    return set(await _room_servers(hs).servers_in_room(room_id))


def user_server(user_id: str) -> str | None:
    """The server part of a user ID, or None if it has none."""
    _, sep, server = user_id.partition(":")
    return server if sep and server else None
