"""Room alias and published room directory routes (directory.yaml, list_public_rooms.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import (
    JsonDict,
    access_token,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_str,
    json_body,
    query_bool,
    query_int,
    query_str,
    route,
)
from mxserver.config import RoomDirectoryConfig
from mxserver.errors import bad_json
from mxserver.room_handlers.directory import DirectoryHandler, PublicRoomsQuery

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"


def _paths(suffix: str) -> tuple[str, str]:
    return (_V3 + suffix, _R0 + suffix)


def _room_types(filter_: JsonDict) -> list[str | None] | None:
    types = get_list(filter_, "room_types", None)
    if types is not None and not all(t is None or isinstance(t, str) for t in types):
        raise bad_json("'filter.room_types' must be an array of strings and nulls")
    return types


class DirectoryServlet:
    """Aliases, directory visibility and the public room list."""

    def __init__(self, auth: Auth, directory: DirectoryHandler, config: RoomDirectoryConfig) -> None:
        self.auth = auth
        self.directory = directory
        self.config = config

    # -- aliases -------------------------------------------------------------------------

    @route("GET", *_paths("/directory/room/{room_alias}"))
    async def get_alias(self, request: IRequest, room_alias: str) -> JsonDict:
        return await self.directory.get_alias(room_alias)

    @route("PUT", *_paths("/directory/room/{room_alias}"))
    async def put_alias(self, request: IRequest, room_alias: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.directory.create_alias(requester, room_alias, get_str(body, "room_id"))
        return {}

    @route("DELETE", *_paths("/directory/room/{room_alias}"))
    async def delete_alias(self, request: IRequest, room_alias: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        await self.directory.delete_alias(requester, room_alias)
        return {}

    @route("GET", *_paths("/rooms/{room_id}/aliases"))
    async def room_aliases(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"aliases": await self.directory.local_aliases(requester, room_id)}

    # -- directory visibility ------------------------------------------------------------------

    @route("GET", *_paths("/directory/list/room/{room_id}"))
    async def get_visibility(self, request: IRequest, room_id: str) -> JsonDict:
        return {"visibility": await self.directory.get_visibility(room_id)}

    @route("PUT", *_paths("/directory/list/room/{room_id}"))
    async def set_visibility(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        await self.directory.set_visibility(requester, room_id, get_str(body, "visibility", "public"))
        return {}

    @route("PUT", *_paths("/directory/list/appservice/{network_id}/{room_id}"))
    async def set_appservice_visibility(self, request: IRequest, network_id: str, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        visibility = get_str(body, "visibility")
        await self.directory.set_appservice_visibility(requester, network_id, room_id, visibility)
        return {}

    @route("DELETE", *_paths("/directory/list/appservice/{network_id}/{room_id}"))
    async def remove_appservice_visibility(self, request: IRequest, network_id: str, room_id: str) -> JsonDict:
        # Not in the spec; Synapse serves it as "private".
        requester = await self.auth.get_user(request)
        await self.directory.set_appservice_visibility(requester, network_id, room_id, "private")
        return {}

    # -- the public room list ---------------------------------------------------------------------

    @route("GET", *_paths("/publicRooms"))
    async def public_rooms(self, request: IRequest) -> JsonDict:
        if not self.config.public_rooms_without_auth or access_token(request) is not None:
            await self.auth.get_user(request, allow_guest=True)
        query = PublicRoomsQuery(
            limit=query_int(request, "limit", None),
            since=query_str(request, "since"),
            server=query_str(request, "server"),
            # Not in list_public_rooms.yaml's GET; Synapse reads them there as in the POST body.
            include_all_networks=query_bool(request, "include_all_networks", False),
            third_party_instance_id=query_str(request, "third_party_instance_id"),
        )
        return await self.directory.public_rooms(query)

    @route("POST", *_paths("/publicRooms"))
    async def query_public_rooms(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request, allow_guest=True)
        body = json_body(request, allow_empty=True)
        filter_ = get_dict(body, "filter", {})
        query = PublicRoomsQuery(
            limit=get_int(body, "limit", None),
            since=get_str(body, "since", None),
            server=query_str(request, "server"),
            search_term=get_str(filter_, "generic_search_term", None),
            room_types=_room_types(filter_),
            include_all_networks=get_bool(body, "include_all_networks", False),
            third_party_instance_id=get_str(body, "third_party_instance_id", None),
        )
        return await self.directory.public_rooms(query)
