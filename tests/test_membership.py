"""Membership over HTTP: join, invite, leave, forget, kick, ban, unban, knock, restricted joins."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser, q


class MembershipTestCase(HomeserverTestCase):
    async def count_events(self, user: TestUser, room: str) -> int:
        """How many events of the room ``user`` (a member all along) sees."""
        return len(await self.room_events(user, room))

    async def act(self, action: str, user: TestUser, room: str, target: TestUser | str, **extra: Any) -> tuple[int, Any]:
        target_id = target if isinstance(target, str) else target.user_id
        return await self.post(f"{C}/rooms/{q(room)}/{action}", {"user_id": target_id, **extra}, user)


class JoinTests(MembershipTestCase):
    async def test_join_public_room_by_id_and_alias(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        await self.set_profile(bob, "Bobby", "mxc://test/bob")
        room = await self.create_room(alice, preset="public_chat", room_alias_name="lobby")
        code, body = await self.post(f"{C}/join/{q('#lobby:test')}", {"reason": "hello"}, bob)
        self.assertEqual((code, body), (200, {"room_id": room}))
        self.assertEqual(
            await self.room_state(room, "m.room.member", bob.user_id),
            {"membership": "join", "displayname": "Bobby", "avatar_url": "mxc://test/bob", "reason": "hello"},
        )
        # server_name / via are ignored for rooms this server has
        code, body = await self.post(f"{C}/join/{q(room)}?server_name=elsewhere.example&via=other.example", {}, carol)
        self.assertEqual((code, body), (200, {"room_id": room}))
        # /rooms/{roomId}/join, and no body at all
        dave = await self.register("dave")
        code, body = await self.request("POST", f"{C}/rooms/{q(room)}/join", token=dave)
        self.assertEqual((code, body), (200, {"room_id": room}))
        self.assertEqual(await self.room_state(room, "m.room.member", dave.user_id), {"membership": "join", "displayname": "dave"})

    async def test_join_keeps_extra_content(self) -> None:
        # Synapse keeps the body's other keys in the join event (SyTest "POST /join/:room_id can
        # join a room with custom content"); never `membership` nor join_authorised_via_users_server.
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", room_alias_name="lobby")
        body = {"foo": "bar", "membership": "leave", "join_authorised_via_users_server": alice.user_id}
        self.assertEqual((await self.post(f"{C}/join/{q(room)}", body, bob))[0], 200)
        self.assertEqual(
            await self.room_state(room, "m.room.member", bob.user_id),
            {"membership": "join", "displayname": "bob", "foo": "bar"},
        )
        self.assertEqual((await self.post(f"{C}/join/{q('#lobby:test')}", {"foo": {"n": 1}}, carol))[0], 200)
        self.assertEqual(
            await self.room_state(room, "m.room.member", carol.user_id),
            {"membership": "join", "displayname": "carol", "foo": {"n": 1}},
        )

    async def test_join_again_is_a_no_op(self) -> None:
        # SyTest "Joining room twice is idempotent": no new member event.
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        n = await self.count_events(alice, room)
        await self.join(bob, room)
        await self.join(alice, room)
        self.assertEqual(await self.count_events(alice, room), n)

    async def test_invite_only(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
        await self.invite(alice, room, bob)
        await self.join(bob, room)
        self.assertEqual(await self.membership(room, bob), "join")

    async def test_unknown_and_remote_rooms(self) -> None:
        bob = await self.register("bob")
        for target, status, errcode in (
            ("!unknown:test", 404, "M_NOT_FOUND"),
            ("!unknownv12room", 404, "M_NOT_FOUND"),
            ("#nothing:test", 404, "M_NOT_FOUND"),
            # other servers are asked (the default IP blacklist refuses loopback: unreachable)
            ("!room:127.0.0.1:1", 502, "M_UNKNOWN"),
            ("#room:127.0.0.1:1", 502, "M_UNKNOWN"),
            ("room", 400, "M_INVALID_PARAM"),
            ("#bad", 400, "M_INVALID_PARAM"),
            ("!", 400, "M_INVALID_PARAM"),
        ):
            result = await self.post(f"{C}/join/{q(target)}", {}, bob)
            self.assertMatrixError(result, status, errcode)
            if "127.0.0.1" in target:
                self.assertIn("127.0.0.1:1", result[1]["error"])
        result = await self.post(f"{C}/join/{q('!unknownv12room')}?via=127.0.0.1:1", {}, bob)
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        # /rooms/{roomId}/join needs a room ID
        self.assertMatrixError(await self.post(f"{C}/rooms/{q('#x:test')}/join", {}, bob), 400, "M_INVALID_PARAM")

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        bob = await self.register("bob")
        path = f"{C}/join/{q(room)}"
        self.assertMatrixError(await self.post(path, {}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.request("POST", path, raw=b"[", token=bob), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, ["x"], bob), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"reason": 1}, bob), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(path, {"third_party_signed": {"sender": "x"}}, bob), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.post(path, {"reason": "x" * 70000}, bob), 413, "M_TOO_LARGE")
        self.assertIsNone(await self.membership(room, bob))
        await self.join(bob, room)


class InviteTests(MembershipTestCase):
    async def test_invite_and_reason(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice)
        code, body = await self.act("invite", alice, room, bob, reason="Welcome")
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(
            await self.room_state(room, "m.room.member", bob.user_id), {"membership": "invite", "displayname": "bob", "reason": "Welcome"}
        )
        ev = await self.hs.room_server.current_state_event(room, "m.room.member", bob.user_id)
        self.assertEqual(ev.sender, alice.user_id)
        # already invited: success, nothing new
        n = await self.count_events(alice, room)
        self.assertEqual(await self.act("invite", alice, room, bob), (200, {}))
        self.assertEqual(await self.count_events(alice, room), n)
        # already joined
        await self.join(bob, room)
        self.assertMatrixError(await self.act("invite", alice, room, bob), 403, "M_FORBIDDEN")

    async def test_invite_rules(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", room_version="10")
        # not in the room
        self.assertMatrixError(await self.act("invite", bob, room, carol), 403, "M_FORBIDDEN")
        await self.join(bob, room)
        # below the invite level
        pl = await self.room_state(room, "m.room.power_levels")
        await self.set_state(alice, room, "m.room.power_levels", {**pl, "invite": 50})
        result = await self.act("invite", bob, room, carol)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertIn("invite level", result[1]["error"])
        # a banned user cannot be invited
        self.assertEqual((await self.act("ban", alice, room, carol))[0], 200)
        result = await self.act("invite", alice, room, carol)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertIn("banned", result[1]["error"])

    async def test_invite_bad_targets(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        for target, status, errcode in (
            ("@nobody:test", 404, "M_NOT_FOUND"),
            ("@someone:127.0.0.1:1", 502, "M_UNKNOWN"),  # its server is asked: unreachable
            ("bob", 400, "M_INVALID_PARAM"),
            ("@:test", 400, "M_INVALID_PARAM"),
            ("@bob", 400, "M_INVALID_PARAM"),
            ("@x\ud800:test", 400, "M_NOT_JSON"),  # a lone surrogate: the body is not valid JSON text
        ):
            self.assertMatrixError(await self.act("invite", alice, room, target), status, errcode)
        path = f"{C}/rooms/{q(room)}/invite"
        self.assertMatrixError(await self.post(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"user_id": 5}, alice), 400, "M_BAD_JSON")
        # a 3PID invite without id_access_token (invite_3pid.yaml requires it)
        self.assertMatrixError(await self.post(path, {"medium": "email", "address": "a@b.c", "id_server": "x"}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.request("POST", path, raw=b"nope", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, {"user_id": "@bob:test"}), 401, "M_MISSING_TOKEN")
        bob = await self.register("bob")
        self.assertMatrixError(await self.act("invite", alice, "!nope:test", bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.act("invite", alice, "nope", bob), 400, "M_INVALID_PARAM")


class LeaveForgetTests(MembershipTestCase):
    async def test_leave_and_reject_invite(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        code, body = await self.post(f"{C}/rooms/{q(room)}/leave", {"reason": "bye"}, bob)
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(await self.room_state(room, "m.room.member", bob.user_id), {"membership": "leave", "reason": "bye"})
        # leaving again is harmless
        n = await self.count_events(alice, room)
        self.assertEqual(await self.request("POST", f"{C}/rooms/{q(room)}/leave", token=bob), (200, {}))
        self.assertEqual(await self.count_events(alice, room), n)
        # rejecting an invite
        await self.invite(alice, room, carol)
        self.assertEqual(await self.post(f"{C}/rooms/{q(room)}/leave", {}, carol), (200, {}))
        self.assertEqual(await self.membership(room, carol), "leave")
        # never a member; unknown room; bad input
        dave = await self.register("dave")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/leave", {}, dave), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q('!x:test')}/leave", {}, dave), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{C}/rooms/x/leave", {}, dave), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/leave", {"reason": []}, bob), 400, "M_BAD_JSON")

    async def test_forget(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        info = await self.hs.room_server.get_room(room)
        await self.join(bob, room)
        result = await self.post(f"{C}/rooms/{q(room)}/forget", {}, bob)
        self.assertMatrixError(result, 400, "M_UNKNOWN")
        self.assertFalse(await self.hs.membership_store.is_forgotten(bob.user_id, info.room_nid))
        await self.post(f"{C}/rooms/{q(room)}/leave", {}, bob)
        self.assertEqual(await self.request("POST", f"{C}/rooms/{q(room)}/forget", token=bob), (200, {}))
        self.assertTrue(await self.hs.membership_store.is_forgotten(bob.user_id, info.room_nid))
        # re-joining brings the room back
        await self.join(bob, room)
        self.assertFalse(await self.hs.membership_store.is_forgotten(bob.user_id, info.room_nid))
        # never a member; unknown room
        carol = await self.register("carol")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/forget", {}, carol), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q('!x:test')}/forget", {}, carol), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/forget", {}), 401, "M_MISSING_TOKEN")

    async def test_forget_after_ban(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.act("ban", alice, room, bob)
        self.assertEqual(await self.post(f"{C}/rooms/{q(room)}/forget", {}, bob), (200, {}))


class KickBanTests(MembershipTestCase):
    async def _room(self, version: str = "11") -> tuple[TestUser, TestUser, TestUser, str]:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", room_version=version)
        await self.join(bob, room)
        await self.join(carol, room)
        return alice, bob, carol, room

    async def test_kick(self) -> None:
        alice, bob, carol, room = await self._room()
        code, body = await self.act("kick", alice, room, bob, reason="Telling unfunny jokes")
        self.assertEqual((code, body), (200, {}))
        ev = await self.hs.room_server.current_state_event(room, "m.room.member", bob.user_id)
        self.assertEqual((ev.content, ev.sender), ({"membership": "leave", "reason": "Telling unfunny jokes"}, alice.user_id))
        # not in the room any more
        self.assertMatrixError(await self.act("kick", alice, room, bob), 403, "M_FORBIDDEN")
        # kicked users may re-join a public room
        await self.join(bob, room)
        # carol (level 0) cannot kick
        result = await self.act("kick", carol, room, bob)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        # nobody can kick someone with a higher or equal level
        await self.set_power(alice, room, carol.user_id, 50)
        await self.set_power(alice, room, bob.user_id, 50)
        self.assertMatrixError(await self.act("kick", carol, room, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.act("kick", carol, room, alice), 403, "M_FORBIDDEN")
        # an outsider cannot kick
        dave = await self.register("dave")
        self.assertMatrixError(await self.act("kick", dave, room, bob), 403, "M_FORBIDDEN")

    async def test_kick_rescinds_invite_and_knock(self) -> None:
        alice, bob, carol, room = await self._room("7")
        dave = await self.register("dave")
        await self.invite(alice, room, dave)
        self.assertEqual((await self.act("kick", alice, room, dave))[0], 200)
        self.assertEqual(await self.membership(room, dave), "leave")

    async def test_ban_and_unban(self) -> None:
        alice, bob, carol, room = await self._room()
        code, body = await self.act("ban", alice, room, bob, reason="spam")
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(await self.room_state(room, "m.room.member", bob.user_id), {"membership": "ban", "reason": "spam"})
        # banned: no joining, no invites, no kicking
        self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.act("invite", alice, room, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.act("kick", alice, room, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/leave", {}, bob), 403, "M_FORBIDDEN")
        # banning again changes nothing
        n = await self.count_events(alice, room)
        self.assertEqual(await self.act("ban", alice, room, bob), (200, {}))
        self.assertEqual(await self.count_events(alice, room), n)
        # carol cannot unban
        self.assertMatrixError(await self.act("unban", carol, room, bob), 403, "M_FORBIDDEN")
        code, body = await self.act("unban", alice, room, bob, reason="served")
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(await self.room_state(room, "m.room.member", bob.user_id), {"membership": "leave", "reason": "served"})
        self.assertMatrixError(await self.act("unban", alice, room, bob), 400, "M_BAD_STATE")
        await self.join(bob, room)

    async def test_ban_rules(self) -> None:
        alice, bob, carol, room = await self._room()
        result = await self.act("ban", alice, room, alice)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertIn("yourself", result[1]["error"])
        self.assertMatrixError(await self.act("ban", bob, room, carol), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.act("ban", bob, room, alice), 403, "M_FORBIDDEN")
        # users not in the room, even on other servers, can be banned pre-emptively
        self.assertEqual((await self.act("ban", alice, room, "@spammer:elsewhere.example"))[0], 200)
        self.assertEqual((await self.act("ban", alice, room, "@never:test"))[0], 200)
        self.assertEqual(await self.membership(room, "@spammer:elsewhere.example"), "ban")

    async def test_v12_creator_cannot_be_kicked_or_banned(self) -> None:
        alice, bob, carol, room = await self._room("12")
        await self.set_power(alice, room, bob.user_id, 100)
        self.assertMatrixError(await self.act("kick", bob, room, alice), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.act("ban", bob, room, alice), 403, "M_FORBIDDEN")
        self.assertEqual((await self.act("kick", alice, room, bob))[0], 200)

    async def test_bad_input(self) -> None:
        alice, bob, carol, room = await self._room()
        for action in ("kick", "ban", "unban"):
            path = f"{C}/rooms/{q(room)}/{action}"
            self.assertMatrixError(await self.post(path, {"user_id": bob.user_id}), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request("POST", path, raw=b"{", token=alice), 400, "M_NOT_JSON")
            self.assertMatrixError(await self.post(path, {}, alice), 400, "M_MISSING_PARAM")
            self.assertMatrixError(await self.post(path, {"user_id": ["x"]}, alice), 400, "M_BAD_JSON")
            self.assertMatrixError(await self.post(path, {"user_id": "nope"}, alice), 400, "M_INVALID_PARAM")
            self.assertMatrixError(
                await self.post(path, {"user_id": bob.user_id, "reason": 7}, alice), 400, "M_BAD_JSON"
            )
            self.assertMatrixError(
                await self.post(f"{C}/rooms/{q('!x:test')}/{action}", {"user_id": bob.user_id}, alice), 404, "M_NOT_FOUND"
            )
        self.assertEqual(await self.membership(room, bob), "join")


class KnockTests(MembershipTestCase):
    async def test_knock_then_invite(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        for version in ("7", "11", "12"):
            room = await self.create_room(
                alice,
                room_version=version,
                room_alias_name=f"knock{version}",
                initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}],
            )
            code, body = await self.post(f"{C}/knock/{q(f'#knock{version}:test')}", {"reason": "let me in"}, bob)
            self.assertEqual((code, body), (200, {"room_id": room}))
            self.assertEqual(
                await self.room_state(room, "m.room.member", bob.user_id), {"membership": "knock", "displayname": "bob", "reason": "let me in"}
            )
            # a knock is not an invite
            self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
            # accepting the knock is an invite
            await self.invite(alice, room, bob)
            self.assertMatrixError(await self.post(f"{C}/knock/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
            await self.join(bob, room)
            self.assertMatrixError(await self.post(f"{C}/knock/{q(room)}", {}, bob), 403, "M_FORBIDDEN")

    async def test_knock_retracted_by_leave_and_denied_by_kick(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(
            alice, room_version="10", initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock_restricted"}}]
        )
        self.assertEqual((await self.post(f"{C}/knock/{q(room)}", {}, bob))[0], 200)
        self.assertEqual(await self.post(f"{C}/rooms/{q(room)}/leave", {}, bob), (200, {}))
        self.assertEqual(await self.membership(room, bob), "leave")
        self.assertEqual((await self.post(f"{C}/knock/{q(room)}", {}, bob))[0], 200)
        self.assertEqual((await self.act("kick", alice, room, bob))[0], 200)
        self.assertEqual(await self.membership(room, bob), "leave")

    async def test_knock_refused(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        # room version 6 has no knocking
        old = await self.create_room(
            alice, room_version="6", initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
        )
        result = await self.post(f"{C}/knock/{q(old)}", {}, bob)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertIn("knocking", result[1]["error"])
        # join rule invite / public
        private = await self.create_room(alice, room_version="11")
        self.assertMatrixError(await self.post(f"{C}/knock/{q(private)}", {}, bob), 403, "M_FORBIDDEN")
        # banned
        knock = await self.create_room(
            alice, room_version="11", initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
        )
        await self.act("ban", alice, knock, bob)
        self.assertMatrixError(await self.post(f"{C}/knock/{q(knock)}", {}, bob), 403, "M_FORBIDDEN")
        # unknown, remote, invalid
        self.assertMatrixError(await self.post(f"{C}/knock/{q('!x:test')}", {}, bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{C}/knock/{q('#x:127.0.0.1:1')}", {}, bob), 502, "M_UNKNOWN")
        self.assertMatrixError(await self.post(f"{C}/knock/x", {}, bob), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{C}/knock/{q(knock)}", {"reason": 1}, bob), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(f"{C}/knock/{q(knock)}", {}), 401, "M_MISSING_TOKEN")


class RestrictedJoinTests(MembershipTestCase):
    async def _rooms(self, version: str, rule: str = "restricted", suffix: str = "") -> tuple[TestUser, TestUser, str, str]:
        alice = await self.register("alice" + suffix)
        bob = await self.register("bob" + suffix)
        space = await self.create_room(alice, room_version=version, preset="public_chat")
        room = await self.create_room(
            alice,
            room_version=version,
            initial_state=[
                {
                    "type": "m.room.join_rules",
                    "content": {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": space}]},
                }
            ],
        )
        return alice, bob, space, room

    async def test_restricted_join(self) -> None:
        for version in ("8", "9", "10", "12"):
            alice, bob, space, room = await self._rooms(version, suffix=version)
            result = await self.post(f"{C}/join/{q(room)}", {}, bob)
            self.assertMatrixError(result, 403, "M_FORBIDDEN")
            await self.join(bob, space)
            code, body = await self.post(f"{C}/join/{q(room)}", {}, bob)
            self.assertEqual(code, 200, body)
            content = await self.room_state(room, "m.room.member", bob.user_id)
            self.assertEqual(content["join_authorised_via_users_server"], alice.user_id)

    async def test_authoriser_needs_invite_power(self) -> None:
        alice, bob, space, room = await self._rooms("10", "knock_restricted")
        carol = await self.register("carol")
        # carol (level 0) joins; the invite level is raised above everyone but alice, who leaves
        await self.join(carol, space)
        await self.post(f"{C}/join/{q(room)}", {}, carol)
        self.assertEqual(
            (await self.room_state(room, "m.room.member", carol.user_id))["join_authorised_via_users_server"], alice.user_id
        )
        pl = await self.room_state(room, "m.room.power_levels")
        await self.set_state(alice, room, "m.room.power_levels", {**pl, "invite": 50})
        await self.post(f"{C}/rooms/{q(room)}/leave", {}, alice)
        await self.join(bob, space)
        result = await self.post(f"{C}/join/{q(room)}", {}, bob)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertIn("authorised", result[1]["error"])

    async def test_invited_users_join_without_conditions(self) -> None:
        alice, bob, space, room = await self._rooms("9")
        await self.invite(alice, room, bob)
        await self.join(bob, room)
        self.assertNotIn("join_authorised_via_users_server", await self.room_state(room, "m.room.member", bob.user_id))

    async def test_restricted_before_v8_is_invite_only(self) -> None:
        alice, bob, space, room = await self._rooms("7")
        await self.join(bob, space)
        self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")


class GuestJoinTests(MembershipTestCase):
    config_overrides = {"registration": {"enabled": True, "allow_guests": True}}

    async def test_guest_access(self) -> None:
        alice = await self.register("alice")
        code, guest = await self.post(f"{C}/register?kind=guest", {})
        self.assertEqual(code, 200, guest)
        open_room = await self.create_room(alice, preset="public_chat")
        self.assertMatrixError(
            await self.post(f"{C}/join/{q(open_room)}", {}, guest["access_token"]), 403, "M_GUEST_ACCESS_FORBIDDEN"
        )
        guest_room = await self.create_room(
            alice,
            preset="public_chat",
            initial_state=[{"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}],
        )
        code, body = await self.post(f"{C}/join/{q(guest_room)}", {}, guest["access_token"])
        self.assertEqual(code, 200, body)
        code, body = await self.post(f"{C}/rooms/{q(guest_room)}/leave", {}, guest["access_token"])
        self.assertEqual(code, 200, body)

    async def test_guests_leave_when_guest_access_is_revoked(self) -> None:
        # guest_access.md §Server behaviour: when m.room.guest_access stops saying can_join, the
        # server sets its guests' membership to leave (by their own leave event); full members stay.
        alice = await self.register("alice")
        bob = await self.register("bob")
        code, guest = await self.post(f"{C}/register?kind=guest", {})
        room = await self.create_room(
            alice,
            preset="public_chat",
            initial_state=[{"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}],
        )
        self.assertEqual((await self.post(f"{C}/join/{q(room)}", {}, guest["access_token"]))[0], 200)
        await self.join(bob, room)
        # Another guest_access event that still allows guests changes nothing.
        await self.set_state(alice, room, "m.room.guest_access", {"guest_access": "can_join"})
        await self.hs.guest_access.settle()
        self.assertEqual(await self.membership(room, guest["user_id"]), "join")
        await self.set_state(alice, room, "m.room.guest_access", {"guest_access": "forbidden"})
        await self.hs.guest_access.settle()
        self.assertEqual(await self.membership(room, guest["user_id"]), "leave")
        self.assertEqual(await self.membership(room, bob), "join")
        leave = await self.room_state(room, "m.room.member", guest["user_id"])
        self.assertEqual(leave, {"membership": "leave"})
        # The guest sees itself out of the room.
        self.assertMatrixError(
            await self.post(f"{C}/join/{q(room)}", {}, guest["access_token"]), 403, "M_GUEST_ACCESS_FORBIDDEN"
        )
