"""Federation space hierarchy route (server-server space_hierarchy.yaml): the X-Matrix caller
gets the room, the children it could peek or join, and the ones it cannot."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, query_bool, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_room_id


class FederationHierarchyServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    @route("GET", "/_matrix/federation/v1/hierarchy/{room_id}")
    async def hierarchy(self, request: IRequest, room_id: str) -> JsonDict:
        origin = str(await self.hs.federation_auth.authenticate_request(request, None))
        if not is_valid_room_id(room_id):
            raise invalid_param(f"Invalid room ID {room_id!r}")
        suggested_only = query_bool(request, "suggested_only", False)
        return await self.hs.hierarchy.federation_hierarchy(origin, room_id, suggested_only)
