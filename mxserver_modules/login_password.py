"""``m.login.password``: the first-party password login flow (``mxserver.login`` entry point ``password``).

Accepts the ``m.id.user`` identifier (a localpart or a full user ID) and the
deprecated top-level ``user`` field (client-server-api §Password-based).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from mxserver.errors import MatrixError, bad_json, forbidden
from mxserver.interfaces import ILoginFlow
from mxserver.module_api import ModuleApi


@implementer(ILoginFlow)
class PasswordLogin:
    login_type = "m.login.password"

    def __init__(self, config: dict[str, Any], api: ModuleApi) -> None:
        self._api = api

    def _user(self, submission: dict[str, Any]) -> str:
        identifier = submission.get("identifier")
        if identifier is not None:
            if not isinstance(identifier, dict):
                raise bad_json("'identifier' must be an object")
            if identifier.get("type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers are supported")
            user = identifier.get("user")
        else:
            user = submission.get("user")
        if not isinstance(user, str) or not user:
            raise bad_json("Missing user identifier")
        return self._api.canonical_user_id(user.lower() if not user.startswith("@") else user)

    async def check_login(self, submission: dict[str, Any]) -> str:
        password = submission.get("password")
        if not isinstance(password, str):
            raise bad_json("'password' must be a string")
        user_id = self._user(submission)
        if not await self._api.check_password(user_id, password):
            raise forbidden("Invalid username or password")
        return user_id
