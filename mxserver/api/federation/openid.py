"""GET /_matrix/federation/v1/openid/userinfo (server-server-api §OpenID, openid.yaml).

Not signed with X-Matrix: the caller is a third party holding the user's OpenID token."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.openid import OpenIdTokens
from mxserver.api.http import JsonDict, query_str, route


class OpenIdUserInfoServlet:
    def __init__(self, tokens: OpenIdTokens) -> None:
        self.tokens = tokens

    @route("GET", "/_matrix/federation/v1/openid/userinfo")
    async def userinfo(self, request: IRequest) -> JsonDict:
        return await self.tokens.userinfo(query_str(request, "access_token"))
