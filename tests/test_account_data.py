"""Account data, room tags, their sync feed and stream; the key backup probe."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from mxserver.homeserver import Homeserver
from tests.harness import C, HomeserverTestCase

ROOM = "!room:test"
OTHER_ROOM = "!other:test"


class AccountDataTests(HomeserverTestCase):
    async def test_global_round_trip(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/user/{alice.user_id}/account_data/org.example.config"
        self.assertMatrixError(await self.get(path, alice), 404, "M_NOT_FOUND")
        self.assertEqual(await self.put(path, {"theme": "dark", "n": [1, 2]}, alice), (200, {}))
        self.assertEqual(await self.get(path, alice), (200, {"theme": "dark", "n": [1, 2]}))
        # Replacing, not merging.
        self.assertEqual(await self.put(path, {"font": "big"}, alice), (200, {}))
        self.assertEqual(await self.get(path, alice), (200, {"font": "big"}))
        # The r0 prefix serves the same data.
        self.assertEqual(
            await self.get(f"/_matrix/client/r0/user/{alice.user_id}/account_data/org.example.config", alice),
            (200, {"font": "big"}),
        )

    async def test_room_round_trip_and_no_fallback(self) -> None:
        alice = await self.register("alice")
        room_path = f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/org.example.x"
        global_path = f"{C}/user/{alice.user_id}/account_data/org.example.x"
        self.assertEqual(await self.put(room_path, {"a": 1}, alice), (200, {}))
        self.assertEqual(await self.get(room_path, alice), (200, {"a": 1}))
        # account_data.md: no inheritance between global and room data, nor between rooms.
        self.assertMatrixError(await self.get(global_path, alice), 404, "M_NOT_FOUND")
        other = f"{C}/user/{alice.user_id}/rooms/{OTHER_ROOM}/account_data/org.example.x"
        self.assertMatrixError(await self.get(other, alice), 404, "M_NOT_FOUND")
        self.assertEqual(await self.put(global_path, {"g": True}, alice), (200, {}))
        self.assertEqual(await self.get(room_path, alice), (200, {"a": 1}))

    async def test_other_users_data_is_forbidden(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.put(f"{C}/user/{bob.user_id}/account_data/org.example.x", {"secret": 1}, bob)
        for path in (
            f"{C}/user/{bob.user_id}/account_data/org.example.x",
            f"{C}/user/{bob.user_id}/rooms/{ROOM}/account_data/org.example.x",
            f"{C}/user/{bob.user_id}/rooms/{ROOM}/tags",
            f"{C}/user/@nobody:elsewhere/account_data/org.example.x",
        ):
            self.assertMatrixError(await self.get(path, alice), 403, "M_FORBIDDEN")
        self.assertMatrixError(
            await self.put(f"{C}/user/{bob.user_id}/account_data/org.example.x", {"mine": 1}, alice),
            403,
            "M_FORBIDDEN",
        )
        self.assertMatrixError(
            await self.put(f"{C}/user/{bob.user_id}/rooms/{ROOM}/account_data/x", {}, alice), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(
            await self.put(f"{C}/user/{bob.user_id}/rooms/{ROOM}/tags/u.x", {}, alice), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(
            await self.delete(f"{C}/user/{bob.user_id}/rooms/{ROOM}/tags/u.x", None, alice), 403, "M_FORBIDDEN"
        )
        self.assertEqual(
            await self.get(f"{C}/user/{bob.user_id}/account_data/org.example.x", bob), (200, {"secret": 1})
        )

    async def test_server_managed_types_cannot_be_set(self) -> None:
        alice = await self.register("alice")
        for data_type in ("m.fully_read", "m.push_rules"):
            for path in (
                f"{C}/user/{alice.user_id}/account_data/{data_type}",
                f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/{data_type}",
            ):
                # account_data.md §Server Behaviour: 405, errcode M_BAD_JSON (account-data.yaml).
                self.assertMatrixError(await self.put(path, {"event_id": "$x"}, alice), 405, "M_BAD_JSON")
        # ... but they can be read "as normal".
        code, body = await self.get(f"{C}/user/{alice.user_id}/account_data/m.push_rules", alice)
        self.assertEqual(code, 200)
        self.assertIn("override", body["global"])
        self.assertMatrixError(
            await self.get(f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/m.fully_read", alice),
            404,
            "M_NOT_FOUND",
        )
        # The server itself may set m.fully_read (read markers do).
        await self.hs.account_data.set_account_data(
            alice.user_id, ROOM, "m.fully_read", {"event_id": "$e"}, from_client=False
        )
        self.assertEqual(
            await self.get(f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/m.fully_read", alice),
            (200, {"event_id": "$e"}),
        )

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/user/{alice.user_id}/account_data/org.example.x"
        self.assertMatrixError(await self.request("PUT", path, raw=b"{not json", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(path, [1, 2], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, "text", alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {}, None), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(path, "bogus"), 401, "M_UNKNOWN_TOKEN")
        long_type = "x" * 256
        self.assertMatrixError(
            await self.put(f"{C}/user/{alice.user_id}/account_data/{long_type}", {}, alice), 400, "M_INVALID_PARAM"
        )
        for bad_room in ("notaroom", "%40alice%3Atest"):
            self.assertMatrixError(
                await self.put(f"{C}/user/{alice.user_id}/rooms/{bad_room}/account_data/x", {}, alice),
                400,
                "M_INVALID_PARAM",
            )
            self.assertMatrixError(
                await self.get(f"{C}/user/{alice.user_id}/rooms/{bad_room}/account_data/x", alice),
                400,
                "M_INVALID_PARAM",
            )
        # Nothing was half-written and the server keeps serving.
        self.assertMatrixError(await self.get(path, alice), 404, "M_NOT_FOUND")
        self.assertEqual(await self.put(path, {"ok": True}, alice), (200, {}))

    async def test_type_with_slash(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/user/{alice.user_id}/account_data/org.example%2Fslash"
        self.assertEqual(await self.put(path, {"s": 1}, alice), (200, {}))
        self.assertEqual(await self.get(path, alice), (200, {"s": 1}))
        glob, _ = await self.hs.account_data.get_account_data_for_sync(alice.user_id, None, self.position())
        self.assertIn("org.example/slash", [e["type"] for e in glob])

    # -- tags -------------------------------------------------------------------------------

    async def test_tags(self) -> None:
        alice = await self.register("alice")
        base = f"{C}/user/{alice.user_id}/rooms/{ROOM}/tags"
        self.assertEqual(await self.get(base, alice), (200, {"tags": {}}))
        self.assertEqual(await self.put(f"{base}/m.favourite", {"order": 0.25}, alice), (200, {}))
        self.assertEqual(await self.put(f"{base}/u.work", {}, alice), (200, {}))
        self.assertEqual(await self.put(f"{base}/u.edge", {"order": 1}, alice), (200, {}))
        code, body = await self.get(base, alice)
        self.assertEqual(body, {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}, "u.edge": {"order": 1}}})
        # Tags are the room's m.tag account data.
        self.assertEqual(
            await self.get(f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/m.tag", alice), (200, body)
        )
        # Replacing a tag's content.
        self.assertEqual(await self.put(f"{base}/m.favourite", {"order": 0.5}, alice), (200, {}))
        self.assertEqual(await self.delete(f"{base}/u.work", None, alice), (200, {}))
        # Deleting an absent tag succeeds.
        self.assertEqual(await self.delete(f"{base}/u.never", None, alice), (200, {}))
        self.assertEqual(
            await self.get(base, alice), (200, {"tags": {"m.favourite": {"order": 0.5}, "u.edge": {"order": 1}}})
        )
        # Other rooms are untouched.
        self.assertEqual(
            await self.get(f"{C}/user/{alice.user_id}/rooms/{OTHER_ROOM}/tags", alice), (200, {"tags": {}})
        )

    async def test_tag_bad_input(self) -> None:
        alice = await self.register("alice")
        base = f"{C}/user/{alice.user_id}/rooms/{ROOM}/tags"
        self.assertMatrixError(await self.put(f"{base}/u.x", {"order": 1.5}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{base}/u.x", {"order": -0.1}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{base}/u.x", {"order": "0.5"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(f"{base}/u.x", {"order": True}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(f"{base}/u.x", [0.5], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.request("PUT", f"{base}/u.x", raw=b"nope", token=alice), 400, "M_NOT_JSON")
        # tags.md: "The name of a tag MUST NOT exceed 255 bytes."
        self.assertMatrixError(await self.put(f"{base}/{'é' * 128}", {}, alice), 400, "M_INVALID_PARAM")
        self.assertEqual(await self.put(f"{base}/{'t' * 255}", {}, alice), (200, {}))
        self.assertMatrixError(
            await self.get(f"{C}/user/{alice.user_id}/rooms/bad/tags", alice), 400, "M_INVALID_PARAM"
        )
        self.assertEqual(await self.get(base, alice), (200, {"tags": {"t" * 255: {}}}))

    # -- sync feed and stream ---------------------------------------------------------------

    def position(self) -> int:
        return self.hs.account_data.current_position

    async def test_sync_feed(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        ad = self.hs.account_data
        start = self.position()
        await self.put(f"{C}/user/{alice.user_id}/account_data/a.one", {"v": 1}, alice)
        await self.put(f"{C}/user/{alice.user_id}/rooms/{ROOM}/account_data/a.room", {"r": 1}, alice)
        await self.put(f"{C}/user/{alice.user_id}/rooms/{ROOM}/tags/u.t", {}, alice)
        await self.put(f"{C}/user/{bob.user_id}/account_data/b.one", {"v": 1}, bob)
        middle = self.position()
        self.assertEqual(middle, start + 4)
        self.assertEqual(self.hs.notifier.current_token().account_data, middle)

        glob, rooms = await ad.get_account_data_for_sync(alice.user_id, None, middle)
        types = [e["type"] for e in glob]
        self.assertEqual(sorted(types), ["a.one", "m.push_rules"])
        self.assertEqual(next(e for e in glob if e["type"] == "a.one"), {"type": "a.one", "content": {"v": 1}})
        self.assertEqual(
            sorted(rooms[ROOM], key=lambda e: e["type"]),
            [{"type": "a.room", "content": {"r": 1}}, {"type": "m.tag", "content": {"tags": {"u.t": {}}}}],
        )

        # Incremental: only what changed in (from, to]; push rules only when they changed.
        self.assertEqual(await ad.get_account_data_for_sync(alice.user_id, middle, middle), ([], {}))
        await self.put(f"{C}/user/{alice.user_id}/account_data/a.one", {"v": 2}, alice)
        end = self.position()
        glob, rooms = await ad.get_account_data_for_sync(alice.user_id, middle, end)
        self.assertEqual((glob, rooms), ([{"type": "a.one", "content": {"v": 2}}], {}))
        # Bob's feed has only bob's data.
        glob, rooms = await ad.get_account_data_for_sync(bob.user_id, start, end)
        self.assertEqual((glob, rooms), ([{"type": "b.one", "content": {"v": 1}}], {}))

    async def test_push_rule_change_in_sync(self) -> None:
        alice = await self.register("alice")
        before = self.position()
        code, _ = await self.put(f"{C}/pushrules/global/override/.m.rule.master/enabled", {"enabled": True}, alice)
        self.assertEqual(code, 200)
        after = self.position()
        self.assertGreater(after, before)
        glob, rooms = await self.hs.account_data.get_account_data_for_sync(alice.user_id, before, after)
        self.assertEqual([e["type"] for e in glob], ["m.push_rules"])
        master = glob[0]["content"]["global"]["override"][0]
        self.assertEqual((master["rule_id"], master["enabled"]), (".m.rule.master", True))
        # Another user's rules did not change.
        bob = await self.register("bob")
        self.assertEqual(await self.hs.account_data.get_account_data_for_sync(bob.user_id, before, after), ([], {}))

    async def test_write_wakes_the_users_sync(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        waiting_alice = ensureDeferred(self.hs.notifier.wait(alice.user_id, [], 30_000))
        waiting_bob = ensureDeferred(self.hs.notifier.wait(bob.user_id, [], 30_000))
        await self.put(f"{C}/user/{alice.user_id}/account_data/x.y", {}, alice)
        self.assertTrue(waiting_alice.called)
        self.assertFalse(waiting_bob.called)
        await self.put(f"{C}/user/{bob.user_id}/rooms/{ROOM}/tags/u.a", {}, bob)
        self.assertTrue(waiting_bob.called)

    async def test_positions_persist_across_restart(self) -> None:
        alice = await self.register("alice")
        for i in range(3):
            await self.put(f"{C}/user/{alice.user_id}/account_data/x.{i}", {"i": i}, alice)
        last = self.position()
        self.assertGreaterEqual(last, 3)
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.assertEqual(self.hs.account_data.current_position, last)
        self.assertEqual(self.hs.notifier.current_token().account_data, last)
        await self.hs.account_data.set_account_data(alice.user_id, None, "x.after", {})
        self.assertEqual(self.hs.account_data.current_position, last + 1)
        glob, _ = await self.hs.account_data.get_account_data_for_sync(alice.user_id, last, last + 1)
        self.assertEqual(glob, [{"type": "x.after", "content": {}}])
        content = await self.hs.account_data.get_account_data(alice.user_id, None, "x.2")
        self.assertEqual(content, {"i": 2})


class KeyBackupProbeTests(HomeserverTestCase):
    async def test_no_backup(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.get(f"{C}/room_keys/version", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/room_keys/version/1", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/room_keys/version", None), 401, "M_MISSING_TOKEN")
