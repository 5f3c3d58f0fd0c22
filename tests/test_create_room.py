"""POST /createRoom over HTTP: every field, the event order, room versions, bad input."""

from __future__ import annotations

from tests.harness import C, HomeserverTestCase, q


class CreateRoomTests(HomeserverTestCase):
    async def test_minimal_private_room(self) -> None:
        alice = await self.register("alice")
        code, body = await self.post(f"{C}/createRoom", {}, alice)
        self.assertEqual(code, 200, body)
        room = body["room_id"]
        self.assertEqual(set(body), {"room_id"})
        types = [(e["type"], e.get("state_key")) for e in await self.room_events(alice, room)]
        self.assertEqual(
            types,
            [
                ("m.room.create", ""),
                ("m.room.member", alice.user_id),
                ("m.room.power_levels", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("m.room.guest_access", ""),
            ],
        )
        self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "invite"})
        self.assertEqual(await self.room_state(room, "m.room.history_visibility"), {"history_visibility": "shared"})
        self.assertEqual(await self.room_state(room, "m.room.guest_access"), {"guest_access": "can_join"})
        # the default version comes from the config (12): creators are not in users, tombstone > state_default
        create = await self.room_state(room, "m.room.create")
        self.assertEqual(create["room_version"], self.hs.config.default_room_version)
        pl = await self.room_state(room, "m.room.power_levels")
        self.assertNotIn(alice.user_id, pl["users"])
        self.assertGreater(pl["events"]["m.room.tombstone"], pl["state_default"])
        self.assertEqual((await self.get(f"{C}/directory/list/room/{q(room)}"))[1], {"visibility": "private"})

    async def test_every_field_and_the_event_order(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        await self.set_profile(alice, "Alice", "mxc://test/alice")
        code, body = await self.post(
            f"{C}/createRoom",
            {
                "visibility": "public",
                "room_alias_name": "pub",
                "name": "The Pub",
                "topic": "Happy hour",
                "invite": [bob.user_id, carol.user_id, bob.user_id],
                "room_version": "10",
                "creation_content": {"m.federate": False, "type": "org.example.kind", "creator": "@evil:test"},
                "initial_state": [
                    {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                    {"type": "org.example.thing", "state_key": "k", "content": {"v": 1}},
                    {"type": "m.room.name", "content": {"name": "overridden by name"}},
                ],
                "is_direct": True,
                "power_level_content_override": {"events_default": 10},
            },
            alice,
        )
        self.assertEqual(code, 200, body)
        room = body["room_id"]
        self.assertEqual(body["room_alias"], "#pub:test")
        self.assertTrue(room.endswith(":test"))
        events = await self.room_events(alice, room)
        self.assertEqual(
            [(e["type"], e.get("state_key")) for e in events],
            [
                ("m.room.create", ""),
                ("m.room.member", alice.user_id),
                ("m.room.power_levels", ""),
                ("m.room.canonical_alias", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("m.room.guest_access", ""),
                ("m.room.encryption", ""),
                ("org.example.thing", "k"),
                ("m.room.name", ""),
                ("m.room.topic", ""),
                ("m.room.member", bob.user_id),
                ("m.room.member", carol.user_id),
            ],
        )
        # one transaction: every event has consecutive stream positions
        infos = [await self.hs.event_store.get_event_info(e["event_id"]) for e in events]
        positions = [i.stream_ordering for i in infos if i is not None]
        self.assertEqual(positions, list(range(positions[0], positions[0] + len(events))))
        create = events[0]["content"]
        self.assertEqual(create["creator"], alice.user_id)  # v10 keeps creator, the client's is overwritten
        self.assertEqual((create["room_version"], create["m.federate"], create["type"]), ("10", False, "org.example.kind"))
        self.assertEqual(
            await self.room_state(room, "m.room.member", alice.user_id),
            {"membership": "join", "displayname": "Alice", "avatar_url": "mxc://test/alice"},
        )
        pl = await self.room_state(room, "m.room.power_levels")
        self.assertEqual((pl["users"], pl["events_default"]), ({alice.user_id: 100}, 10))
        self.assertEqual(await self.room_state(room, "m.room.canonical_alias"), {"alias": "#pub:test"})
        self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "public"})
        self.assertEqual(await self.room_state(room, "m.room.guest_access"), {"guest_access": "forbidden"})
        self.assertEqual(await self.room_state(room, "m.room.name"), {"name": "The Pub"})
        topic = await self.room_state(room, "m.room.topic")
        self.assertEqual(topic["topic"], "Happy hour")
        self.assertEqual(topic["m.topic"]["m.text"], [{"mimetype": "text/plain", "body": "Happy hour"}])
        self.assertEqual(
            await self.room_state(room, "m.room.member", bob.user_id), {"membership": "invite", "displayname": "bob", "is_direct": True}
        )
        # the alias resolves, and the room is in the directory
        self.assertEqual((await self.get(f"{C}/directory/room/{q('#pub:test')}"))[1]["room_id"], room)
        self.assertEqual((await self.get(f"{C}/directory/list/room/{q(room)}"))[1], {"visibility": "public"})
        # bob and carol can join through their invites
        await self.join(bob, room)
        self.assertEqual(await self.membership(room, bob), "join")

    async def test_presets(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        for version in ("1", "11"):
            room = await self.create_room(alice, preset="trusted_private_chat", invite=[bob.user_id], room_version=version)
            pl = await self.room_state(room, "m.room.power_levels")
            self.assertEqual(pl["users"], {alice.user_id: 100, bob.user_id: 100})
            self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "invite"})
        # v12: trusted_private_chat invitees become additional creators
        room = await self.create_room(alice, preset="trusted_private_chat", invite=[bob.user_id], room_version="12")
        create = await self.room_state(room, "m.room.create")
        self.assertEqual(create["additional_creators"], [bob.user_id])
        self.assertEqual((await self.room_state(room, "m.room.power_levels"))["users"], {})
        # public visibility implies public_chat, an explicit preset wins
        room = await self.create_room(alice, visibility="public")
        self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "public"})
        room = await self.create_room(alice, visibility="public", preset="private_chat")
        self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "invite"})
        self.assertEqual((await self.get(f"{C}/directory/list/room/{q(room)}"))[1], {"visibility": "public"})

    async def test_initial_state_overrides_preset(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(
            alice,
            preset="public_chat",
            initial_state=[
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "invite"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.topic", "content": {"topic": "kept"}},
            ],
        )
        types = [e["type"] for e in await self.room_events(alice, room)]
        self.assertEqual(types.count("m.room.join_rules"), 1)
        self.assertEqual(await self.room_state(room, "m.room.join_rules"), {"join_rule": "invite"})
        self.assertEqual(
            await self.room_state(room, "m.room.history_visibility"), {"history_visibility": "world_readable"}
        )
        self.assertEqual(await self.room_state(room, "m.room.topic"), {"topic": "kept"})

    async def test_room_versions(self) -> None:
        alice = await self.register("alice")
        for version in ("1", "6", "7", "9", "10", "11", "12"):
            room = await self.create_room(alice, room_version=version, name=f"v{version}")
            create = await self.room_state(room, "m.room.create")
            self.assertEqual(create["room_version"], version)
            pl = await self.room_state(room, "m.room.power_levels")
            if version == "12":
                self.assertNotIn(":", room)
                self.assertNotIn("creator", create)
                self.assertEqual(pl["users"], {})
                self.assertEqual(pl["events"]["m.room.tombstone"], 150)
            else:
                self.assertTrue(room.endswith(":test"))
                self.assertEqual(pl["users"], {alice.user_id: 100})
                self.assertEqual("creator" in create, int(version) < 11)
            self.assertEqual(await self.room_state(room, "m.room.name"), {"name": f"v{version}"})
        self.assertMatrixError(
            await self.post(f"{C}/createRoom", {"room_version": "999"}, alice), 400, "M_UNSUPPORTED_ROOM_VERSION"
        )
        self.assertMatrixError(
            await self.post(f"{C}/createRoom", {"room_version": 12}, alice), 400, "M_BAD_JSON"
        )

    async def test_v12_additional_creators(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(
            alice, room_version="12", creation_content={"additional_creators": [bob.user_id, alice.user_id]}
        )
        self.assertEqual((await self.room_state(room, "m.room.create"))["additional_creators"], [bob.user_id])
        # creators may not be listed in power levels users
        for who in (alice.user_id, bob.user_id):
            self.assertMatrixError(
                await self.post(
                    f"{C}/createRoom",
                    {
                        "room_version": "12",
                        "creation_content": {"additional_creators": [bob.user_id]},
                        "power_level_content_override": {"users": {who: 100}},
                    },
                    alice,
                ),
                400,
                "M_INVALID_ROOM_STATE",
            )
        self.assertMatrixError(
            await self.post(
                f"{C}/createRoom", {"room_version": "12", "creation_content": {"additional_creators": ["nope"]}}, alice
            ),
            400,
            "M_INVALID_PARAM",
        )
        # in v11 the field means nothing and is left alone
        room = await self.create_room(alice, room_version="11", creation_content={"additional_creators": ["x"]})
        self.assertEqual((await self.room_state(room, "m.room.create"))["additional_creators"], ["x"])

    async def test_power_level_override_and_invalid_state(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(
            alice, room_version="11", power_level_content_override={"users": {alice.user_id: 100, "@x:test": 50}, "kick": 75}
        )
        pl = await self.room_state(room, "m.room.power_levels")
        self.assertEqual((pl["users"], pl["kick"], pl["ban"]), ({alice.user_id: 100, "@x:test": 50}, 75, 50))
        # a creator left without the power to name the room: the initial state is invalid, nothing is created
        before = len(await self.hs.event_store.get_rooms_for_user(alice.user_id))
        self.assertMatrixError(
            await self.post(
                f"{C}/createRoom",
                {"room_version": "11", "name": "x", "power_level_content_override": {"users": {alice.user_id: 10}}},
                alice,
            ),
            400,
            "M_INVALID_ROOM_STATE",
        )
        # v10+: power levels must be integers
        self.assertMatrixError(
            await self.post(
                f"{C}/createRoom", {"room_version": "10", "power_level_content_override": {"kick": "50"}}, alice
            ),
            400,
            "M_INVALID_ROOM_STATE",
        )
        self.assertEqual(len(await self.hs.event_store.get_rooms_for_user(alice.user_id)), before)

    async def test_alias_in_use(self) -> None:
        alice = await self.register("alice")
        await self.create_room(alice, room_alias_name="taken")
        before = len(await self.hs.event_store.get_rooms_for_user(alice.user_id))
        self.assertMatrixError(
            await self.post(f"{C}/createRoom", {"room_alias_name": "taken"}, alice), 400, "M_ROOM_IN_USE"
        )
        self.assertEqual(len(await self.hs.event_store.get_rooms_for_user(alice.user_id)), before)
        for bad in ("a:b", "", "#x", "x\u0000y", "x" * 300):
            self.assertMatrixError(
                await self.post(f"{C}/createRoom", {"room_alias_name": bad}, alice), 400, "M_INVALID_PARAM"
            )

    async def test_invites(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        # inviting yourself is ignored
        room = await self.create_room(alice, invite=[alice.user_id, bob.user_id])
        self.assertEqual(await self.room_state(room, "m.room.member", bob.user_id), {"membership": "invite", "displayname": "bob"})
        self.assertEqual(await self.membership(room, alice), "join")
        for invite, status, errcode in (
            (["@nobody:test"], 404, "M_NOT_FOUND"),
            (["not-a-user"], 400, "M_INVALID_PARAM"),
            ([1], 400, "M_BAD_JSON"),
            ("@bob:test", 400, "M_BAD_JSON"),
        ):
            self.assertMatrixError(await self.post(f"{C}/createRoom", {"invite": invite}, alice), status, errcode)
        # an invite_3pid entry without id_access_token (invite_3pid.yaml requires it)
        self.assertMatrixError(
            await self.post(
                f"{C}/createRoom", {"invite_3pid": [{"id_server": "x", "medium": "email", "address": "a@b"}]}, alice
            ),
            400,
            "M_MISSING_PARAM",
        )
        # a user of an unreachable server: the room is made, the invite is not
        code, body = await self.post(f"{C}/createRoom", {"invite": ["@someone:127.0.0.1:1"]}, alice)
        self.assertEqual(code, 200, body)
        self.assertIsNone(await self.membership(body["room_id"], "@someone:127.0.0.1:1"))
        # an empty invite_3pid list is fine
        await self.create_room(alice, invite_3pid=[])

    async def test_float_in_creation_content_is_bad_json(self) -> None:
        # Found by the fuzz run: a float nested in creation_content reached the create event
        # builder and answered 500.
        alice = await self.register("alice")
        body = {"creation_content": {"x": [{"y": 1.5}]}}
        self.assertMatrixError(await self.post(f"{C}/createRoom", body, alice), 400, "M_BAD_JSON")

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/createRoom"
        self.assertMatrixError(await self.post(path, {}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.request("POST", path, raw=b"{nope", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, [1], alice), 400, "M_BAD_JSON")
        for body, errcode in (
            ({"visibility": "secret"}, "M_INVALID_PARAM"),
            ({"visibility": 1}, "M_BAD_JSON"),
            ({"preset": "party"}, "M_INVALID_PARAM"),
            ({"name": 5}, "M_BAD_JSON"),
            ({"topic": ["x"]}, "M_BAD_JSON"),
            ({"is_direct": "yes"}, "M_BAD_JSON"),
            ({"creation_content": []}, "M_BAD_JSON"),
            ({"creation_content": {"m.federate": "no"}}, "M_BAD_JSON"),
            ({"creation_content": {"type": 3}}, "M_BAD_JSON"),
            ({"creation_content": {"predecessor": "!x:test"}}, "M_BAD_JSON"),
            ({"power_level_content_override": 100}, "M_BAD_JSON"),
            ({"initial_state": {}}, "M_BAD_JSON"),
            ({"initial_state": ["x"]}, "M_BAD_JSON"),
            ({"initial_state": [{"type": "m.room.name"}]}, "M_BAD_JSON"),
            ({"initial_state": [{"content": {}}]}, "M_BAD_JSON"),
            ({"initial_state": [{"type": "x", "state_key": 1, "content": {}}]}, "M_BAD_JSON"),
            ({"initial_state": [{"type": "m.room.create", "content": {}}]}, "M_INVALID_ROOM_STATE"),
            ({"initial_state": [{"type": "m.room.member", "state_key": alice.user_id, "content": {"membership": "join"}}]}, "M_INVALID_ROOM_STATE"),
            ({"initial_state": [{"type": "x", "state_key": "@bob:test", "content": {}}]}, "M_INVALID_ROOM_STATE"),
            ({"initial_state": [{"type": "m.room.canonical_alias", "content": {"alias": "#nope:test"}}]}, "M_BAD_ALIAS"),
            ({"initial_state": [{"type": "m.room.canonical_alias", "content": {"alias": "nope"}}]}, "M_INVALID_PARAM"),
        ):
            self.assertMatrixError(await self.post(path, body, alice), 400, errcode)
        self.assertMatrixError(await self.post(path, {"name": "x" * 70000}, alice), 413, "M_TOO_LARGE")
        # nothing was half-made, and the server keeps serving
        self.assertEqual(await self.hs.event_store.get_rooms_for_user(alice.user_id), [])
        await self.create_room(alice)

    async def test_r0_prefix(self) -> None:
        alice = await self.register("alice")
        code, body = await self.post("/_matrix/client/r0/createRoom", {}, alice)
        self.assertEqual(code, 200, body)


class GuestCreateRoomTests(HomeserverTestCase):
    config_overrides = {"registration": {"enabled": True, "allow_guests": True}}

    async def test_guests_cannot_create_rooms(self) -> None:
        code, body = await self.post(f"{C}/register?kind=guest", {})
        self.assertEqual(code, 200, body)
        self.assertMatrixError(
            await self.post(f"{C}/createRoom", {}, body["access_token"]), 403, "M_GUEST_ACCESS_FORBIDDEN"
        )


class PublicationNotAllowedCreateRoomTests(HomeserverTestCase):
    config_overrides = {"room_directory": {"publication_allowed": False}}

    async def test_publication_not_allowed(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.post(f"{C}/createRoom", {"visibility": "public"}, alice), 403, "M_FORBIDDEN")
        await self.create_room(alice, visibility="private")
