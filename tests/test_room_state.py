"""Room state over HTTP: GET/PUT state, /members, /joined_members, /joined_rooms."""

from __future__ import annotations

from tests.harness import C, HomeserverTestCase, q


def by_key(events: list[dict]) -> dict[tuple[str, str], dict]:
    return {(e["type"], e["state_key"]): e for e in events}


class RoomStateTests(HomeserverTestCase):
    async def test_get_full_state(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        code, state = await self.get(f"{C}/rooms/{q(room)}/state", alice)
        self.assertEqual(code, 200, state)
        keys = set(by_key(state))
        self.assertLessEqual(
            {
                ("m.room.create", ""),
                ("m.room.member", alice.user_id),
                ("m.room.power_levels", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
            },
            keys,
        )
        for ev in state:
            self.assertEqual(ev["room_id"], room)
            self.assertIn("event_id", ev)

    async def test_put_and_get_state_event(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        first = await self.set_state(alice, room, "m.room.name", {"name": "One"})
        code, content = await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/", alice)
        self.assertEqual((code, content), (200, {"name": "One"}))
        # the trailing slash is optional for the empty state key
        self.assertEqual(await self.get(f"{C}/rooms/{q(room)}/state/m.room.name", alice), (200, {"name": "One"}))
        code, ev = await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/?format=event", alice)
        self.assertEqual(code, 200)
        self.assertEqual(
            (ev["event_id"], ev["content"], ev["state_key"], ev["sender"]), (first, {"name": "One"}, "", alice.user_id)
        )
        # a PUT without trailing slash; prev_content shows the replaced state
        code, body = await self.put(f"{C}/rooms/{q(room)}/state/m.room.name", {"name": "Two"}, alice)
        self.assertEqual(code, 200, body)
        code, ev = await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/?format=event", alice)
        self.assertEqual(ev["content"], {"name": "Two"})
        self.assertEqual(ev["unsigned"]["prev_content"], {"name": "One"})
        # a PUT identical to the current state (same sender) sends nothing: the current event's ID
        again = await self.set_state(alice, room, "m.room.name", {"name": "Two"})
        self.assertEqual(again, body["event_id"])
        code, ev = await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/?format=event", alice)
        self.assertEqual(ev["event_id"], body["event_id"])

    async def test_state_keys_with_slashes_and_user_ids(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        key = "a/b%c d"
        await self.set_state(alice, room, "com.example.thing", {"v": 1}, state_key=key)
        self.assertEqual(
            await self.get(f"{C}/rooms/{q(room)}/state/com.example.thing/{q(key)}", alice), (200, {"v": 1})
        )
        code, member = await self.get(f"{C}/rooms/{q(room)}/state/m.room.member/{q(alice.user_id)}", alice)
        self.assertEqual((code, member["membership"]), (200, "join"))
        # a state key that is another user's ID cannot be set by alice (auth rules)
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/state/com.example.thing/{q('@bob:test')}", {}, alice),
            403,
            "M_FORBIDDEN",
        )

    async def test_get_state_errors(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state/m.room.topic/", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/?format=xml", alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state", bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state/m.room.create/", bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q('!unknown:test')}/state", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/bad/state", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state"), 401, "M_MISSING_TOKEN")

    async def test_put_state_errors(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        # below state_default (50)
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/state/m.room.name/", {"name": "x"}, bob), 403, "M_FORBIDDEN"
        )
        self.assertMatrixError(
            await self.request("PUT", f"{C}/rooms/{q(room)}/state/m.room.name/", raw=b"{", token=alice),
            400,
            "M_NOT_JSON",
        )
        self.assertMatrixError(await self.put(f"{C}/rooms/{q(room)}/state/m.room.name/", [], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q('!nope:test')}/state/m.room.name/", {}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/state/m.room.name/{'k' * 300}", {}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/state/x/", {"v": "y" * 70000}, alice), 413, "M_TOO_LARGE"
        )
        # a member event's state key is the user whose membership it sets
        for key in ("notauser", "", "@nocolon"):
            self.assertMatrixError(
                await self.put(f"{C}/rooms/{q(room)}/state/m.room.member/{q(key)}", {"membership": "invite"}, alice),
                400,
                "M_INVALID_PARAM",
            )
        # nothing changed
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state/x/", alice), 404, "M_NOT_FOUND")

    async def test_canonical_alias_without_aliases(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_state(alice, room, "m.room.canonical_alias", {})

    async def test_canonical_alias_must_point_here(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        result = await self.put(f"{C}/rooms/{q(room)}/state/m.room.canonical_alias/", {"alias": "#nowhere:test"}, alice)
        self.assertMatrixError(result, 400, "M_BAD_ALIAS")
        self.assertMatrixError(
            await self.get(f"{C}/rooms/{q(room)}/state/m.room.canonical_alias/", alice), 404, "M_NOT_FOUND"
        )

    async def test_left_user_sees_state_at_leave(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_state(alice, room, "m.room.name", {"name": "Before"})
        await self.join(bob, room)
        await self.leave(bob, room)
        await self.set_state(alice, room, "m.room.name", {"name": "After"})
        await self.set_state(alice, room, "m.room.topic", {"topic": "new"})
        self.assertEqual(await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/", bob), (200, {"name": "Before"}))
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state/m.room.topic/", bob), 404, "M_NOT_FOUND")
        code, state = await self.get(f"{C}/rooms/{q(room)}/state", bob)
        self.assertEqual(code, 200)
        state = by_key(state)
        self.assertEqual(state[("m.room.member", bob.user_id)]["content"]["membership"], "leave")
        self.assertNotIn(("m.room.topic", ""), state)
        self.assertEqual(await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/", alice), (200, {"name": "After"}))

    async def test_banned_user_may_not_read_state(self) -> None:
        """SyTest "Remote banned user is kicked and may not rejoin until unbanned": a banned user
        gets 403 for the room's state (Synapse serves departed members only if they left)."""
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        code, body = await self.post(f"{C}/rooms/{q(room)}/ban", {"user_id": bob.user_id}, alice)
        self.assertEqual(code, 200, body)
        path = f"{C}/rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}"
        self.assertMatrixError(await self.get(path, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/state", bob), 403, "M_FORBIDDEN")
        code, member = await self.get(path, alice)
        self.assertEqual((code, member.get("membership")), (200, "ban"))

    async def test_world_readable_non_member_reads_state(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat", history_visibility="world_readable")
        code, state = await self.get(f"{C}/rooms/{q(room)}/state", bob)
        self.assertEqual(code, 200, state)
        self.assertIn(("m.room.create", ""), by_key(state))


class MembersTests(HomeserverTestCase):
    async def _room(self) -> tuple:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_membership(bob, room, bob, "join", displayname="Bobby", avatar_url="mxc://test/bob")
        await self.invite(alice, room, carol)
        return alice, bob, carol, room

    async def test_members_and_filters(self) -> None:
        alice, bob, carol, room = await self._room()
        code, body = await self.get(f"{C}/rooms/{q(room)}/members", alice)
        self.assertEqual(code, 200, body)
        got = {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}
        self.assertEqual(got, {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"})
        code, body = await self.get(f"{C}/rooms/{q(room)}/members?membership=invite", alice)
        self.assertEqual([e["state_key"] for e in body["chunk"]], [carol.user_id])
        code, body = await self.get(f"{C}/rooms/{q(room)}/members?not_membership=invite", alice)
        self.assertEqual({e["state_key"] for e in body["chunk"]}, {alice.user_id, bob.user_id})
        # both: an "or"
        code, body = await self.get(f"{C}/rooms/{q(room)}/members?membership=invite&not_membership=join", alice)
        self.assertEqual({e["state_key"] for e in body["chunk"]}, {carol.user_id})
        self.assertMatrixError(
            await self.get(f"{C}/rooms/{q(room)}/members?membership=joined", alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/members", carol), 403, "M_FORBIDDEN")

    async def test_members_at_token(self) -> None:
        alice, bob, carol, room = await self._room()
        code, page = await self.messages(alice, room, dir="b", limit=1)
        token = page["start"]
        await self.join(carol, room)
        await self.leave(bob, room)
        code, body = await self.get(f"{C}/rooms/{q(room)}/members?at={q(token)}", alice)
        self.assertEqual(code, 200, body)
        got = {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}
        self.assertEqual(got, {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"})
        code, body = await self.get(f"{C}/rooms/{q(room)}/members", alice)
        got = {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}
        self.assertEqual(got, {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "join"})
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/members?at=garbage", alice), 400, "M_INVALID_PARAM")
        # bob left: he sees the members as they were when he left
        await self.invite(alice, room, await self.register("dave"))
        code, body = await self.get(f"{C}/rooms/{q(room)}/members", bob)
        self.assertEqual(code, 200)
        self.assertNotIn("@dave:test", {e["state_key"] for e in body["chunk"]})

    async def test_joined_members(self) -> None:
        alice, bob, carol, room = await self._room()
        code, body = await self.get(f"{C}/rooms/{q(room)}/joined_members", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body["joined"]), {alice.user_id, bob.user_id})
        self.assertEqual(body["joined"][bob.user_id], {"display_name": "Bobby", "avatar_url": "mxc://test/bob"})
        # no avatar: the key is there, null (as Synapse)
        self.assertIsNone(body["joined"][alice.user_id]["avatar_url"])
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/joined_members", carol), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q('!x:test')}/joined_members", carol), 404, "M_NOT_FOUND")

    async def test_joined_rooms(self) -> None:
        alice, bob, carol, room = await self._room()
        other = await self.create_room(alice, preset="public_chat")
        code, body = await self.get(f"{C}/joined_rooms", alice)
        self.assertEqual(code, 200)
        self.assertEqual(sorted(body["joined_rooms"]), sorted([room, other]))
        self.assertEqual((await self.get(f"{C}/joined_rooms", carol))[1], {"joined_rooms": []})
        await self.leave(bob, room)
        self.assertEqual((await self.get(f"{C}/joined_rooms", bob))[1], {"joined_rooms": []})
        self.assertMatrixError(await self.get(f"{C}/joined_rooms", "nope"), 401, "M_UNKNOWN_TOKEN")
