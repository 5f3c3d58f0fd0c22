"""The registration-token admin API (``/_synapse/admin/v1/registration_tokens``) and the tokens it
makes at sign-up (``m.login.registration_token``): valid, counted, used up, expired."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from mxserver.accounts.uia import DUMMY, REGISTRATION_TOKEN, UIARequest
from mxserver.errors import InteractiveAuthRequired
from tests.harness import HomeserverTestCase, TestUser

PATH = "/_synapse/admin/v1/registration_tokens"
REGISTER = "/_matrix/client/v3/register"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"


class TokenTestCase(HomeserverTestCase):
    # Sign-up only with a token; the admin is made before that through the server itself.
    config_overrides = {"registration": {"enabled": False, "requires_token": True}}
    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        self.clock.advance(1_000_000)
        user_id = await self.hs.registrar.register_user("root", "correct horse", admin=True)
        _, token = await self.hs.devices.create_session(user_id, None, None)
        self.admin = TestUser(user_id, token, "", "correct horse")
        plain = await self.hs.registrar.register_user("alice", "correct horse")
        _, token = await self.hs.devices.create_session(plain, None, None)
        self.alice = TestUser(plain, token, "", "correct horse")

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def new_token(self, **body: Any) -> dict[str, Any]:
        code, token = await self.post(f"{PATH}/new", body, self.admin)
        self.assertEqual(code, 200, token)
        return token

    async def token(self, token: str) -> dict[str, Any]:
        code, body = await self.get(f"{PATH}/{token}", self.admin)
        self.assertEqual(code, 200, body)
        return body

    async def sign_up(self, username: str, token: str) -> tuple[int, Any]:
        body = {"username": username, "password": "pw"}
        code, resp = await self.post(REGISTER, body)
        self.assertEqual(code, 401, resp)
        auth = {"type": "m.login.registration_token", "token": token, "session": resp["session"]}
        return await self.post(REGISTER, {**body, "auth": auth})


class AdminTokenApiTests(TokenTestCase):
    async def test_create_with_defaults(self) -> None:
        token = await self.new_token()
        self.assertRegex(token["token"], re.compile(r"^[A-Za-z0-9._~-]{16}$"))
        self.assertEqual({k: v for k, v in token.items() if k != "token"},
                         {"uses_allowed": None, "pending": 0, "completed": 0, "expiry_time": None})
        self.assertEqual(await self.token(token["token"]), token)
        self.assertEqual(len((await self.new_token(length=5))["token"]), 5)

    async def test_create_given(self) -> None:
        expiry = self.now_ms() + 60_000
        token = await self.new_token(token="abc.DEF_9~-", uses_allowed=3, expiry_time=expiry)
        self.assertEqual(token, {"token": "abc.DEF_9~-", "uses_allowed": 3, "pending": 0, "completed": 0,
                                 "expiry_time": expiry})
        self.assertMatrixError(await self.post(f"{PATH}/new", {"token": "abc.DEF_9~-"}, self.admin),
                               400, "M_INVALID_PARAM")

    async def test_list_and_valid_filter(self) -> None:
        await self.new_token(token="a-open")
        await self.new_token(token="b-used", uses_allowed=0)
        await self.new_token(token="c-soon", expiry_time=self.now_ms() + 1000)
        code, body = await self.get(PATH, self.admin)
        self.assertEqual([t["token"] for t in body["registration_tokens"]], ["a-open", "b-used", "c-soon"])
        valid = lambda body: [t["token"] for t in body["registration_tokens"]]  # noqa: E731
        self.assertEqual(valid((await self.get(f"{PATH}?valid=true", self.admin))[1]), ["a-open", "c-soon"])
        self.assertEqual(valid((await self.get(f"{PATH}?valid=false", self.admin))[1]), ["b-used"])
        self.clock.advance(2)
        self.assertEqual(valid((await self.get(f"{PATH}?valid=true", self.admin))[1]), ["a-open"])
        self.assertEqual(valid((await self.get(f"{PATH}?valid=false", self.admin))[1]), ["b-used", "c-soon"])
        self.assertMatrixError(await self.get(f"{PATH}?valid=maybe", self.admin), 400, "M_INVALID_PARAM")

    async def test_update(self) -> None:
        await self.new_token(token="tok", uses_allowed=1)
        expiry = self.now_ms() + 5000
        code, body = await self.put(f"{PATH}/tok", {"expiry_time": expiry}, self.admin)
        self.assertEqual((code, body["uses_allowed"], body["expiry_time"]), (200, 1, expiry))
        code, body = await self.put(f"{PATH}/tok", {"uses_allowed": None}, self.admin)
        self.assertEqual((code, body["uses_allowed"], body["expiry_time"]), (200, None, expiry))
        code, body = await self.put(f"{PATH}/tok", {}, self.admin)
        self.assertEqual((code, body["uses_allowed"], body["expiry_time"]), (200, None, expiry))
        self.assertMatrixError(await self.put(f"{PATH}/nope", {"uses_allowed": 1}, self.admin), 404, "M_NOT_FOUND")

    async def test_delete(self) -> None:
        await self.new_token(token="tok")
        self.assertEqual(await self.delete(f"{PATH}/tok", None, self.admin), (200, {}))
        self.assertMatrixError(await self.get(f"{PATH}/tok", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{PATH}/tok", None, self.admin), 404, "M_NOT_FOUND")

    async def test_unknown_token(self) -> None:
        code, body = await self.get(f"{PATH}/1234", self.admin)
        self.assertMatrixError((code, body), 404, "M_NOT_FOUND")
        self.assertEqual(body["error"], "No such registration token: 1234")

    async def test_bad_input(self) -> None:
        new = f"{PATH}/new"
        self.assertMatrixError(await self.request("POST", new, raw=b"{", token=self.admin), 400, "M_NOT_JSON")
        for body in ({"token": "has space"}, {"token": "x" * 65}, {"token": ""}, {"length": 0}, {"length": 65},
                     {"uses_allowed": -1}, {"expiry_time": self.now_ms() - 1}):
            self.assertMatrixError(await self.post(new, body, self.admin), 400, "M_INVALID_PARAM")
        for body in ({"token": 5}, {"length": "8"}, {"uses_allowed": "1"}, {"expiry_time": 1.5},
                     {"uses_allowed": True}):
            self.assertMatrixError(await self.post(new, body, self.admin), 400, "M_BAD_JSON")
        await self.new_token(token="tok")
        for body in ({"uses_allowed": -2}, {"expiry_time": 1}):
            self.assertMatrixError(await self.put(f"{PATH}/tok", body, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{PATH}/tok", {"uses_allowed": "x"}, self.admin), 400, "M_BAD_JSON")
        self.assertEqual((await self.get(PATH, self.admin))[1]["registration_tokens"],
                         [{"token": "tok", "uses_allowed": None, "pending": 0, "completed": 0, "expiry_time": None}])

    async def test_admins_only(self) -> None:
        await self.new_token(token="tok")
        for method, path, body in (("GET", PATH, None), ("POST", f"{PATH}/new", {}), ("GET", f"{PATH}/tok", None),
                                   ("PUT", f"{PATH}/tok", {"uses_allowed": 0}), ("DELETE", f"{PATH}/tok", None)):
            self.assertMatrixError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request(method, path, body, token=self.alice), 403, "M_FORBIDDEN")
        self.assertEqual((await self.token("tok"))["uses_allowed"], None)
        self.assertEqual(len((await self.get(PATH, self.admin))[1]["registration_tokens"]), 1)


class TokenSignUpTests(TokenTestCase):
    async def test_sign_up_counts_and_uses_up(self) -> None:
        await self.new_token(token="once", uses_allowed=1)
        self.assertEqual(await self.get(f"{VALIDITY}?token=once"), (200, {"valid": True}))
        code, body = await self.sign_up("bob", "once")
        self.assertEqual((code, body.get("user_id")), (200, "@bob:test"))
        token = await self.token("once")
        self.assertEqual((token["pending"], token["completed"]), (0, 1))
        # used up: invalid for the next sign-up
        self.assertEqual(await self.get(f"{VALIDITY}?token=once"), (200, {"valid": False}))
        code, body = await self.sign_up("carol", "once")
        self.assertEqual((code, body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertIsNone(await self.hs.accounts.get_user("@carol:test"))
        # more uses allowed: valid again
        await self.put(f"{PATH}/once", {"uses_allowed": 2}, self.admin)
        self.assertEqual((await self.sign_up("carol", "once"))[0], 200)
        self.assertEqual((await self.token("once"))["completed"], 2)

    async def test_unknown_and_expired_tokens_refused(self) -> None:
        await self.new_token(token="soon", expiry_time=self.now_ms() + 1000)
        code, body = await self.sign_up("bob", "unknown")
        self.assertEqual((code, body["errcode"]), (401, "M_FORBIDDEN"))
        self.clock.advance(2)
        self.assertEqual(await self.get(f"{VALIDITY}?token=soon"), (200, {"valid": False}))
        code, body = await self.sign_up("bob", "soon")
        self.assertEqual((code, body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertIsNone(await self.hs.accounts.get_user("@bob:test"))

    async def test_dummy_is_not_enough(self) -> None:
        code, body = await self.post(REGISTER, {"username": "bob", "password": "pw", "auth": {"type": DUMMY}})
        self.assertEqual((code, body["errcode"]), (401, "M_UNRECOGNIZED"))

    async def test_pending_use_and_its_release(self) -> None:
        # A session that passed the token stage but has not registered holds one pending use,
        # so a one-use token cannot start a second sign-up; when it expires the use comes back.
        await self.new_token(token="once", uses_allowed=1)
        flows = [[REGISTRATION_TOKEN, DUMMY]]
        with self.assertRaises(InteractiveAuthRequired):
            await self.hs.uia.authenticate(UIARequest("k", {"type": REGISTRATION_TOKEN, "token": "once"}), flows,
                                           keep=True)
        self.assertEqual((await self.token("once"))["pending"], 1)
        self.assertEqual(await self.get(f"{VALIDITY}?token=once"), (200, {"valid": False}))
        code, body = await self.sign_up("bob", "once")
        self.assertEqual((code, body["errcode"]), (401, "M_FORBIDDEN"))
        self.clock.advance(self.hs.uia.SESSION_IDLE_SECONDS + 1)
        code, body = await self.post(REGISTER, {"username": "bob", "password": "pw"})  # expires old sessions
        self.assertEqual(code, 401)
        # the use is given back in the background of that request
        for _ in range(100):
            if (await self.token("once"))["pending"] == 0:
                break
            await deferLater(reactor, 0.02)
        self.assertEqual((await self.token("once"))["pending"], 0)
        self.assertEqual((await self.sign_up("bob", "once"))[0], 200)


class ConfigTokenStillWorksTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": False, "registration_token": "from-config"}}

    async def test_config_token(self) -> None:
        code, body = await self.post(REGISTER, {"username": "bob", "password": "pw"})
        auth = {"type": "m.login.registration_token", "token": "from-config", "session": body["session"]}
        code, body = await self.post(REGISTER, {"username": "bob", "password": "pw", "auth": auth})
        self.assertEqual(code, 200, body)
        # it is not a database token: the admin API does not list it
        admin = await self.hs.registrar.register_user("root", "pw", admin=True)
        _, token = await self.hs.devices.create_session(admin, None, None)
        self.assertEqual(await self.get(PATH, token), (200, {"registration_tokens": []}))
