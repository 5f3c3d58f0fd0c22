"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (room_summary.yaml, v1.15).

A room's summary as the space hierarchy gives it (name, topic, avatar, members, join rule,
type, version, encryption), for a room this server is in or, through the federation
hierarchy endpoint, one it is not in. Who may see it follows the hierarchy's rules: members
and invitees, anyone for a public, knockable or world-readable room, members of an allowed
room for a restricted one. Any other room is "not found", so the answer never tells a room
exists that the caller could not see.

Without an access token only rooms this server is in are summarised, and only those anyone
may see: the spec lets servers answer unauthenticated callers and asks them to limit what
costs a federation request, and the cheapest limit is none.
"""

from __future__ import annotations

from typing import Any, Protocol

from mxserver.errors import not_found
from mxserver.identifier_checks import check_room_alias, check_room_id
from mxserver.ids import is_valid_server_name
from mxserver.room_handlers.hierarchy import HierarchyHandler, join_rule_of

_ANYONE_RULES = ("public", "knock", "knock_restricted")


class AliasResolver(Protocol):
    async def resolve_alias_with_servers(self, alias: str) -> tuple[str, list[str]]: ...


class Memberships(Protocol):
    async def get_room(self, room_id: str) -> Any: ...

    async def membership(self, room_id: str, user_id: str) -> str | None: ...


class RoomSummaryHandler:
    """Summaries of rooms for clients (room_summary.yaml)."""

    def __init__(self, hierarchy: HierarchyHandler, aliases: AliasResolver, rooms: Memberships) -> None:
        self._hierarchy = hierarchy
        self._aliases = aliases
        self._rooms = rooms

    async def summary(self, user_id: str | None, room_id_or_alias: str, via: list[str]) -> dict[str, Any]:
        """The summary for ``user_id`` (None: an unauthenticated caller); M_NOT_FOUND if the room
        is unknown or the caller may not see it."""
        servers = [s for s in via if is_valid_server_name(s)]
        if room_id_or_alias.startswith("#"):
            room_id, alias_servers = await self._aliases.resolve_alias_with_servers(check_room_alias(room_id_or_alias))
            servers += alias_servers
        else:
            room_id = check_room_id(room_id_or_alias)
        gone = not_found("Room not found.")
        if await self._hierarchy.is_local(room_id):
            summary = await self._hierarchy.local_summary(room_id)
        elif user_id is None:
            raise gone
        else:
            _, sep, server = room_id.partition(":")
            if sep and is_valid_server_name(server):
                servers.append(server)  # pre-v12 room IDs name the creator's server
            answer = await self._hierarchy.remote.fetch(room_id, servers, suggested_only=False)
            if not isinstance(answer, dict):
                raise gone
            summary = dict(answer["room"])
        summary.pop("children_state", None)
        if user_id is None:
            if not (summary.get("world_readable") is True or join_rule_of(summary) in _ANYONE_RULES):
                raise gone
            return summary
        if not await self._hierarchy.user_may_see(user_id, summary):
            raise gone
        if await self._rooms.get_room(room_id) is not None:
            membership = await self._rooms.membership(room_id, user_id)
            if membership is not None:
                summary["membership"] = membership
        return summary
