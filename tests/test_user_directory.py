"""User directory: POST /user_directory/search, who can be found, matching, ranking, limits."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q

SEARCH = f"{C}/user_directory/search"


class UserDirectoryTests(HomeserverTestCase):
    async def search(self, user: TestUser, term: str, limit: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"search_term": term}
        if limit is not None:
            body["limit"] = limit
        code, resp = await self.post(SEARCH, body, user)
        self.assertEqual(code, 200, resp)
        return resp

    async def found(self, user: TestUser, term: str) -> list[str]:
        return [r["user_id"] for r in (await self.search(user, term))["results"]]

    async def set_name(self, user: TestUser, name: str) -> None:
        code, resp = await self.put(f"{C}/profile/{q(user.user_id)}/displayname", {"displayname": name}, user)
        self.assertEqual(code, 200, resp)

    async def test_privacy(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        dave = await self.register("dave")
        await self.shared_room(alice, bob)  # private: alice and bob see each other
        await self.create_room(carol)  # carol is alone in a private room
        # dave shares nothing and is in no public room
        self.assertEqual(await self.found(alice, "bob"), [bob.user_id])
        self.assertEqual(await self.found(bob, "alice"), [alice.user_id])
        self.assertEqual(await self.found(alice, "carol"), [])
        self.assertEqual(await self.found(alice, "dave"), [])
        self.assertEqual(await self.found(dave, "alice"), [])
        self.assertEqual(await self.found(carol, "bob"), [])

    async def test_public_rooms_make_members_findable(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        public = await self.create_room(bob, preset="public_chat")
        self.assertEqual(await self.found(alice, "bob"), [bob.user_id])
        await self.join(carol, public)
        self.assertEqual(await self.found(alice, "carol"), [carol.user_id])
        await self.leave(carol, public)
        self.assertEqual(await self.found(alice, "carol"), [])
        # a room turning public (or world-readable) makes its members findable, and back
        private = await self.create_room(carol)
        self.assertEqual(await self.found(alice, "carol"), [])
        await self.put(f"{C}/rooms/{q(private)}/state/m.room.join_rules/", {"join_rule": "public"}, carol)
        self.assertEqual(await self.found(alice, "carol"), [carol.user_id])
        await self.put(f"{C}/rooms/{q(private)}/state/m.room.join_rules/", {"join_rule": "invite"}, carol)
        self.assertEqual(await self.found(alice, "carol"), [])
        await self.put(
            f"{C}/rooms/{q(private)}/state/m.room.history_visibility/", {"history_visibility": "world_readable"}, carol
        )
        self.assertEqual(await self.found(alice, "carol"), [carol.user_id])

    async def test_matching(self) -> None:
        alice = await self.register("alice")
        users = {}
        for localpart, name in (
            ("bob", "Bobby Tables"),
            ("robert.smith", "Rob"),
            ("jane_doe", "Jane Bobson"),
            ("zed", "Zed"),
        ):
            users[localpart] = await self.register(localpart)
            await self.set_name(users[localpart], name)
        room = await self.create_room(alice)
        for user in users.values():
            await self.invite_and_join(alice, room, user)
        ids = {k: u.user_id for k, u in users.items()}
        # case-insensitive prefix of display name words and user ID words
        self.assertEqual(await self.found(alice, "bob"), [ids["bob"], ids["jane_doe"]])
        self.assertEqual(sorted(await self.found(alice, "TABLES")), [ids["bob"]])
        self.assertEqual(await self.found(alice, "smith"), [ids["robert.smith"]])
        self.assertEqual(await self.found(alice, "rob"), [ids["robert.smith"]])
        self.assertEqual(await self.found(alice, "jane doe"), [ids["jane_doe"]])
        self.assertEqual(await self.found(alice, "@zed:test"), [ids["zed"]])
        self.assertEqual(await self.found(alice, "obby"), [])  # prefixes only, not substrings
        self.assertEqual(await self.found(alice, "jane zed"), [])  # every word must match
        self.assertEqual(await self.found(alice, "   "), [])
        # an exact match ranks first
        self.assertEqual((await self.found(alice, "zed"))[0], ids["zed"])
        result = (await self.search(alice, "zed"))["results"][0]
        self.assertEqual(result, {"user_id": ids["zed"], "display_name": "Zed"})

    async def test_limit_and_limited(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        members = []
        for i in range(5):
            user = await self.register(f"member{i}")
            await self.join(user, room)
            members.append(user.user_id)
        resp = await self.search(alice, "member", limit=3)
        self.assertEqual((len(resp["results"]), resp["limited"]), (3, True))
        resp = await self.search(alice, "member", limit=5)
        self.assertEqual((sorted(r["user_id"] for r in resp["results"]), resp["limited"]), (sorted(members), False))
        resp = await self.search(alice, "member")  # default limit 10
        self.assertEqual((len(resp["results"]), resp["limited"]), (5, False))
        resp = await self.search(alice, "member", limit=0)
        self.assertEqual(resp, {"results": [], "limited": False})

    async def test_profile_changes_are_searchable(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.shared_room(alice, bob)
        self.assertEqual(await self.found(alice, "bob"), [bob.user_id])  # warms the index
        await self.set_name(bob, "Robert Paulson")
        self.assertEqual(await self.found(alice, "paulson"), [bob.user_id])
        await self.put(f"{C}/profile/{q(bob.user_id)}/avatar_url", {"avatar_url": "mxc://test/face"}, bob)
        result = (await self.search(alice, "robert"))["results"]
        self.assertEqual(result, [{"user_id": bob.user_id, "display_name": "Robert Paulson", "avatar_url": "mxc://test/face"}])

    async def test_bad_requests(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.request("POST", SEARCH, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(SEARCH, ["bob"], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(SEARCH, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(SEARCH, {"search_term": 5}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(SEARCH, {"search_term": "a", "limit": "5"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(SEARCH, {"search_term": "a", "limit": -1}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(SEARCH, {"search_term": "a" * 5000}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(SEARCH, {"search_term": "a"}), 401, "M_MISSING_TOKEN")
        self.assertEqual(await self.post(SEARCH, {"search_term": "a", "limit": 10**12}, alice), (200, {"results": [], "limited": False}))
