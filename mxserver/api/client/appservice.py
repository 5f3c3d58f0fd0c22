"""Application service routes: the ping (appservice_ping.yaml) and the admin routes.

- ``POST /_matrix/client/v1/appservice/{appserviceId}/ping``: only with that service's as_token.
- ``POST /_mxserver/admin/v1/appservices/reload`` (server admins): read every
  ``app_service_config_files`` entry again; a bad file is refused (400, one line per bad file)
  and the registrations in force stay. SIGHUP does the same under twistd.
- ``GET /_mxserver/admin/v1/appservices`` (server admins): each service's queue and backoff.

The application services' directory routes live with the directory's (``directory.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, get_str, json_body, route
from mxserver.appservice.registration import RegistrationError, ReloadResult
from mxserver.errors import MatrixError, forbidden
from mxserver.room_handlers.permissions import is_server_admin

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth
    from mxserver.appservice.queries import AppServiceQueries
    from mxserver.storage.accounts import AccountStore


class AppServiceServlet:
    def __init__(
        self,
        auth: Auth,
        accounts: AccountStore,
        queries: AppServiceQueries,
        reload: Callable[[], Awaitable[ReloadResult]],
        status: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.auth = auth
        self.accounts = accounts
        self.queries = queries
        self.reload = reload
        self.status = status

    @route("POST", "/_matrix/client/v1/appservice/{appservice_id}/ping")
    async def ping(self, request: IRequest, appservice_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        txn_id = get_str(body, "transaction_id", None)
        return await self.queries.ping(requester.app_service, appservice_id, txn_id)

    async def _admin(self, request: IRequest) -> None:
        requester = await self.auth.get_user(request)
        if requester.app_service is not None or not await is_server_admin(self.accounts, requester.user_id):
            raise forbidden("You are not a server admin")

    @route("POST", "/_mxserver/admin/v1/appservices/reload")
    async def reload_registrations(self, request: IRequest) -> JsonDict:
        await self._admin(request)
        try:
            result = await self.reload()
        except RegistrationError as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        return result.to_json()

    @route("GET", "/_mxserver/admin/v1/appservices")
    async def list_appservices(self, request: IRequest) -> JsonDict:
        await self._admin(request)
        return {"appservices": self.status()}
