"""Room aliases, directory visibility and /publicRooms over HTTP; canonical alias validation."""

from __future__ import annotations

from mxserver.errors import MatrixError
from tests.harness import C, HomeserverTestCase, q


class AliasTests(HomeserverTestCase):
    async def test_create_resolve_delete(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        alias = "#my/room:test"
        path = f"{C}/directory/room/{q(alias)}"
        self.assertEqual(await self.put(path, {"room_id": room}, alice), (200, {}))
        # resolving needs no token
        self.assertEqual(await self.get(path), (200, {"room_id": room, "servers": ["test"]}))
        self.assertMatrixError(await self.put(path, {"room_id": room}, alice), 409, "M_UNKNOWN")
        code, body = await self.get(f"{C}/rooms/{q(room)}/aliases", alice)
        self.assertEqual((code, body), (200, {"aliases": [alias]}))
        self.assertEqual(await self.delete(path, None, alice), (200, {}))
        self.assertMatrixError(await self.get(path), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(path, None, alice), 404, "M_NOT_FOUND")
        self.assertEqual((await self.get(f"{C}/rooms/{q(room)}/aliases", alice))[1], {"aliases": []})
        # r0 works too
        self.assertEqual(await self.put(f"/_matrix/client/r0/directory/room/{q(alias)}", {"room_id": room}, alice), (200, {}))

    async def test_create_rules(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        # only members may alias a room
        self.assertMatrixError(await self.put(f"{C}/directory/room/{q('#b:test')}", {"room_id": room}, bob), 403, "M_FORBIDDEN")
        for alias, body, status, errcode in (
            ("#other:elsewhere.example", {"room_id": room}, 400, "M_INVALID_PARAM"),
            ("nohash:test", {"room_id": room}, 400, "M_INVALID_PARAM"),
            ("#noserver", {"room_id": room}, 400, "M_INVALID_PARAM"),
            ("#:test", {"room_id": room}, 400, "M_INVALID_PARAM"),
            ("#" + "x" * 300 + ":test", {"room_id": room}, 400, "M_INVALID_PARAM"),
            ("#ok:test", {"room_id": "!unknown:test"}, 404, "M_NOT_FOUND"),
            ("#ok:test", {"room_id": "not a room"}, 400, "M_INVALID_PARAM"),
            ("#ok:test", {"room_id": 1}, 400, "M_BAD_JSON"),
            ("#ok:test", {}, 400, "M_MISSING_PARAM"),
        ):
            self.assertMatrixError(await self.put(f"{C}/directory/room/{q(alias)}", body, alice), status, errcode)
        self.assertMatrixError(
            await self.request("PUT", f"{C}/directory/room/{q('#ok:test')}", raw=b"x", token=alice), 400, "M_NOT_JSON"
        )
        self.assertMatrixError(await self.put(f"{C}/directory/room/{q('#ok:test')}", {"room_id": room}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(f"{C}/directory/room/{q('#ok:test')}"), 404, "M_NOT_FOUND")

    async def test_resolve_errors(self) -> None:
        self.assertMatrixError(await self.get(f"{C}/directory/room/{q('#x:test')}"), 404, "M_NOT_FOUND")
        # another server's alias: that server is asked (loopback is blacklisted by default: unreachable)
        result = await self.get(f"{C}/directory/room/{q('#x:127.0.0.1:1')}")
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        self.assertMatrixError(await self.get(f"{C}/directory/room/nope"), 400, "M_INVALID_PARAM")

    async def test_delete_permissions_and_canonical_alias(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", room_alias_name="main", room_version="11")
        await self.join(bob, room)
        await self.join(carol, room)
        self.assertEqual(await self.put(f"{C}/directory/room/{q('#bobs:test')}", {"room_id": room}, bob), (200, {}))
        await self.set_state(alice, room, "m.room.canonical_alias", {"alias": "#main:test", "alt_aliases": ["#bobs:test"]})
        # carol neither created it nor may edit the canonical alias
        self.assertMatrixError(await self.delete(f"{C}/directory/room/{q('#bobs:test')}", None, carol), 403, "M_FORBIDDEN")
        # bob created it: he may delete it (the canonical alias stays: he may not edit it)
        self.assertEqual(await self.delete(f"{C}/directory/room/{q('#bobs:test')}", None, bob), (200, {}))
        self.assertEqual(
            await self.room_state(room, "m.room.canonical_alias"), {"alias": "#main:test", "alt_aliases": ["#bobs:test"]}
        )
        # alice (room admin) may delete an alias she did not make; the canonical alias loses it
        self.assertEqual(await self.put(f"{C}/directory/room/{q('#carols:test')}", {"room_id": room}, carol), (200, {}))
        self.assertEqual(await self.delete(f"{C}/directory/room/{q('#main:test')}", None, alice), (200, {}))
        self.assertEqual(await self.delete(f"{C}/directory/room/{q('#carols:test')}", None, alice), (200, {}))
        self.assertEqual(await self.room_state(room, "m.room.canonical_alias"), {"alt_aliases": ["#bobs:test"]})
        # other servers' aliases are not ours to delete
        self.assertMatrixError(
            await self.delete(f"{C}/directory/room/{q('#x:elsewhere.example')}", None, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.delete(f"{C}/directory/room/{q('#main:test')}"), 401, "M_MISSING_TOKEN")

    async def test_local_aliases_visibility(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, room_alias_name="a")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/aliases", bob), 403, "M_FORBIDDEN")
        await self.set_state(alice, room, "m.room.history_visibility", {"history_visibility": "world_readable"})
        self.assertEqual(await self.get(f"{C}/rooms/{q(room)}/aliases", bob), (200, {"aliases": ["#a:test"]}))
        self.assertMatrixError(await self.get(f"{C}/rooms/{q('!x:test')}/aliases", bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/bad/aliases", bob), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/aliases"), 401, "M_MISSING_TOKEN")

    async def test_validate_canonical_alias(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, room_alias_name="here")
        other = await self.create_room(alice, room_alias_name="there")
        await self.hs.directory.validate_canonical_alias(room, {"alias": "#here:test", "alt_aliases": ["#remote:elsewhere.example"]})
        await self.hs.directory.validate_canonical_alias(room, {})
        await self.hs.directory.validate_canonical_alias(room, {"alias": None, "alt_aliases": []})
        for content, errcode in (
            ({"alias": "#there:test"}, "M_BAD_ALIAS"),
            ({"alias": "#missing:test"}, "M_BAD_ALIAS"),
            ({"alt_aliases": ["#here:test", "#there:test"]}, "M_BAD_ALIAS"),
            ({"alias": "here"}, "M_INVALID_PARAM"),
            ({"alias": 5}, "M_INVALID_PARAM"),
            ({"alt_aliases": "#here:test"}, "M_INVALID_PARAM"),
            ({"alt_aliases": ["bad"]}, "M_INVALID_PARAM"),
        ):
            with self.assertRaises(MatrixError) as cm:
                await self.hs.directory.validate_canonical_alias(room, content)
            self.assertEqual((cm.exception.code, cm.exception.errcode), (400, errcode), content)
        await self.hs.directory.validate_canonical_alias(other, {"alias": "#there:test"})


class DirectoryVisibilityTests(HomeserverTestCase):
    async def test_get_and_set(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        path = f"{C}/directory/list/room/{q(room)}"
        self.assertEqual(await self.get(path), (200, {"visibility": "private"}))
        self.assertEqual(await self.put(path, {"visibility": "public"}, alice), (200, {}))
        self.assertEqual(await self.get(path), (200, {"visibility": "public"}))
        # visibility defaults to public; setting it again is fine
        self.assertEqual(await self.put(path, {}, alice), (200, {}))
        # bob is not in the room; then in it without power
        self.assertMatrixError(await self.put(path, {"visibility": "private"}, bob), 403, "M_FORBIDDEN")
        await self.join(bob, room)
        self.assertMatrixError(await self.put(path, {"visibility": "private"}, bob), 403, "M_FORBIDDEN")
        await self.set_power(alice, room, bob.user_id, 50)
        self.assertEqual(await self.put(path, {"visibility": "private"}, bob), (200, {}))
        self.assertEqual(await self.get(path), (200, {"visibility": "private"}))

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        path = f"{C}/directory/list/room/{q(room)}"
        self.assertMatrixError(await self.put(path, {"visibility": "hidden"}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(path, {"visibility": True}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.request("PUT", path, raw=b"]", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(path, {"visibility": "public"}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(f"{C}/directory/list/room/{q('!x:test')}"), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.put(f"{C}/directory/list/room/{q('!x:test')}", {}, alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/directory/list/room/x"), 400, "M_INVALID_PARAM")
        self.assertEqual(await self.get(path), (200, {"visibility": "private"}))


class PublicRoomsTestCase(HomeserverTestCase):
    async def _rooms(self) -> dict[str, str]:
        alice = await self.register("alice")
        self.alice = alice
        others = [await self.register(f"user{i}") for i in range(3)]
        big = await self.create_room(
            alice,
            visibility="public",
            name="Big room",
            topic="All about cheese",
            room_alias_name="big",
            initial_state=[
                {"type": "m.room.avatar", "content": {"url": "mxc://test/big"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
            ],
        )
        for u in others:
            await self.join(u, big)
        mid = await self.create_room(alice, visibility="public", name="Middle", creation_content={"type": "m.space"})
        await self.join(others[0], mid)
        small = await self.create_room(
            alice,
            visibility="public",
            preset="private_chat",
            initial_state=[{"type": "m.room.topic", "content": {"topic": "t", "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>x</b>"}, {"body": "Plain cheese"}]}}}],
        )
        await self.create_room(alice, name="Hidden cheese")  # private: never listed
        return {"big": big, "mid": mid, "small": small}


class PublicRoomsTests(PublicRoomsTestCase):
    async def test_listing(self) -> None:
        rooms = await self._rooms()
        code, body = await self.get(f"{C}/publicRooms", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([e["room_id"] for e in body["chunk"]], [rooms["big"], rooms["mid"], rooms["small"]])
        self.assertEqual(body["total_room_count_estimate"], 3)
        self.assertNotIn("next_batch", body)
        self.assertNotIn("prev_batch", body)
        big, mid, small = body["chunk"]
        self.assertEqual(
            big,
            {
                "room_id": rooms["big"],
                "name": "Big room",
                "topic": "All about cheese",
                "canonical_alias": "#big:test",
                "num_joined_members": 4,
                "world_readable": True,
                "guest_can_join": True,
                "join_rule": "public",
                "avatar_url": "mxc://test/big",
            },
        )
        self.assertEqual((mid["room_type"], mid["num_joined_members"], mid["world_readable"]), ("m.space", 2, False))
        self.assertEqual((small["topic"], small["join_rule"], small["guest_can_join"]), ("Plain cheese", "invite", True))
        self.assertNotIn("name", small)
        # POST gives the same without a filter
        code, posted = await self.post(f"{C}/publicRooms", {}, self.alice)
        self.assertEqual(posted, body)
        # the server parameter naming us is fine
        self.assertEqual((await self.get(f"{C}/publicRooms?server=test", self.alice))[1], body)

    async def test_pagination(self) -> None:
        rooms = await self._rooms()
        order = [rooms["big"], rooms["mid"], rooms["small"]]
        code, page1 = await self.get(f"{C}/publicRooms?limit=1", self.alice)
        self.assertEqual([e["room_id"] for e in page1["chunk"]], order[:1])
        self.assertNotIn("prev_batch", page1)
        code, page2 = await self.get(f"{C}/publicRooms?limit=1&since={q(page1['next_batch'])}", self.alice)
        self.assertEqual([e["room_id"] for e in page2["chunk"]], order[1:2])
        code, page3 = await self.post(f"{C}/publicRooms", {"limit": 1, "since": page2["next_batch"]}, self.alice)
        self.assertEqual([e["room_id"] for e in page3["chunk"]], order[2:])
        self.assertNotIn("next_batch", page3)
        # and back
        code, back = await self.post(f"{C}/publicRooms", {"limit": 1, "since": page3["prev_batch"]}, self.alice)
        self.assertEqual([e["room_id"] for e in back["chunk"]], order[1:2])
        code, back = await self.post(f"{C}/publicRooms", {"limit": 5, "since": page3["prev_batch"]}, self.alice)
        self.assertEqual([e["room_id"] for e in back["chunk"]], order[:2])
        self.assertNotIn("prev_batch", back)
        self.assertEqual(back["next_batch"] is not None, True)

    async def test_filters(self) -> None:
        rooms = await self._rooms()

        async def search(filter_: dict) -> list[str]:
            code, body = await self.post(f"{C}/publicRooms", {"filter": filter_}, self.alice)
            self.assertEqual(code, 200, body)
            return [e["room_id"] for e in body["chunk"]]

        self.assertEqual(await search({"generic_search_term": "CHEESE"}), [rooms["big"], rooms["small"]])
        self.assertEqual(await search({"generic_search_term": "#big"}), [rooms["big"]])
        self.assertEqual(await search({"generic_search_term": "middle"}), [rooms["mid"]])
        self.assertEqual(await search({"generic_search_term": "nothing like it"}), [])
        self.assertEqual(await search({"room_types": ["m.space"]}), [rooms["mid"]])
        self.assertEqual(await search({"room_types": [None]}), [rooms["big"], rooms["small"]])
        self.assertEqual(await search({"room_types": [None, "m.space"]}), [rooms["big"], rooms["mid"], rooms["small"]])
        code, body = await self.post(f"{C}/publicRooms", {"include_all_networks": True}, self.alice)
        self.assertEqual(len(body["chunk"]), 3)
        # an application service network's directory (Synapse's "{appservice id}|{network id}")
        code, body = await self.post(f"{C}/publicRooms", {"third_party_instance_id": "irc|freenode"}, self.alice)
        self.assertEqual(body["chunk"], [])
        result = await self.post(f"{C}/publicRooms", {"third_party_instance_id": "irc"}, self.alice)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")

    async def test_unpublish_and_auth(self) -> None:
        rooms = await self._rooms()
        await self.put(f"{C}/directory/list/room/{q(rooms['mid'])}", {"visibility": "private"}, self.alice)
        code, body = await self.get(f"{C}/publicRooms", self.alice)
        self.assertEqual([e["room_id"] for e in body["chunk"]], [rooms["big"], rooms["small"]])
        self.assertMatrixError(await self.get(f"{C}/publicRooms"), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.post(f"{C}/publicRooms", {}), 401, "M_MISSING_TOKEN")

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/publicRooms"
        self.assertMatrixError(await self.get(f"{path}?limit=ten", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{path}?since=garbage", alice), 400, "M_INVALID_PARAM")
        # another server's directory is fetched over federation (tests/test_remote_queries.py);
        # a private address that is not whitelisted is never contacted
        result = await self.get(f"{path}?server=10.0.0.1:8448", alice)
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        for body, errcode in (
            ({"limit": "5"}, "M_BAD_JSON"),
            ({"since": 5}, "M_BAD_JSON"),
            ({"filter": "x"}, "M_BAD_JSON"),
            ({"filter": {"generic_search_term": 1}}, "M_BAD_JSON"),
            ({"filter": {"room_types": "m.space"}}, "M_BAD_JSON"),
            ({"filter": {"room_types": [1]}}, "M_BAD_JSON"),
            ({"include_all_networks": "yes"}, "M_BAD_JSON"),
            ({"third_party_instance_id": 1}, "M_BAD_JSON"),
            ({"include_all_networks": True, "third_party_instance_id": "irc"}, "M_INVALID_PARAM"),
            ({"since": "!!!"}, "M_INVALID_PARAM"),
        ):
            self.assertMatrixError(await self.post(path, body, alice), 400, errcode)
        self.assertMatrixError(await self.request("POST", path, raw=b"{", token=alice), 400, "M_NOT_JSON")


class PublicationNotAllowedTests(HomeserverTestCase):
    config_overrides = {"room_directory": {"publication_allowed": False}}

    async def test_publication_not_allowed(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        path = f"{C}/directory/list/room/{q(room)}"
        self.assertMatrixError(await self.put(path, {"visibility": "public"}, alice), 403, "M_FORBIDDEN")
        self.assertEqual(await self.put(path, {"visibility": "private"}, alice), (200, {}))


class PublicRoomsWithoutAuthTests(PublicRoomsTestCase):
    config_overrides = {"room_directory": {"public_rooms_without_auth": True}}

    async def test_anonymous_sees_what_a_user_sees(self) -> None:
        rooms = await self._rooms()
        await self.put(f"{C}/directory/list/room/{q(rooms['mid'])}", {"visibility": "private"}, self.alice)
        code, body = await self.get(f"{C}/publicRooms", self.alice)
        self.assertEqual([e["room_id"] for e in body["chunk"]], [rooms["big"], rooms["small"]])
        code, anonymous = await self.get(f"{C}/publicRooms")
        self.assertEqual((code, anonymous), (200, body))
        # a token that is sent must still be valid
        self.assertMatrixError(await self.get(f"{C}/publicRooms", "badtoken"), 401, "M_UNKNOWN_TOKEN")
