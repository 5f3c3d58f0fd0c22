"""POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync (MSC4186)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.client.sync import MAX_TIMEOUT_MS
from mxserver.api.http import JsonDict, json_body, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.sliding_sync.handler import SlidingSyncHandler
from mxserver.sliding_sync.request import parse_request

_PRESENCE = ("online", "offline", "unavailable")


class SlidingSyncServlet:
    def __init__(self, auth: Auth, handler: SlidingSyncHandler) -> None:
        self.auth = auth
        self.handler = handler

    @route("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync")
    async def sync(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = parse_request(json_body(request, allow_empty=True))
        # Synapse reads pos and timeout from the query string; MSC4186 moved them into the body.
        pos = query_str(request, "pos") or body.pos
        timeout = query_int(request, "timeout", None, minimum=0, maximum=MAX_TIMEOUT_MS)
        if timeout is None:
            timeout = min(body.timeout or 0, MAX_TIMEOUT_MS)
        set_presence = query_str(request, "set_presence") or body.set_presence
        if set_presence is not None and set_presence not in _PRESENCE:
            raise invalid_param("set_presence must be one of online, offline, unavailable")
        return await self.handler.sync(requester, body, pos, timeout, set_presence)
