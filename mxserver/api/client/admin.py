"""Shared-secret registration for admin tooling: ``/_synapse/admin/v1/register``."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.shared_secret import SharedSecretRegistration
from mxserver.api.http import JsonDict, get_bool, get_str, json_body, route
from mxserver.errors import invalid_param


class AdminRegisterServlet:
    """Nonces and HMAC-checked registration for admin tooling."""

    def __init__(self, shared_secret: SharedSecretRegistration) -> None:
        self.shared_secret = shared_secret

    @route("GET", "/_synapse/admin/v1/register")
    def nonce(self, request: IRequest) -> JsonDict:
        return {"nonce": self.shared_secret.new_nonce()}

    @route("POST", "/_synapse/admin/v1/register")
    async def register(self, request: IRequest) -> JsonDict:
        self.shared_secret.check_enabled()
        body = json_body(request)
        if get_str(body, "user_type", None) is not None:
            # The MAC format with a user type is not supported: refuse rather than ignore it.
            raise invalid_param("'user_type' is not supported")
        return await self.shared_secret.register(
            nonce=get_str(body, "nonce"),
            username=get_str(body, "username"),
            password=get_str(body, "password"),
            admin=get_bool(body, "admin", False),
            mac=get_str(body, "mac"),
            displayname=get_str(body, "displayname", None, max_length=256),
        )
