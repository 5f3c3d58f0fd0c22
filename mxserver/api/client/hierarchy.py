"""The space hierarchy route (space_hierarchy.yaml, client-server-api §Spaces)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route


class HierarchyServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    @route("GET", "/_matrix/client/v1/rooms/{room_id}/hierarchy")
    async def hierarchy(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.hs.auth.get_user(request, allow_guest=True)
        return await self.hs.hierarchy.client_hierarchy(
            requester.user_id,
            room_id,
            suggested_only=query_bool(request, "suggested_only", False),
            limit=query_int(request, "limit", None),
            max_depth=query_int(request, "max_depth", None),
            from_token=query_str(request, "from"),
        )
