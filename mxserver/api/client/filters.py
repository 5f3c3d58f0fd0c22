"""Filter routes (filter.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.sync.account_data import check_own_data
from mxserver.sync.filtering import FilterHandler


def _paths(*suffixes: str) -> list[str]:
    return [prefix + suffix for suffix in suffixes for prefix in ("/_matrix/client/v3", "/_matrix/client/r0")]


class FilterServlet:
    def __init__(self, auth: Auth, filters: FilterHandler) -> None:
        self.auth = auth
        self.filters = filters

    @route("POST", *_paths("/user/{user_id}/filter"))
    async def create_filter(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_own_data(requester.user_id, user_id)
        return {"filter_id": await self.filters.create_filter(user_id, json_body(request))}

    @route("GET", *_paths("/user/{user_id}/filter/{filter_id}"))
    async def get_filter(self, request: IRequest, user_id: str, filter_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_own_data(requester.user_id, user_id)
        return await self.filters.get_filter_json(user_id, filter_id)
