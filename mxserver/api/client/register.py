"""Account registration routes (registration.yaml, registration_tokens.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.registration import RegistrationHandler, RegistrationParams
from mxserver.api.client.devices import device_id_param, display_name_param
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, client_ip, get_bool, get_str, json_body, query_str, route
from mxserver.errors import invalid_param, missing_param

#: application-service-api §Server admin style permissions
APPSERVICE_LOGIN_TYPE = "m.login.application_service"


def _is_appservice_registration(body: JsonDict) -> bool:
    """The spec puts the type at the top level; some services send it as ``auth.type``."""
    auth = body.get("auth")
    return body.get("type") == APPSERVICE_LOGIN_TYPE or (
        isinstance(auth, dict) and auth.get("type") == APPSERVICE_LOGIN_TYPE
    )


class RegisterServlet:
    """``/register``, username availability and registration-token validity."""

    def __init__(self, auth: Auth, registration: RegistrationHandler) -> None:
        self.auth = auth
        self.registration = registration

    @route("POST", "/_matrix/client/v3/register")
    async def register(self, request: IRequest) -> JsonDict:
        kind = query_str(request, "kind", "user")
        if kind not in ("user", "guest"):
            raise invalid_param("'kind' must be 'user' or 'guest'")
        ip = client_ip(request)
        if kind == "guest":
            # registration.yaml: for guests every parameter but initial_device_display_name is ignored.
            body = json_body(request, allow_empty=True)
            return await self.registration.register_guest(display_name_param(body, "initial_device_display_name"), ip)
        body = json_body(request)
        refresh = get_bool(body, "refresh_token", False)
        if _is_appservice_registration(body):
            # 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN without a valid as_token (the spec's words)
            service = self.auth.appservice(request)
            # Synapse reads the older `user` key first (application services wrote it once).
            username = get_str(body, "user", None) or get_str(body, "username", None)
            if username is None:
                raise missing_param("Missing 'username'")
            return await self.registration.register_appservice_user(
                service,
                username,
                device_id_param(body),
                display_name_param(body, "initial_device_display_name"),
                get_bool(body, "inhibit_login", False),
            )
        params: RegistrationParams | None = None
        if set(body) - {"auth"}:
            # A body of only `auth` continues a session with the parameters it remembers.
            params = RegistrationParams(
                username=get_str(body, "username", None),
                password=get_str(body, "password", None),
                device_id=device_id_param(body),
                device_display_name=display_name_param(body, "initial_device_display_name"),
                inhibit_login=get_bool(body, "inhibit_login", False),
                guest_access_token=get_str(body, "guest_access_token", None),
                refresh_token=refresh,
            )
        uia = uia_request(request, body, params)
        return await self.registration.register(params, uia, ip)

    @route("GET", "/_matrix/client/v3/register/available")
    async def available(self, request: IRequest) -> JsonDict:
        username = query_str(request, "username")
        if username is None:
            raise missing_param("Missing query parameter 'username'")
        await self.registration.check_available(username)
        return {"available": True}

    @route("GET", "/_matrix/client/v1/register/m.login.registration_token/validity")
    async def token_validity(self, request: IRequest) -> JsonDict:
        token = query_str(request, "token")
        if token is None:
            raise missing_param("Missing query parameter 'token'")
        return {"valid": await self.registration.token_valid(token, client_ip(request))}
