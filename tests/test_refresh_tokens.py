"""Refresh tokens (client-server-api §Refreshing access tokens, refresh.yaml): ``refresh_token:
true`` on /login and /register, expiring access tokens answered with soft logout, rotation by
POST /refresh, revocation by logout and by a new login on the device."""

from __future__ import annotations

from typing import Any

from mxserver.accounts.auth import hash_token
from tests.harness import C, HomeserverTestCase

REFRESH = f"{C}/refresh"
WHOAMI = f"{C}/account/whoami"
LIFETIME_MS = 60_000


def password_login(user: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": "correct horse",
        **extra,
    }


class RefreshTokenTests(HomeserverTestCase):
    use_fake_clock = True
    config_overrides = {"sessions": {"refreshable_access_token_lifetime_ms": "60s"}}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")

    async def login(self, **extra: Any) -> dict[str, Any]:
        code, body = await self.post(f"{C}/login", password_login("alice", **extra))
        self.assertEqual(code, 200, body)
        return body

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        code, body = await self.post(REFRESH, {"refresh_token": refresh_token})
        self.assertEqual(code, 200, body)
        return body

    def advance_ms(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    async def assert_works(self, token: str) -> None:
        code, body = await self.get(WHOAMI, token)
        self.assertEqual((code, body.get("user_id")), (200, "@alice:test"), body)

    async def assert_soft_logged_out(self, token: str) -> None:
        code, body = await self.get(WHOAMI, token)
        self.assertEqual((code, body.get("errcode"), body.get("soft_logout")), (401, "M_UNKNOWN_TOKEN", True), body)

    async def assert_refresh_refused(self, refresh_token: str, soft_logout: bool = False) -> None:
        code, body = await self.post(REFRESH, {"refresh_token": refresh_token})
        self.assertEqual((code, body.get("errcode")), (401, "M_UNKNOWN_TOKEN"), body)
        self.assertIs(body.get("soft_logout", False), soft_logout)

    async def test_clients_that_do_not_ask_get_tokens_that_do_not_expire(self) -> None:
        for extra in ({}, {"refresh_token": False}):
            body = await self.login(**extra)
            self.assertNotIn("refresh_token", body)
            self.assertNotIn("expires_in_ms", body)
            self.advance_ms(10 * LIFETIME_MS)
            await self.assert_works(body["access_token"])

    async def test_login_refresh_and_expiry(self) -> None:
        first = await self.login(refresh_token=True)
        self.assertEqual(first["expires_in_ms"], LIFETIME_MS)
        self.assertTrue(first["refresh_token"].startswith("mxr_"))
        await self.assert_works(first["access_token"])
        self.advance_ms(LIFETIME_MS)
        await self.assert_soft_logged_out(first["access_token"])

        second = await self.refresh(first["refresh_token"])
        self.assertEqual(set(second), {"access_token", "refresh_token", "expires_in_ms"})
        self.assertEqual(second["expires_in_ms"], LIFETIME_MS)
        self.assertNotEqual(second["refresh_token"], first["refresh_token"])
        code, me = await self.get(WHOAMI, second["access_token"])
        self.assertEqual(me["device_id"], first["device_id"])  # bound to the same device
        # once the new access token is used, the old refresh token is revoked
        await self.assert_refresh_refused(first["refresh_token"])
        self.advance_ms(LIFETIME_MS - 1)
        await self.assert_works(second["access_token"])

    async def test_old_access_token_stops_at_refresh(self) -> None:
        first = await self.login(refresh_token=True)
        await self.assert_works(first["access_token"])  # cached
        await self.refresh(first["refresh_token"])
        code, body = await self.get(WHOAMI, first["access_token"])
        self.assertEqual((code, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))

    async def test_old_refresh_token_is_usable_until_the_new_tokens_are_used(self) -> None:
        first = await self.login(refresh_token=True)
        # the answer was lost: the client repeats the refresh; the unused tokens of the first
        # answer are dropped
        lost = await self.refresh(first["refresh_token"])
        again = await self.refresh(first["refresh_token"])
        code, body = await self.get(WHOAMI, lost["access_token"])
        self.assertEqual((code, body["errcode"]), (401, "M_UNKNOWN_TOKEN"))
        await self.assert_refresh_refused(lost["refresh_token"])
        # using the new refresh token (rather than the access token) also revokes the old one
        third = await self.refresh(again["refresh_token"])
        await self.assert_refresh_refused(first["refresh_token"])
        await self.assert_works(third["access_token"])
        # and so on down the chain
        await self.assert_refresh_refused(again["refresh_token"])

    async def test_register_with_refresh_token(self) -> None:
        body = {"username": "bob", "password": "pw", "auth": {"type": "m.login.dummy"}, "refresh_token": True}
        code, resp = await self.post(f"{C}/register", body)
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["expires_in_ms"], LIFETIME_MS)
        new = await self.refresh(resp["refresh_token"])
        code, me = await self.get(WHOAMI, new["access_token"])
        self.assertEqual((me["user_id"], me["device_id"]), ("@bob:test", resp["device_id"]))
        code, resp = await self.post(
            f"{C}/register", {"username": "carol", "password": "pw", "auth": {"type": "m.login.dummy"}}
        )
        self.assertNotIn("refresh_token", resp)

    async def test_logout_revokes_refresh_tokens(self) -> None:
        first = await self.login(refresh_token=True)
        self.assertEqual(await self.post(f"{C}/logout", {}, first["access_token"]), (200, {}))
        await self.assert_refresh_refused(first["refresh_token"])
        second = await self.login(refresh_token=True)
        self.assertEqual(await self.post(f"{C}/logout/all", {}, self.alice.access_token), (200, {}))
        await self.assert_refresh_refused(second["refresh_token"])

    async def test_login_on_the_same_device_revokes_its_refresh_tokens(self) -> None:
        first = await self.login(refresh_token=True, device_id="PHONE")
        await self.login(device_id="PHONE")
        await self.assert_refresh_refused(first["refresh_token"])

    async def test_device_deletion_revokes_refresh_tokens(self) -> None:
        first = await self.login(refresh_token=True)
        self.assertEqual(
            await self.delete(f"{C}/devices/{first['device_id']}", {
                "auth": {"type": "m.login.password", "password": "correct horse",
                         "identifier": {"type": "m.id.user", "user": "alice"}},
            }, self.alice),
            (200, {}),
        )
        await self.assert_refresh_refused(first["refresh_token"])

    async def test_tokens_are_stored_hashed(self) -> None:
        first = await self.login(refresh_token=True)
        rows = await self.hs.db.run_read(
            "test", lambda t: t.query("SELECT token_hash FROM refresh_tokens", ())
        )
        self.assertEqual([r[0] for r in rows], [hash_token(first["refresh_token"])])

    async def test_bad_input(self) -> None:
        self.assertMatrixError(await self.request("POST", REFRESH, raw=b"{"), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", REFRESH, raw=b"[]"), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(REFRESH, {}), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(REFRESH, {"refresh_token": 5}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(f"{C}/login", password_login("alice", refresh_token="yes")), 400,
                               "M_BAD_JSON")
        for bad in ("", "nope", "mxr_" + "x" * 1000, self.alice.access_token):
            await self.assert_refresh_refused(bad)
        # the server keeps serving
        first = await self.login(refresh_token=True)
        await self.refresh(first["refresh_token"])


class RefreshTokenLifetimeTests(HomeserverTestCase):
    use_fake_clock = True
    config_overrides = {
        "sessions": {"refreshable_access_token_lifetime_ms": "60s", "refresh_token_lifetime_ms": "2m"}
    }

    async def test_an_expired_refresh_token_is_a_soft_logout(self) -> None:
        await self.register("alice")
        code, first = await self.post(f"{C}/login", password_login("alice", refresh_token=True))
        self.assertEqual(code, 200, first)
        self.clock.advance(119)
        code, second = await self.post(REFRESH, {"refresh_token": first["refresh_token"]})
        self.assertEqual(code, 200, second)
        self.clock.advance(120)
        code, body = await self.post(REFRESH, {"refresh_token": second["refresh_token"]})
        self.assertEqual((code, body["errcode"], body["soft_logout"]), (401, "M_UNKNOWN_TOKEN", True))
        # logging in again on the same device works
        code, body = await self.post(
            f"{C}/login", password_login("alice", refresh_token=True, device_id=first["device_id"])
        )
        self.assertEqual((code, body["device_id"]), (200, first["device_id"]))
