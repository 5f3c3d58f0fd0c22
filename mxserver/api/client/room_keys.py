"""Server-side key backup (key_backup.yaml): not implemented yet, so there is never a backup.

Clients probe ``GET /room_keys/version`` at start-up; "no backup" is a 404
M_NOT_FOUND, which they handle by offering to set one up.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import route
from mxserver.errors import not_found


class RoomKeysServlet:
    def __init__(self, hs: Any) -> None:
        self.auth = hs.auth

    @route("GET", "/_matrix/client/v3/room_keys/version")
    async def current_version(self, request: IRequest) -> Any:
        await self.auth.get_user(request)
        raise not_found("No backup found")

    @route("GET", "/_matrix/client/v3/room_keys/version/{version}")
    async def get_version(self, request: IRequest, version: str) -> Any:
        await self.auth.get_user(request)
        raise not_found("Unknown backup version")
