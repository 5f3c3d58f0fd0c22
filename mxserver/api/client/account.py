"""Account routes: whoami, password, deactivation, 3PIDs (whoami.yaml, password_management.yaml,
account_deactivation.yaml, administrative_contact.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.account import AccountHandler
from mxserver.accounts.auth import Auth
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, get_bool, get_str, json_body, route
from mxserver.identifier_checks import check_user_id


class AccountServlet:
    """whoami, password change, deactivation, third-party identifiers (none)."""

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
        # password_management.yaml allows unauthenticated use for e-mail resets; mxserver has no
        # e-mail, so the only way to prove ownership is a session plus the old password.
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
        get_str(body, "id_server", None)  # type-checked only: no 3PIDs are ever bound here
        erase = get_bool(body, "erase", False)
        return await self.account.deactivate(requester, uia_request(request, body), erase)

    @route("GET", "/_matrix/client/v3/account/3pid")
    async def threepids(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request)
        return {"threepids": []}

    @route("GET", "/_matrix/client/v3/admin/whois/{user_id}", "/_matrix/client/r0/admin/whois/{user_id}")
    async def whois(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.account.whois(requester, check_user_id(user_id))
