"""The admin API's read side of rooms: the room list, a room's details, members, state, messages.

The room list is built in memory from one read of every room's statistics
(:meth:`AdminRoomStore.list_rooms`), then filtered, sorted and cut into a page: the ordering
keys (room name, canonical alias, ...) live in event content, which SQL cannot sort portably.
That is one query per request for the admin, linear in the number of rooms; fine for the
rooms a homeserver holds, and the shape does not change if it ever moves into SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxserver.accounts.auth import Requester
from mxserver.errors import invalid_param, not_found
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.room_handlers.history import HistoryHandler
from mxserver.rooms.api import ClientRooms
from mxserver.storage.admin_rooms import AdminRoomStore, RoomStats
from mxserver.storage.events import EventStore, RoomRecord
from mxserver.sync.filtering import RoomEventFilter


def _str_field(room: RoomStats, etype: str, key: str) -> str | None:
    value = room.state.get(etype, {}).get(key)
    return value if isinstance(value, str) else None


def room_summary(room: RoomStats) -> dict[str, Any]:
    """A room as the admin room list shows it (Synapse's shape)."""
    create = room.state.get("m.room.create", {})
    room_type = create.get("type")
    return {
        "room_id": room.room_id,
        "name": _str_field(room, "m.room.name", "name"),
        "canonical_alias": _str_field(room, "m.room.canonical_alias", "alias"),
        "joined_members": room.joined_members,
        "joined_local_members": room.joined_local_members,
        "version": room.version,
        "creator": room.creator,
        "encryption": _str_field(room, "m.room.encryption", "algorithm"),
        # m.room.create's m.federate defaults to true (client-server-api §m.room.create)
        "federatable": create.get("m.federate", True) is not False,
        "public": room.public,
        "join_rules": _str_field(room, "m.room.join_rules", "join_rule"),
        "guest_access": _str_field(room, "m.room.guest_access", "guest_access"),
        "history_visibility": _str_field(room, "m.room.history_visibility", "history_visibility"),
        "state_events": room.state_events,
        "room_type": room_type if isinstance(room_type, str) else None,
    }


def _text_key(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    # Rooms without the value sort last going forwards, as absent names do in Synapse's list.
    return lambda r: (0, r[field]) if r[field] is not None else (1, "")


def _number_key(field: str) -> Callable[[dict[str, Any]], Any]:
    # "Largest to smallest" going forwards.
    return lambda r: -int(r[field])


def _version_key(r: dict[str, Any]) -> Any:
    version = r["version"]
    return (0, -int(version), version) if version.isdigit() else (1, 0, version)


_ORDER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": _text_key("name"),
    "canonical_alias": _text_key("canonical_alias"),
    "joined_members": _number_key("joined_members"),
    "joined_local_members": _number_key("joined_local_members"),
    "version": _version_key,
    "creator": lambda r: r["creator"],
    "encryption": _text_key("encryption"),
    "federatable": lambda r: not r["federatable"],
    "public": lambda r: not r["public"],
    "join_rules": _text_key("join_rules"),
    "guest_access": _text_key("guest_access"),
    "history_visibility": _text_key("history_visibility"),
    "state_events": _number_key("state_events"),
}
#: Synapse's deprecated names
_ORDER["alphabetical"] = _ORDER["name"]
_ORDER["size"] = _ORDER["joined_members"]

#: the values ``order_by`` accepts
ORDER_BY = frozenset(_ORDER)


class AdminRoomsHandler:
    """What the admin room servlets answer: listing rooms and reading any room."""

    def __init__(
        self,
        store: AdminRoomStore,
        room_server: ClientRooms,
        events: EventStore,
        serializer: EventSerializer,
        history: HistoryHandler,
    ) -> None:
        self.store = store
        self.room_server = room_server
        self.events = events
        self.serializer = serializer
        self.history = history

    async def list_rooms(
        self,
        start: int,
        limit: int,
        order_by: str,
        backwards: bool,
        search_term: str | None,
        public_rooms: bool | None,
        empty_rooms: bool | None,
    ) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms``: one page of the filtered, ordered room list."""
        if order_by not in ORDER_BY:
            raise invalid_param(f"Unknown order_by '{order_by}'")
        rooms = [room_summary(r) for r in await self.store.list_rooms()]
        if search_term:
            rooms = [r for r in rooms if _matches(r, search_term)]
        if public_rooms is not None:
            rooms = [r for r in rooms if r["public"] == public_rooms]
        if empty_rooms is not None:
            rooms = [r for r in rooms if (r["joined_members"] == 0) == empty_rooms]
        # Ties keep the room ID order, so that pages are stable between requests.
        rooms.sort(key=lambda r: r["room_id"])
        rooms.sort(key=_ORDER[order_by], reverse=backwards)
        page = rooms[start : start + limit]
        out: dict[str, Any] = {"rooms": page, "offset": start, "total_rooms": len(rooms)}
        if start + limit < len(rooms):
            out["next_batch"] = start + limit
        if start > 0:
            out["prev_batch"] = max(0, start - limit)
        return out

    async def _room(self, room_id: str) -> RoomRecord:
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found("Room not found")
        return room

    async def room_details(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}``."""
        room = await self._room(room_id)
        stats = await self.store.get_room_stats(room_id)
        if stats is None:
            raise not_found("Room not found")
        details = room_summary(stats)
        details["topic"] = _str_field(stats, "m.room.topic", "topic")
        details["avatar"] = _str_field(stats, "m.room.avatar", "url")
        details["joined_local_devices"] = await self.store.count_joined_local_devices(room.room_nid)
        details["forgotten"] = await self.store.all_local_forgotten(room.room_nid)
        return details

    async def members(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/members``: the joined users."""
        room = await self._room(room_id)
        members = await self.store.joined_members(room.room_nid)
        return {"members": members, "total": len(members)}

    async def state(self, requester: Requester, room_id: str, event_type: str | None) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/state``: the current state events."""
        await self._room(room_id)
        ids = await self.room_server.current_state_ids(room_id)
        wanted = [e for (t, _), e in ids.items() if event_type is None or t == event_type]
        found = await self.events.get_events(wanted)
        events = [found[e] for e in wanted if e in found]
        return {"state": await self.serializer.serialize(events, viewer=(requester.user_id, requester.device_id))}

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        filt: RoomEventFilter,
    ) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/messages``: the client ``/messages``, read by an
        admin who need not be in the room."""
        return await self.history.messages(
            requester, room_id, from_token, to_token, direction, limit, filt, as_admin=True
        )


def _matches(room: dict[str, Any], term: str) -> bool:
    """Synapse's search_term: in the name (any case), in the local part of the canonical alias
    (any case), or in the room ID (case-sensitive)."""
    lowered = term.lower()
    name = room["name"]
    alias = room["canonical_alias"]
    if name is not None and lowered in name.lower():
        return True
    if alias is not None and lowered in alias[1:].split(":", 1)[0].lower():
        return True
    return term in room["room_id"]
