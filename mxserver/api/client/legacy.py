"""The deprecated v1 sync routes (old_sync.yaml, room_initial_sync.yaml): GET /events,
GET /events/{eventId}, GET /initialSync, GET /rooms/{roomId}/initialSync.

Thin: parse, authenticate, call :class:`~mxserver.sync.legacy.LegacySyncHandler`.
Served under v3 and r0, as Synapse serves them.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_event_id, is_valid_room_id
from mxserver.sync.legacy import DEFAULT_LIMIT, LegacySyncHandler
from mxserver.sync.tokens import StreamToken

#: a long-poll never waits longer than this, whatever the client asks
MAX_TIMEOUT_MS = 5 * 60 * 1000
#: how long GET /events waits when the client does not say (Synapse's default)
DEFAULT_TIMEOUT_MS = 30 * 1000
#: the most events or messages per room one answer carries
MAX_LIMIT = 1000


def _paths(suffix: str) -> list[str]:
    return [f"/_matrix/client/v3{suffix}", f"/_matrix/client/r0{suffix}"]


def _limit(request: IRequest) -> int:
    return query_int(request, "limit", DEFAULT_LIMIT, minimum=0, maximum=MAX_LIMIT)


class LegacySyncServlet:
    def __init__(self, auth: Auth, handler: LegacySyncHandler) -> None:
        self.auth = auth
        self.handler = handler

    @route("GET", *_paths("/events"))
    async def events(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        raw_from = query_str(request, "from")
        from_token = StreamToken.parse(raw_from) if raw_from else None
        timeout = query_int(request, "timeout", DEFAULT_TIMEOUT_MS, minimum=0, maximum=MAX_TIMEOUT_MS)
        room_id = query_str(request, "room_id")
        if room_id is not None and not is_valid_room_id(room_id):
            raise invalid_param("Invalid room ID")
        return await self.handler.get_stream(requester, from_token, timeout, _limit(request), room_id)

    @route("GET", *_paths("/events/{event_id}"))
    async def event(self, request: IRequest, event_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        if not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        return await self.handler.get_event(requester, event_id)

    @route("GET", *_paths("/initialSync"))
    async def initial_sync(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.handler.initial_sync(requester, _limit(request), query_bool(request, "archived", False))

    @route("GET", *_paths("/rooms/{room_id}/initialSync"))
    async def room_initial_sync(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        if not is_valid_room_id(room_id):
            raise invalid_param("Invalid room ID")
        return await self.handler.room_initial_sync(requester, room_id, _limit(request))
