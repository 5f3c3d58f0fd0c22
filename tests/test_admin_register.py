"""Shared-secret registration (/_synapse/admin/v1/register) and the reusable UserRegistrar."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mxserver.errors import MatrixError
from tests.harness import C, HomeserverTestCase

PATH = "/_synapse/admin/v1/register"
SECRET = "a shared secret"

def mac_for(nonce: str, username: str, password: str, admin: bool, secret: str = SECRET) -> str:
    # Written out independently of the server's code: the format admin tooling uses.
    msg = b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"admin" if admin else b"notadmin"])
    return hmac.new(secret.encode(), msg, hashlib.sha1).hexdigest()


class SharedSecretTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": False, "shared_secret": SECRET}}

    async def nonce(self) -> str:
        code, body = await self.get(PATH)
        self.assertEqual(code, 200)
        self.assertIsInstance(body["nonce"], str)
        return body["nonce"]

    async def signed(self, username: str, password: str, admin: bool = False, **extra: Any) -> dict[str, Any]:
        nonce = await self.nonce()
        return {
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": admin,
            "mac": mac_for(nonce, username, password, admin),
            **extra,
        }

    async def test_register_admin(self) -> None:
        code, body = await self.post(PATH, await self.signed("root", "pw", admin=True, displayname="The Admin"))
        self.assertEqual(code, 200, body)
        self.assertEqual((body["user_id"], body["home_server"]), ("@root:test", "test"))
        code, me = await self.get(f"{C}/account/whoami", body["access_token"])
        self.assertEqual((me["user_id"], me["device_id"]), ("@root:test", body["device_id"]))
        user = await self.hs.accounts.get_user("@root:test")
        self.assertTrue(user.is_admin)
        self.assertEqual(await self.hs.accounts.get_profile("@root:test"), ("The Admin", None))
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "pw"}
        self.assertEqual((await self.post(f"{C}/login", login))[0], 200)

    async def test_register_non_admin(self) -> None:
        code, body = await self.post(PATH, await self.signed("alice", "pw"))
        self.assertEqual(code, 200, body)
        self.assertFalse((await self.hs.accounts.get_user("@alice:test")).is_admin)
        self.assertEqual(await self.hs.accounts.get_profile("@alice:test"), ("alice", None))

    async def test_nonces_differ(self) -> None:
        self.assertNotEqual(await self.nonce(), await self.nonce())

    async def test_nonce_is_single_use(self) -> None:
        body = await self.signed("alice", "pw")
        self.assertEqual((await self.post(PATH, body))[0], 200)
        body["username"], body["mac"] = "bob", mac_for(body["nonce"], "bob", "pw", False)
        self.assertMatrixError(await self.post(PATH, body), 400, "M_UNKNOWN")

    async def test_wrong_mac(self) -> None:
        body = await self.signed("alice", "pw")
        body["admin"] = True  # signed as notadmin
        self.assertMatrixError(await self.post(PATH, body), 403, "M_FORBIDDEN")
        body = await self.signed("alice", "pw")
        body["mac"] = mac_for(body["nonce"], "alice", "pw", False, secret="guessed")
        self.assertMatrixError(await self.post(PATH, body), 403, "M_FORBIDDEN")
        # A failed attempt spends the nonce too.
        body["mac"] = mac_for(body["nonce"], "alice", "pw", False)
        self.assertMatrixError(await self.post(PATH, body), 400, "M_UNKNOWN")
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))

    async def test_unknown_nonce(self) -> None:
        body = {
            "nonce": "made-up",
            "username": "alice",
            "password": "pw",
            "admin": False,
            "mac": mac_for("made-up", "alice", "pw", False),
        }
        self.assertMatrixError(await self.post(PATH, body), 400, "M_UNKNOWN")

    async def test_invalid_or_taken_username(self) -> None:
        self.assertMatrixError(await self.post(PATH, await self.signed("Alice", "pw")), 400, "M_INVALID_USERNAME")
        self.assertMatrixError(await self.post(PATH, await self.signed("a:b", "pw")), 400, "M_INVALID_USERNAME")
        self.assertEqual((await self.post(PATH, await self.signed("alice", "pw")))[0], 200)
        self.assertMatrixError(await self.post(PATH, await self.signed("alice", "pw")), 400, "M_USER_IN_USE")

    async def test_bad_input(self) -> None:
        self.assertMatrixError(await self.request("POST", PATH, raw=b"not json"), 400, "M_NOT_JSON")
        good = await self.signed("alice", "pw")
        for key in ("nonce", "username", "password", "mac"):
            self.assertMatrixError(
                await self.post(PATH, {k: v for k, v in good.items() if k != key}), 400, "M_MISSING_PARAM"
            )
            self.assertMatrixError(await self.post(PATH, {**good, key: 1}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(PATH, {**good, "admin": "yes"}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(PATH, {**good, "displayname": 3}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(PATH, {**good, "user_type": "bot"}), 400, "M_INVALID_PARAM")
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))
        # None of the above spent the nonce: the request still works.
        self.assertEqual((await self.post(PATH, good))[0], 200)

    async def test_client_registration_stays_closed(self) -> None:
        self.assertMatrixError(
            await self.post(f"{C}/register", {"username": "x", "password": "y"}), 403, "M_FORBIDDEN"
        )


class SharedSecretExpiryTests(HomeserverTestCase):
    config_overrides = {"registration": {"shared_secret": SECRET}}
    use_fake_clock = True

    async def test_nonce_expires_after_a_minute(self) -> None:
        code, body = await self.get(PATH)
        nonce = body["nonce"]
        self.clock.advance(61)
        request = {"nonce": nonce, "username": "alice", "password": "pw", "mac": mac_for(nonce, "alice", "pw", False)}
        self.assertMatrixError(await self.post(PATH, request), 400, "M_UNKNOWN")


class SharedSecretDisabledTests(HomeserverTestCase):
    async def test_disabled(self) -> None:
        self.assertMatrixError(await self.get(PATH), 400, "M_UNKNOWN")
        self.assertMatrixError(await self.post(PATH, {"nonce": "x"}), 400, "M_UNKNOWN")
        self.assertMatrixError(await self.request("POST", PATH, raw=b"garbage"), 400, "M_UNKNOWN")


class RegisterUserFunctionTests(HomeserverTestCase):
    """UserRegistrar.register_user() as the admin CLI calls it: no HTTP involved."""

    async def test_register_user(self) -> None:
        user_id = await self.hs.registrar.register_user("carol", "pw", admin=True)
        self.assertEqual(user_id, "@carol:test")
        self.assertTrue((await self.hs.accounts.get_user(user_id)).is_admin)
        self.assertTrue(await self.hs.passwords.check_user_password(user_id, "pw"))
        self.assertEqual(await self.hs.accounts.get_profile(user_id), ("carol", None))

    async def test_errors(self) -> None:
        await self.hs.registrar.register_user("carol", "pw")
        for localpart, errcode in (
            ("carol", "M_USER_IN_USE"),
            ("Carol", "M_INVALID_USERNAME"),
            ("", "M_INVALID_USERNAME"),
        ):
            try:
                await self.hs.registrar.register_user(localpart, "pw")
            except MatrixError as e:
                self.assertEqual(e.errcode, errcode)
            else:
                self.fail(f"{localpart!r} was registered")
