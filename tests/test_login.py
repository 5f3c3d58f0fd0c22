"""GET/POST /login, m.login.token and /login/get_token, /logout, /logout/all."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred

from tests.harness import C, HomeserverTestCase
from tests.test_account import UIAMixin, password_auth

LOGIN = f"{C}/login"
GET_TOKEN = "/_matrix/client/v1/login/get_token"


def password_login(user: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }


class LoginTests(UIAMixin):
    async def test_flows(self) -> None:
        code, body = await self.get(LOGIN)
        self.assertEqual(code, 200)
        self.assertIn({"type": "m.login.password"}, body["flows"])
        self.assertIn({"type": "m.login.token", "get_login_token": True}, body["flows"])

    async def test_login_with_localpart_user_id_and_deprecated_user(self) -> None:
        await self.register("alice", password="pw")
        for body in (
            password_login("alice", "pw"),
            password_login("@alice:test", "pw"),
            password_login("ALICE", "pw"),  # localparts are matched case-insensitively
            {"type": "m.login.password", "user": "alice", "password": "pw"},
        ):
            code, resp = await self.post(LOGIN, body)
            self.assertEqual(code, 200, resp)
            self.assertEqual((resp["user_id"], resp["home_server"]), ("@alice:test", "test"))
            self.assertRegex(resp["device_id"], r"^[A-Z]{10}$")
            code, me = await self.get(f"{C}/account/whoami", resp["access_token"])
            self.assertEqual((me["user_id"], me["device_id"]), ("@alice:test", resp["device_id"]))

    async def test_wrong_credentials(self) -> None:
        await self.register("alice", password="pw")
        self.assertMatrixError(await self.post(LOGIN, password_login("alice", "nope")), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(LOGIN, password_login("nobody", "pw")), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(LOGIN, password_login("@alice:elsewhere", "pw")), 403, "M_FORBIDDEN")

    async def test_bad_input(self) -> None:
        await self.register("alice", password="pw")
        self.assertMatrixError(await self.request("POST", LOGIN, raw=b"{'type': 1}"), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", LOGIN, raw=b"[1]"), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(LOGIN, {"password": "pw"}), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(LOGIN, {"type": 1}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(LOGIN, {"type": "m.login.bogus"}), 400, "M_UNKNOWN")
        self.assertMatrixError(
            await self.post(LOGIN, {"type": "m.login.password", "identifier": "alice", "password": "pw"}),
            400,
            "M_BAD_JSON",
        )
        self.assertMatrixError(await self.post(LOGIN, password_login("alice", 5)), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(LOGIN, {"type": "m.login.password", "password": "pw"}), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.post(LOGIN, password_login("alice", "pw", device_id=5)), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(LOGIN, password_login("alice", "pw", device_id="")), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.post(LOGIN, password_login("alice", "pw", device_id="D" * 300)), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(LOGIN, password_login("alice", "pw", initial_device_display_name=False)), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(LOGIN, password_login("alice", "pw", refresh_token="yes")), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.post(LOGIN, {"type": "m.login.token"}), 400, "M_BAD_JSON")
        # Only the registration device exists: no half-made sessions.
        self.assertEqual(len(await self.hs.accounts.get_devices("@alice:test")), 1)

    async def test_device_id_and_display_name(self) -> None:
        await self.register("alice", password="pw")
        code, first = await self.post(
            LOGIN, password_login("alice", "pw", device_id="TABLET", initial_device_display_name="Tablet")
        )
        self.assertEqual((code, first["device_id"]), (200, "TABLET"))
        await self.get(f"{C}/account/whoami", first["access_token"])  # cached
        # Logging in again on the same device replaces its token and keeps its name.
        code, second = await self.post(
            LOGIN, password_login("alice", "pw", device_id="TABLET", initial_device_display_name="Other")
        )
        self.assertEqual((code, second["device_id"]), (200, "TABLET"))
        self.assertMatrixError(await self.get(f"{C}/account/whoami", first["access_token"]), 401, "M_UNKNOWN_TOKEN")
        code, device = await self.get(f"{C}/devices/TABLET", second["access_token"])
        self.assertEqual(device["display_name"], "Tablet")
        self.assertEqual(len(await self.hs.accounts.get_devices("@alice:test")), 2)

    async def test_logout(self) -> None:
        alice = await self.register("alice", password="pw")
        code, other = await self.post(LOGIN, password_login("alice", "pw", device_id="OTHER"))
        await self.get(f"{C}/account/whoami", other["access_token"])  # cached
        self.assertEqual(await self.post(f"{C}/logout", {}, other["access_token"]), (200, {}))
        self.assertMatrixError(await self.get(f"{C}/account/whoami", other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.post(f"{C}/logout", {}, other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        code, devices = await self.get(f"{C}/devices", alice)
        self.assertEqual([d["device_id"] for d in devices["devices"]], [alice.device_id])

    async def test_logout_all(self) -> None:
        alice = await self.register("alice", password="pw")
        code, other = await self.post(LOGIN, password_login("alice", "pw"))
        bob = await self.register("bob")
        for token in (alice.access_token, other["access_token"]):
            await self.get(f"{C}/account/whoami", token)  # cached
        self.assertEqual(await self.post(f"{C}/logout/all", {}, alice), (200, {}))
        for token in (alice.access_token, other["access_token"]):
            self.assertMatrixError(await self.get(f"{C}/account/whoami", token), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual(await self.hs.accounts.get_devices("@alice:test"), [])
        self.assertEqual((await self.get(f"{C}/account/whoami", bob))[0], 200)
        self.assertEqual((await self.post(LOGIN, password_login("alice", "pw")))[0], 200)

    async def test_logout_needs_a_token(self) -> None:
        self.assertMatrixError(await self.post(f"{C}/logout", {}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.post(f"{C}/logout/all", {}, "mxa_bogus"), 401, "M_UNKNOWN_TOKEN")

    async def test_deactivated_user(self) -> None:
        alice = await self.register("alice", password="pw")
        self.assertEqual((await self.with_password_uia("POST", f"{C}/account/deactivate", {}, alice))[0], 200)
        self.assertMatrixError(await self.post(LOGIN, password_login("alice", "pw")), 403, "M_USER_DEACTIVATED")


class LoginTokenTests(UIAMixin):
    async def test_get_token_and_log_in_with_it(self) -> None:
        alice = await self.register("alice", password="pw")
        code, body = await self.with_password_uia("POST", GET_TOKEN, {}, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["expires_in_ms"], 120_000)
        code, resp = await self.post(LOGIN, {"type": "m.login.token", "token": body["login_token"]})
        self.assertEqual((code, resp["user_id"]), (200, "@alice:test"))
        self.assertEqual((await self.get(f"{C}/account/whoami", resp["access_token"]))[0], 200)
        # Single use.
        self.assertMatrixError(
            await self.post(LOGIN, {"type": "m.login.token", "token": body["login_token"]}), 403, "M_FORBIDDEN"
        )

    async def test_get_token_always_requires_uia(self) -> None:
        alice = await self.register("alice", password="pw")
        self.assertEqual((await self.with_password_uia("POST", GET_TOKEN, {}, alice))[0], 200)
        code, body = await self.post(GET_TOKEN, {}, alice)
        self.assertEqual(code, 401)
        code, body = await self.post(GET_TOKEN, {"auth": password_auth(alice, body["session"], "wrong")}, alice)
        self.assertEqual((code, body["errcode"]), (401, "M_FORBIDDEN"))

    async def test_one_session_one_token(self) -> None:
        # Two concurrent requests completing the same session: exactly one is authorised.
        alice = await self.register("alice", password="pw")
        session = await self.uia_session("POST", GET_TOKEN, {}, alice)
        body = {"auth": password_auth(alice, session)}
        results = await DeferredList([ensureDeferred(self.post(GET_TOKEN, body, alice)) for _ in range(2)])
        self.assertEqual(sorted(code for ok, (code, resp) in results), [200, 400])

    async def test_empty_body_asks_for_auth(self) -> None:
        alice = await self.register("alice")
        code, body = await self.request("POST", GET_TOKEN, raw=b"", token=alice)
        self.assertEqual((code, body["flows"]), (401, [{"stages": ["m.login.password"]}]))

    async def test_bad_tokens(self) -> None:
        self.assertMatrixError(
            await self.post(LOGIN, {"type": "m.login.token", "token": "mxl_nope"}), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(await self.post(LOGIN, {"type": "m.login.token", "token": ["x"]}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(GET_TOKEN, {}), 401, "M_MISSING_TOKEN")
        alice = await self.register("alice")
        self.assertMatrixError(await self.request("POST", GET_TOKEN, raw=b"x", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(GET_TOKEN, {"auth": []}, alice), 400, "M_BAD_JSON")

    async def test_capability(self) -> None:
        alice = await self.register("alice")
        code, body = await self.get(f"{C}/capabilities", alice)
        self.assertEqual(body["capabilities"]["m.get_login_token"], {"enabled": True})


class LoginTokenExpiryTests(UIAMixin):
    use_fake_clock = True

    async def test_expired_token(self) -> None:
        alice = await self.register("alice", password="pw")
        code, body = await self.with_password_uia("POST", GET_TOKEN, {}, alice)
        self.clock.advance(121)
        self.assertMatrixError(
            await self.post(LOGIN, {"type": "m.login.token", "token": body["login_token"]}), 403, "M_FORBIDDEN"
        )


class LoginRateLimitTests(HomeserverTestCase):
    config_overrides = {"rate_limits": {"enabled": True, "login": {"per_second": 0.001, "burst": 3}}}

    async def test_per_ip(self) -> None:
        # Registration does not touch the login limiter.
        await self.register("alice", password="pw")
        for _ in range(3):
            self.assertMatrixError(await self.post(LOGIN, password_login("alice", "wrong")), 403, "M_FORBIDDEN")
        code, resp = await self.post(LOGIN, password_login("alice", "pw"))
        self.assertMatrixError((code, resp), 429, "M_LIMIT_EXCEEDED")
        self.assertGreater(resp["retry_after_ms"], 0)

    async def test_per_user(self) -> None:
        await self.register("alice", password="pw")
        # Guessing at alice's password from elsewhere has emptied her bucket.
        for _ in range(3):
            self.hs.ratelimit_login.check("@alice:test")
        self.assertMatrixError(await self.post(LOGIN, password_login("alice", "pw")), 429, "M_LIMIT_EXCEEDED")
        self.assertMatrixError(await self.post(LOGIN, password_login("Alice", "pw")), 429, "M_LIMIT_EXCEEDED")
        # Someone else from the same address is still welcome.
        await self.register("bob", password="pw")
        self.assertEqual((await self.post(LOGIN, password_login("bob", "pw")))[0], 200)


class WellKnownInLoginTests(HomeserverTestCase):
    config_overrides = {"well_known": {"client_base_url": "https://matrix.example.org"}}

    async def test_well_known(self) -> None:
        await self.register("alice", password="pw")
        code, resp = await self.post(LOGIN, password_login("alice", "pw"))
        self.assertEqual(resp["well_known"], {"m.homeserver": {"base_url": "https://matrix.example.org"}})
