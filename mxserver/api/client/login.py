"""Login and logout routes (login.yaml, login_token.yaml, logout.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.login import APPSERVICE_LOGIN, LoginHandler
from mxserver.api.client.devices import device_id_param, display_name_param
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, client_ip, get_bool, get_str, json_body, route


class LoginServlet:
    """``/login``, ``/login/get_token``, ``/logout`` and ``/logout/all``."""

    def __init__(self, auth: Auth, login_handler: LoginHandler) -> None:
        self.auth = auth
        self.login_handler = login_handler

    @route("GET", "/_matrix/client/v3/login")
    def login_flows(self, request: IRequest) -> JsonDict:
        return {"flows": self.login_handler.flows()}

    @route("POST", "/_matrix/client/v3/login")
    async def login(self, request: IRequest) -> JsonDict:
        body = json_body(request)
        login_type = get_str(body, "type")
        refresh = get_bool(body, "refresh_token", False)
        if login_type == APPSERVICE_LOGIN:
            return await self.login_handler.login_appservice(
                self.auth.appservice(request),
                body,
                device_id_param(body),
                display_name_param(body, "initial_device_display_name"),
            )
        return await self.login_handler.login(
            body,
            login_type,
            device_id_param(body),
            display_name_param(body, "initial_device_display_name"),
            client_ip(request),
            refresh,
        )

    @route("POST", "/_matrix/client/v1/login/get_token")
    async def get_token(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        return await self.login_handler.get_login_token(requester, uia_request(request, body))

    @route("POST", "/_matrix/client/v3/refresh")
    async def refresh(self, request: IRequest) -> JsonDict:
        """refresh.yaml: authenticated by the refresh token in the body, not an access token."""
        body = json_body(request)
        return await self.login_handler.refresh(get_str(body, "refresh_token"))

    # §Account locking: a locked account may still log out.

    @route("POST", "/_matrix/client/v3/logout")
    async def logout(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True, allow_locked=True)
        await self.login_handler.logout(requester)
        return {}

    @route("POST", "/_matrix/client/v3/logout/all")
    async def logout_all(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True, allow_locked=True)
        await self.login_handler.logout_all(requester)
        return {}
