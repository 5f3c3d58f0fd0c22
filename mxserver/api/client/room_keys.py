"""Server-side key backup routes (key_backup.yaml); the logic is in :mod:`mxserver.e2ee.backup`."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, query_str, route
from mxserver.e2ee.backup import KeyBackupHandler

V3 = "/_matrix/client/v3/room_keys"


class RoomKeysServlet:
    """/room_keys/version and /room_keys/keys."""

    def __init__(self, auth: Auth, key_backup: KeyBackupHandler) -> None:
        self.auth = auth
        self.key_backup = key_backup

    # -- versions ----------------------------------------------------------------------

    @route("POST", f"{V3}/version")
    async def create_version(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.create_version(requester.user_id, json_body(request))

    @route("GET", f"{V3}/version")
    async def current_version(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.get_version(requester.user_id, None)

    @route("GET", f"{V3}/version/{{version}}")
    async def get_version(self, request: IRequest, version: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.get_version(requester.user_id, version)

    @route("PUT", f"{V3}/version/{{version}}")
    async def update_version(self, request: IRequest, version: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.update_version(requester.user_id, version, json_body(request))

    @route("DELETE", f"{V3}/version/{{version}}")
    async def delete_version(self, request: IRequest, version: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.delete_version(requester.user_id, version)

    # -- keys -------------------------------------------------------------------------------

    @route("PUT", f"{V3}/keys", f"{V3}/keys/{{room_id}}", f"{V3}/keys/{{room_id}}/{{session_id}}")
    async def put_keys(self, request: IRequest, room_id: str | None = None, session_id: str | None = None) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, max_size=16 * 1024 * 1024)
        return await self.key_backup.put_keys(
            requester.user_id, query_str(request, "version"), body, room_id, session_id
        )

    @route("GET", f"{V3}/keys", f"{V3}/keys/{{room_id}}", f"{V3}/keys/{{room_id}}/{{session_id}}")
    async def get_keys(self, request: IRequest, room_id: str | None = None, session_id: str | None = None) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.get_keys(requester.user_id, query_str(request, "version"), room_id, session_id)

    @route("DELETE", f"{V3}/keys", f"{V3}/keys/{{room_id}}", f"{V3}/keys/{{room_id}}/{{session_id}}")
    async def delete_keys(
        self, request: IRequest, room_id: str | None = None, session_id: str | None = None
    ) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.key_backup.delete_keys(
            requester.user_id, query_str(request, "version"), room_id, session_id
        )
