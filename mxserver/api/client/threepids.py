"""Third-party identifier routes (administrative_contact.yaml, the requestToken endpoints of
registration.yaml and password_management.yaml, and the link validation e-mails carry)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.registration import RegistrationHandler
from mxserver.accounts.threepids import Purpose, ThreepidHandler, ThreepidValidator, medium_not_supported
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, Response, get_dict, get_int, get_str, json_body, route
from mxserver.errors import missing_param
from mxserver.request_info import client_ip, query_str

C = "/_matrix/client/v3"
U = "/_matrix/client/unstable"

#: longest client_secret / sid / token accepted in a body (the grammar allows 255)
MAX_ID = 255


def _unbind_params(body: JsonDict) -> tuple[str, str, str | None]:
    return (
        get_str(body, "medium", max_length=16),
        get_str(body, "address", max_length=512),
        get_str(body, "id_server", None, max_length=MAX_ID),
    )


def _token_params(request: IRequest) -> tuple[str, str, int, str | None]:
    """A requestToken body: client_secret, email, send_attempt, next_link."""
    body = json_body(request)
    # id_server / id_access_token: type-checked only; the homeserver sends the e-mail itself.
    get_str(body, "id_server", None)
    get_str(body, "id_access_token", None)
    return (
        get_str(body, "client_secret", max_length=MAX_ID),
        get_str(body, "email", max_length=512),
        get_int(body, "send_attempt"),
        get_str(body, "next_link", None, max_length=2048),
    )


class ThreepidServlet:
    """The user's 3PIDs, identity-server bindings and the homeserver's validation sessions."""

    def __init__(
        self, auth: Auth, threepids: ThreepidHandler, validator: ThreepidValidator, registration: RegistrationHandler
    ) -> None:
        self.registration = registration
        self.auth = auth
        self.threepids = threepids
        self.validator = validator

    # -- the account's 3PIDs ---------------------------------------------------------------

    @route("GET", f"{C}/account/3pid")
    async def list_threepids(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"threepids": await self.threepids.list_threepids(requester.user_id)}

    @route("POST", f"{C}/account/3pid")
    async def add_threepid_legacy(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        creds = get_dict(body, "three_pid_creds", None)
        if creds is None:
            creds = get_dict(body, "threePidCreds", None)  # r0's spelling, which old clients send
        if creds is None:
            raise missing_param("Missing 'three_pid_creds'")
        await self.threepids.add_legacy(requester, creds)
        return {}

    @route("POST", f"{C}/account/3pid/add", f"{U}/account/3pid/add")
    async def add_threepid(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.threepids.add(
            requester,
            get_str(body, "sid", max_length=MAX_ID),
            get_str(body, "client_secret", max_length=MAX_ID),
            uia_request(request, body),
        )
        return {}

    @route("POST", f"{C}/account/3pid/bind", f"{U}/account/3pid/bind")
    async def bind(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.threepids.bind(
            requester,
            get_str(body, "id_server", max_length=MAX_ID),
            get_str(body, "id_access_token", max_length=4096),
            get_str(body, "sid", max_length=MAX_ID),
            get_str(body, "client_secret", max_length=MAX_ID),
        )
        return {}

    @route("POST", f"{C}/account/3pid/unbind", f"{U}/account/3pid/unbind")
    async def unbind(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        medium, address, id_server = _unbind_params(json_body(request))
        unbound = await self.threepids.unbind(requester.user_id, medium, address, id_server)
        return {"id_server_unbind_result": "success" if unbound else "no-support"}

    @route("POST", f"{C}/account/3pid/delete", f"{U}/account/3pid/delete")
    async def delete(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        medium, address, id_server = _unbind_params(json_body(request))
        unbound = await self.threepids.delete(requester.user_id, medium, address, id_server)
        return {"id_server_unbind_result": "success" if unbound else "no-support"}

    # -- requestToken ------------------------------------------------------------------------

    async def _request_email_token(self, request: IRequest, purpose: Purpose) -> JsonDict:
        client_secret, address, send_attempt, next_link = _token_params(request)
        return await self.validator.request_email_token(
            purpose, client_secret, address, send_attempt, next_link, client_ip(request)
        )

    @route("POST", f"{C}/register/email/requestToken")
    async def register_email_token(self, request: IRequest) -> JsonDict:
        client_secret, address, send_attempt, next_link = _token_params(request)
        return await self.registration.request_email_token(
            client_secret, address, send_attempt, next_link, client_ip(request)
        )

    @route("POST", f"{C}/account/3pid/email/requestToken")
    async def add_email_token(self, request: IRequest) -> JsonDict:
        return await self._request_email_token(request, "add_threepid")

    @route("POST", f"{C}/account/password/email/requestToken")
    async def reset_email_token(self, request: IRequest) -> JsonDict:
        return await self._request_email_token(request, "password_reset")

    @route(
        "POST",
        f"{C}/register/msisdn/requestToken",
        f"{C}/account/3pid/msisdn/requestToken",
        f"{C}/account/password/msisdn/requestToken",
    )
    async def msisdn_token(self, request: IRequest) -> JsonDict:
        # No SMS provider: phone numbers cannot be validated here.
        json_body(request)
        raise medium_not_supported("msisdn")

    # -- the validation link -----------------------------------------------------------------

    _SUBMIT = (
        f"{U}/registration/email/submit_token",
        f"{U}/add_threepid/email/submit_token",
        f"{U}/password_reset/email/submit_token",
    )

    @route("GET", *_SUBMIT)
    async def submit_token_link(self, request: IRequest) -> Any:
        """The link of the e-mail, opened in a browser: plain text, or a redirect to next_link."""
        args = [query_str(request, name) for name in ("sid", "client_secret", "token")]
        if any(a is None for a in args):
            raise missing_param("The link needs 'sid', 'client_secret' and 'token'")
        next_link = await self.validator.submit_token(*args)
        if next_link is not None:
            return Response(b"", "text/plain", 302, {"Location": next_link})
        text = "Your e-mail address has been validated. Return to your Matrix client to continue.\n"
        return Response(text.encode(), "text/plain; charset=utf-8")

    @route("POST", *_SUBMIT)
    async def submit_token(self, request: IRequest) -> JsonDict:
        """The ``submit_url`` of a requestToken answer (identity-service-api submitToken's shape)."""
        body = json_body(request)
        await self.validator.submit_token(
            get_str(body, "sid", max_length=MAX_ID),
            get_str(body, "client_secret", max_length=MAX_ID),
            get_str(body, "token", max_length=MAX_ID),
        )
        return {"success": True}
