"""Third-party lookups (third_party_lookup.yaml), answered by the application services that
declare each protocol (application-service-api §Third-party networks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, route
from mxserver.errors import invalid_param, missing_param

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth
    from mxserver.appservice.queries import AppServiceQueries


def _fields(request: IRequest) -> list[tuple[str, str]]:
    """The query's search fields, passed on to the services (never the access token)."""
    out: list[tuple[str, str]] = []
    for key, values in (request.args or {}).items():
        try:
            name = key.decode("utf-8")
            if name == "access_token":
                continue
            out.extend((name, v.decode("utf-8")) for v in values)
        except UnicodeDecodeError:
            raise invalid_param("Query parameters must be UTF-8") from None
    return out


class ThirdPartyServlet:
    def __init__(self, auth: Auth, queries: AppServiceQueries) -> None:
        self.auth = auth
        self.queries = queries

    @route("GET", "/_matrix/client/v3/thirdparty/protocols")
    async def protocols(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request, allow_guest=True)
        return await self.queries.protocols()

    @route("GET", "/_matrix/client/v3/thirdparty/protocol/{protocol}")
    async def protocol(self, request: IRequest, protocol: str) -> JsonDict:
        await self.auth.get_user(request, allow_guest=True)
        return await self.queries.protocol(protocol)

    @route("GET", "/_matrix/client/v3/thirdparty/location/{protocol}")
    async def location(self, request: IRequest, protocol: str) -> tuple[int, list[Any]]:
        await self.auth.get_user(request, allow_guest=True)
        return 200, await self.queries.lookup("location", protocol, _fields(request))

    @route("GET", "/_matrix/client/v3/thirdparty/user/{protocol}")
    async def user(self, request: IRequest, protocol: str) -> tuple[int, list[Any]]:
        await self.auth.get_user(request, allow_guest=True)
        return 200, await self.queries.lookup("user", protocol, _fields(request))

    @route("GET", "/_matrix/client/v3/thirdparty/location")
    async def location_by_alias(self, request: IRequest) -> tuple[int, list[Any]]:
        await self.auth.get_user(request, allow_guest=True)
        return 200, await self.queries.reverse_lookup("location", self._required(request, "alias"))

    @route("GET", "/_matrix/client/v3/thirdparty/user")
    async def user_by_id(self, request: IRequest) -> tuple[int, list[Any]]:
        await self.auth.get_user(request, allow_guest=True)
        return 200, await self.queries.reverse_lookup("user", self._required(request, "userid"))

    @staticmethod
    def _required(request: IRequest, name: str) -> list[tuple[str, str]]:
        values = [v for k, v in _fields(request) if k == name]
        if not values or not values[0]:
            raise missing_param(f"Missing query parameter '{name}'")
        return [(name, values[0])]
