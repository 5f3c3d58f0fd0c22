"""Profiles (profile.yaml): ``GET /profile/{userId}``, ``GET``/``PUT /profile/{userId}/{displayname|avatar_url}``.

Only the two fields with columns are served; other keys (m.tz, custom
fields, spec v1.16) answer M_UNRECOGNIZED.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.ephemeral.profiles import ProfileHandler
from mxserver.errors import bad_json, missing_param

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"


def _paths(suffix: str) -> list[str]:
    return [_V3 + suffix, _R0 + suffix]


class ProfileServlet:
    def __init__(self, auth: Auth, profiles: ProfileHandler) -> None:
        self.auth = auth
        self.profiles = profiles

    # profile.yaml: lookups need no access token.

    @route("GET", *_paths("/profile/{user_id}"))
    async def get_profile(self, request: IRequest, user_id: str) -> JsonDict:
        return await self.profiles.get_profile(user_id)

    @route("GET", *_paths("/profile/{user_id}/displayname"))
    async def get_displayname(self, request: IRequest, user_id: str) -> JsonDict:
        return await self.profiles.get_field(user_id, "displayname")

    @route("GET", *_paths("/profile/{user_id}/avatar_url"))
    async def get_avatar_url(self, request: IRequest, user_id: str) -> JsonDict:
        return await self.profiles.get_field(user_id, "avatar_url")

    @route("PUT", *_paths("/profile/{user_id}/displayname"))
    async def set_displayname(self, request: IRequest, user_id: str) -> JsonDict:
        return await self._set(request, user_id, "displayname")

    @route("PUT", *_paths("/profile/{user_id}/avatar_url"))
    async def set_avatar_url(self, request: IRequest, user_id: str) -> JsonDict:
        return await self._set(request, user_id, "avatar_url")

    async def _set(self, request: IRequest, user_id: str, field: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        if field not in body:
            raise missing_param(f"Missing '{field}'")
        value = body[field]
        if value is not None and not isinstance(value, str):
            raise bad_json(f"'{field}' must be a string")
        await self.profiles.set_field(requester, user_id, field, value)
        return {}
