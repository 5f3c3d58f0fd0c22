"""The space hierarchy route (space_hierarchy.yaml, client-server-api §Spaces)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route
from mxserver.room_handlers.hierarchy import HierarchyHandler


class HierarchyServlet:
    """A page of the walk of a space's rooms."""

    def __init__(self, auth: Auth, hierarchy: HierarchyHandler) -> None:
        self.auth = auth
        self.handler = hierarchy

    @route("GET", "/_matrix/client/v1/rooms/{room_id}/hierarchy")
    async def hierarchy(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.handler.client_hierarchy(
            requester.user_id,
            room_id,
            suggested_only=query_bool(request, "suggested_only", False),
            limit=query_int(request, "limit", None),
            max_depth=query_int(request, "max_depth", None),
            from_token=query_str(request, "from"),
        )
