"""Server notices (client-server-api §Server Notices) through the admin API
(``/_synapse/admin/v1/send_server_notice``): the notices room, its tag, the system user."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q

PATH = "/_synapse/admin/v1/send_server_notice"
SYSTEM = "@notices:test"


class ServerNoticesTests(HomeserverTestCase):
    config_overrides = {
        "server_notices": {
            "system_mxid_localpart": "notices",
            "system_mxid_display_name": "Server Notices",
            "system_mxid_avatar_url": "mxc://test/system",
            "room_name": "Notices",
            "room_topic": "From your server",
            "room_avatar_url": "mxc://test/room",
        }
    }

    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")

    async def notice(self, user: TestUser | str, body: str = "Hello", token: TestUser | None = None, **extra: Any) -> str:
        user_id = user if isinstance(user, str) else user.user_id
        code, resp = await self.post(PATH, {"user_id": user_id, "content": {"body": body, **extra}}, token or self.admin)
        self.assertEqual(code, 200, resp)
        return str(resp["event_id"])

    async def invited_rooms(self, user: TestUser) -> dict[str, Any]:
        return (await self.sync(user)).get("rooms", {}).get("invite", {})

    async def test_first_notice_makes_the_room_and_invites(self) -> None:
        event_id = await self.notice(self.alice, "Maintenance tonight", server_notice_type="m.server_notice.usage_limit_reached")
        invites = await self.invited_rooms(self.alice)
        [room] = list(invites)
        stripped = {e["type"]: e for e in invites[room]["invite_state"]["events"]}
        self.assertEqual(stripped["m.room.name"]["content"], {"name": "Notices"})
        self.assertEqual(stripped["m.room.member"]["sender"], SYSTEM)
        # the tag marks the room for clients
        code, tags = await self.get(f"{C}/user/{q(self.alice.user_id)}/rooms/{q(room)}/tags", self.alice)
        self.assertEqual((code, tags), (200, {"tags": {"m.server_notice": {}}}))
        # the invite cannot be rejected
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/leave", {}, self.alice), 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
        await self.join(self.alice, room)
        events = await self.room_events(self.alice, room)
        notice = next(e for e in events if e["event_id"] == event_id)
        self.assertEqual(
            (notice["sender"], notice["type"], notice["content"]),
            (
                SYSTEM,
                "m.room.message",
                {"msgtype": "m.server_notice", "body": "Maintenance tonight", "server_notice_type": "m.server_notice.usage_limit_reached"},
            ),
        )
        self.assertEqual((await self.state_content(self.alice, room, "m.room.topic") or {}).get("topic"), "From your server")
        self.assertEqual(await self.state_content(self.alice, room, "m.room.avatar"), {"url": "mxc://test/room"})
        # the user reads, only the system user speaks
        code, _ = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/t-alice", {"msgtype": "m.text", "body": "hi"}, self.alice)
        self.assertEqual(code, 403)
        # the next notice goes to the same room
        second = await self.notice(self.alice, "Done")
        self.assertEqual([e["event_id"] for e in await self.room_events(self.alice, room)][-1], second)
        self.assertEqual(await self.hs.server_notice_rooms.room_of(self.alice.user_id), room)

    async def test_system_user(self) -> None:
        # nobody may take its name before it exists
        body = {"username": "notices", "password": "pw-pw-pw", "auth": {"type": "m.login.dummy"}}
        self.assertMatrixError(await self.post(f"{C}/register", body), 400, "M_EXCLUSIVE")
        self.assertMatrixError(await self.get(f"{C}/register/available?username=notices"), 400, "M_EXCLUSIVE")
        await self.notice(self.alice)
        user = await self.hs.accounts.get_user(SYSTEM)
        self.assertIsNotNone(user)
        self.assertFalse(user.is_admin)
        self.assertEqual(await self.hs.accounts.get_profile(SYSTEM), ("Server Notices", "mxc://test/system"))
        code, profile = await self.get(f"{C}/profile/{q(SYSTEM)}", self.alice)
        self.assertEqual((code, profile.get("displayname")), (200, "Server Notices"))
        # nobody logs in as it
        for password in ("", "notices", "correct horse"):
            login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "notices"}, "password": password}
            self.assertEqual((await self.post(f"{C}/login", login))[0], 403)

    async def test_left_user_is_invited_back(self) -> None:
        await self.notice(self.alice, "one")
        [room] = list(await self.invited_rooms(self.alice))
        await self.join(self.alice, room)
        await self.leave(self.alice, room)  # leaving once joined is allowed (§Server Notices)
        event_id = await self.notice(self.alice, "two")
        self.assertEqual(await self.membership(room, self.alice), "invite")
        await self.join(self.alice, room)
        self.assertIn(event_id, [e["event_id"] for e in await self.room_events(self.alice, room)])

    async def test_deleted_room_is_replaced(self) -> None:
        await self.notice(self.alice, "one")
        [room] = list(await self.invited_rooms(self.alice))
        await self.join(self.alice, room)
        code, body = await self.delete(f"/_synapse/admin/v2/rooms/{q(room)}", {}, self.admin)
        self.assertEqual(code, 200, body)
        await self.hs.admin_room_tasks.idle()
        await self.notice(self.alice, "two")
        new_room = await self.hs.server_notice_rooms.room_of(self.alice.user_id)
        self.assertNotEqual(new_room, room)
        self.assertEqual(await self.membership(new_room, self.alice), "invite")

    async def test_transaction_ids(self) -> None:
        body = {"user_id": self.alice.user_id, "content": {"body": "once"}}
        first = await self.put(f"{PATH}/txn1", body, self.admin)
        again = await self.put(f"{PATH}/txn1", body, self.admin)
        self.assertEqual(first[0], 200, first)
        self.assertEqual(first, again)
        other = await self.put(f"{PATH}/txn2", body, self.admin)
        self.assertNotEqual(other[1]["event_id"], first[1]["event_id"])
        # another admin's txn1 is another request
        admin2 = await self.register("root2")
        await self.hs.accounts.set_admin(admin2.user_id, True)
        theirs = await self.put(f"{PATH}/txn1", body, admin2)
        self.assertNotEqual(theirs[1]["event_id"], first[1]["event_id"])

    async def test_permissions_and_bad_input(self) -> None:
        body = {"user_id": self.alice.user_id, "content": {"body": "x"}}
        for method, path in (("POST", PATH), ("PUT", f"{PATH}/t")):
            self.assertMatrixError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request(method, path, body, token=self.alice), 403, "M_FORBIDDEN")
        bad_bodies: list[tuple[Any, str]] = [
            ({"content": {"body": "x"}}, "M_MISSING_PARAM"),
            ({"user_id": self.alice.user_id}, "M_MISSING_PARAM"),
            ({"user_id": 5, "content": {"body": "x"}}, "M_BAD_JSON"),
            ({"user_id": self.alice.user_id, "content": "x"}, "M_BAD_JSON"),
            ({"user_id": self.alice.user_id, "content": {}}, "M_BAD_JSON"),
            ({"user_id": self.alice.user_id, "content": {"body": 3}}, "M_BAD_JSON"),
            ({"user_id": "alice", "content": {"body": "x"}}, "M_INVALID_PARAM"),
            ({"user_id": "@bob:elsewhere.example", "content": {"body": "x"}}, "M_INVALID_PARAM"),
            ({"user_id": SYSTEM, "content": {"body": "x"}}, "M_INVALID_PARAM"),
        ]
        for bad, errcode in bad_bodies:
            self.assertMatrixError(await self.post(PATH, bad, self.admin), 400, errcode)
        self.assertMatrixError(await self.post(PATH, {"user_id": "@nobody:test", "content": {"body": "x"}}, self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.request("POST", PATH, raw=b"nope", token=self.admin), 400, "M_NOT_JSON")
        # nothing was sent to anyone
        self.assertEqual(await self.invited_rooms(self.alice), {})
        self.assertIsNone(await self.hs.server_notice_rooms.room_of(self.alice.user_id))


class AutoJoinNoticesTests(HomeserverTestCase):
    config_overrides = {"server_notices": {"system_mxid_localpart": "notices", "auto_join": True}}

    async def test_auto_join(self) -> None:
        admin = await self.register("root")
        await self.hs.accounts.set_admin(admin.user_id, True)
        alice = await self.register("alice")
        code, resp = await self.post(PATH, {"user_id": alice.user_id, "content": {"body": "hi"}}, admin)
        self.assertEqual(code, 200, resp)
        room = await self.hs.server_notice_rooms.room_of(alice.user_id)
        self.assertEqual((await self.get(f"{C}/joined_rooms", alice))[1], {"joined_rooms": [room]})
        self.assertEqual(await self.state_content(alice, room, "m.room.name"), {"name": "Server Notices"})
        self.assertIn(resp["event_id"], [e["event_id"] for e in await self.room_events(alice, room)])


class NoticesNotConfiguredTests(HomeserverTestCase):
    async def test_400_when_not_configured(self) -> None:
        admin = await self.register("root")
        await self.hs.accounts.set_admin(admin.user_id, True)
        alice = await self.register("alice")
        body = {"user_id": alice.user_id, "content": {"body": "hi"}}
        self.assertMatrixError(await self.post(PATH, body, admin), 400, "M_UNKNOWN")
        self.assertMatrixError(await self.put(f"{PATH}/t1", body, admin), 400, "M_UNKNOWN")
        self.assertMatrixError(await self.post(PATH, body, alice), 403, "M_FORBIDDEN")
