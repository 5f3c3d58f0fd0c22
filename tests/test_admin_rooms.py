"""The admin API's rooms: the room list, a room's details, members, state and messages
(``/_synapse/admin/v1/rooms...``), for server admins only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from mxserver.rooms.local_events import EventSpec
from tests.harness import C, HomeserverTestCase, TestUser, q

A = "/_synapse/admin/v1"


class AdminRoomsTestCase(HomeserverTestCase):
    """A server admin and a regular user."""

    async def admin_and_user(self) -> tuple[TestUser, TestUser]:
        admin = await self.register("root")
        await self.hs.accounts.set_admin(admin.user_id, True)
        return admin, await self.register("alice")

    async def ok(self, method: str, path: str, token: TestUser, body: Any = None) -> Any:
        code, resp = await self.request(method, path, body, token=token)
        self.assertEqual(code, 200, resp)
        return resp


class RoomListTests(AdminRoomsTestCase):
    async def test_list_fields_and_paging(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        r1 = await self.create_room(alice, preset="public_chat", name="Bravo", room_alias_name="bravo", visibility="public")
        r2 = await self.create_room(alice, name="alpha")
        await self.join(bob, r1)
        # a remote user's join, built locally: enough for the member counts
        remote = "@remote:elsewhere.example"
        await self.hs.room_server.send(r1, EventSpec("m.room.member", {"membership": "join"}, remote, remote))
        r3 = await self.create_room(alice)  # no name
        body = await self.ok("GET", f"{A}/rooms", admin)
        self.assertEqual(body["total_rooms"], 3)
        self.assertEqual(body["offset"], 0)
        self.assertNotIn("next_batch", body)
        self.assertNotIn("prev_batch", body)
        # by name (case-sensitive order as the names compare), unnamed last
        self.assertEqual([r["room_id"] for r in body["rooms"]], [r1, r2, r3])
        bravo = body["rooms"][0]
        self.assertEqual(
            {k: bravo[k] for k in ("name", "canonical_alias", "joined_members", "joined_local_members", "creator")},
            {
                "name": "Bravo",
                "canonical_alias": "#bravo:test",
                "joined_members": 3,
                "joined_local_members": 2,
                "creator": alice.user_id,
            },
        )
        self.assertEqual(bravo["version"], self.config.default_room_version)
        self.assertEqual(
            (bravo["public"], bravo["join_rules"], bravo["federatable"], bravo["encryption"], bravo["room_type"]),
            (True, "public", True, None, None),
        )
        self.assertEqual(bravo["history_visibility"], "shared")
        self.assertGreaterEqual(bravo["state_events"], 6)
        # paging
        page = await self.ok("GET", f"{A}/rooms?limit=2", admin)
        self.assertEqual([r["room_id"] for r in page["rooms"]], [r1, r2])
        self.assertEqual(page["next_batch"], 2)
        page = await self.ok("GET", f"{A}/rooms?limit=2&from=2", admin)
        self.assertEqual([r["room_id"] for r in page["rooms"]], [r3])
        self.assertEqual((page["prev_batch"], page["offset"], page["total_rooms"]), (0, 2, 3))
        self.assertNotIn("next_batch", page)
        # ordering
        by_size = await self.ok("GET", f"{A}/rooms?order_by=joined_members", admin)
        self.assertEqual(by_size["rooms"][0]["room_id"], r1)
        by_size_b = await self.ok("GET", f"{A}/rooms?order_by=joined_local_members&dir=b", admin)
        self.assertEqual(by_size_b["rooms"][-1]["room_id"], r1)
        public = await self.ok("GET", f"{A}/rooms?order_by=public", admin)
        self.assertEqual(public["rooms"][0]["room_id"], r1)
        for order in ("version", "creator", "encryption", "federatable", "join_rules", "guest_access",
                      "history_visibility", "state_events", "canonical_alias", "size", "alphabetical"):
            got = await self.ok("GET", f"{A}/rooms?order_by={order}", admin)
            self.assertEqual(len(got["rooms"]), 3, order)
        # filters
        only_public = await self.ok("GET", f"{A}/rooms?public_rooms=true", admin)
        self.assertEqual([r["room_id"] for r in only_public["rooms"]], [r1])
        self.assertEqual(only_public["total_rooms"], 1)
        not_public = await self.ok("GET", f"{A}/rooms?public_rooms=false", admin)
        self.assertEqual({r["room_id"] for r in not_public["rooms"]}, {r2, r3})
        await self.leave(alice, r3)
        empty = await self.ok("GET", f"{A}/rooms?empty_rooms=true", admin)
        self.assertEqual([r["room_id"] for r in empty["rooms"]], [r3])

    async def test_search_term(self) -> None:
        admin, alice = await self.admin_and_user()
        r1 = await self.create_room(alice, name="Matrix HQ")
        r2 = await self.create_room(alice, name="other", room_alias_name="lounge")
        await self.set_state(alice, r2, "m.room.canonical_alias", {"alias": "#lounge:test"})

        async def search(term: str) -> list[str]:
            body = await self.ok("GET", f"{A}/rooms?" + urlencode({"search_term": term}), admin)
            self.assertEqual(body["total_rooms"], len(body["rooms"]))
            return [r["room_id"] for r in body["rooms"]]

        self.assertEqual(await search("matrix"), [r1])  # name, any case
        self.assertEqual(await search("LOUNGE"), [r2])  # alias localpart, any case
        self.assertEqual(await search(r2), [r2])  # the room ID
        self.assertEqual(await search(r2[1:8]), [r2])  # part of it
        self.assertEqual(await search(r2 + "x"), [])
        self.assertEqual(await search("nothing-like-it"), [])

    async def test_permissions_and_bad_input(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice)
        for path in (
            f"{A}/rooms",
            f"{A}/rooms/{q(room)}",
            f"{A}/rooms/{q(room)}/members",
            f"{A}/rooms/{q(room)}/state",
            f"{A}/rooms/{q(room)}/messages",
        ):
            self.assertMatrixError(await self.get(path), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.get(path, alice), 403, "M_FORBIDDEN")
        for query in ("limit=-1", "from=x", "order_by=nope", "dir=up", "public_rooms=maybe", "empty_rooms=2"):
            self.assertMatrixError(await self.get(f"{A}/rooms?{query}", admin), 400, "M_INVALID_PARAM")
        for sub in ("", "/members", "/state", "/messages"):
            self.assertMatrixError(await self.get(f"{A}/rooms/{q('not-a-room')}{sub}", admin), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.get(f"{A}/rooms/{q('!unknown:test')}{sub}", admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}/messages?dir=x", admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}/messages?filter=%7B", admin), 400, "M_BAD_JSON")


class RoomReadTests(AdminRoomsTestCase):
    async def test_details(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(
            alice,
            name="Music",
            topic="Theory",
            creation_content={"type": "m.space", "m.federate": False},
            initial_state=[
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://test/abc"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        )
        details = await self.ok("GET", f"{A}/rooms/{q(room)}", admin)
        self.assertEqual(
            {k: details[k] for k in ("room_id", "name", "topic", "avatar", "encryption", "room_type", "federatable")},
            {
                "room_id": room,
                "name": "Music",
                "topic": "Theory",
                "avatar": "mxc://test/abc",
                "encryption": "m.megolm.v1.aes-sha2",
                "room_type": "m.space",
                "federatable": False,
            },
        )
        self.assertEqual((details["joined_members"], details["joined_local_members"]), (1, 1))
        self.assertEqual((details["joined_local_devices"], details["forgotten"], details["public"]), (1, False, False))
        await self.leave(alice, room)
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/forget", {}, alice))[0], 200)
        details = await self.ok("GET", f"{A}/rooms/{q(room)}", admin)
        self.assertEqual((details["joined_members"], details["joined_local_devices"], details["forgotten"]), (0, 0, True))

    async def test_members_and_state(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat", name="R")
        await self.join(bob, room)
        members = await self.ok("GET", f"{A}/rooms/{q(room)}/members", admin)
        self.assertEqual(members, {"members": sorted([alice.user_id, bob.user_id]), "total": 2})
        await self.leave(bob, room)
        members = await self.ok("GET", f"{A}/rooms/{q(room)}/members", admin)
        self.assertEqual(members, {"members": [alice.user_id], "total": 1})
        # the admin is not in the room and still reads its state
        state = (await self.ok("GET", f"{A}/rooms/{q(room)}/state", admin))["state"]
        client_state = await self.ok("GET", f"{C}/rooms/{q(room)}/state", alice)
        self.assertEqual(sorted(e["event_id"] for e in state), sorted(e["event_id"] for e in client_state))
        self.assertIn(("m.room.name", "", "R"), [(e["type"], e["state_key"], e["content"].get("name")) for e in state])
        only = (await self.ok("GET", f"{A}/rooms/{q(room)}/state?type=m.room.member", admin))["state"]
        self.assertEqual(sorted(e["state_key"] for e in only), sorted([alice.user_id, bob.user_id]))
        none = (await self.ok("GET", f"{A}/rooms/{q(room)}/state?type=m.nothing", admin))["state"]
        self.assertEqual(none, [])

    async def test_messages_as_admin_outside_the_room(self) -> None:
        admin, alice = await self.admin_and_user()
        # history visible to joined members only: the admin, never a member, still reads it all
        room = await self.create_room(alice, history_visibility="joined")
        for i in range(5):
            await self.send_message(alice, room, f"m{i}")
        self.assertMatrixError(await self.messages(admin, room, dir="b"), 403, "M_FORBIDDEN")
        page = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=b&limit=3", admin)
        self.assertEqual([e["content"].get("body") for e in page["chunk"]], ["m4", "m3", "m2"])
        rest = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=b&limit=3&from={page['end']}", admin)
        self.assertEqual([e["content"].get("body") for e in rest["chunk"]], ["m1", "m0", None])
        forward = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=f&limit=100", admin)
        self.assertEqual(forward["chunk"][0]["type"], "m.room.create")
        filt = q('{"types":["m.room.message"]}')
        only = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=f&filter={filt}", admin)
        self.assertEqual([e["content"]["body"] for e in only["chunk"]], ["m0", "m1", "m2", "m3", "m4"])
