"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (room_summary.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, route
from mxserver.errors import invalid_param
from mxserver.request_info import access_token
from mxserver.room_handlers.room_summary import RoomSummaryHandler


def _via(request: IRequest) -> list[str]:
    out = []
    for raw in (request.args or {}).get(b"via", []):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise invalid_param("Query parameter 'via' is not valid UTF-8") from None
    return out


class RoomSummaryServlet:
    """Authenticated or not (the spec lets servers answer unauthenticated callers)."""

    def __init__(self, auth: Auth, summaries: RoomSummaryHandler) -> None:
        self.auth = auth
        self.summaries = summaries

    @route("GET", "/_matrix/client/v1/room_summary/{room_id_or_alias}")
    async def summary(self, request: IRequest, room_id_or_alias: str) -> JsonDict:
        user_id = None
        if access_token(request) is not None:
            user_id = (await self.auth.get_user(request, allow_guest=True)).user_id
        return await self.summaries.summary(user_id, room_id_or_alias, _via(request))
