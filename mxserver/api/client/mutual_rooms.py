"""``GET /_matrix/client/v1/mutual_rooms`` (mutual_rooms.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, query_str, route

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth
    from mxserver.room_handlers.mutual_rooms import MutualRooms


class MutualRoomsServlet:
    def __init__(self, auth: Auth, mutual_rooms: MutualRooms) -> None:
        self.auth = auth
        self.mutual_rooms = mutual_rooms

    @route("GET", "/_matrix/client/v1/mutual_rooms")
    async def mutual(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.mutual_rooms.shared(requester.user_id, query_str(request, "user_id"), query_str(request, "from"))
