"""The Synapse-compatible user admin API (``/_synapse/admin``): server version, users, devices,
sessions, login as a user. Admins only: 401 without a token, 403 for anyone else."""

from __future__ import annotations

from typing import Any

import mxserver
from tests.harness import HomeserverTestCase, TestUser

ADMIN = "/_synapse/admin"


class AdminTestCase(HomeserverTestCase):
    """A server with an admin (``self.admin``) and a plain user (``self.alice``)."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")

    async def assert_admin_only(self, method: str, path: str, body: Any = None) -> None:
        """401 without a token, 403 for a user who is not a server admin."""
        self.assertMatrixError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.request(method, path, body, token=self.alice), 403, "M_FORBIDDEN")

    async def login_token(self, user: TestUser, password: str = "correct horse") -> tuple[int, Any]:
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
                 "password": password}
        return await self.post("/_matrix/client/v3/login", login)


class ServerVersionTests(AdminTestCase):
    async def test_server_version(self) -> None:
        code, body = await self.get(f"{ADMIN}/v1/server_version", self.admin)
        self.assertEqual((code, body), (200, {"server_version": f"mxserver {mxserver.__version__}"}))

    async def test_admins_only(self) -> None:
        await self.assert_admin_only("GET", f"{ADMIN}/v1/server_version")
