"""Profiles (profile.yaml): ``GET /profile/{userId}`` and ``GET``/``PUT``/``DELETE
/profile/{userId}/{keyName}`` for any key (v1.16: ``displayname``, ``avatar_url``, ``m.tz`` and
custom keys; the rules are in :mod:`mxserver.ephemeral.profiles`).

The body of a PUT holds the key named in the path. For ``displayname`` and ``avatar_url`` other
keys are ignored, as they always were here; for the others the body must hold exactly that key
(profile.yaml: "exactly one property").
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.ephemeral.profiles import ProfileHandler, check_profile_key
from mxserver.errors import bad_json, missing_param
from mxserver.storage.profiles import FIELDS

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

    @route("GET", *_paths("/profile/{user_id}/{key_name}"))
    async def get_field(self, request: IRequest, user_id: str, key_name: str) -> JsonDict:
        return await self.profiles.get_field(user_id, key_name)

    @route("PUT", *_paths("/profile/{user_id}/{key_name}"))
    async def set_field(self, request: IRequest, user_id: str, key_name: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        check_profile_key(key_name)
        body = json_body(request)
        if key_name not in body:
            raise missing_param(f"Missing '{key_name}'")
        if key_name not in FIELDS and len(body) != 1:
            raise bad_json(f"The body must hold only '{key_name}'")
        await self.profiles.set_field(requester, user_id, key_name, body[key_name])
        return {}

    @route("DELETE", *_paths("/profile/{user_id}/{key_name}"))
    async def delete_field(self, request: IRequest, user_id: str, key_name: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        check_profile_key(key_name)
        await self.profiles.delete_field(requester, user_id, key_name)
        return {}
