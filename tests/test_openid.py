"""OpenID tokens: issued to the user over the client API (openid.yaml), exchanged by a third
party at GET /_matrix/federation/v1/openid/userinfo (server-server openid.yaml)."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q

USERINFO = "/_matrix/federation/v1/openid/userinfo"


class OpenIdTests(HomeserverTestCase):
    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def request_token(self, user: TestUser, body: Any = None) -> tuple[int, Any]:
        return await self.post(f"{C}/user/{q(user.user_id)}/openid/request_token", {} if body is None else body, user)

    async def userinfo(self, token: str | None) -> tuple[int, Any]:
        return await self.get(USERINFO + (f"?access_token={q(token)}" if token is not None else ""))

    async def test_token_is_exchanged_for_the_user_id(self) -> None:
        code, body = await self.request_token(self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["matrix_server_name"], self.hs.server_name)
        self.assertEqual(body["expires_in"], 3600)
        self.assertEqual(await self.userinfo(body["access_token"]), (200, {"sub": self.alice.user_id}))
        # Each request is a new token; both work, each for its own user.
        code, other = await self.request_token(self.bob)
        self.assertEqual(code, 200, other)
        self.assertNotEqual(other["access_token"], body["access_token"])
        self.assertEqual(await self.userinfo(other["access_token"]), (200, {"sub": self.bob.user_id}))

    async def test_it_is_not_an_access_token(self) -> None:
        code, body = await self.request_token(self.alice)
        self.assertEqual(code, 200, body)
        result = await self.get(f"{C}/account/whoami", token=body["access_token"])
        self.assertMatrixError(result, 401, "M_UNKNOWN_TOKEN")

    async def test_it_expires_after_an_hour_and_survives_a_restart(self) -> None:
        code, body = await self.request_token(self.alice)
        self.assertEqual(code, 200, body)
        self.clock.advance(3599)
        await self.restart()
        self.assertEqual((await self.userinfo(body["access_token"]))[0], 200)
        self.clock.advance(2)
        self.assertMatrixError(await self.userinfo(body["access_token"]), 401, "M_UNKNOWN_TOKEN")

    async def test_bad_requests(self) -> None:
        self.assertMatrixError(await self.userinfo("an/invalid/token"), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.userinfo(None), 401, "M_MISSING_TOKEN")
        # Only for oneself, only with an access token, and the body must be an object.
        code, body = await self.post(f"{C}/user/{q(self.bob.user_id)}/openid/request_token", {}, self.alice)
        self.assertMatrixError((code, body), 403, "M_FORBIDDEN")
        result = await self.post(f"{C}/user/{q(self.alice.user_id)}/openid/request_token", {})
        self.assertMatrixError(result, 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.request_token(self.alice, [1]), 400, "M_BAD_JSON")
        code, body = await self.post(f"{C}/user/not-a-user-id/openid/request_token", {}, self.alice)
        self.assertEqual(code, 400, body)
