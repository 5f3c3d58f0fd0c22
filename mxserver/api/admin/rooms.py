"""``/_synapse/admin/v1/rooms...``: listing and reading rooms, for server admins (Synapse's shapes).

Thin: the gate (401/403), parse and validate, call :class:`~mxserver.admin.rooms.AdminRoomsHandler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_room_id
from mxserver.sync.filtering import RoomEventFilter

if TYPE_CHECKING:
    from mxserver.admin.rooms import AdminRoomsHandler
    from mxserver.api.admin import AdminGate

_V1 = "/_synapse/admin/v1"

#: the most rooms one page of the room list holds, whatever the admin asks
MAX_ROOMS_LIMIT = 1000


def room_id_param(room_id: str) -> str:
    """A room ID from the path: 400 M_INVALID_PARAM unless it is one."""
    if not is_valid_room_id(room_id):
        raise invalid_param("Invalid room ID")
    return room_id


def direction_param(request: IRequest) -> str:
    value = query_str(request, "dir", "f")
    if value not in ("f", "b"):
        raise invalid_param("Query parameter 'dir' must be 'f' or 'b'")
    return str(value)


def optional_bool(request: IRequest, name: str) -> bool | None:
    """A true/false query parameter that may be absent (then None)."""
    if query_str(request, name) is None:
        return None
    return query_bool(request, name)


class AdminRoomsServlet:
    """The room list, a room's details, members, current state and messages."""

    def __init__(self, gate: AdminGate, rooms: AdminRoomsHandler) -> None:
        self.gate = gate
        self.rooms = rooms

    @route("GET", f"{_V1}/rooms")
    async def list_rooms(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return await self.rooms.list_rooms(
            start=query_int(request, "from", 0, minimum=0),
            limit=query_int(request, "limit", 100, minimum=0, maximum=MAX_ROOMS_LIMIT),
            order_by=query_str(request, "order_by", "name"),
            backwards=direction_param(request) == "b",
            search_term=query_str(request, "search_term"),
            public_rooms=optional_bool(request, "public_rooms"),
            empty_rooms=optional_bool(request, "empty_rooms"),
        )

    @route("GET", f"{_V1}/rooms/{{room_id}}")
    async def room_details(self, request: IRequest, room_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.rooms.room_details(room_id_param(room_id))

    @route("GET", f"{_V1}/rooms/{{room_id}}/members")
    async def members(self, request: IRequest, room_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.rooms.members(room_id_param(room_id))

    @route("GET", f"{_V1}/rooms/{{room_id}}/state")
    async def state(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        return await self.rooms.state(requester, room_id_param(room_id), query_str(request, "type"))

    @route("GET", f"{_V1}/rooms/{{room_id}}/messages")
    async def messages(self, request: IRequest, room_id: str) -> Any:
        requester = await self.gate.require(request)
        return await self.rooms.messages(
            requester,
            room_id_param(room_id),
            from_token=query_str(request, "from"),
            to_token=query_str(request, "to"),
            direction=direction_param(request),
            limit=query_int(request, "limit", 10, minimum=0),
            filt=RoomEventFilter.from_query(query_str(request, "filter")),
        )
