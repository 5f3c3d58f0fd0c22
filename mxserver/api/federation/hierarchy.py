"""Federation space hierarchy route (server-server space_hierarchy.yaml): the X-Matrix caller
gets the room, the children it could peek or join, and the ones it cannot."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, query_bool, route
from mxserver.errors import invalid_param
from mxserver.federation.auth import FederationAuth
from mxserver.ids import is_valid_room_id
from mxserver.room_handlers.hierarchy import HierarchyHandler


class FederationHierarchyServlet:
    """A room and its children, as far as the calling server could peek or join them."""

    def __init__(self, federation_auth: FederationAuth, hierarchy: HierarchyHandler) -> None:
        self.federation_auth = federation_auth
        self.handler = hierarchy

    @route("GET", "/_matrix/federation/v1/hierarchy/{room_id}")
    async def hierarchy(self, request: IRequest, room_id: str) -> JsonDict:
        origin = str(await self.federation_auth.authenticate_request(request, None))
        if not is_valid_room_id(room_id):
            raise invalid_param(f"Invalid room ID {room_id!r}")
        suggested_only = query_bool(request, "suggested_only", False)
        return await self.handler.federation_hierarchy(origin, room_id, suggested_only)
