"""Account data and room tag routes (account-data.yaml, tags.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.sync.account_data import AccountDataHandler, check_own_data, check_room_id


def _paths(*suffixes: str) -> list[str]:
    return [prefix + suffix for suffix in suffixes for prefix in ("/_matrix/client/v3", "/_matrix/client/r0")]


class AccountDataServlet:
    def __init__(self, auth: Auth, account_data: AccountDataHandler) -> None:
        self.auth = auth
        self.account_data = account_data

    async def _own(self, request: IRequest, user_id: str, room_id: str | None = None) -> None:
        requester = await self.auth.get_user(request)
        check_own_data(requester.user_id, user_id)
        if room_id is not None:
            check_room_id(room_id)

    # -- account data ------------------------------------------------------------------

    @route("GET", *_paths("/user/{user_id}/account_data/{data_type}"))
    async def get_global(self, request: IRequest, user_id: str, data_type: str) -> JsonDict:
        await self._own(request, user_id)
        return await self.account_data.get_account_data(user_id, None, data_type)

    @route("PUT", *_paths("/user/{user_id}/account_data/{data_type}"))
    async def put_global(self, request: IRequest, user_id: str, data_type: str) -> JsonDict:
        await self._own(request, user_id)
        await self.account_data.set_account_data(user_id, None, data_type, json_body(request))
        return {}

    @route("GET", *_paths("/user/{user_id}/rooms/{room_id}/account_data/{data_type}"))
    async def get_room(self, request: IRequest, user_id: str, room_id: str, data_type: str) -> JsonDict:
        await self._own(request, user_id, room_id)
        return await self.account_data.get_account_data(user_id, room_id, data_type)

    @route("PUT", *_paths("/user/{user_id}/rooms/{room_id}/account_data/{data_type}"))
    async def put_room(self, request: IRequest, user_id: str, room_id: str, data_type: str) -> JsonDict:
        await self._own(request, user_id, room_id)
        await self.account_data.set_account_data(user_id, room_id, data_type, json_body(request))
        return {}

    # -- tags --------------------------------------------------------------------------

    @route("GET", *_paths("/user/{user_id}/rooms/{room_id}/tags"))
    async def get_tags(self, request: IRequest, user_id: str, room_id: str) -> JsonDict:
        await self._own(request, user_id, room_id)
        return {"tags": await self.account_data.get_tags(user_id, room_id)}

    @route("PUT", *_paths("/user/{user_id}/rooms/{room_id}/tags/{tag}"))
    async def put_tag(self, request: IRequest, user_id: str, room_id: str, tag: str) -> JsonDict:
        await self._own(request, user_id, room_id)
        await self.account_data.add_tag(user_id, room_id, tag, json_body(request))
        return {}

    @route("DELETE", *_paths("/user/{user_id}/rooms/{room_id}/tags/{tag}"))
    async def delete_tag(self, request: IRequest, user_id: str, room_id: str, tag: str) -> JsonDict:
        await self._own(request, user_id, room_id)
        await self.account_data.remove_tag(user_id, room_id, tag)
        return {}
