"""POST /user/{userId}/openid/request_token (client-server-api §OpenID, openid.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.openid import OpenIdTokens
from mxserver.api.http import JsonDict, json_body, route
from mxserver.api.ratelimit import RateLimiter
from mxserver.errors import forbidden
from mxserver.identifier_checks import check_user_id


class OpenIdServlet:
    """OpenID tokens for the requesting user (rate limited like logins: they are credentials)."""

    def __init__(self, auth: Auth, tokens: OpenIdTokens, ratelimit: RateLimiter) -> None:
        self.auth = auth
        self.tokens = tokens
        self.ratelimit = ratelimit

    @route("POST", "/_matrix/client/v3/user/{user_id}/openid/request_token")
    async def request_token(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        json_body(request, allow_empty=True)  # "An empty object. Reserved for future expansion."
        if check_user_id(user_id) != requester.user_id:
            raise forbidden("Cannot request OpenID tokens for other users")
        self.ratelimit.check(f"openid:{requester.user_id}")
        return await self.tokens.request_token(requester.user_id)
