"""The Synapse-compatible user admin API (``/_synapse/admin``): server version, users, devices,
sessions, login as a user. Admins only: 401 without a token, 403 for anyone else."""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher

import mxserver
from tests.harness import HomeserverTestCase, TestUser, q

ADMIN = "/_synapse/admin"


class AdminTestCase(HomeserverTestCase):
    """A server with an admin (``self.admin``) and a plain user (``self.alice``)."""

    async def _set_up(self) -> None:
        await super()._set_up()
        #: the admin audit trail's entries: (admin, action, details)
        self.audited: list[tuple[str, str, dict[str, Any]]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "mxserver.admin.audit":
                details = {k[len("admin_"):]: v for k, v in event.items() if k.startswith("admin_")}
                self.audited.append((event["admin"], event["action"], details))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
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


class AuditTests(AdminTestCase):
    async def test_changes_are_audited_with_the_admin(self) -> None:
        await self.put(f"{ADMIN}/v2/users/{q('@bob:test')}", {"password": "pw", "admin": False}, self.admin)
        await self.post(f"{ADMIN}/v1/reset_password/{q(self.alice.user_id)}", {"new_password": "x"}, self.admin)
        await self.post(f"{ADMIN}/v1/deactivate/{q(self.alice.user_id)}", {"erase": True}, self.admin)
        await self.get(f"{ADMIN}/v2/users", self.admin)  # reading is not audited
        self.assertEqual(
            self.audited,
            [
                ("@root:test", "create_user", {"user_id": "@bob:test", "fields": ["admin", "password"]}),
                ("@root:test", "reset_password", {"user_id": "@alice:test", "logout_devices": True}),
                ("@root:test", "deactivate_user", {"user_id": "@alice:test", "erase": True}),
            ],
        )

    async def test_refused_requests_are_not_audited(self) -> None:
        await self.post(f"{ADMIN}/v1/deactivate/{q(self.admin.user_id)}", {}, self.alice)
        await self.post(f"{ADMIN}/v1/deactivate/{q('@ghost:test')}", {}, self.admin)
        self.assertEqual(self.audited, [])


class ServerVersionTests(AdminTestCase):
    async def test_server_version(self) -> None:
        code, body = await self.get(f"{ADMIN}/v1/server_version", self.admin)
        self.assertEqual((code, body), (200, {"server_version": f"mxserver {mxserver.__version__}"}))

    async def test_admins_only(self) -> None:
        await self.assert_admin_only("GET", f"{ADMIN}/v1/server_version")


def uq(user: TestUser | str) -> str:
    return q(user if isinstance(user, str) else user.user_id)


class ListUsersTests(AdminTestCase):
    async def list(self, query: str = "") -> dict[str, Any]:
        code, body = await self.get(f"{ADMIN}/v2/users{query}", self.admin)
        self.assertEqual(code, 200, body)
        return body

    async def test_list_shape_and_default_order(self) -> None:
        await self.set_profile(self.alice, displayname="Alice A", avatar_url="mxc://test/abc")
        body = await self.list()
        self.assertEqual([u["name"] for u in body["users"]], ["@alice:test", "@root:test"])
        self.assertEqual(body["total"], 2)
        self.assertNotIn("next_token", body)
        alice = body["users"][0]
        self.assertEqual(
            {k: alice[k] for k in ("is_guest", "admin", "deactivated", "erased", "displayname", "avatar_url",
                                   "user_type", "shadow_banned", "locked")},
            {"is_guest": False, "admin": False, "deactivated": False, "erased": False, "displayname": "Alice A",
             "avatar_url": "mxc://test/abc", "user_type": None, "shadow_banned": False, "locked": False},
        )
        self.assertIsInstance(alice["creation_ts"], int)
        self.assertTrue(body["users"][1]["admin"])

    async def test_paging(self) -> None:
        for name in ("bob", "carol", "dave"):
            await self.register(name)
        first = await self.list("?limit=2")
        self.assertEqual([u["name"] for u in first["users"]], ["@alice:test", "@bob:test"])
        self.assertEqual((first["total"], first["next_token"]), (5, "2"))
        second = await self.list(f"?limit=2&from={first['next_token']}")
        self.assertEqual([u["name"] for u in second["users"]], ["@carol:test", "@dave:test"])
        third = await self.list(f"?limit=2&from={second['next_token']}")
        self.assertEqual([u["name"] for u in third["users"]], ["@root:test"])
        self.assertNotIn("next_token", third)

    async def test_filters(self) -> None:
        bob = await self.register("bob")
        await self.set_profile(bob, displayname="Robert Smith")
        await self.set_profile(self.alice, displayname="Alice 100%")
        names = lambda body: [u["name"] for u in body["users"]]  # noqa: E731
        self.assertEqual(names(await self.list("?name=SMITH")), ["@bob:test"])
        self.assertEqual(names(await self.list("?name=ali")), ["@alice:test"])
        # LIKE wildcards in the filter are literal characters
        self.assertEqual(names(await self.list("?name=100%25")), ["@alice:test"])
        self.assertEqual(names(await self.list("?name=_")), [])
        self.assertEqual(names(await self.list("?user_id=bo")), ["@bob:test"])
        # user_id searches only the ID: the display name does not match
        self.assertEqual(names(await self.list("?user_id=smith")), [])
        self.assertEqual(names(await self.list("?admins=true")), ["@root:test"])
        self.assertEqual(names(await self.list("?admins=false")), ["@alice:test", "@bob:test"])
        # deactivated users are left out unless asked for
        await self.post(f"{ADMIN}/v1/deactivate/{uq(bob)}", {}, self.admin)
        self.assertEqual(names(await self.list()), ["@alice:test", "@root:test"])
        body = await self.list("?deactivated=true")
        self.assertEqual(names(body), ["@alice:test", "@bob:test", "@root:test"])
        self.assertTrue(body["users"][1]["deactivated"])

    async def test_v3_deactivated_filter(self) -> None:
        await self.post(f"{ADMIN}/v1/deactivate/{q(self.alice.user_id)}", {}, self.admin)
        names = lambda body: [u["name"] for u in body["users"]]  # noqa: E731
        v3 = f"{ADMIN}/v3/users"
        self.assertEqual(names((await self.get(v3, self.admin))[1]), ["@alice:test", "@root:test"])
        self.assertEqual(names((await self.get(f"{v3}?deactivated=true", self.admin))[1]), ["@alice:test"])
        self.assertEqual(names((await self.get(f"{v3}?deactivated=false", self.admin))[1]), ["@root:test"])
        self.assertMatrixError(await self.get(f"{v3}?deactivated=x", self.admin), 400, "M_INVALID_PARAM")
        self.alice = await self.register("bob")  # alice can no longer ask
        await self.assert_admin_only("GET", v3)

    async def test_guests_filter(self) -> None:
        self.hs.config.registration.allow_guests = True
        code, guest = await self.post("/_matrix/client/v3/register?kind=guest", {})
        self.assertEqual(code, 200, guest)
        body = await self.list()
        self.assertIn(guest["user_id"], [u["name"] for u in body["users"]])
        self.assertTrue(next(u for u in body["users"] if u["name"] == guest["user_id"])["is_guest"])
        body = await self.list("?guests=false")
        self.assertEqual([u["name"] for u in body["users"]], ["@alice:test", "@root:test"])

    async def test_order_by(self) -> None:
        bob = await self.register("bob")
        await self.set_profile(bob, displayname="aaa")
        await self.set_profile(self.alice, displayname="zzz")
        await self.set_profile(self.admin, displayname="mmm")
        names = lambda body: [u["name"] for u in body["users"]]  # noqa: E731
        self.assertEqual(names(await self.list("?order_by=displayname")), ["@bob:test", "@root:test", "@alice:test"])
        self.assertEqual(
            names(await self.list("?order_by=displayname&dir=b")), ["@alice:test", "@root:test", "@bob:test"]
        )
        self.assertEqual(names(await self.list("?order_by=admin&dir=b")), ["@root:test", "@alice:test", "@bob:test"])
        self.assertEqual(names(await self.list("?order_by=name&dir=b")), ["@root:test", "@bob:test", "@alice:test"])
        by_creation = names(await self.list("?order_by=creation_ts"))
        self.assertEqual(sorted(by_creation), ["@alice:test", "@bob:test", "@root:test"])
        self.assertEqual(by_creation[0], "@root:test")  # registered first
        self.assertEqual(len((await self.list("?order_by=last_seen_ts"))["users"]), 3)

    async def test_bad_input(self) -> None:
        for query in ("?from=-1", "?limit=-1", "?limit=0", "?from=x", "?order_by=password", "?dir=up", "?guests=maybe",
                      "?admins=2", f"?name={'x' * 300}"):
            self.assertMatrixError(await self.get(f"{ADMIN}/v2/users{query}", self.admin), 400, "M_INVALID_PARAM")

    async def test_admins_only(self) -> None:
        await self.assert_admin_only("GET", f"{ADMIN}/v2/users")


class UserAccountTests(AdminTestCase):
    async def test_get_user(self) -> None:
        await self.set_profile(self.alice, displayname="Alice")
        code, body = await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}", self.admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(
            {k: body[k] for k in ("name", "displayname", "avatar_url", "admin", "deactivated", "is_guest",
                                  "erased", "user_type", "threepids", "external_ids")},
            {"name": "@alice:test", "displayname": "Alice", "avatar_url": None, "admin": False,
             "deactivated": False, "is_guest": False, "erased": False, "user_type": None, "threepids": [],
             "external_ids": []},
        )
        self.assertIsInstance(body["creation_ts"], int)

    async def test_unknown_remote_and_malformed_users(self) -> None:
        self.assertMatrixError(await self.get(f"{ADMIN}/v2/users/{q('@nobody:test')}", self.admin), 404, "M_NOT_FOUND")
        code, body = await self.get(f"{ADMIN}/v2/users/{q('@bob:elsewhere.example')}", self.admin)
        self.assertMatrixError((code, body), 400, "M_UNKNOWN")
        self.assertEqual(body["error"], "Can only look up local users")
        self.assertMatrixError(await self.get(f"{ADMIN}/v2/users/not-a-user-id", self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{q('@bob:elsewhere.example')}", {"password": "pw"}, self.admin),
            400, "M_UNKNOWN",
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/deactivate/{q('@bob:elsewhere.example')}", {}, self.admin), 400, "M_UNKNOWN"
        )

    async def test_create_user(self) -> None:
        body = {"password": "secret pw", "displayname": "Bob B", "avatar_url": "mxc://test/bobpic", "admin": True,
                "threepids": [{"medium": "email", "address": "bob@example.com"}],
                "external_ids": [{"auth_provider": "x", "external_id": "1"}]}
        code, user = await self.put(f"{ADMIN}/v2/users/{q('@bob:test')}", body, self.admin)
        self.assertEqual(code, 201, user)
        self.assertEqual((user["name"], user["displayname"], user["avatar_url"], user["admin"]),
                         ("@bob:test", "Bob B", "mxc://test/bobpic", True))
        # threepids and external IDs are accepted and ignored
        self.assertEqual((user["threepids"], user["external_ids"]), ([], []))
        code, login = await self.login_token(TestUser("@bob:test", "", "", ""), "secret pw")
        self.assertEqual(code, 200, login)
        code, profile = await self.get(f"/_matrix/client/v3/profile/{q('@bob:test')}")
        self.assertEqual(profile, {"displayname": "Bob B", "avatar_url": "mxc://test/bobpic"})

    async def test_user_id_with_a_slash(self) -> None:
        code, user = await self.put(f"{ADMIN}/v2/users/{q('@a/b:test')}", {"displayname": "Slash"}, self.admin)
        self.assertEqual((code, user["name"]), (201, "@a/b:test"))
        code, user = await self.get(f"{ADMIN}/v2/users/{q('@a/b:test')}", self.admin)
        self.assertEqual((code, user["displayname"]), (200, "Slash"))
        code, body = await self.get(f"{ADMIN}/v2/users/{q('@a/b:test')}/devices", self.admin)
        self.assertEqual((code, body), (200, {"devices": [], "total": 0}))

    async def test_create_without_password_or_displayname(self) -> None:
        code, user = await self.put(f"{ADMIN}/v2/users/{q('@carol:test')}", {}, self.admin)
        self.assertEqual(code, 201, user)
        self.assertEqual((user["displayname"], user["admin"]), ("carol", False))
        code, user = await self.put(f"{ADMIN}/v2/users/{q('@dan:test')}", {"displayname": ""}, self.admin)
        self.assertEqual((code, user["displayname"]), (201, None))
        self.assertMatrixError(await self.login_token(TestUser("@carol:test", "", "", ""), ""), 403, "M_FORBIDDEN")

    async def test_modify_user(self) -> None:
        other = await self.login_token(self.alice)
        self.assertEqual(other[0], 200)
        code, user = await self.put(
            f"{ADMIN}/v2/users/{uq(self.alice)}", {"displayname": "New Name", "admin": True}, self.admin
        )
        self.assertEqual(code, 200, user)
        self.assertEqual((user["displayname"], user["admin"]), ("New Name", True))
        # a new password logs every device out by default
        code, _ = await self.put(f"{ADMIN}/v2/users/{uq(self.alice)}", {"password": "another pw"}, self.admin)
        self.assertEqual(code, 200)
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual((await self.login_token(self.alice, "another pw"))[0], 200)
        self.assertMatrixError(await self.login_token(self.alice), 403, "M_FORBIDDEN")

    async def test_modify_password_keeping_devices(self) -> None:
        code, _ = await self.put(
            f"{ADMIN}/v2/users/{uq(self.alice)}", {"password": "another pw", "logout_devices": False}, self.admin
        )
        self.assertEqual(code, 200)
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", self.alice))[0], 200)
        self.assertEqual((await self.login_token(self.alice, "another pw"))[0], 200)

    async def test_clear_profile_fields(self) -> None:
        await self.set_profile(self.alice, displayname="Alice", avatar_url="mxc://test/a")
        code, user = await self.put(
            f"{ADMIN}/v2/users/{uq(self.alice)}", {"displayname": "", "avatar_url": ""}, self.admin
        )
        self.assertEqual((code, user["displayname"], user["avatar_url"]), (200, None, None))

    async def test_display_name_reaches_rooms(self) -> None:
        room = await self.create_room(self.alice)
        await self.put(f"{ADMIN}/v2/users/{uq(self.alice)}", {"displayname": "Renamed"}, self.admin)
        member = await self.room_state(room, "m.room.member", self.alice.user_id)
        self.assertEqual(member["displayname"], "Renamed")

    async def test_deactivate_and_reactivate(self) -> None:
        code, user = await self.put(f"{ADMIN}/v2/users/{uq(self.alice)}", {"deactivated": True}, self.admin)
        self.assertEqual((code, user["deactivated"]), (200, True))
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")
        # re-activating needs a password: the old one is gone
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{uq(self.alice)}", {"deactivated": False}, self.admin), 400, "M_UNKNOWN"
        )
        code, user = await self.put(
            f"{ADMIN}/v2/users/{uq(self.alice)}", {"deactivated": False, "password": "fresh pw"}, self.admin
        )
        self.assertEqual((code, user["deactivated"]), (200, False))
        self.assertEqual((await self.login_token(self.alice, "fresh pw"))[0], 200)

    async def test_cannot_demote_self(self) -> None:
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{uq(self.admin)}", {"admin": False}, self.admin), 400, "M_UNKNOWN"
        )
        self.assertTrue((await self.hs.accounts.get_user(self.admin.user_id)).is_admin)

    async def test_put_bad_input(self) -> None:
        path = f"{ADMIN}/v2/users/{q('@newbie:test')}"
        self.assertMatrixError(await self.request("PUT", path, raw=b"nope", token=self.admin), 400, "M_NOT_JSON")
        for body in ({"password": 1}, {"admin": "yes"}, {"deactivated": 0}, {"displayname": 5},
                     {"threepids": "a@b"}, {"external_ids": {}}, {"logout_devices": "no"}, {"locked": "yes"}):
            self.assertMatrixError(await self.put(path, body, self.admin), 400, "M_BAD_JSON")
        for body in ({"avatar_url": "http://x/y"}, {"displayname": "x" * 300}, {"user_type": "bot"}):
            self.assertMatrixError(await self.put(path, body, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{q('@UPPER:test')}", {}, self.admin), 400, "M_INVALID_USERNAME"
        )
        # nothing was half-written
        self.assertIsNone(await self.hs.accounts.get_user("@newbie:test"))

    async def test_weak_password_writes_nothing(self) -> None:
        self.hs.config.password.minimum_length = 8
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{q('@newbie:test')}", {"password": "short"}, self.admin),
            400, "M_WEAK_PASSWORD",
        )
        self.assertIsNone(await self.hs.accounts.get_user("@newbie:test"))

    async def test_admins_only(self) -> None:
        path = f"{ADMIN}/v2/users/{uq(self.alice)}"
        await self.assert_admin_only("GET", path)
        await self.assert_admin_only("PUT", path, {"admin": True})
        self.assertFalse((await self.hs.accounts.get_user(self.alice.user_id)).is_admin)


class DeactivateTests(AdminTestCase):
    async def test_deactivate(self) -> None:
        code, body = await self.post(f"{ADMIN}/v1/deactivate/{uq(self.alice)}", {}, self.admin)
        self.assertEqual((code, body), (200, {"id_server_unbind_result": "success"}))
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.login_token(self.alice), 403, "M_USER_DEACTIVATED")
        user = (await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}", self.admin))[1]
        self.assertEqual((user["deactivated"], user["erased"]), (True, False))

    async def test_deactivate_with_erase_and_empty_body(self) -> None:
        code, _ = await self.request("POST", f"{ADMIN}/v1/deactivate/{uq(self.alice)}", token=self.admin, raw=b"")
        self.assertEqual(code, 200)
        bob = await self.register("bob")
        code, _ = await self.post(f"{ADMIN}/v1/deactivate/{uq(bob)}", {"erase": True}, self.admin)
        self.assertEqual(code, 200)
        user = (await self.get(f"{ADMIN}/v2/users/{uq(bob)}", self.admin))[1]
        self.assertEqual((user["deactivated"], user["erased"]), (True, True))
        self.assertEqual(await self.hs.erased_users.erased_among([bob.user_id, self.alice.user_id]), {bob.user_id})

    async def test_bad_input(self) -> None:
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/deactivate/{uq(self.alice)}", {"erase": "yes"}, self.admin), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/deactivate/{q('@ghost:test')}", {}, self.admin), 404, "M_NOT_FOUND"
        )
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", self.alice))[0], 200)

    async def test_admins_only(self) -> None:
        await self.assert_admin_only("POST", f"{ADMIN}/v1/deactivate/{uq(self.alice)}", {})
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", self.alice))[0], 200)


class ResetPasswordTests(AdminTestCase):
    async def test_reset_password(self) -> None:
        path = f"{ADMIN}/v1/reset_password/{uq(self.alice)}"
        code, body = await self.post(path, {"new_password": "brand new"}, self.admin)
        self.assertEqual((code, body), (200, {}))
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")
        self.assertEqual((await self.login_token(self.alice, "brand new"))[0], 200)

    async def test_keep_devices(self) -> None:
        path = f"{ADMIN}/v1/reset_password/{uq(self.alice)}"
        code, _ = await self.post(path, {"new_password": "brand new", "logout_devices": False}, self.admin)
        self.assertEqual(code, 200)
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", self.alice))[0], 200)

    async def test_bad_input(self) -> None:
        path = f"{ADMIN}/v1/reset_password/{uq(self.alice)}"
        self.assertMatrixError(await self.post(path, {}, self.admin), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"new_password": 5}, self.admin), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(path, {"new_password": "x", "logout_devices": 1}, self.admin), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/reset_password/{q('@ghost:test')}", {"new_password": "x"}, self.admin),
            404, "M_NOT_FOUND",
        )
        self.assertEqual((await self.login_token(self.alice))[0], 200)

    async def test_admins_only(self) -> None:
        await self.assert_admin_only("POST", f"{ADMIN}/v1/reset_password/{uq(self.alice)}", {"new_password": "x"})
        self.assertEqual((await self.login_token(self.alice))[0], 200)


class SessionsAndRoomsTests(AdminTestCase):
    async def test_whois(self) -> None:
        await self.get("/_matrix/client/v3/account/whoami", self.alice)
        code, body = await self.get(f"{ADMIN}/v1/whois/{uq(self.alice)}", self.admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["user_id"], self.alice.user_id)
        self.assertEqual(list(body["devices"]), [self.alice.device_id])
        # the same answer as the client API's whois
        client = await self.get(f"/_matrix/client/v3/admin/whois/{uq(self.alice)}", self.admin)
        self.assertEqual(client, (200, body))
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/whois/{q('@ghost:test')}", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/whois/{q('@a:b.example')}", self.admin), 400, "M_UNKNOWN")
        await self.assert_admin_only("GET", f"{ADMIN}/v1/whois/{uq(self.alice)}")

    async def test_joined_rooms(self) -> None:
        room1 = await self.create_room(self.alice)
        room2 = await self.create_room(self.alice)
        room3 = await self.create_room(self.alice)
        await self.leave(self.alice, room3)
        code, body = await self.get(f"{ADMIN}/v1/users/{uq(self.alice)}/joined_rooms", self.admin)
        self.assertEqual((code, body), (200, {"joined_rooms": sorted([room1, room2]), "total": 2}))
        code, body = await self.get(f"{ADMIN}/v1/users/{uq(self.admin)}/joined_rooms", self.admin)
        self.assertEqual(body, {"joined_rooms": [], "total": 0})
        self.assertMatrixError(
            await self.get(f"{ADMIN}/v1/users/{q('@ghost:test')}/joined_rooms", self.admin), 404, "M_NOT_FOUND"
        )
        await self.assert_admin_only("GET", f"{ADMIN}/v1/users/{uq(self.alice)}/joined_rooms")


class LoginAsUserTests(AdminTestCase):
    use_fake_clock = True

    async def test_login_as(self) -> None:
        code, body = await self.post(f"{ADMIN}/v1/users/{uq(self.alice)}/login", {}, self.admin)
        self.assertEqual(code, 200, body)
        code, me = await self.get("/_matrix/client/v3/account/whoami", body["access_token"])
        self.assertEqual((code, me["user_id"]), (200, self.alice.user_id))
        # no new device: the user's device list is unchanged
        code, devices = await self.get("/_matrix/client/v3/devices", self.alice)
        self.assertEqual([d["device_id"] for d in devices["devices"]], [self.alice.device_id])
        # /logout ends it
        self.assertEqual((await self.post("/_matrix/client/v3/logout", {}, body["access_token"]))[0], 200)
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", body["access_token"]),
                               401, "M_UNKNOWN_TOKEN")

    async def test_valid_until(self) -> None:
        now_ms = int(self.clock.seconds() * 1000)
        code, body = await self.post(
            f"{ADMIN}/v1/users/{uq(self.alice)}/login", {"valid_until_ms": now_ms + 60_000}, self.admin
        )
        self.assertEqual(code, 200, body)
        token = body["access_token"]
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", token))[0], 200)
        self.clock.advance(61)
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", token), 401, "M_UNKNOWN_TOKEN")

    async def test_refusals(self) -> None:
        self.clock.advance(1000)
        path = f"{ADMIN}/v1/users/{uq(self.alice)}/login"
        self.assertMatrixError(await self.post(path, {"valid_until_ms": "soon"}, self.admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"valid_until_ms": 1}, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/users/{uq(self.admin)}/login", {}, self.admin), 400, "M_UNKNOWN"
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/users/{q('@ghost:test')}/login", {}, self.admin), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/users/{q('@x:remote.example')}/login", {}, self.admin), 400, "M_UNKNOWN"
        )
        await self.assert_admin_only("POST", path, {})


class UserDevicesTests(AdminTestCase):
    async def test_list_and_get(self) -> None:
        await self.get("/_matrix/client/v3/account/whoami", self.alice)  # a "last seen"
        await self.hs.auth.settle()  # written in the background
        code, body = await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}/devices", self.admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["total"], 1)
        device = body["devices"][0]
        self.assertEqual((device["device_id"], device["user_id"]), (self.alice.device_id, self.alice.user_id))
        self.assertEqual(device["last_seen_ip"], "127.0.0.1")
        self.assertIn("last_seen_user_agent", device)
        code, one = await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}/devices/{self.alice.device_id}", self.admin)
        self.assertEqual((code, one), (200, device))
        self.assertMatrixError(
            await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}/devices/NOPE", self.admin), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.get(f"{ADMIN}/v2/users/{q('@ghost:test')}/devices", self.admin),
                               404, "M_NOT_FOUND")

    async def test_add_device(self) -> None:
        path = f"{ADMIN}/v2/users/{q(self.alice.user_id)}/devices"
        self.assertEqual(await self.post(path, {"device_id": "NEWDEVICE"}, self.admin), (200, {}))
        code, devices = await self.get("/_matrix/client/v3/devices", self.alice)
        self.assertEqual(sorted(d["device_id"] for d in devices["devices"]), sorted([self.alice.device_id, "NEWDEVICE"]))
        # an existing device is left as it is
        await self.put(f"{path}/NEWDEVICE", {"display_name": "Named"}, self.admin)
        self.assertEqual(await self.post(path, {"device_id": "NEWDEVICE"}, self.admin), (200, {}))
        self.assertEqual((await self.get(f"{path}/NEWDEVICE", self.admin))[1]["display_name"], "Named")
        self.assertMatrixError(await self.post(path, {}, self.admin), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"device_id": 5}, self.admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"device_id": ""}, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(path, {"device_id": "x" * 300}, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{ADMIN}/v2/users/{q('@ghost:test')}/devices", {"device_id": "D"},
                                               self.admin), 404, "M_NOT_FOUND")
        await self.assert_admin_only("POST", path, {"device_id": "OTHER"})
        self.assertMatrixError(await self.get(f"{path}/OTHER", self.admin), 404, "M_NOT_FOUND")

    async def test_rename(self) -> None:
        path = f"{ADMIN}/v2/users/{uq(self.alice)}/devices/{self.alice.device_id}"
        self.assertEqual(await self.put(path, {"display_name": "Phone"}, self.admin), (200, {}))
        code, devices = await self.get("/_matrix/client/v3/devices", self.alice)
        self.assertEqual(devices["devices"][0]["display_name"], "Phone")
        self.assertMatrixError(await self.put(path, {"display_name": 3}, self.admin), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v2/users/{uq(self.alice)}/devices/NOPE", {"display_name": "x"}, self.admin),
            404, "M_NOT_FOUND",
        )

    async def test_delete_one_and_many(self) -> None:
        second = await self.login_token(self.alice)
        third = await self.login_token(self.alice)
        path = f"{ADMIN}/v2/users/{uq(self.alice)}/devices/{self.alice.device_id}"
        self.assertEqual(await self.delete(path, None, self.admin), (200, {}))
        self.assertMatrixError(await self.get("/_matrix/client/v3/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")
        code, _ = await self.post(
            f"{ADMIN}/v2/users/{uq(self.alice)}/delete_devices",
            {"devices": [second[1]["device_id"], "UNKNOWN"]},
            self.admin,
        )
        self.assertEqual(code, 200)
        code, body = await self.get(f"{ADMIN}/v2/users/{uq(self.alice)}/devices", self.admin)
        self.assertEqual([d["device_id"] for d in body["devices"]], [third[1]["device_id"]])
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v2/users/{uq(self.alice)}/delete_devices", {"devices": "x"}, self.admin),
            400, "M_BAD_JSON",
        )
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v2/users/{uq(self.alice)}/delete_devices", {}, self.admin),
            400, "M_MISSING_PARAM",
        )

    async def test_admins_only(self) -> None:
        base = f"{ADMIN}/v2/users/{uq(self.alice)}"
        await self.assert_admin_only("GET", f"{base}/devices")
        await self.assert_admin_only("GET", f"{base}/devices/{self.alice.device_id}")
        await self.assert_admin_only("PUT", f"{base}/devices/{self.alice.device_id}", {"display_name": "x"})
        await self.assert_admin_only("DELETE", f"{base}/devices/{self.alice.device_id}")
        await self.assert_admin_only("POST", f"{base}/delete_devices", {"devices": [self.alice.device_id]})
        self.assertEqual((await self.get("/_matrix/client/v3/account/whoami", self.alice))[0], 200)


class AdminFlagPushersAndNamesTests(AdminTestCase):
    async def test_admin_flag(self) -> None:
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/admin"
        await self.assert_admin_only("GET", f"{ADMIN}/v1/users/{q(self.admin.user_id)}/admin")
        await self.assert_admin_only("PUT", path, {"admin": True})
        self.assertEqual(await self.get(path, self.admin), (200, {"admin": False}))
        self.assertEqual(await self.put(path, {"admin": True}, self.admin), (200, {}))
        self.assertEqual(await self.get(path, self.admin), (200, {"admin": True}))
        self.assertEqual((await self.get(f"{ADMIN}/v2/users/{q(self.alice.user_id)}", self.admin))[1]["admin"], True)
        self.assertIn(("@root:test", "set_admin", {"user_id": self.alice.user_id, "admin": True}), self.audited)
        # an admin does not demote themself; unknown, remote and bad input
        self.assertMatrixError(
            await self.put(f"{ADMIN}/v1/users/{q(self.admin.user_id)}/admin", {"admin": False}, self.admin), 400, "M_UNKNOWN"
        )
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/users/{q('@nobody:test')}/admin", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.get(f"{ADMIN}/v1/users/{q('@x:remote.example')}/admin", self.admin), 400, "M_UNKNOWN"
        )
        self.assertMatrixError(await self.put(path, {"admin": "yes"}, self.admin), 400, "M_BAD_JSON")

    async def test_user_pushers(self) -> None:
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/pushers"
        self.assertEqual(await self.get(path, self.admin), (200, {"pushers": [], "total": 0}))
        pusher = {"pushkey": "abc", "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
                  "device_display_name": "Phone", "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}}
        code, body = await self.post("/_matrix/client/v3/pushers/set", pusher, self.alice)
        self.assertEqual(code, 200, body)
        code, body = await self.get(path, self.admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["total"], 1)
        self.assertEqual({k: body["pushers"][0][k] for k in pusher}, pusher)
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/users/{q('@nobody:test')}/pushers", self.admin), 404, "M_NOT_FOUND")
        await self.assert_admin_only("GET", path)

    async def test_username_available(self) -> None:
        path = f"{ADMIN}/v1/username_available"
        # sign-up is closed on this server: an admin may still ask
        self.assertEqual(await self.get(f"{path}?username=newname", self.admin), (200, {"available": True}))
        self.assertMatrixError(await self.get(f"{path}?username=alice", self.admin), 400, "M_USER_IN_USE")
        self.assertMatrixError(await self.get(f"{path}?username=Not%20Valid", self.admin), 400, "M_INVALID_USERNAME")
        self.assertMatrixError(await self.get(path, self.admin), 400, "M_MISSING_PARAM")
        await self.assert_admin_only("GET", f"{path}?username=newname")
