"""POST /register, /register/available and registration-token validity."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred

from tests.harness import C, HomeserverTestCase

REGISTER = f"{C}/register"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
DUMMY = {"type": "m.login.dummy"}


class RegisterTests(HomeserverTestCase):
    async def test_uia_round_trip(self) -> None:
        body: dict[str, Any] = {"username": "alice", "password": "secret"}
        code, resp = await self.post(REGISTER, body)
        self.assertEqual(code, 401, resp)
        self.assertEqual(resp["flows"], [{"stages": ["m.login.dummy"]}])
        self.assertEqual((resp["params"], resp["completed"]), ({}, []))
        session = resp["session"]
        code, resp = await self.post(REGISTER, {**body, "auth": {**DUMMY, "session": session}})
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["user_id"], "@alice:test")
        self.assertRegex(resp["device_id"], r"^[A-Z]{10}$")
        code, me = await self.get(f"{C}/account/whoami", resp["access_token"])
        self.assertEqual(me, {"user_id": "@alice:test", "device_id": resp["device_id"], "is_guest": False})
        # The completed session logs in again as the account it made, whatever else is asked.
        again = {"username": "alice2", "password": "secret", "auth": {**DUMMY, "session": session}}
        code, resp2 = await self.post(REGISTER, again)
        self.assertEqual((code, resp2["user_id"]), (200, "@alice:test"))
        self.assertNotEqual(resp2["access_token"], resp["access_token"])
        self.assertIsNone(await self.hs.accounts.get_user("@alice2:test"))

    async def test_session_remembers_parameters(self) -> None:
        # The first request's parameters apply to a later one that brings only `auth`.
        first = {
            "username": "alice",
            "password": "übers3kr1t",
            "device_id": "XYZZY",
            "initial_device_display_name": "Phone",
            "inhibit_login": False,
        }
        code, resp = await self.post(REGISTER, first)
        self.assertEqual(code, 401, resp)
        code, resp = await self.post(REGISTER, {"auth": {**DUMMY, "session": resp["session"]}})
        self.assertEqual((code, resp["user_id"], resp["device_id"]), (200, "@alice:test", "XYZZY"), resp)
        code, device = await self.get(f"{C}/devices/XYZZY", resp["access_token"])
        self.assertEqual(device["display_name"], "Phone")
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "übers3kr1t"}
        self.assertEqual((await self.post(f"{C}/login", login))[0], 200)

    async def test_remembered_inhibit_login(self) -> None:
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "x", "inhibit_login": True})
        self.assertEqual(code, 401)
        self.assertEqual(
            await self.post(REGISTER, {"auth": {**DUMMY, "session": resp["session"]}}), (200, {"user_id": "@alice:test"})
        )

    async def test_retry_without_username_is_idempotent(self) -> None:
        code, resp = await self.post(REGISTER, {"password": "secret"})
        body = {"password": "secret", "auth": {**DUMMY, "session": resp["session"]}}
        code, first = await self.post(REGISTER, body)
        self.assertEqual(code, 200, first)
        code, second = await self.post(REGISTER, body)
        self.assertEqual((code, second["user_id"]), (200, first["user_id"]))

    async def test_retry_with_username_is_idempotent(self) -> None:
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "secret"})
        body = {"username": "alice", "password": "secret", "auth": {**DUMMY, "session": resp["session"]}}
        self.assertEqual((await self.post(REGISTER, body))[1]["user_id"], "@alice:test")
        # Not M_USER_IN_USE: the session made this account.
        code, again = await self.post(REGISTER, body)
        self.assertEqual((code, again["user_id"]), (200, "@alice:test"), again)
        # Another client (no session) still gets M_USER_IN_USE.
        self.assertMatrixError(
            await self.post(REGISTER, {"username": "alice", "password": "x", "auth": DUMMY}), 400, "M_USER_IN_USE"
        )

    async def test_failed_completion_frees_the_session(self) -> None:
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "x"})
        session = resp["session"]
        await self.register("alice")  # taken meanwhile, by someone else
        body = {"username": "alice", "password": "x", "auth": {**DUMMY, "session": session}}
        self.assertMatrixError(await self.post(REGISTER, body), 400, "M_USER_IN_USE")
        # The session is still usable, with other parameters.
        body = {"username": "alice2", "password": "x", "auth": {**DUMMY, "session": session}}
        self.assertEqual((await self.post(REGISTER, body))[1]["user_id"], "@alice2:test")

    async def test_capitals_are_downcased(self) -> None:
        code, resp = await self.post(REGISTER, {"username": "user-UPPER", "password": "x", "auth": DUMMY})
        self.assertEqual((code, resp["user_id"]), (200, "@user-upper:test"), resp)

    async def test_profile_and_device(self) -> None:
        body = {
            "username": "alice",
            "password": "secret",
            "device_id": "LAPTOP",
            "initial_device_display_name": "Laptop",
            "auth": DUMMY,
        }
        code, resp = await self.post(REGISTER, body)
        self.assertEqual((code, resp["device_id"]), (200, "LAPTOP"))
        self.assertEqual(await self.hs.accounts.get_profile("@alice:test"), ("alice", None))
        code, devices = await self.get(f"{C}/devices", resp["access_token"])
        self.assertEqual(devices["devices"][0]["display_name"], "Laptop")
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "secret"}
        self.assertEqual((await self.post(f"{C}/login", login))[0], 200)

    async def test_inhibit_login(self) -> None:
        body = {"username": "alice", "password": "secret", "inhibit_login": True, "auth": DUMMY}
        self.assertEqual(await self.post(REGISTER, body), (200, {"user_id": "@alice:test"}))
        self.assertEqual(await self.hs.accounts.get_devices("@alice:test"), [])

    async def test_generated_username(self) -> None:
        code, resp = await self.post(REGISTER, {"password": "secret", "auth": DUMMY})
        self.assertEqual(code, 200, resp)
        localpart = resp["user_id"][1:].split(":")[0]
        self.assertRegex(localpart, r"^[a-z][a-z0-9]+$")

    async def test_user_in_use_before_uia(self) -> None:
        await self.register("alice")
        # registration.yaml: the check comes before User-Interactive Authentication.
        self.assertMatrixError(await self.post(REGISTER, {"username": "alice", "password": "x"}), 400, "M_USER_IN_USE")
        self.assertMatrixError(
            await self.post(REGISTER, {"username": "alice", "password": "x", "auth": DUMMY}), 400, "M_USER_IN_USE"
        )

    async def test_concurrent_registrations_of_one_name(self) -> None:
        body = {"username": "alice", "password": "secret", "auth": DUMMY}
        results = await DeferredList([ensureDeferred(self.post(REGISTER, body)) for _ in range(3)], consumeErrors=True)
        outcomes = sorted((code, resp.get("errcode")) for ok, (code, resp) in results)
        self.assertEqual(outcomes, [(200, None), (400, "M_USER_IN_USE"), (400, "M_USER_IN_USE")])

    async def test_invalid_usernames(self) -> None:
        bad = ["al ice", "", "@alice:test", "al:ice", "ålice", "12345", "x" * 250, "alice\n", "al\nice", "alice\t"]
        for username in bad:
            result = await self.post(REGISTER, {"username": username, "password": "x", "auth": DUMMY})
            self.assertMatrixError(result, 400, "M_INVALID_USERNAME")
        for username in ["a.b_c=d-e/f+g", "x" * 200]:
            self.assertEqual(
                (await self.post(REGISTER, {"username": username, "password": "x", "auth": DUMMY}))[0], 200
            )

    async def test_bad_input(self) -> None:
        self.assertMatrixError(await self.request("POST", REGISTER, raw=b"{"), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", REGISTER, raw=b""), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", REGISTER, raw=b'"alice"'), 400, "M_BAD_JSON")
        for bad in [
            {"username": 5},
            {"username": "alice", "password": ["x"]},
            {"username": "alice", "password": "x", "inhibit_login": "true"},
            {"username": "alice", "password": "x", "device_id": 7},
            {"username": "alice", "password": "x", "initial_device_display_name": {}},
            {"username": "alice", "password": "x", "initial_device_display_name": "x" * 300},
            {"username": "alice", "password": "x", "refresh_token": "yes"},
            {"username": "alice", "password": "x", "auth": "m.login.dummy"},
            {"username": "alice", "password": "x", "auth": {"type": ["m.login.dummy"]}},
        ]:
            self.assertMatrixError(await self.post(REGISTER, bad), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(REGISTER, {"username": "alice", "auth": DUMMY}), 400, "M_MISSING_PARAM")
        self.assertMatrixError(
            await self.post(REGISTER, {"username": "alice", "password": "x", "device_id": "", "auth": DUMMY}),
            400,
            "M_INVALID_PARAM",
        )
        self.assertMatrixError(await self.post(f"{REGISTER}?kind=admin", {}), 400, "M_INVALID_PARAM")
        # Nothing was created by any of these.
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))

    async def test_refresh_token_flag_gives_a_refresh_token(self) -> None:
        """More in tests/test_refresh_tokens.py."""
        code, resp = await self.post(
            REGISTER, {"username": "alice", "password": "x", "refresh_token": True, "auth": DUMMY}
        )
        self.assertEqual(code, 200)
        self.assertTrue(resp["refresh_token"])
        self.assertEqual(resp["expires_in_ms"], 300_000)

    async def test_empty_body_asks_for_auth(self) -> None:
        code, resp = await self.post(REGISTER, {})
        self.assertEqual(code, 401)
        self.assertIn("session", resp)

    async def test_unknown_and_out_of_place_stages(self) -> None:
        code, resp = await self.post(
            REGISTER, {"username": "alice", "password": "x", "auth": {"type": "m.login.recaptcha"}}
        )
        self.assertEqual((code, resp["errcode"], resp["completed"]), (401, "M_UNRECOGNIZED", []))
        self.assertIsInstance(resp["error"], str)
        # m.login.password re-authenticates an existing user; it cannot register one.
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "x"}, "password": "y"}
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "x", "auth": auth})
        self.assertEqual((code, resp["errcode"]), (401, "M_UNRECOGNIZED"))
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))

    async def test_guests_disabled(self) -> None:
        self.assertMatrixError(await self.post(f"{REGISTER}?kind=guest", {}), 403, "M_FORBIDDEN")

    async def test_available(self) -> None:
        await self.register("alice")
        self.assertEqual(await self.get(f"{REGISTER}/available?username=bob"), (200, {"available": True}))
        self.assertMatrixError(await self.get(f"{REGISTER}/available?username=alice"), 400, "M_USER_IN_USE")
        self.assertMatrixError(await self.get(f"{REGISTER}/available?username=Bob"), 400, "M_INVALID_USERNAME")
        self.assertMatrixError(await self.get(f"{REGISTER}/available?username=%00"), 400, "M_INVALID_USERNAME")
        self.assertMatrixError(await self.get(f"{REGISTER}/available?username=%ff"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{REGISTER}/available"), 400, "M_MISSING_PARAM")

    async def test_token_validity_without_tokens(self) -> None:
        self.assertMatrixError(await self.get(f"{VALIDITY}?token=abc"), 403, "M_FORBIDDEN")


class RegistrationDisabledTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": False}}

    async def test_register_forbidden(self) -> None:
        self.assertMatrixError(await self.post(REGISTER, {"username": "alice", "password": "x"}), 403, "M_FORBIDDEN")
        self.assertMatrixError(
            await self.post(REGISTER, {"username": "alice", "password": "x", "auth": DUMMY}), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(await self.get(f"{REGISTER}/available?username=alice"), 403, "M_FORBIDDEN")
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))


class RegistrationTokenTests(HomeserverTestCase):
    # A token alone opens registration, even with open sign-up off.
    config_overrides = {"registration": {"enabled": False, "registration_token": "s3cret-T0ken"}}

    async def test_token_flow(self) -> None:
        body = {"username": "alice", "password": "x"}
        code, resp = await self.post(REGISTER, body)
        self.assertEqual((code, resp["flows"]), (401, [{"stages": ["m.login.registration_token"]}]))
        session = resp["session"]
        auth = {"type": "m.login.registration_token", "token": "wrong", "session": session}
        code, resp = await self.post(REGISTER, {**body, "auth": auth})
        self.assertEqual((code, resp["errcode"], resp["session"]), (401, "M_FORBIDDEN", session))
        auth["token"] = "s3cret-T0ken"
        code, resp = await self.post(REGISTER, {**body, "auth": auth})
        self.assertEqual((code, resp["user_id"]), (200, "@alice:test"))

    async def test_dummy_is_not_enough(self) -> None:
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "x", "auth": DUMMY})
        self.assertEqual((code, resp["errcode"]), (401, "M_UNRECOGNIZED"))
        self.assertIsNone(await self.hs.accounts.get_user("@alice:test"))

    async def test_token_not_a_string(self) -> None:
        auth = {"type": "m.login.registration_token", "token": 12}
        code, resp = await self.post(REGISTER, {"username": "alice", "password": "x", "auth": auth})
        self.assertEqual((code, resp["errcode"]), (401, "M_BAD_JSON"))

    async def test_validity(self) -> None:
        self.assertEqual(await self.get(f"{VALIDITY}?token=s3cret-T0ken"), (200, {"valid": True}))
        self.assertEqual(await self.get(f"{VALIDITY}?token=s3cret"), (200, {"valid": False}))
        self.assertEqual(await self.get(f"{VALIDITY}?token=%C3%A9"), (200, {"valid": False}))
        self.assertMatrixError(await self.get(VALIDITY), 400, "M_MISSING_PARAM")


class GuestTests(HomeserverTestCase):
    config_overrides = {"registration": {"allow_guests": True}}

    async def test_guest_registration(self) -> None:
        # registration.yaml: everything but initial_device_display_name is ignored for guests.
        body = {
            "username": "alice",
            "device_id": "MINE",
            "inhibit_login": True,
            "initial_device_display_name": "Guest phone",
        }
        code, resp = await self.post(f"{REGISTER}?kind=guest", body)
        self.assertEqual(code, 200, resp)
        self.assertTrue(re.fullmatch(r"@[0-9]+:test", resp["user_id"]), resp["user_id"])
        self.assertNotEqual(resp["device_id"], "MINE")
        code, me = await self.get(f"{C}/account/whoami", resp["access_token"])
        self.assertEqual((me["user_id"], me["is_guest"]), (resp["user_id"], True))
        code, devices = await self.get(f"{C}/devices", resp["access_token"])
        self.assertEqual(devices["devices"][0]["display_name"], "Guest phone")
        # Guests may not manage their account.
        result = await self.post(f"{C}/account/password", {"new_password": "x"}, resp["access_token"])
        self.assertMatrixError(result, 403, "M_GUEST_ACCESS_FORBIDDEN")

    async def test_guest_with_empty_body(self) -> None:
        code, resp = await self.request("POST", f"{REGISTER}?kind=guest", raw=b"")
        self.assertEqual(code, 200, resp)


class RegisterRateLimitTests(HomeserverTestCase):
    config_overrides = {"rate_limits": {"enabled": True, "register": {"per_second": 0.001, "burst": 2}}}

    async def test_attempts_are_limited_per_ip(self) -> None:
        for name in ("a1", "a2"):
            # Asking for the flows is free; only attempts count.
            self.assertEqual((await self.post(REGISTER, {"username": name, "password": "x"}))[0], 401)
            await self.register(name)
        code, resp = await self.post(REGISTER, {"username": "a3", "password": "x", "auth": DUMMY})
        self.assertMatrixError((code, resp), 429, "M_LIMIT_EXCEEDED")
        self.assertGreater(resp["retry_after_ms"], 0)
        self.assertIsNone(await self.hs.accounts.get_user("@a3:test"))


class GuestUpgradeTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": True, "allow_guests": True}}

    async def test_guest_upgrades_to_a_full_account(self) -> None:
        # guest_access.md: the ordinary register flow, with guest_access_token and the guest's
        # own localpart as username.
        code, guest = await self.post(f"{REGISTER}?kind=guest", {})
        localpart = guest["user_id"][1:].split(":")[0]
        body = {"username": localpart, "password": "secret", "guest_access_token": guest["access_token"]}
        code, resp = await self.post(REGISTER, body)
        self.assertEqual(code, 401, resp)  # UIA as usual
        code, resp = await self.post(REGISTER, {**body, "auth": {**DUMMY, "session": resp["session"]}})
        self.assertEqual((code, resp["user_id"]), (200, guest["user_id"]), resp)
        code, me = await self.get(f"{C}/account/whoami", resp["access_token"])
        self.assertEqual((me["user_id"], me["is_guest"]), (guest["user_id"], False))
        # The old guest token is no longer a guest's either (no stale cache), and the password logs in.
        code, me = await self.get(f"{C}/account/whoami", guest["access_token"])
        self.assertEqual(me["is_guest"], False)
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": "secret"}
        self.assertEqual((await self.post(f"{C}/login", login))[0], 200)
        # Upgrading twice is refused.
        again = {**body, "auth": DUMMY}
        self.assertMatrixError(await self.post(REGISTER, again), 403, "M_FORBIDDEN")

    async def test_guest_cannot_upgrade_another_account(self) -> None:
        code, guest1 = await self.post(f"{REGISTER}?kind=guest", {})
        code, guest2 = await self.post(f"{REGISTER}?kind=guest", {})
        localpart1 = guest1["user_id"][1:].split(":")[0]
        body = {"username": localpart1, "password": "x", "guest_access_token": guest2["access_token"], "auth": DUMMY}
        self.assertMatrixError(await self.post(REGISTER, body), 403, "M_FORBIDDEN")
        body = {"password": "x", "guest_access_token": guest2["access_token"], "auth": DUMMY}
        self.assertMatrixError(await self.post(REGISTER, body), 400, "M_MISSING_PARAM")
        alice = await self.register("alice")
        body = {"username": "alice", "password": "x", "guest_access_token": alice.access_token, "auth": DUMMY}
        self.assertMatrixError(await self.post(REGISTER, body), 403, "M_FORBIDDEN")
        code, me = await self.get(f"{C}/account/whoami", guest1["access_token"])
        self.assertEqual(me["is_guest"], True)
