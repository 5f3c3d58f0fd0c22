"""Client route for the threads of a room: GET /_matrix/client/v1/rooms/{roomId}/threads.

Thin: parse and validate the query, authenticate, call :class:`ThreadsHandler`, render.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_room_id
from mxserver.room_handlers.threads import DEFAULT_LIMIT, INCLUDE, MAX_LIMIT, ThreadsHandler


class ThreadsServlet:
    """threads_list.yaml: a room's thread roots, latest activity first."""

    def __init__(self, auth: Auth, threads: ThreadsHandler) -> None:
        self.auth = auth
        self.threads = threads

    @route("GET", "/_matrix/client/v1/rooms/{room_id}/threads")
    async def get_threads(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        if not is_valid_room_id(room_id):
            raise invalid_param("Invalid room ID")
        include = query_str(request, "include", "all")
        if include not in INCLUDE:
            raise invalid_param("Query parameter 'include' must be one of all, participated")
        return await self.threads.threads(
            requester,
            room_id,
            include=include,
            from_token=query_str(request, "from"),
            limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
        )
