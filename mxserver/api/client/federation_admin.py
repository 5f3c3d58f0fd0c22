"""``GET /_mxserver/admin/v1/federation/destinations``: the outbound federation queues, for server admins.

One entry per destination the sender knows (since start-up, or stored with a
backoff or catch-up position): queued PDUs and EDUs, the transaction in
flight, backoff (``retry_interval_ms``, ``next_retry_ts``), and the last success.
Times are milliseconds since the epoch; ``null`` when not applicable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, route
from mxserver.errors import forbidden
from mxserver.room_handlers.permissions import is_server_admin

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth
    from mxserver.federation.sender import FederationSender
    from mxserver.storage.accounts import AccountStore


class FederationAdminServlet:
    def __init__(
        self,
        auth: Auth,
        accounts: AccountStore,
        sender: FederationSender,
        appservices: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        """``appservices``: each application service's delivery state (the other destination
        kind with a queue), listed beside the federation destinations."""
        self.auth = auth
        self.accounts = accounts
        self.sender = sender
        self.appservices = appservices

    @route("GET", "/_mxserver/admin/v1/federation/destinations")
    async def destinations(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        if not await is_server_admin(self.accounts, requester.user_id):
            raise forbidden("You are not a server admin")
        destinations = self.sender.destinations_status()
        return {"destinations": destinations, "total": len(destinations), "appservices": self.appservices()}
