"""The registration-token admin API in Synapse's shapes
(``docs/usage/administration/admin_api/registration_tokens.md``). Server admins only; every change
is audited. The tokens are those ``m.login.registration_token`` accepts (see
:mod:`mxserver.accounts.registration_tokens`; the config file's token is not listed here).
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.registration_tokens import DEFAULT_TOKEN_LENGTH, RegistrationTokens, token_json
from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, get_int, get_str, json_body, query_bool, query_str, route

PATH = "/_synapse/admin/v1/registration_tokens"


def _limits(body: JsonDict) -> dict[str, Any]:
    """``uses_allowed`` and ``expiry_time`` as given (integers or null); absent keys left out."""
    return {key: get_int(body, key, None) for key in ("uses_allowed", "expiry_time") if key in body}


class RegistrationTokensServlet:
    """List, show, create, change and delete registration tokens."""

    def __init__(self, gate: AdminGate, tokens: RegistrationTokens) -> None:
        self.gate = gate
        self.tokens = tokens

    @route("GET", PATH)
    async def list_tokens(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        valid = query_bool(request, "valid") if query_str(request, "valid") is not None else None
        return {"registration_tokens": [token_json(t) for t in await self.tokens.list_tokens(valid)]}

    @route("POST", f"{PATH}/new")
    async def create_token(self, request: IRequest) -> JsonDict:
        requester = await self.gate.require(request)
        body = json_body(request, allow_empty=True)
        limits = _limits(body)
        token = await self.tokens.create(
            get_str(body, "token", None),
            get_int(body, "length", DEFAULT_TOKEN_LENGTH),
            limits.get("uses_allowed"),
            limits.get("expiry_time"),
        )
        self.gate.audit(requester, "create_registration_token", token=token.token, **limits)
        return token_json(token)

    @route("GET", f"{PATH}/{{token}}")
    async def get_token(self, request: IRequest, token: str) -> JsonDict:
        await self.gate.require(request)
        return token_json(await self.tokens.get(token))

    @route("PUT", f"{PATH}/{{token}}")
    async def update_token(self, request: IRequest, token: str) -> JsonDict:
        requester = await self.gate.require(request)
        limits = _limits(json_body(request, allow_empty=True))
        updated = await self.tokens.update(token, limits)
        self.gate.audit(requester, "update_registration_token", token=token, **limits)
        return token_json(updated)

    @route("DELETE", f"{PATH}/{{token}}")
    async def delete_token(self, request: IRequest, token: str) -> JsonDict:
        requester = await self.gate.require(request)
        await self.tokens.delete(token)
        self.gate.audit(requester, "delete_registration_token", token=token)
        return {}
