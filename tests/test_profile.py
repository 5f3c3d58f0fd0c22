"""Profiles: GET /profile/{userId}, GET/PUT displayname and avatar_url, propagation to member events."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from tests.harness import C, HomeserverTestCase, q

#: where the third-party module distributions of the test suite live
THIRD_PARTY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "thirdparty")
FROZEN = "org.example.members_frozen"

AVATAR = "mxc://test/abcDEF_123-x"


def path(user_id: str, field: str | None = None) -> str:
    return f"{C}/profile/{q(user_id)}" + (f"/{field}" if field else "")


class ProfileTests(HomeserverTestCase):
    async def test_get_and_set(self) -> None:
        alice = await self.register("alice")
        # registration sets the display name to the localpart; lookups need no token
        self.assertEqual(await self.get(path(alice.user_id)), (200, {"displayname": "alice"}))
        self.assertEqual(await self.get(path(alice.user_id, "displayname")), (200, {"displayname": "alice"}))
        self.assertMatrixError(await self.get(path(alice.user_id, "avatar_url")), 404, "M_NOT_FOUND")
        self.assertEqual(await self.put(path(alice.user_id, "displayname"), {"displayname": "Alice 🐇"}, alice), (200, {}))
        self.assertEqual(await self.put(path(alice.user_id, "avatar_url"), {"avatar_url": AVATAR}, alice), (200, {}))
        self.assertEqual(
            await self.get(path(alice.user_id), alice), (200, {"displayname": "Alice 🐇", "avatar_url": AVATAR})
        )
        self.assertEqual(await self.get(path(alice.user_id, "avatar_url")), (200, {"avatar_url": AVATAR}))
        self.assertEqual(
            await self.get(f"/_matrix/client/r0/profile/{q(alice.user_id)}/displayname"), (200, {"displayname": "Alice 🐇"})
        )
        # null and "" clear a field
        self.assertEqual(await self.put(path(alice.user_id, "avatar_url"), {"avatar_url": None}, alice), (200, {}))
        self.assertEqual(await self.put(path(alice.user_id, "displayname"), {"displayname": ""}, alice), (200, {}))
        self.assertEqual(await self.get(path(alice.user_id)), (200, {}))
        self.assertMatrixError(await self.get(path(alice.user_id, "displayname")), 404, "M_NOT_FOUND")

    async def test_unknown_and_remote_users(self) -> None:
        self.assertMatrixError(await self.get(path("@nobody:test")), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(path("@nobody:test", "displayname")), 404, "M_NOT_FOUND")
        # remote profiles are queried over federation (tests/test_remote_queries.py); a private
        # address that is not whitelisted is never contacted
        self.assertMatrixError(await self.get(path("@someone:10.0.0.1:8448")), 502, "M_UNKNOWN")
        self.assertMatrixError(await self.get(path("nobody")), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(path("@:test")), 400, "M_INVALID_PARAM")

    async def test_bad_requests(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        dn = path(alice.user_id, "displayname")
        av = path(alice.user_id, "avatar_url")
        self.assertMatrixError(await self.request("PUT", dn, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(dn, "Alice", alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(dn, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(dn, {"avatar_url": AVATAR}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(dn, {"displayname": 5}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(dn, {"displayname": ["a"]}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(dn, {"displayname": "x" * 257}, alice), 400, "M_INVALID_PARAM")
        for bad in ("http://example.com/a.png", "mxc://test", "mxc://test/", "mxc://test/a/b", "mxc:///abc",
                    "mxc://bad host/abc", "mxc://test/a b", "MXC://test/abc", "mxc://test/" + "a" * 1000):
            self.assertMatrixError(await self.put(av, {"avatar_url": bad}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(av, {"avatar_url": 1}, alice), 400, "M_BAD_JSON")
        # someone else's profile
        self.assertMatrixError(await self.put(dn, {"displayname": "Mallory"}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.put(av, {"avatar_url": AVATAR}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.put(dn, {"displayname": "x"}), 401, "M_MISSING_TOKEN")
        # nothing changed
        self.assertEqual(await self.get(path(alice.user_id)), (200, {"displayname": "alice"}))
        self.assertEqual(await self.put(dn, {"displayname": "x" * 256}, alice), (200, {}))

    async def test_change_propagates_to_member_events(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room1 = await self.shared_room(bob, alice)
        room2 = await self.create_room(alice, preset="public_chat")
        left = await self.shared_room(bob, alice)
        await self.leave(alice, left)
        await self.put(path(alice.user_id, "avatar_url"), {"avatar_url": AVATAR}, alice)
        presence_before = self.hs.presence_handler.current_position
        code, _ = await self.put(path(alice.user_id, "displayname"), {"displayname": "Queen Alice"}, alice)
        self.assertEqual(code, 200)
        for room in (room1, room2):
            member = await self.hs.room_server.current_state_event(room, "m.room.member", alice.user_id)
            self.assertEqual(
                member.content, {"membership": "join", "displayname": "Queen Alice", "avatar_url": AVATAR}
            )
            self.assertEqual(member.sender, alice.user_id)
        # a room alice left gets no join event
        self.assertEqual(await self.hs.room_server.membership(left, alice.user_id), "leave")
        # bob's member events are untouched
        bob_member = await self.hs.room_server.current_state_event(room1, "m.room.member", bob.user_id)
        self.assertEqual(bob_member.content.get("displayname"), "bob")
        # the change goes out as presence too, with the new name
        self.assertGreater(self.hs.presence_handler.current_position, presence_before)
        events = await self.hs.presence_handler.presence_for_sync(bob.user_id, presence_before)
        self.assertEqual([(e["sender"], e["content"]["displayname"]) for e in events], [(alice.user_id, "Queen Alice")])
        # clearing the avatar removes it from the member events; an unchanged value sends nothing
        await self.put(path(alice.user_id, "avatar_url"), {"avatar_url": None}, alice)
        member = await self.hs.room_server.current_state_event(room1, "m.room.member", alice.user_id)
        self.assertEqual(member.content, {"membership": "join", "displayname": "Queen Alice"})
        position = self.hs.room_server.current_position
        await self.put(path(alice.user_id, "displayname"), {"displayname": "Queen Alice"}, alice)
        self.assertEqual(self.hs.room_server.current_position, position)


class RefusingModuleTests(HomeserverTestCase):
    """With a third-party event checker (tests/fixtures/thirdparty/mxtest_room_guard), loaded
    from its entry point as configured, that refuses member events in rooms marked with an org.example.members_frozen state event."""

    config_overrides = {"modules": [{"group": "mxserver.modules", "name": "room_guard", "config": {"marker": FROZEN}}]}

    def setUp(self) -> Any:
        sys.path.insert(0, THIRD_PARTY)
        importlib.invalidate_caches()
        self.addCleanup(sys.path.remove, THIRD_PARTY)
        return super().setUp()

    async def test_a_refusing_room_does_not_fail_the_change(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room1 = await self.shared_room(bob, alice)
        room2 = await self.shared_room(bob, alice)
        # the server's module refuses member events in room1 from now on
        await self.set_state(bob, room1, FROZEN, {})
        code, _ = await self.put(path(alice.user_id, "displayname"), {"displayname": "New"}, alice)
        self.assertEqual(code, 200)
        self.flushLoggedErrors()
        for room, name in ((room1, "alice"), (room2, "New")):
            member = await self.hs.room_server.current_state_event(room, "m.room.member", alice.user_id)
            self.assertEqual(member.content.get("displayname"), name)
        self.assertEqual(await self.get(path(alice.user_id, "displayname")), (200, {"displayname": "New"}))
