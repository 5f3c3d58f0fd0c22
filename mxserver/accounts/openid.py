"""OpenID tokens: a user proves who they are to a third party (an integration manager, say).

The client asks for a token (client-server-api §OpenID, ``openid.yaml``) and hands it to the
third party, which exchanges it at this server's ``GET /_matrix/federation/v1/openid/userinfo``
(server-server-api §OpenID) for the user's ID. The token is good for that exchange only, never
as an access token, and for an hour. Tokens are 256-bit random and stored hashed.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import hash_token
from mxserver.errors import MatrixError
from mxserver.storage.openid import OpenIdStore

#: how long a token can be exchanged (openid.yaml's example, and Synapse's default)
TOKEN_LIFETIME_S = 3600


class OpenIdTokens:
    """Issues OpenID tokens and answers their exchange."""

    def __init__(self, server_name: str, store: OpenIdStore, clock: IReactorTime) -> None:
        self.server_name = server_name
        self._store = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def request_token(self, user_id: str) -> dict[str, Any]:
        """A new token for ``user_id`` (definitions/openid_token.yaml)."""
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        await self._store.add(hash_token(token), user_id, now + TOKEN_LIFETIME_S * 1000, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": TOKEN_LIFETIME_S,
        }

    async def userinfo(self, token: str | None) -> dict[str, Any]:
        """``{"sub": user_id}`` for a live token; 401 otherwise (server-server openid.yaml)."""
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing OpenID access token")
        owner = await self._store.owner(hash_token(token), self._now_ms())
        if owner is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
        return {"sub": owner}
