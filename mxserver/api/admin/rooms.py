"""``/_synapse/admin/v1/rooms...``: listing, reading, blocking and deleting rooms, and purging
their history (``/_synapse/admin/v1/purge_history``), for server admins (Synapse's shapes).

Thin: the gate (401/403), parse and validate, call :class:`~mxserver.admin.rooms.AdminRoomsHandler`
or :class:`~mxserver.admin.room_deletion.RoomDeletionHandler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.admin.room_deletion import DEFAULT_MESSAGE, DEFAULT_ROOM_NAME, DeleteRequest
from mxserver.api.http import (
    JsonDict,
    get_bool,
    get_int,
    get_str,
    json_body,
    query_bool,
    query_int,
    query_str,
    route,
)
from mxserver.errors import bad_json, invalid_param
from mxserver.identifier_checks import check_user_id
from mxserver.ids import is_valid_event_id, is_valid_room_id
from mxserver.sync.filtering import RoomEventFilter

if TYPE_CHECKING:
    from mxserver.admin.purge_history import PurgeHistoryHandler
    from mxserver.admin.room_deletion import RoomDeletionHandler
    from mxserver.admin.rooms import AdminRoomsHandler
    from mxserver.api.admin import AdminGate

_V1 = "/_synapse/admin/v1"
_V2 = "/_synapse/admin/v2"

#: the most rooms one page of the room list holds, whatever the admin asks
MAX_ROOMS_LIMIT = 1000


def room_id_param(room_id: str) -> str:
    """A room ID from the path: 400 M_INVALID_PARAM unless it is one."""
    if not is_valid_room_id(room_id):
        raise invalid_param("Invalid room ID")
    return room_id


def direction_param(request: IRequest, default: str = "f") -> str:
    """The ``dir`` query parameter: ``f`` or ``b``."""
    value = query_str(request, "dir", default)
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


#: the longest room name and message a deletion accepts (they become event content)
_MAX_TEXT = 65536


class AdminRoomDeletionServlet:
    """Deleting rooms (v2, in the background, with a status) and the room block list."""

    def __init__(self, gate: AdminGate, deletion: RoomDeletionHandler) -> None:
        self.gate = gate
        self.deletion = deletion

    @route("GET", f"{_V1}/rooms/{{room_id}}/block")
    async def block_status(self, request: IRequest, room_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.deletion.block_status(room_id_param(room_id))

    @route("PUT", f"{_V1}/rooms/{{room_id}}/block")
    async def set_block(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        room_id = room_id_param(room_id)
        block = get_bool(json_body(request), "block")
        self.gate.audit(requester, "block_room" if block else "unblock_room", room_id=room_id)
        return await self.deletion.set_blocked(requester, room_id, block)

    @route("DELETE", f"{_V2}/rooms/{{room_id}}")
    async def delete_room(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        room_id = room_id_param(room_id)
        # rooms.md: "The JSON body must not be empty. The body must be at least {}."
        body = json_body(request)
        new_room_user_id = get_str(body, "new_room_user_id", None)
        req = DeleteRequest(
            new_room_user_id=check_user_id(new_room_user_id) if new_room_user_id is not None else None,
            room_name=get_str(body, "room_name", DEFAULT_ROOM_NAME, max_length=_MAX_TEXT),
            message=get_str(body, "message", DEFAULT_MESSAGE, max_length=_MAX_TEXT),
            block=get_bool(body, "block", False),
            purge=get_bool(body, "purge", True),
            force_purge=get_bool(body, "force_purge", False),
        )
        delete_id = await self.deletion.delete_room(requester, room_id, req)
        self.gate.audit(
            requester,
            "delete_room",
            room_id=room_id,
            delete_id=delete_id,
            block=req.block,
            purge=req.purge,
            new_room_user_id=req.new_room_user_id,
        )
        return {"delete_id": delete_id}

    @route("GET", f"{_V2}/rooms/{{room_id}}/delete_status")
    async def status_by_room(self, request: IRequest, room_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.deletion.status_by_room(room_id_param(room_id))

    @route("GET", f"{_V2}/rooms/delete_status/{{delete_id}}")
    async def status_by_id(self, request: IRequest, delete_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.deletion.status_by_id(delete_id)


class AdminPurgeHistoryServlet:
    """Purging a room's old history in the background, and the purge's status."""

    def __init__(self, gate: AdminGate, purges: PurgeHistoryHandler) -> None:
        self.gate = gate
        self.purges = purges

    @route("POST", f"{_V1}/purge_history/{{room_id}}")
    async def purge(self, request: IRequest, room_id: str) -> JsonDict:
        return await self._purge(request, room_id, None)

    @route("POST", f"{_V1}/purge_history/{{room_id}}/{{event_id}}")
    async def purge_to_event(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        return await self._purge(request, room_id, event_id)

    async def _purge(self, request: IRequest, room_id: str, event_id: str | None) -> JsonDict:
        requester = await self.gate.require(request)
        room_id = room_id_param(room_id)
        body = json_body(request, allow_empty=True)
        if event_id is None:
            event_id = get_str(body, "purge_up_to_event_id", None)
        if event_id is not None and not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        before_ts = get_int(body, "purge_up_to_ts", None)
        if before_ts is not None and before_ts < 0:
            raise bad_json("'purge_up_to_ts' must be a timestamp in milliseconds")
        delete_local = get_bool(body, "delete_local_events", False)
        purge_id = await self.purges.purge(room_id, event_id, None if event_id is not None else before_ts, delete_local)
        self.gate.audit(
            requester,
            "purge_history",
            room_id=room_id,
            purge_id=purge_id,
            event_id=event_id,
            purge_up_to_ts=before_ts,
            delete_local_events=delete_local,
        )
        return {"purge_id": purge_id}

    @route("GET", f"{_V1}/purge_history_status/{{purge_id}}")
    async def status(self, request: IRequest, purge_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.purges.status(purge_id)
