"""``POST /user_directory/search`` (users.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_int, get_str, json_body, route
from mxserver.ephemeral.user_directory import DEFAULT_LIMIT, MAX_LIMIT, UserDirectory
from mxserver.errors import invalid_param

_PATHS = [p + "/user_directory/search" for p in ("/_matrix/client/v3", "/_matrix/client/r0")]

MAX_TERM_LENGTH = 1000


class UserDirectoryServlet:
    def __init__(self, auth: Auth, directory: UserDirectory) -> None:
        self.auth = auth
        self.directory = directory

    @route("POST", *_PATHS)
    async def search(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        term = get_str(body, "search_term", max_length=MAX_TERM_LENGTH)
        limit = get_int(body, "limit", DEFAULT_LIMIT)
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        return await self.directory.search(requester.user_id, term, min(limit, MAX_LIMIT))
