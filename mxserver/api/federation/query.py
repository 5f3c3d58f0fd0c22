"""Federation queries (query.yaml) and the public room directory (public_rooms.yaml).

``/query/profile`` and ``/query/directory`` answer for local users and aliases only;
any other query type is ``M_UNRECOGNIZED``. ``/publicRooms`` is served only when
``room_directory.public_rooms_over_federation`` is on (403 M_FORBIDDEN otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import (
    JsonDict,
    get_bool,
    get_dict,
    get_int,
    get_str,
    json_body,
    query_bool,
    query_int,
    query_str,
    route,
)
from mxserver.config import RoomDirectoryConfig
from mxserver.errors import MatrixError, forbidden, invalid_param, missing_param, not_found, unrecognized
from mxserver.federation.auth import FederationAuth
from mxserver.ids import UserID, is_valid_room_alias
from mxserver.room_handlers.directory import DirectoryHandler, PublicRoomsQuery

if TYPE_CHECKING:
    from mxserver.ephemeral.profiles import ProfileHandler

#: profile fields a server may ask for (query.yaml: displayname, avatar_url, m.tz or custom)
_PROFILE_FIELD_MAX = 255


class FederationQueryServlet:
    """Profile and alias queries about our users and rooms; our public room directory."""

    def __init__(
        self,
        server_name: str,
        auth: FederationAuth,
        profiles: ProfileHandler,
        directory: DirectoryHandler,
        room_directory: RoomDirectoryConfig,
    ) -> None:
        self.server_name = server_name
        self.auth = auth
        self.profiles = profiles
        self.directory = directory
        self.room_directory = room_directory

    async def _origin(self, request: IRequest, content: Any = None) -> str:
        return str(await self.auth.authenticate_request(request, content))

    @route("GET", "/_matrix/federation/v1/query/profile")
    async def query_profile(self, request: IRequest) -> JsonDict:
        await self._origin(request)
        user_id = query_str(request, "user_id")
        if user_id is None:
            raise missing_param("Missing query parameter 'user_id'")
        if not UserID.is_valid(user_id):
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if UserID.parse(user_id).server_name != self.server_name:
            raise invalid_param("The user is not local to this server")
        field = query_str(request, "field")
        if field is not None and (not field or len(field) > _PROFILE_FIELD_MAX):
            raise invalid_param("Invalid 'field'")
        profile = await self.profiles.get_profile(user_id)
        if field is None:
            return dict(profile)
        if field not in profile:
            raise not_found(f"The user has no {field}")
        return {field: profile[field]}

    @route("GET", "/_matrix/federation/v1/query/directory")
    async def query_directory(self, request: IRequest) -> JsonDict:
        await self._origin(request)
        alias = query_str(request, "room_alias")
        if alias is None:
            raise missing_param("Missing query parameter 'room_alias'")
        if not is_valid_room_alias(alias):
            raise invalid_param(f"Invalid room alias {alias!r}")
        if not self.directory.is_local_alias(alias):
            raise not_found(f"Room alias {alias} is not on this server")
        try:
            return await self.directory.get_alias(alias)
        except MatrixError as e:
            if e.code == 404:
                raise not_found(f"Room alias {alias} not found") from None
            raise

    @route("GET", "/_matrix/federation/v1/query/{query_type}")
    async def query_other(self, request: IRequest, query_type: str) -> JsonDict:
        await self._origin(request)
        raise unrecognized(f"Unknown query type {query_type!r}")

    def _check_public_rooms(self) -> None:
        if not self.room_directory.public_rooms_over_federation:
            raise forbidden("This server does not publish its room directory over federation")

    @route("GET", "/_matrix/federation/v1/publicRooms")
    async def public_rooms(self, request: IRequest) -> JsonDict:
        await self._origin(request)
        self._check_public_rooms()
        query = PublicRoomsQuery(
            limit=query_int(request, "limit", None, minimum=0),
            since=query_str(request, "since"),
            include_all_networks=query_bool(request, "include_all_networks", False),
            third_party_instance_id=query_str(request, "third_party_instance_id"),
        )
        return await self.directory.public_rooms(query)

    @route("POST", "/_matrix/federation/v1/publicRooms")
    async def query_public_rooms(self, request: IRequest) -> JsonDict:
        body = json_body(request, allow_empty=True)
        await self._origin(request, body)
        self._check_public_rooms()
        filter_ = get_dict(body, "filter", {})
        room_types = filter_.get("room_types")
        if room_types is not None and (
            not isinstance(room_types, list) or not all(t is None or isinstance(t, str) for t in room_types)
        ):
            raise invalid_param("'filter.room_types' must be a list of strings or nulls")
        limit = get_int(body, "limit", None)
        if limit is not None and limit < 0:
            raise invalid_param("'limit' must not be negative")
        query = PublicRoomsQuery(
            limit=limit,
            since=get_str(body, "since", None),
            search_term=get_str(filter_, "generic_search_term", None),
            room_types=room_types,
            include_all_networks=get_bool(body, "include_all_networks", False),
            third_party_instance_id=get_str(body, "third_party_instance_id", None),
        )
        return await self.directory.public_rooms(query)
