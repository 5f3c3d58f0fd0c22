"""Room creation and upgrade routes (create_room.yaml, room_upgrades.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_bool, get_dict, get_list, get_str, get_str_list, json_body, route
from mxserver.errors import bad_json
from mxserver.identifier_checks import check_room_id
from mxserver.room_handlers.creation import CreateRoomRequest, RoomCreationHandler
from mxserver.room_handlers.third_party_invites import parse_third_party_id
from mxserver.room_handlers.upgrade import RoomUpgradeHandler

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"


def _paths(suffix: str) -> tuple[str, str]:
    return (_V3 + suffix, _R0 + suffix)


def parse_create_room(body: JsonDict) -> CreateRoomRequest:
    """A createRoom body, type-checked (M_BAD_JSON for wrong types)."""
    invite_3pid = tuple(
        parse_third_party_id(entry, f"invite_3pid[{i}].") for i, entry in enumerate(get_list(body, "invite_3pid", []))
    )
    initial_state = []
    for i, entry in enumerate(get_list(body, "initial_state", [])):
        if not isinstance(entry, dict):
            raise bad_json(f"initial_state[{i}] must be an object")
        etype = entry.get("type")
        state_key = entry.get("state_key", "")
        content = entry.get("content")
        if not isinstance(etype, str) or not etype:
            raise bad_json(f"initial_state[{i}].type must be a non-empty string")
        if not isinstance(state_key, str):
            raise bad_json(f"initial_state[{i}].state_key must be a string")
        if not isinstance(content, dict):
            raise bad_json(f"initial_state[{i}].content must be an object")
        initial_state.append((etype, state_key, content))
    return CreateRoomRequest(
        visibility=get_str(body, "visibility", "private"),
        room_alias_name=get_str(body, "room_alias_name", None),
        name=get_str(body, "name", None),
        topic=get_str(body, "topic", None),
        invite=tuple(get_str_list(body, "invite", [])),
        room_version=get_str(body, "room_version", None),
        creation_content=get_dict(body, "creation_content", {}),
        initial_state=tuple(initial_state),
        preset=get_str(body, "preset", None),
        is_direct=get_bool(body, "is_direct", False),
        power_level_content_override=get_dict(body, "power_level_content_override", None),
        invite_3pid=invite_3pid,
    )


class CreateRoomServlet:
    """createRoom and room upgrades."""

    def __init__(self, auth: Auth, creation: RoomCreationHandler, upgrades: RoomUpgradeHandler) -> None:
        self.auth = auth
        self.creation = creation
        self.upgrades = upgrades

    @route("POST", *_paths("/createRoom"))
    async def create_room(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        req = parse_create_room(json_body(request))
        return await self.creation.create_room(requester, req)

    @route("POST", *_paths("/rooms/{room_id}/upgrade"))
    async def upgrade(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        new_version = get_str(body, "new_version")
        additional = get_str_list(body, "additional_creators", None)
        new_room = await self.upgrades.upgrade(requester, check_room_id(room_id), new_version, additional)
        return {"replacement_room": new_room}
