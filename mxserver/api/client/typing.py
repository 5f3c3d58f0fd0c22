"""``PUT /rooms/{roomId}/typing/{userId}`` (typing.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_bool, get_int, json_body, route
from mxserver.ephemeral.typing import TypingHandler
from mxserver.errors import invalid_param
from mxserver.identifier_checks import check_room_id, check_user_id

_PATHS = [p + "/rooms/{room_id}/typing/{user_id}" for p in ("/_matrix/client/v3", "/_matrix/client/r0")]


class TypingServlet:
    def __init__(self, auth: Auth, typing: TypingHandler) -> None:
        self.auth = auth
        self.typing = typing

    @route("PUT", *_PATHS)
    async def set_typing(self, request: IRequest, room_id: str, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        typing = get_bool(body, "typing")
        timeout = get_int(body, "timeout", None)
        if timeout is not None and timeout < 0:
            raise invalid_param("'timeout' must not be negative")
        await self.typing.set_typing(requester, check_room_id(room_id), check_user_id(user_id), typing, timeout)
        return {}
