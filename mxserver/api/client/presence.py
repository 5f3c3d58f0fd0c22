"""``GET``/``PUT /presence/{userId}/status`` (presence.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_str, json_body, route
from mxserver.ephemeral.presence import PresenceHandler
from mxserver.identifier_checks import check_user_id

_PATHS = [p + "/presence/{user_id}/status" for p in ("/_matrix/client/v3", "/_matrix/client/r0")]

MAX_STATUS_MSG_LENGTH = 1024


class PresenceServlet:
    def __init__(self, auth: Auth, presence: PresenceHandler) -> None:
        self.auth = auth
        self.presence = presence

    @route("GET", *_PATHS)
    async def get_presence(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.presence.get_presence(requester, check_user_id(user_id))

    @route("PUT", *_PATHS)
    async def set_presence(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        presence = get_str(body, "presence")
        status_msg = get_str(body, "status_msg", None, max_length=MAX_STATUS_MSG_LENGTH)
        await self.presence.set_presence(requester, check_user_id(user_id), presence, status_msg)
        return {}
