"""Account routes: whoami, password, deactivation, 3PIDs (whoami.yaml, password_management.yaml,
account_deactivation.yaml, administrative_contact.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.account import AccountHandler
from mxserver.accounts.auth import Auth
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, get_bool, get_str, json_body, route
from mxserver.identifier_checks import check_user_id
from mxserver.request_info import access_token


class AccountServlet:
    """whoami, password change and reset, deactivation (3PIDs: ``threepids.ThreepidServlet``)."""

    def __init__(self, auth: Auth, account: AccountHandler) -> None:
        self.auth = auth
        self.account = account

    @route("GET", "/_matrix/client/v3/account/whoami")
    async def whoami(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body: JsonDict = {"user_id": requester.user_id, "is_guest": requester.is_guest}
        if requester.device_id is not None:
            body["device_id"] = requester.device_id
        return body

    @route("POST", "/_matrix/client/v3/account/password")
    async def change_password(self, request: IRequest) -> JsonDict:
        # password_management.yaml: without an access token this is a reset by e-mail
        # (UIA m.login.email.identity), when e-mail is configured.
        if access_token(request) is None and self.account.reset_by_email:
            body = json_body(request)
            await self.account.reset_password(
                get_str(body, "new_password"), get_bool(body, "logout_devices", True), uia_request(request, body)
            )
            return {}
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.account.change_password(
            requester,
            get_str(body, "new_password"),
            get_bool(body, "logout_devices", True),
            uia_request(request, body),
        )
        return {}

    @route("POST", "/_matrix/client/v3/account/deactivate")
    async def deactivate(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        id_server = get_str(body, "id_server", None, max_length=255)
        erase = get_bool(body, "erase", False)
        return await self.account.deactivate(requester, uia_request(request, body), erase, id_server)

    @route("GET", "/_matrix/client/v3/admin/whois/{user_id}", "/_matrix/client/r0/admin/whois/{user_id}")
    async def whois(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.account.whois(requester, check_user_id(user_id))
