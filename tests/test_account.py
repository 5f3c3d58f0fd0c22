"""Account management: whoami, password change, deactivation, 3PIDs; the UIA machinery itself."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from mxserver.accounts.uia import UIARequest, UserInteractiveAuth
from mxserver.api.ratelimit import RateLimiter
from mxserver.config import RegistrationConfig
from mxserver.errors import InteractiveAuthRequired, MatrixError
from tests.harness import C, HomeserverTestCase, TestUser


def password_auth(
    user: TestUser, session: str | None = None, password: str | None = None, who: str | None = None
) -> dict[str, Any]:
    """An m.login.password UIA stage for ``user`` (or naming ``who`` instead)."""
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": who or user.user_id},
        "password": user.password if password is None else password,
    }
    if session is not None:
        auth["session"] = session
    return auth


class UIAMixin(HomeserverTestCase):
    async def uia_session(self, method: str, path: str, body: dict[str, Any], user: TestUser) -> str:
        """Make the request without auth; assert the 401 and return its session."""
        code, resp = await self.request(method, path, body, token=user)
        self.assertEqual(code, 401, resp)
        self.assertEqual(resp["completed"], [])
        self.assertIn({"stages": ["m.login.password"]}, resp["flows"])
        self.assertIsInstance(resp["params"], dict)
        return resp["session"]

    async def with_password_uia(self, method: str, path: str, body: dict[str, Any], user: TestUser) -> tuple[int, Any]:
        """The request, authorised by a full UIA round trip with the user's password."""
        session = await self.uia_session(method, path, body, user)
        return await self.request(method, path, {**body, "auth": password_auth(user, session)}, token=user)

    async def login(self, user: str, password: str, **extra: Any) -> tuple[int, Any]:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
        return await self.post(f"{C}/login", {**body, **extra})


class WhoamiTests(HomeserverTestCase):
    async def test_whoami(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        code, body = await self.get(f"{C}/account/whoami", alice)
        self.assertEqual((code, body), (200, {"user_id": "@alice:test", "device_id": "PHONE", "is_guest": False}))

    async def test_whoami_needs_a_valid_token(self) -> None:
        self.assertMatrixError(await self.get(f"{C}/account/whoami"), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(f"{C}/account/whoami", "mxa_nope"), 401, "M_UNKNOWN_TOKEN")

    async def test_token_in_query_string(self) -> None:
        alice = await self.register("alice")
        code, body = await self.get(f"{C}/account/whoami?access_token={alice.access_token}")
        self.assertEqual((code, body["user_id"]), (200, "@alice:test"))

    async def test_threepids_empty(self) -> None:
        alice = await self.register("alice")
        self.assertEqual(await self.get(f"{C}/account/3pid", alice), (200, {"threepids": []}))
        self.assertMatrixError(await self.get(f"{C}/account/3pid"), 401, "M_MISSING_TOKEN")


class PasswordChangeTests(UIAMixin):
    async def test_change_password_logs_out_other_devices(self) -> None:
        alice = await self.register("alice", device_id="ONE")
        code, other = await self.login("alice", alice.password, device_id="TWO")
        self.assertEqual(code, 200)
        await self.get(f"{C}/account/whoami", other["access_token"])  # now cached by hs.auth
        code, body = await self.with_password_uia(
            "POST", f"{C}/account/password", {"new_password": "new secret"}, alice
        )
        self.assertEqual((code, body), (200, {}))
        # The requester's own token survives; the other device and its token are gone.
        self.assertEqual((await self.get(f"{C}/account/whoami", alice))[0], 200)
        self.assertMatrixError(await self.get(f"{C}/account/whoami", other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        code, devices = await self.get(f"{C}/devices", alice)
        self.assertEqual([d["device_id"] for d in devices["devices"]], ["ONE"])
        self.assertMatrixError(await self.login("alice", alice.password), 403, "M_FORBIDDEN")
        self.assertEqual((await self.login("alice", "new secret"))[0], 200)

    async def test_logout_devices_false_keeps_other_devices(self) -> None:
        alice = await self.register("alice", device_id="ONE")
        code, other = await self.login("alice", alice.password, device_id="TWO")
        body = {"new_password": "new secret", "logout_devices": False}
        self.assertEqual((await self.with_password_uia("POST", f"{C}/account/password", body, alice))[0], 200)
        self.assertEqual((await self.get(f"{C}/account/whoami", other["access_token"]))[0], 200)

    async def test_wrong_old_password_is_a_failed_stage(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "x2"}, alice)
        body = {"new_password": "x2", "auth": password_auth(alice, session, password="wrong")}
        code, resp = await self.post(f"{C}/account/password", body, alice)
        self.assertEqual((code, resp["errcode"], resp["session"], resp["completed"]), (401, "M_FORBIDDEN", session, []))
        self.assertIsInstance(resp["error"], str)
        # The session survives a failed attempt: the right password then succeeds.
        body["auth"] = password_auth(alice, session)
        self.assertEqual((await self.post(f"{C}/account/password", body, alice))[0], 200)

    async def test_reauth_as_another_user_is_refused(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", password="bob's password")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "pwned"}, alice)
        auth = password_auth(bob, session)  # bob's correct credentials, on alice's request
        code, resp = await self.post(f"{C}/account/password", {"new_password": "pwned", "auth": auth}, alice)
        # A plain 403 (Synapse's answer, which SyTest expects), not a 401 inviting another stage.
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        self.assertNotIn("flows", resp)
        self.assertEqual((await self.login("alice", alice.password))[0], 200)

    async def test_uia_without_session_starts_one(self) -> None:
        alice = await self.register("alice")
        body = {"new_password": "new secret", "auth": password_auth(alice)}
        self.assertEqual(await self.post(f"{C}/account/password", body, alice), (200, {}))

    async def test_completed_session_cannot_be_reused(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        body = {"new_password": "p1", "auth": password_auth(alice, session)}
        self.assertEqual((await self.post(f"{C}/account/password", body, alice))[0], 200)
        body = {"new_password": "p2", "auth": {"session": session}}
        self.assertMatrixError(await self.post(f"{C}/account/password", body, alice), 400, "M_UNKNOWN")

    async def test_unknown_session(self) -> None:
        alice = await self.register("alice")
        body = {"new_password": "p1", "auth": {**password_auth(alice), "session": "no-such-session"}}
        self.assertMatrixError(await self.post(f"{C}/account/password", body, alice), 400, "M_UNKNOWN")

    async def test_session_of_another_user_or_endpoint_is_refused(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        # bob may not continue alice's session, even with his own credentials
        body = {"new_password": "p1", "auth": password_auth(bob, session)}
        self.assertMatrixError(await self.post(f"{C}/account/password", body, bob), 403, "M_FORBIDDEN")
        # nor may alice use it for another operation
        self.assertMatrixError(
            await self.post(f"{C}/account/deactivate", {"auth": password_auth(alice, session)}, alice),
            403,
            "M_FORBIDDEN",
        )

    async def test_session_only_retry_reports_progress(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        code, resp = await self.post(
            f"{C}/account/password", {"new_password": "p1", "auth": {"session": session}}, alice
        )
        self.assertEqual((code, resp["session"], resp["completed"]), (401, session, []))
        self.assertNotIn("errcode", resp)

    async def test_stage_not_offered(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        # m.login.dummy is for registration only: it never re-authenticates anyone.
        body = {"new_password": "p1", "auth": {"type": "m.login.dummy", "session": session}}
        code, resp = await self.post(f"{C}/account/password", body, alice)
        self.assertEqual((code, resp["errcode"], resp["completed"]), (401, "M_UNRECOGNIZED", []))

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/account/password"
        self.assertMatrixError(await self.request("POST", path, raw=b"{not json", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("POST", path, raw=b"[]", token=alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"new_password": 12}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(path, {"new_password": "x", "logout_devices": "yes"}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(path, {"new_password": "x", "auth": "password"}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(path, {"new_password": "x", "auth": {"type": 5}}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(path, {"new_password": "x", "auth": {"session": 5}}, alice), 400, "M_BAD_JSON"
        )
        body = {"new_password": "x", "auth": {"type": "m.login.password", "identifier": [], "password": "p"}}
        code, resp = await self.post(path, body, alice)
        self.assertEqual((code, resp["errcode"]), (401, "M_BAD_JSON"))
        self.assertMatrixError(await self.post(path, {"new_password": "x" * 600}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(path, {"new_password": "x"}), 401, "M_MISSING_TOKEN")
        # nothing changed
        self.assertEqual((await self.login("alice", alice.password))[0], 200)

    async def test_login_tokens_do_not_survive_a_password_change(self) -> None:
        alice = await self.register("alice")
        code, resp = await self.with_password_uia("POST", "/_matrix/client/v1/login/get_token", {}, alice)
        self.assertEqual(code, 200, resp)
        body = {"new_password": "new secret", "logout_devices": False}
        self.assertEqual((await self.with_password_uia("POST", f"{C}/account/password", body, alice))[0], 200)
        result = await self.post(f"{C}/login", {"type": "m.login.token", "token": resp["login_token"]})
        self.assertMatrixError(result, 403, "M_FORBIDDEN")


class WeakPasswordTests(UIAMixin):
    config_overrides = {"password": {"minimum_length": 8}}

    async def test_short_password_refused(self) -> None:
        alice = await self.register("alice", password="long enough")
        self.assertMatrixError(
            await self.post(f"{C}/account/password", {"new_password": "short"}, alice), 400, "M_WEAK_PASSWORD"
        )
        body = {"username": "bob", "password": "short", "auth": {"type": "m.login.dummy"}}
        self.assertMatrixError(await self.post(f"{C}/register", body), 400, "M_WEAK_PASSWORD")


class DeactivationTests(UIAMixin):
    async def test_deactivate(self) -> None:
        alice = await self.register("alice")
        code, other = await self.login("alice", alice.password)
        await self.get(f"{C}/account/whoami", other["access_token"])  # cached
        code, body = await self.with_password_uia("POST", f"{C}/account/deactivate", {}, alice)
        # account_deactivation.yaml: "success" when there are no identifiers to unbind.
        self.assertEqual((code, body), (200, {"id_server_unbind_result": "success"}))
        for token in (alice.access_token, other["access_token"]):
            self.assertMatrixError(await self.get(f"{C}/account/whoami", token), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.login("alice", alice.password), 403, "M_USER_DEACTIVATED")
        self.assertMatrixError(await self.login("@alice:test", "anything"), 403, "M_USER_DEACTIVATED")
        # The user ID is never handed out again.
        body = {"username": "alice", "password": "p", "auth": {"type": "m.login.dummy"}}
        self.assertMatrixError(await self.post(f"{C}/register", body), 400, "M_USER_IN_USE")

    async def test_deactivated_user_leaves_rooms_and_rejects_invites(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        joined = await self.create_room(bob, preset="public_chat")
        await self.join(alice, joined)
        invited = await self.create_room(bob, invite=[alice.user_id])
        own = await self.create_room(alice, preset="public_chat")
        code, body = await self.with_password_uia("POST", f"{C}/account/deactivate", {}, alice)
        self.assertEqual(code, 200, body)
        for room in (joined, invited, own):
            self.assertEqual(await self.membership(room, alice), "leave", room)
        self.assertEqual(await self.membership(joined, bob), "join")

    async def test_deactivate_wrong_password(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/deactivate", {}, alice)
        code, resp = await self.post(f"{C}/account/deactivate", {"auth": password_auth(alice, session, "nope")}, alice)
        self.assertEqual((code, resp["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual((await self.get(f"{C}/account/whoami", alice))[0], 200)

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/account/deactivate"
        self.assertMatrixError(await self.request("POST", path, raw=b"nope", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, {"erase": "yes"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"id_server": 3}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {}), 401, "M_MISSING_TOKEN")
        self.assertEqual((await self.get(f"{C}/account/whoami", alice))[0], 200)


class UIAExpiryTests(UIAMixin):
    use_fake_clock = True

    async def test_session_expires(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        self.clock.advance(16 * 60)
        body = {"new_password": "p1", "auth": password_auth(alice, session)}
        self.assertMatrixError(await self.post(f"{C}/account/password", body, alice), 400, "M_UNKNOWN")

    async def test_activity_keeps_session_alive(self) -> None:
        alice = await self.register("alice")
        session = await self.uia_session("POST", f"{C}/account/password", {"new_password": "p1"}, alice)
        for _ in range(3):
            self.clock.advance(10 * 60)
            code, _ = await self.post(
                f"{C}/account/password", {"new_password": "p1", "auth": {"session": session}}, alice
            )
            self.assertEqual(code, 401)
        body = {"new_password": "p1", "auth": password_auth(alice, session)}
        self.assertEqual((await self.post(f"{C}/account/password", body, alice))[0], 200)


class MultiStageFlowTests(unittest.TestCase):
    """Stage order and progress, on flows longer than any endpoint offers today (no HTTP)."""

    def setUp(self) -> None:
        clock = Clock()
        no_limit = RateLimiter(clock, 0, 0, enabled=False)
        self.uia = UserInteractiveAuth(clock, {}, RegistrationConfig(registration_token="tok"), no_limit)
        self.flows = [["m.login.dummy", "m.login.registration_token"]]

    async def attempt(self, auth: dict[str, Any] | None, key: str = "POST /x") -> dict[str, Any] | None:
        """The 401 body, or None when authentication is complete."""
        try:
            await self.uia.authenticate(UIARequest(key, auth), self.flows)
        except InteractiveAuthRequired as e:
            return e.body
        return None

    async def test_stages_in_order(self) -> None:
        body = await self.attempt({"type": "m.login.dummy"})
        assert body is not None
        self.assertEqual((body["completed"], body.get("errcode")), (["m.login.dummy"], None))
        session = body["session"]
        # Retrying a completed stage is not an error and changes nothing.
        body = await self.attempt({"type": "m.login.dummy", "session": session})
        assert body is not None
        self.assertEqual((body["completed"], body.get("errcode")), (["m.login.dummy"], None))
        self.assertIsNone(
            await self.attempt({"type": "m.login.registration_token", "token": "tok", "session": session})
        )

    async def test_wrong_order_is_refused(self) -> None:
        body = await self.attempt({"type": "m.login.registration_token", "token": "tok"})
        assert body is not None
        self.assertEqual((body["errcode"], body["completed"]), ("M_FORBIDDEN", []))

    async def test_a_shorter_flow_completes(self) -> None:
        self.flows = [["m.login.dummy", "m.login.registration_token"], ["m.login.registration_token"]]
        self.assertIsNone(await self.attempt({"type": "m.login.registration_token", "token": "tok"}))

    async def test_failed_stage_keeps_progress(self) -> None:
        body = await self.attempt({"type": "m.login.dummy"})
        assert body is not None
        session = body["session"]
        body = await self.attempt({"type": "m.login.registration_token", "token": "nope", "session": session})
        assert body is not None
        self.assertEqual(
            (body["errcode"], body["completed"], body["session"]), ("M_FORBIDDEN", ["m.login.dummy"], session)
        )
        self.assertIsNone(
            await self.attempt({"type": "m.login.registration_token", "token": "tok", "session": session})
        )

    async def test_session_is_bound_to_its_request(self) -> None:
        body = await self.attempt(None)
        assert body is not None
        with self.assertRaises(MatrixError) as caught:
            await self.attempt({"type": "m.login.dummy", "session": body["session"]}, key="POST /y")
        self.assertEqual(caught.exception.errcode, "M_FORBIDDEN")


class WhoisTests(HomeserverTestCase):
    async def test_whois_self_admin_and_others(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        bob = await self.register("bob")
        path = f"{C}/admin/whois/{alice.user_id}"
        # A device's connection is its "last seen" record, written in the background: wait for
        # that write itself.
        store = self.hs.accounts
        record = store.record_device_seen
        writes: list[Deferred[None]] = []

        def recording(*args: Any) -> Deferred[None]:
            d = record(*args)
            writes.append(d)
            return d

        store.record_device_seen = recording  # type: ignore[method-assign,assignment]
        code, body = await self.get(path, alice)
        self.assertEqual((code, body["user_id"], list(body["devices"])), (200, alice.user_id, ["PHONE"]))
        await writes[0]
        code, body = await self.get(path, alice)
        connection = body["devices"]["PHONE"]["sessions"][0]["connections"][0]
        self.assertEqual(set(connection), {"ip", "last_seen", "user_agent"})
        self.assertEqual(connection["ip"], "127.0.0.1")
        # admin.yaml lets servers restrict it to the user and server admins.
        self.assertMatrixError(await self.get(path, bob), 403, "M_FORBIDDEN")
        await self.hs.accounts.set_admin(bob.user_id, True)
        self.assertEqual((await self.get(path, bob))[0], 200)
        self.assertMatrixError(await self.get(f"{C}/admin/whois/@nobody:test", bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/admin/whois/nobody", bob), 400, "M_INVALID_PARAM")
