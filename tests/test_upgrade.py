"""POST /rooms/{roomId}/upgrade over HTTP: copied state, tombstone, aliases, power levels across versions."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, TwoServerTestCase, q


class UpgradeTests(HomeserverTestCase):
    async def upgrade(self, user: TestUser, room: str, version: str, **extra: Any) -> str:
        code, body = await self.post(f"{C}/rooms/{q(room)}/upgrade", {"new_version": version, **extra}, user)
        self.assertEqual(code, 200, body)
        return body["replacement_room"]

    async def _full_room(self, alice: TestUser, version: str) -> str:
        room = await self.create_room(
            alice,
            room_version=version,
            visibility="public",
            room_alias_name="main",
            name="Main",
            topic="Topic",
            creation_content={"type": "org.example.kind"},
            initial_state=[
                {"type": "m.room.avatar", "content": {"url": "mxc://test/a"}},
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                {"type": "m.room.server_acl", "content": {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": False}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.private", "content": {"not": "copied"}},
            ],
        )
        self.assertEqual(await self.put(f"{C}/directory/room/{q('#second:test')}", {"room_id": room}, alice), (200, {}))
        await self.set_state(alice, room, "m.room.canonical_alias", {"alias": "#main:test", "alt_aliases": ["#second:test", "#far:elsewhere.example"]})
        return room

    async def test_upgrade_copies_state_and_moves_aliases(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        old = await self._full_room(alice, "10")
        await self.post(f"{C}/rooms/{q(old)}/ban", {"user_id": "@spammer:elsewhere.example", "reason": "spam"}, alice)
        copied = (
            "m.room.name",
            "m.room.topic",
            "m.room.avatar",
            "m.room.encryption",
            "m.room.server_acl",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
            "m.room.power_levels",
        )
        before = {etype: await self.room_state(old, etype) for etype in copied}
        new = await self.upgrade(alice, old, "11")
        self.assertNotEqual(new, old)
        create = await self.room_state(new, "m.room.create")
        # predecessor.event_id is the old room's last event: its tombstone (as Synapse; SyTest
        # "/upgrade creates a new room")
        tombstones = [e for e in await self.room_events(alice, old) if e["type"] == "m.room.tombstone"]
        self.assertEqual(len(tombstones), 1)
        self.assertEqual(create["predecessor"], {"room_id": old, "event_id": tombstones[0]["event_id"]})
        self.assertEqual((create["room_version"], create["type"]), ("11", "org.example.kind"))
        for etype in copied:
            self.assertIsNotNone(before[etype], etype)
            self.assertEqual(await self.room_state(new, etype), before[etype], etype)
        self.assertIsNone(await self.room_state(new, "org.example.private"))
        self.assertEqual(await self.room_state(new, "m.room.member", "@spammer:elsewhere.example"), {"membership": "ban", "reason": "spam"})
        self.assertEqual(await self.membership(new, alice), "join")
        # the old room is tombstoned and quietened
        tombstone = await self.room_state(old, "m.room.tombstone")
        self.assertEqual(tombstone["replacement_room"], new)
        self.assertIsInstance(tombstone["body"], str)
        old_pl = await self.room_state(old, "m.room.power_levels")
        self.assertEqual((old_pl["events_default"], old_pl["invite"]), (50, 50))
        # aliases, canonical alias and the directory listing moved
        self.assertEqual((await self.get(f"{C}/directory/room/{q('#main:test')}"))[1]["room_id"], new)
        self.assertEqual((await self.get(f"{C}/rooms/{q(new)}/aliases", alice))[1]["aliases"], ["#main:test", "#second:test"])
        self.assertEqual(
            await self.room_state(new, "m.room.canonical_alias"),
            {"alias": "#main:test", "alt_aliases": ["#second:test", "#far:elsewhere.example"]},
        )
        self.assertEqual(await self.room_state(old, "m.room.canonical_alias"), {"alt_aliases": ["#far:elsewhere.example"]})
        self.assertEqual((await self.get(f"{C}/directory/list/room/{q(new)}"))[1], {"visibility": "public"})
        self.assertEqual((await self.get(f"{C}/directory/list/room/{q(old)}"))[1], {"visibility": "private"})
        # members of the old room may join the new one (it is public)
        await self.join(bob, new)

    async def test_to_v12_creators(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        old = await self.create_room(alice, room_version="11", preset="public_chat")
        await self.join(bob, old)
        await self.set_power(alice, old, bob.user_id, 50)
        new = await self.upgrade(alice, old, "12")
        self.assertNotIn(":", new)
        pl = await self.room_state(new, "m.room.power_levels")
        self.assertEqual(pl["users"], {bob.user_id: 50})
        self.assertGreater(pl["events"]["m.room.tombstone"], pl["state_default"])
        self.assertNotIn("additional_creators", await self.room_state(new, "m.room.create"))
        # v12 -> v12 with additional creators: they leave users
        newer = await self.upgrade(alice, new, "12", additional_creators=[bob.user_id, carol.user_id, alice.user_id])
        create = await self.room_state(newer, "m.room.create")
        self.assertEqual(create["additional_creators"], [bob.user_id, carol.user_id])
        self.assertEqual((await self.room_state(newer, "m.room.power_levels"))["users"], {})
        self.assertIn("event_id", create["predecessor"])

    async def test_from_v12_to_older(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        old = await self.create_room(
            alice, room_version="12", preset="public_chat", creation_content={"additional_creators": [bob.user_id]}
        )
        await self.join(bob, old)
        new = await self.upgrade(bob, old, "11")
        pl = await self.room_state(new, "m.room.power_levels")
        # both creators of the v12 room keep administrator power
        self.assertEqual(pl["users"], {alice.user_id: 100, bob.user_id: 100})
        self.assertEqual((await self.room_state(new, "m.room.create"))["predecessor"]["room_id"], old)
        # bob cannot give himself more than he has; alice can still act as admin
        await self.join(alice, new)
        await self.set_state(alice, new, "m.room.name", {"name": "still admin"})

    async def test_stringy_power_levels_become_integers(self) -> None:
        alice = await self.register("alice")
        old = await self.create_room(alice, room_version="1", preset="public_chat")
        pl = await self.room_state(old, "m.room.power_levels")
        await self.set_state(
            alice, old, "m.room.power_levels", {**pl, "kick": " 40", "users": {alice.user_id: "100", "@x:test": 10.7}, "events": {"m.room.name": "+30"}}
        )
        new = await self.upgrade(alice, old, "10")
        pl = await self.room_state(new, "m.room.power_levels")
        self.assertEqual((pl["kick"], pl["users"], pl["events"]), (40, {alice.user_id: 100, "@x:test": 10}, {"m.room.name": 30}))

    async def test_upgrade_by_moderator_with_tombstone_power(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        old = await self.create_room(alice, room_version="9", preset="public_chat", name="n")
        await self.join(bob, old)
        pl = await self.room_state(old, "m.room.power_levels")
        pl = {**pl, "users": {**pl["users"], bob.user_id: 50}, "events": {**pl["events"], "m.room.tombstone": 50}}
        await self.set_state(alice, old, "m.room.power_levels", pl)
        new = await self.upgrade(bob, old, "10")
        # bob could not otherwise send the copied power levels: a first event raised him, the last restores them
        events = await self.room_events(bob, new)
        pls = [e for e in events if e["type"] == "m.room.power_levels"]
        self.assertEqual(len(pls), 2)
        self.assertEqual(pls[0]["content"]["users"][bob.user_id], 100)
        self.assertEqual(await self.room_state(new, "m.room.power_levels"), pl)
        self.assertEqual(await self.room_state(new, "m.room.name"), {"name": "n"})
        # bob cannot change the old room's power levels (he lacks the level): the tombstone is there anyway
        self.assertEqual((await self.room_state(old, "m.room.tombstone"))["replacement_room"], new)
        self.assertEqual((await self.room_state(old, "m.room.power_levels"))["events_default"], 0)

    async def test_every_version_pair_sample(self) -> None:
        alice = await self.register("alice")
        for old_v, new_v in (("1", "6"), ("6", "7"), ("7", "9"), ("9", "10"), ("10", "12"), ("12", "1")):
            old = await self.create_room(alice, room_version=old_v, name=f"from {old_v}")
            new = await self.upgrade(alice, old, new_v)
            self.assertEqual((await self.room_state(new, "m.room.create"))["room_version"], new_v)
            self.assertEqual(await self.room_state(new, "m.room.name"), {"name": f"from {old_v}"})
            await self.set_state(alice, new, "m.room.topic", {"topic": "works"})

    async def test_refusals_and_bad_input(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat", room_version="11")
        path = f"{C}/rooms/{q(room)}/upgrade"
        # not in the room; in the room without the tombstone level
        self.assertMatrixError(await self.post(path, {"new_version": "12"}, bob), 403, "M_FORBIDDEN")
        await self.join(bob, room)
        self.assertMatrixError(await self.post(path, {"new_version": "12"}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(path, {"new_version": "99"}, alice), 400, "M_UNSUPPORTED_ROOM_VERSION")
        self.assertMatrixError(await self.post(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"new_version": 12}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(path, {"new_version": "12", "additional_creators": "x"}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(path, {"new_version": "12", "additional_creators": ["x"]}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.request("POST", path, raw=b"?", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, {"new_version": "12"}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(
            await self.post(f"{C}/rooms/{q('!x:test')}/upgrade", {"new_version": "12"}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.post(f"{C}/rooms/x/upgrade", {"new_version": "12"}, alice), 400, "M_INVALID_PARAM")
        # nothing happened to the room
        self.assertIsNone(await self.room_state(room, "m.room.tombstone"))

    async def test_joining_the_new_room_copies_the_users_tags(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob, preset="public_chat")
        tags = f"{C}/user/{q(bob.user_id)}/rooms"
        self.assertEqual(await self.put(f"{tags}/{q(room)}/tags/work", {"order": 0.5}, bob), (200, {}))
        new_room = await self.upgrade(alice, room, "10")
        await self.join(bob, new_room)
        code, body = await self.get(f"{tags}/{q(new_room)}/tags", bob)
        self.assertEqual((code, body), (200, {"tags": {"work": {"order": 0.5}}}))
        # the old room keeps its tags; a room that is not an upgrade copies nothing
        code, body = await self.get(f"{tags}/{q(room)}/tags", bob)
        self.assertEqual(body, {"tags": {"work": {"order": 0.5}}})
        plain = await self.create_room(alice, preset="public_chat")
        await self.join(bob, plain)
        code, body = await self.get(f"{tags}/{q(plain)}/tags", bob)
        self.assertEqual(body, {"tags": {}})

    async def test_direct_chats_stay_direct(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.shared_room(alice, bob, preset="public_chat")
        other = await self.create_room(alice)
        for user, peer in ((alice, bob), (bob, alice)):
            path = f"{C}/user/{q(user.user_id)}/account_data/m.direct"
            self.assertEqual(await self.put(path, {peer.user_id: [other, room]}, user), (200, {}))
        new_room = await self.upgrade(alice, room, "10")
        # the upgrader's m.direct names the new room at once, the other member's once they join
        code, body = await self.get(f"{C}/user/{q(alice.user_id)}/account_data/m.direct", alice)
        self.assertEqual((code, body), (200, {bob.user_id: [other, room, new_room]}))
        code, body = await self.get(f"{C}/user/{q(bob.user_id)}/account_data/m.direct", bob)
        self.assertEqual(body, {alice.user_id: [other, room]})
        await self.join(bob, new_room)
        code, body = await self.get(f"{C}/user/{q(bob.user_id)}/account_data/m.direct", bob)
        self.assertEqual(body, {alice.user_id: [other, room, new_room]})

    async def test_old_canonical_alias_emptied(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, room_alias_name="one")
        self.assertEqual(await self.put(f"{C}/directory/room/{q('#two:test')}", {"room_id": room}, alice), (200, {}))
        await self.set_state(alice, room, "m.room.canonical_alias", {"alias": "#one:test", "alt_aliases": ["#two:test"]})
        new_room = await self.upgrade(alice, room, "10")
        # every alias moved: the old room's canonical alias is left empty, without alt_aliases
        self.assertEqual(await self.room_state(room, "m.room.canonical_alias"), {})
        self.assertEqual(
            await self.room_state(new_room, "m.room.canonical_alias"), {"alias": "#one:test", "alt_aliases": ["#two:test"]}
        )


class RemoteUpgradeTests(TwoServerTestCase):
    async def test_joining_server_moves_its_aliases_and_listing(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        # bob may publish the room in his server's directory (list_public_rooms: the room's
        # state event level)
        pl = {"users": {alice.user_id: 100, bob.user_id: 100}}
        code, body = await self.a.post(f"{C}/createRoom", {"preset": "public_chat", "room_version": "10", "power_level_content_override": pl}, alice)
        self.assertEqual(code, 200, body)
        room = body["room_id"]
        await self.b.join(bob, room, via=[self.a.server_name])
        # bob's server lists the room and has an alias for it
        alias = f"#bobs:{self.b.server_name}"
        self.assertEqual(await self.b.put(f"{C}/directory/room/{q(alias)}", {"room_id": room}, bob), (200, {}))
        self.assertEqual(await self.b.put(f"{C}/directory/list/room/{q(room)}", {"visibility": "public"}, bob), (200, {}))
        code, body = await self.a.post(f"{C}/rooms/{q(room)}/upgrade", {"new_version": "10"}, alice)
        self.assertEqual(code, 200, body)
        new_room = body["replacement_room"]

        async def tombstoned() -> bool:
            return await self.b.hs.room_server.current_state_event(room, "m.room.tombstone") is not None

        await self.wait_until(tombstoned, "the tombstone reaches B")
        await self.b.join(bob, new_room, via=[self.a.server_name])
        code, body = await self.b.get(f"{C}/directory/room/{q(alias)}")
        self.assertEqual((code, body["room_id"]), (200, new_room))
        code, body = await self.b.get(f"{C}/directory/list/room/{q(new_room)}")
        self.assertEqual(body, {"visibility": "public"})
        code, body = await self.b.get(f"{C}/directory/list/room/{q(room)}")
        self.assertEqual(body, {"visibility": "private"})

    async def test_a_room_naming_a_predecessor_takes_nothing_without_its_tombstone(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        code, body = await self.b.post(f"{C}/createRoom", {"preset": "public_chat"}, bob)
        bobs_room = body["room_id"]
        alias = f"#kept:{self.b.server_name}"
        self.assertEqual(await self.b.put(f"{C}/directory/room/{q(alias)}", {"room_id": bobs_room}, bob), (200, {}))
        # alice's room claims to replace bob's room, which has no tombstone naming it
        body = {"preset": "public_chat", "creation_content": {"predecessor": {"room_id": bobs_room}}}
        code, body = await self.a.post(f"{C}/createRoom", body, alice)
        self.assertEqual(code, 200, body)
        await self.b.join(bob, body["room_id"], via=[self.a.server_name])
        code, body = await self.b.get(f"{C}/directory/room/{q(alias)}")
        self.assertEqual((code, body["room_id"]), (200, bobs_room))
