"""``POST /user_directory/search`` (users.yaml)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, get_int, get_str, json_body, route
from mxserver.ephemeral.user_directory import DEFAULT_LIMIT, MAX_LIMIT
from mxserver.errors import invalid_param

_PATHS = [p + "/user_directory/search" for p in ("/_matrix/client/v3", "/_matrix/client/r0")]

MAX_TERM_LENGTH = 1000


class UserDirectoryServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self.directory = hs.user_directory

    @route("POST", *_PATHS)
    async def search(self, request: IRequest) -> JsonDict:
        requester = await self.hs.auth.get_user(request)
        body = json_body(request)
        term = get_str(body, "search_term", max_length=MAX_TERM_LENGTH)
        limit = get_int(body, "limit", DEFAULT_LIMIT)
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        return await self.directory.search(requester.user_id, term, min(limit, MAX_LIMIT))
