"""Extended profile fields (profile.yaml v1.16): GET/PUT/DELETE /profile/{userId}/{keyName} for
m.tz and custom keys, GET /profile/{userId} with every field, the size limits, and what
displayname and avatar_url keep doing."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, q

JOB = "org.example.job_title"


def path(user_id: str, field: str | None = None) -> str:
    return f"{C}/profile/{q(user_id)}" + (f"/{q(field)}" if field else "")


class ProfileFieldTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.me = self.alice.user_id

    async def put_field(self, field: str, value: Any) -> tuple[int, Any]:
        return await self.put(path(self.me, field), {field: value}, self.alice)

    async def test_set_get_delete(self) -> None:
        self.assertEqual(await self.put_field("m.tz", "Europe/London"), (200, {}))
        self.assertEqual(await self.put_field(JOB, {"title": "Builder", "since": 2020}), (200, {}))
        self.assertEqual(await self.put_field("com.example.flag", None), (200, {}))  # stored, not deleted
        self.assertEqual(await self.get(path(self.me, "m.tz")), (200, {"m.tz": "Europe/London"}))
        self.assertEqual(await self.get(path(self.me, JOB)), (200, {JOB: {"title": "Builder", "since": 2020}}))
        self.assertEqual(await self.get(path(self.me, "com.example.flag")), (200, {"com.example.flag": None}))
        self.assertEqual(
            await self.get(path(self.me)),
            (200, {"displayname": "alice", "m.tz": "Europe/London", JOB: {"title": "Builder", "since": 2020},
                   "com.example.flag": None}),
        )
        # a new value replaces the old one
        self.assertEqual(await self.put_field(JOB, "Architect"), (200, {}))
        self.assertEqual(await self.get(path(self.me, JOB)), (200, {JOB: "Architect"}))
        # delete: gone; deleting what is not set succeeds
        self.assertEqual(await self.delete(path(self.me, JOB), None, self.alice), (200, {}))
        self.assertMatrixError(await self.get(path(self.me, JOB)), 404, "M_NOT_FOUND")
        self.assertEqual(await self.delete(path(self.me, JOB), None, self.alice), (200, {}))
        self.assertMatrixError(await self.get(path(self.me, "org.example.never")), 404, "M_NOT_FOUND")
        # displayname through DELETE clears it
        self.assertEqual(await self.delete(path(self.me, "displayname"), None, self.alice), (200, {}))
        self.assertEqual(await self.get(path(self.me)), (200, {"m.tz": "Europe/London", "com.example.flag": None}))

    async def test_displayname_still_reaches_rooms(self) -> None:
        room = await self.create_room(self.alice)
        self.assertEqual(await self.put_field("displayname", "Alice"), (200, {}))
        self.assertEqual(await self.put_field("m.tz", "Europe/Paris"), (200, {}))
        member = await self.room_state(room, "m.room.member", self.me)
        assert member is not None
        self.assertEqual(member["displayname"], "Alice")
        self.assertNotIn("m.tz", member)
        self.assertEqual(await self.delete(path(self.me, "displayname"), None, self.alice), (200, {}))
        member = await self.room_state(room, "m.room.member", self.me)
        assert member is not None
        self.assertNotIn("displayname", member)

    async def test_bad_keys_and_values(self) -> None:
        for key in ("Org.example.x", "nodot", "org.Example", "1org.example", "org.example!", "org/example"):
            self.assertMatrixError(await self.put_field(key, "x"), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.get(path(self.me, key)), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.delete(path(self.me, key), None, self.alice), 400, "M_INVALID_PARAM")
        # m. is the spec's: only the keys it defines may be set
        self.assertMatrixError(await self.put_field("m.pronouns", "they"), 400, "M_INVALID_PARAM")
        long_key = "org.example." + "a" * 250
        self.assertMatrixError(await self.put_field(long_key, "x"), 400, "M_KEY_TOO_LARGE")
        self.assertMatrixError(await self.put_field("m.tz", 5), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put_field("m.tz", None), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path(self.me, JOB), {}, self.alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(path(self.me, JOB), {"m.tz": "x"}, self.alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(path(self.me, JOB), {JOB: "x", "other": 1}, self.alice), 400,
                               "M_BAD_JSON")
        self.assertMatrixError(await self.request("PUT", path(self.me, JOB), raw=b"{", token=self.alice), 400,
                               "M_NOT_JSON")
        self.assertMatrixError(await self.put(path(self.me, JOB), [JOB], self.alice), 400, "M_BAD_JSON")
        # somebody else's profile, no token, unknown users
        bob = await self.register("bob")
        self.assertMatrixError(await self.put(path(self.me, JOB), {JOB: "x"}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.delete(path(self.me, "m.tz"), None, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.put(path(self.me, JOB), {JOB: "x"}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(path("@nobody:test", JOB)), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(path("nobody", JOB)), 400, "M_INVALID_PARAM")
        # nothing was written
        self.assertEqual(await self.get(path(self.me)), (200, {"displayname": "alice"}))

    async def test_profile_size_limit(self) -> None:
        big = "x" * 40_000
        self.assertEqual(await self.put_field("org.example.a", big), (200, {}))
        self.assertMatrixError(await self.put_field("org.example.b", big), 400, "M_PROFILE_TOO_LARGE")
        self.assertMatrixError(await self.put_field("org.example.a", "y" * 70_000), 400, "M_PROFILE_TOO_LARGE")
        # the old value is kept, and what fits still fits
        self.assertEqual(await self.get(path(self.me, "org.example.a")), (200, {"org.example.a": big}))
        self.assertEqual(await self.put_field("org.example.b", "x" * 20_000), (200, {}))
        self.assertEqual(await self.put_field("displayname", "Alice"), (200, {}))
        # replacing a field counts its new value, not both
        self.assertEqual(await self.put_field("org.example.a", "z" * 40_000), (200, {}))
        # up to 64 KiB in all
        self.assertEqual(await self.delete(path(self.me, "org.example.b"), None, self.alice), (200, {}))
        code, whole = await self.get(path(self.me))
        from mxserver.storage.profiles import encoded_size

        room = 64 * 1024 - encoded_size({**whole, "org.example.c": ""})
        self.assertEqual(await self.put_field("org.example.c", "c" * room), (200, {}))
        self.assertMatrixError(await self.put_field("org.example.d", ""), 400, "M_PROFILE_TOO_LARGE")

    async def test_deactivation_removes_the_fields(self) -> None:
        self.assertEqual(await self.put_field(JOB, "x"), (200, {}))
        auth = {"type": "m.login.password", "password": "correct horse",
                "identifier": {"type": "m.id.user", "user": "alice"}}
        code, body = await self.post(f"{C}/account/deactivate", {"auth": auth}, self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.hs.profiles.store.get_whole_profile(self.me), {})

    async def test_capability(self) -> None:
        code, body = await self.get(f"{C}/capabilities", self.alice)
        caps = body["capabilities"]
        self.assertEqual(caps["m.profile_fields"], {"enabled": True})
        # the deprecated ones agree with it (capabilities.yaml)
        self.assertEqual((caps["m.set_displayname"], caps["m.set_avatar_url"]), ({"enabled": True}, {"enabled": True}))
