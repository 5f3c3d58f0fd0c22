"""Account locking and suspension (client-server-api §Account locking, §Account suspension;
admin.yaml's ``/_matrix/client/v1/admin/lock`` and ``/admin/suspend``), and the same state
through Synapse's admin API. Admins only; audited; the effects seen by the user."""

from __future__ import annotations

from typing import Any

from tests.harness import C, TestUser, q
from tests.harness.appservice import AS_TOKEN, AppServiceTestCase
from tests.test_admin_users import ADMIN, AdminTestCase

V1 = "/_matrix/client/v1/admin"


def lock_path(user: TestUser | str) -> str:
    return f"{V1}/lock/{q(user if isinstance(user, str) else user.user_id)}"


def suspend_path(user: TestUser | str) -> str:
    return f"{V1}/suspend/{q(user if isinstance(user, str) else user.user_id)}"


class ModerationApiTests(AdminTestCase):
    async def test_admins_only_and_checked_before_the_lookup(self) -> None:
        for path, key in ((lock_path, "locked"), (suspend_path, "suspended")):
            for target in (self.alice.user_id, "@nobody:test", "@x:elsewhere"):
                await self.assert_admin_only("GET", path(target))
                await self.assert_admin_only("PUT", path(target), {key: True})

    async def test_refusals(self) -> None:
        other_admin = await self.register("root2")
        await self.hs.accounts.set_admin(other_admin.user_id, True)
        gone = await self.register("gone")
        self.assertEqual((await self.post(f"{ADMIN}/v1/deactivate/{q(gone.user_id)}", {}, self.admin))[0], 200)
        self.audited.clear()
        for path, key in ((lock_path, "locked"), (suspend_path, "suspended")):
            for method, body in (("GET", None), ("PUT", {key: True})):
                self.assertMatrixError(await self.request(method, path("@nobody:test"), body, token=self.admin),
                                       404, "M_NOT_FOUND")
                self.assertMatrixError(await self.request(method, path(gone), body, token=self.admin),
                                       404, "M_NOT_FOUND")
                self.assertMatrixError(await self.request(method, path("@x:elsewhere"), body, token=self.admin),
                                       400, "M_INVALID_PARAM")
                self.assertMatrixError(await self.request(method, path("alice"), body, token=self.admin),
                                       400, "M_INVALID_PARAM")
                self.assertMatrixError(await self.request(method, path(other_admin), body, token=self.admin),
                                       403, "M_FORBIDDEN")
            # an admin may look at their own status but not change it
            self.assertEqual(await self.get(path(self.admin), self.admin), (200, {key: False}))
            self.assertMatrixError(await self.put(path(self.admin), {key: True}, self.admin), 403, "M_FORBIDDEN")
            self.assertMatrixError(
                await self.request("PUT", path(self.alice), raw=b"{", token=self.admin), 400, "M_NOT_JSON"
            )
            for bad in ({}, {key: "yes"}, {key: 1}):
                code, body = await self.put(path(self.alice), bad, self.admin)
                self.assertEqual(code, 400, body)
                self.assertIn(body["errcode"], ("M_BAD_JSON", "M_MISSING_PARAM"))
            self.assertEqual(await self.get(path(self.alice), self.admin), (200, {key: False}))
        self.assertEqual(self.audited, [])

    async def test_capabilities(self) -> None:
        code, body = await self.get(f"{C}/capabilities", self.admin)
        self.assertEqual(body["capabilities"]["m.account_moderation"], {"lock": True, "suspend": True})
        self.assertEqual(body["capabilities"]["m.profile_fields"], {"enabled": True})
        code, body = await self.get(f"{C}/capabilities", self.alice)
        self.assertNotIn("m.account_moderation", body["capabilities"])


class LockTests(AdminTestCase):
    async def lock(self, locked: bool) -> None:
        self.assertEqual(await self.put(lock_path(self.alice), {"locked": locked}, self.admin), (200, {"locked": locked}))

    async def test_a_locked_account(self) -> None:
        code, second = await self.login_token(self.alice)
        self.assertEqual(code, 200)
        self.assertEqual(await self.get(lock_path(self.alice), self.admin), (200, {"locked": False}))
        await self.lock(True)
        self.assertEqual(await self.get(lock_path(self.alice), self.admin), (200, {"locked": True}))
        self.assertEqual(self.audited, [("@root:test", "lock_user", {"user_id": "@alice:test", "locked": True})])
        # every endpoint answers M_USER_LOCKED with soft_logout...
        for method, path in (("GET", f"{C}/account/whoami"), ("GET", f"{C}/sync"), ("POST", f"{C}/createRoom"),
                             ("GET", f"{C}/capabilities"), ("GET", "/_matrix/client/v1/media/config")):
            code, body = await self.request(method, path, {} if method == "POST" else None, token=self.alice)
            self.assertEqual((code, body["errcode"], body["soft_logout"]), (401, "M_USER_LOCKED", True), path)
        # ... no new session can be had...
        code, body = await self.login_token(self.alice)
        self.assertEqual((code, body["errcode"], body["soft_logout"]), (401, "M_USER_LOCKED", True))
        # ... but logging out works
        self.assertEqual(await self.post(f"{C}/logout", {}, second["access_token"]), (200, {}))
        # the other session was kept: it works again once unlocked
        await self.lock(False)
        code, body = await self.get(f"{C}/account/whoami", self.alice)
        self.assertEqual((code, body["user_id"]), (200, "@alice:test"))
        self.assertEqual((await self.login_token(self.alice))[0], 200)

    async def test_logout_all_while_locked(self) -> None:
        await self.lock(True)
        self.assertEqual(await self.post(f"{C}/logout/all", {}, self.alice), (200, {}))
        await self.lock(False)
        self.assertMatrixError(await self.get(f"{C}/account/whoami", self.alice), 401, "M_UNKNOWN_TOKEN")

    async def test_synapse_admin_api_shares_the_state(self) -> None:
        user_path = f"{ADMIN}/v2/users/{q(self.alice.user_id)}"
        code, body = await self.put(user_path, {"locked": True}, self.admin)
        self.assertEqual((code, body["locked"]), (200, True))
        self.assertEqual(await self.get(lock_path(self.alice), self.admin), (200, {"locked": True}))
        self.assertMatrixError(await self.get(f"{C}/account/whoami", self.alice), 401, "M_USER_LOCKED")
        await self.lock(False)
        code, body = await self.get(user_path, self.admin)
        self.assertEqual((code, body["locked"]), (200, False))
        await self.lock(True)
        code, body = await self.get(f"{ADMIN}/v2/users?order_by=locked&dir=b", self.admin)
        self.assertEqual([(u["name"], u["locked"]) for u in body["users"]][0], ("@alice:test", True))
        # a user created locked
        code, body = await self.put(f"{ADMIN}/v2/users/{q('@bob:test')}", {"password": "pw", "locked": True},
                                    self.admin)
        self.assertEqual((code, body["locked"]), (201, True))


class SuspensionTests(AdminTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)
        self.own_event = await self.send_message(self.alice, self.room, "mine")
        self.bobs_event = await self.send_message(self.bob, self.room, "his")
        self.other_room = await self.create_room(self.bob, preset="public_chat")

    async def suspend(self, suspended: bool) -> None:
        self.assertEqual(
            await self.put(suspend_path(self.alice), {"suspended": suspended}, self.admin),
            (200, {"suspended": suspended}),
        )

    def assert_suspended(self, result: tuple[int, Any]) -> None:
        self.assertMatrixError(result, 403, "M_USER_SUSPENDED")

    async def test_what_a_suspended_account_may_not_do(self) -> None:
        await self.suspend(True)
        self.assertEqual(await self.get(suspend_path(self.alice), self.admin), (200, {"suspended": True}))
        room = q(self.room)
        profile = f"{C}/profile/{q(self.alice.user_id)}"
        self.assert_suspended(await self.put(f"{C}/rooms/{room}/send/m.room.message/t1", {"body": "x"}, self.alice))
        self.assert_suspended(await self.put(f"{C}/rooms/{room}/state/m.room.topic", {"topic": "x"}, self.alice))
        self.assert_suspended(await self.post(f"{C}/join/{q(self.other_room)}", {}, self.alice))
        self.assert_suspended(await self.post(f"{C}/rooms/{q(self.other_room)}/join", {}, self.alice))
        self.assert_suspended(await self.post(f"{C}/knock/{q(self.other_room)}", {}, self.alice))
        self.assert_suspended(await self.post(f"{C}/rooms/{room}/invite", {"user_id": "@root:test"}, self.alice))
        self.assert_suspended(await self.post(f"{C}/rooms/{room}/kick", {"user_id": self.bob.user_id}, self.alice))
        self.assert_suspended(await self.post(f"{C}/rooms/{room}/ban", {"user_id": self.bob.user_id}, self.alice))
        self.assert_suspended(await self.post(f"{C}/createRoom", {}, self.alice))
        self.assert_suspended(await self.put(f"{profile}/displayname", {"displayname": "A"}, self.alice))
        self.assert_suspended(await self.put(f"{profile}/org.example.job", {"org.example.job": "x"}, self.alice))
        self.assert_suspended(await self.delete(f"{profile}/displayname", None, self.alice))
        # redacting someone else's event, by either endpoint
        self.assert_suspended(await self.put(f"{C}/rooms/{room}/redact/{q(self.bobs_event)}/r1", {}, self.alice))
        self.assert_suspended(await self.put(
            f"{C}/rooms/{room}/send/m.room.redaction/r2", {"redacts": self.bobs_event}, self.alice
        ))
        # nothing was sent
        code, body = await self.get(f"{C}/rooms/{room}/messages?dir=b&limit=1", self.alice)
        self.assertEqual(body["chunk"][0]["event_id"], self.bobs_event)
        self.assertEqual(self.audited, [("@root:test", "suspend_user", {"user_id": "@alice:test", "suspended": True})])

    async def test_what_a_suspended_account_may_still_do(self) -> None:
        await self.suspend(True)
        room = q(self.room)
        self.assertEqual((await self.get(f"{C}/sync", self.alice))[0], 200)
        self.assertEqual((await self.get(f"{C}/rooms/{room}/messages?dir=b", self.alice))[0], 200)
        self.assertEqual((await self.get(f"{C}/profile/{q(self.alice.user_id)}", self.alice))[0], 200)
        code, body = await self.put(f"{C}/rooms/{room}/redact/{q(self.own_event)}/r1", {}, self.alice)
        self.assertEqual(code, 200, body)
        # logging in makes another (suspended) session
        code, login = await self.login_token(self.alice)
        self.assertEqual(code, 200)
        self.assert_suspended(await self.post(f"{C}/createRoom", {}, login["access_token"]))
        self.assertEqual(await self.post(f"{C}/rooms/{room}/leave", {}, self.alice), (200, {}))
        self.assertEqual(await self.post(f"{C}/logout", {}, login["access_token"]), (200, {}))

    async def test_unsuspended(self) -> None:
        await self.suspend(True)
        await self.suspend(False)
        await self.send_message(self.alice, self.room, "back")
        await self.join(self.alice, self.other_room)

    async def test_synapse_admin_api_shares_the_state(self) -> None:
        path = f"{ADMIN}/v1/suspend/{q(self.alice.user_id)}"
        await self.assert_admin_only("PUT", path, {"suspend": True})
        self.assertEqual(await self.put(path, {"suspend": True}, self.admin), (200, {"user_@alice:test_suspended": True}))
        self.assertEqual(await self.get(suspend_path(self.alice), self.admin), (200, {"suspended": True}))
        code, body = await self.get(f"{ADMIN}/v2/users/{q(self.alice.user_id)}", self.admin)
        self.assertEqual((code, body["suspended"]), (200, True))
        self.assert_suspended(await self.post(f"{C}/createRoom", {}, self.alice))
        self.assertMatrixError(await self.put(path, {"suspend": "yes"}, self.admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(f"{ADMIN}/v1/suspend/{q('@nobody:test')}", {"suspend": True},
                                              self.admin), 404, "M_NOT_FOUND")
        self.assertEqual(await self.put(path, {"suspend": False}, self.admin), (200, {"user_@alice:test_suspended": False}))
        self.assertEqual(await self.get(suspend_path(self.alice), self.admin), (200, {"suspended": False}))
        self.assertEqual([a[1] for a in self.audited], ["suspend_user", "suspend_user"])


class AppServiceUserTests(AppServiceTestCase):
    """An application service acting as one of its users meets that user's lock or suspension."""

    async def test_locked_and_suspended_puppets(self) -> None:
        admin = await self.register("root")
        await self.hs.accounts.set_admin(admin.user_id, True)
        puppet = await self.register_as_user("_bridge_alice")
        whoami = self.as_path(f"{C}/account/whoami", puppet)
        create = self.as_path(f"{C}/createRoom", puppet)
        self.assertEqual((await self.get(whoami, AS_TOKEN))[0], 200)
        self.assertEqual((await self.put(suspend_path(puppet), {"suspended": True}, admin))[0], 200)
        self.assertMatrixError(await self.post(create, {}, AS_TOKEN), 403, "M_USER_SUSPENDED")
        self.assertEqual((await self.get(whoami, AS_TOKEN))[0], 200)
        self.assertEqual((await self.put(lock_path(puppet), {"locked": True}, admin))[0], 200)
        self.assertMatrixError(await self.get(whoami, AS_TOKEN), 401, "M_USER_LOCKED")
        # the service itself is neither
        self.assertEqual((await self.post(f"{C}/createRoom", {}, AS_TOKEN))[0], 200)
        self.assertEqual((await self.put(lock_path(puppet), {"locked": False}, admin))[0], 200)
        self.assertEqual((await self.put(suspend_path(puppet), {"suspended": False}, admin))[0], 200)
        self.assertEqual((await self.post(create, {}, AS_TOKEN))[0], 200)
