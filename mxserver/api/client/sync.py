"""GET /_matrix/client/v3/sync."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.sync.filtering import FilterHandler, load_filter
from mxserver.sync.handler import SyncHandler
from mxserver.sync.tokens import StreamToken

#: a long-poll never waits longer than this, whatever the client asks
MAX_TIMEOUT_MS = 5 * 60 * 1000

_PRESENCE = ("online", "offline", "unavailable")


class SyncServlet:
    def __init__(self, auth: Auth, sync_handler: SyncHandler, filters: FilterHandler) -> None:
        self.auth = auth
        self.sync_handler = sync_handler
        self.filters = filters

    @route("GET", "/_matrix/client/v3/sync", "/_matrix/client/r0/sync")
    async def sync(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        since_raw = query_str(request, "since")
        since = StreamToken.parse(since_raw) if since_raw else None
        timeout = query_int(request, "timeout", 0, minimum=0, maximum=MAX_TIMEOUT_MS)
        full_state = query_bool(request, "full_state", False)
        set_presence = query_str(request, "set_presence")
        if set_presence is not None and set_presence not in _PRESENCE:
            raise invalid_param("set_presence must be one of online, offline, unavailable")
        # sync.yaml (v1.16, MSC4222): state_after instead of state
        use_state_after = query_bool(request, "use_state_after", False)
        sync_filter = await load_filter(self.filters, requester.user_id, query_str(request, "filter"))
        return await self.sync_handler.sync(
            requester, since, timeout, full_state, sync_filter, set_presence, use_state_after
        )
