"""Joining, leaving and knocking on rooms of another server: both ends, over real federation.

A user of server A joins (or knocks on, or leaves) a room of server B
through the handshakes of server-server-api §Joining Rooms, §Knocking upon a
room, §Leaving Rooms; the resident side's bad-input answers are checked with
requests signed by A.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from mxserver.federation.client import FederationError
from mxserver.federation.remote_rooms import q
from tests.harness import C, TestServer, TestUser, TwoServerTestCase

F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"


class FederationTestMixin:
    """Helpers shared by the federation membership tests (on a TwoServerTestCase)."""

    a: TestServer
    b: TestServer

    async def public_room(self, server: TestServer, user: TestUser, version: str = "12", **extra: Any) -> str:
        body = {"preset": "public_chat", "room_version": version, **extra}
        return await server.create_room(user, body)

    async def joined(self, server: TestServer, user: TestUser, room_id: str) -> set[str]:
        code, body = await server.get(f"{C}/rooms/{q(room_id)}/joined_members", user)
        self.assertEqual(code, 200, body)  # type: ignore[attr-defined]
        return set(body["joined"])

    async def join(self, server: TestServer, user: TestUser, room: str, via: str | None = None) -> tuple[int, Any]:
        query = f"?server_name={quote(via)}" if via else ""
        return await server.post(f"{C}/join/{q(room)}{query}", {}, user)

    async def send_text(self, server: TestServer, user: TestUser, room_id: str, text: str) -> str:
        code, body = await server.put(
            f"{C}/rooms/{q(room_id)}/send/m.room.message/t{text.__hash__()}",
            {"msgtype": "m.text", "body": text},
            user,
        )
        self.assertEqual(code, 200, body)  # type: ignore[attr-defined]
        return body["event_id"]

    async def timeline_bodies(self, server: TestServer, user: TestUser, room_id: str) -> list[str]:
        code, body = await server.get(f"{C}/rooms/{q(room_id)}/messages?dir=b&limit=50", user)
        if code != 200:
            return []
        return [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"]

    async def until_text(self, server: TestServer, user: TestUser, room_id: str, text: str) -> None:
        """Wait until ``user`` sees the message ``text`` in the room on ``server``."""

        async def seen() -> bool:
            return text in await self.timeline_bodies(server, user, room_id)

        await self.wait_until(seen, f"{text!r} in {room_id} on {server.label}")  # type: ignore[attr-defined]

    async def fed(self, origin: TestServer, method: str, path: str, body: Any = None, args: Any = None) -> Any:
        """A signed federation request from ``origin`` to the other server; (code, body)."""
        client = origin.hs.federation_client
        target = self.b if origin is self.a else self.a  # type: ignore[attr-defined]
        try:
            answer = await client.request_json(method, target.server_name, path, body=body, args=args)
            return 200, answer
        except FederationError as e:
            return e.code, e.body

    def assertFedError(self, result: tuple[int, Any], status: int, errcode: str) -> None:
        code, body = result
        self.assertEqual((code, (body or {}).get("errcode")), (status, errcode), body)  # type: ignore[attr-defined]


class RemoteJoinTests(FederationTestMixin, TwoServerTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")

    async def test_join_by_room_id_through_server_name(self) -> None:
        for version in ("1", "10", "12"):
            room_id = await self.public_room(self.b, self.bob, version, name=f"room v{version}")
            code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
            self.assertEqual((code, body.get("room_id")), (200, room_id), body)
            both = {self.alice.user_id, self.bob.user_id}
            self.assertEqual(await self.joined(self.a, self.alice, room_id), both)
            self.assertEqual(await self.joined(self.b, self.bob, room_id), both)
            # the room's state came along: name, create, join rules
            code, state = await self.a.get(f"{C}/rooms/{q(room_id)}/state/m.room.name", self.alice)
            self.assertEqual((code, state.get("name")), (200, f"room v{version}"))
            code, create = await self.a.get(f"{C}/rooms/{q(room_id)}/state/m.room.create", self.alice)
            self.assertEqual(code, 200, create)
            # joining again is a no-op answered locally
            code, body = await self.join(self.a, self.alice, room_id)
            self.assertEqual(code, 200, body)

    async def test_joiner_sync_shows_the_room(self) -> None:
        room_id = await self.public_room(self.b, self.bob, name="synced")
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        sync = await self.a.sync(self.alice)
        room = sync["rooms"]["join"][room_id]
        timeline = room["timeline"]["events"]
        self.assertEqual(timeline[-1]["type"], "m.room.member")
        self.assertEqual(timeline[-1]["state_key"], self.alice.user_id)
        types = {e["type"] for e in room["state"]["events"]} | {e["type"] for e in timeline}
        self.assertIn("m.room.name", types)
        members = {e["state_key"] for e in room["state"]["events"] + timeline if e["type"] == "m.room.member"}
        self.assertIn(self.bob.user_id, members)

    async def test_messages_flow_both_ways(self) -> None:
        room_id = await self.public_room(self.b, self.bob)
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        await self.send_text(self.b, self.bob, room_id, "hello from B")
        await self.until_text(self.a, self.alice, room_id, "hello from B")
        await self.send_text(self.a, self.alice, room_id, "hello from A")
        await self.until_text(self.b, self.bob, room_id, "hello from A")

    async def test_join_by_remote_alias(self) -> None:
        room_id = await self.public_room(self.b, self.bob, room_alias_name="lobby")
        alias = f"#lobby:{self.b.server_name}"
        code, body = await self.a.get(f"{C}/directory/room/{q(alias)}", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["room_id"], room_id)
        self.assertIn(self.b.server_name, body["servers"])
        code, body = await self.a.get(f"{C}/directory/room/{q('#nope:' + self.b.server_name)}", self.alice)
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"), body)
        code, body = await self.join(self.a, self.alice, alias)
        self.assertEqual((code, body.get("room_id")), (200, room_id), body)
        self.assertIn(self.alice.user_id, await self.joined(self.b, self.bob, room_id))

    async def test_leave_and_rejoin(self) -> None:
        room_id = await self.public_room(self.b, self.bob)
        self.assertEqual((await self.join(self.a, self.alice, room_id, self.b.server_name))[0], 200)
        code, body = await self.a.post(f"{C}/rooms/{q(room_id)}/leave", {}, self.alice)
        self.assertEqual(code, 200, body)
        await self.wait_until(lambda: self._not_joined(self.b, self.bob, room_id, self.alice.user_id), "Alice's leave at B")
        sync = await self.a.sync(self.alice)
        self.assertNotIn(room_id, sync["rooms"]["join"])
        # back in, through B again (A is no longer in the room)
        code, body = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        self.assertIn(self.alice.user_id, await self.joined(self.b, self.bob, room_id))
        self.assertIn(self.alice.user_id, await self.joined(self.a, self.alice, room_id))

    async def _not_joined(self, server: TestServer, user: TestUser, room_id: str, member: str) -> bool:
        return member not in await self.joined(server, user, room_id)

    async def test_banned_user_cannot_join(self) -> None:
        room_id = await self.public_room(self.b, self.bob)
        code, body = await self.b.post(
            f"{C}/rooms/{q(room_id)}/ban", {"user_id": self.alice.user_id, "reason": "no"}, self.bob
        )
        self.assertEqual(code, 200, body)
        result = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        # nothing was stored for the room on A
        self.assertIsNone(await self.a.hs.room_server.get_room(room_id))

    async def test_invite_only_room_refuses_join(self) -> None:
        room_id = await self.b.create_room(self.bob, {"preset": "private_chat"})
        result = await self.join(self.a, self.alice, room_id, self.b.server_name)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")

    async def test_unknown_room_and_unreachable_server(self) -> None:
        result = await self.join(self.a, self.alice, "!nothere:" + self.b.server_name)
        self.assertEqual(result[0], 404, result)
        result = await self.join(self.a, self.alice, "!x:127.0.0.1:1")
        self.assertEqual(result[0], 502, result)
        self.assertEqual(result[1]["errcode"], "M_UNKNOWN")


class ResidentAndRestrictedTests(FederationTestMixin, TwoServerTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.carol = await self.a.register("carol")
        self.bob = await self.b.register("bob")

    async def test_concurrent_joins(self) -> None:
        from twisted.internet.defer import ensureDeferred, gatherResults

        room_id = await self.public_room(self.b, self.bob)
        results = await gatherResults(
            [ensureDeferred(self.join(self.a, u, room_id, self.b.server_name)) for u in (self.alice, self.carol)]
        )
        self.assertEqual([r[0] for r in results], [200, 200], results)
        everyone = {self.alice.user_id, self.carol.user_id, self.bob.user_id}
        self.assertEqual(await self.joined(self.a, self.alice, room_id), everyone)
        await self.wait_until(lambda: self._all_joined(room_id, everyone), "both joins at B")

    async def _all_joined(self, room_id: str, users: set[str]) -> bool:
        return await self.joined(self.b, self.bob, room_id) == users

    async def test_invite_while_already_resident(self) -> None:
        room_id = await self.public_room(self.b, self.bob)
        self.assertEqual((await self.join(self.a, self.alice, room_id, self.b.server_name))[0], 200)
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": self.carol.user_id}, self.bob)
        self.assertEqual(code, 200, body)
        # A is in the room: the invite arrives as a room event (not out of band) and shows in /sync
        await self.a.sync_until(self.carol, lambda sync: room_id in sync["rooms"]["invite"], "Carol's invite at A")
        self.assertEqual(await self.a.hs.room_server.membership(room_id, self.carol.user_id), "invite")
        # joining is then a local join on A, sent on to B
        code, body = await self.join(self.a, self.carol, room_id)
        self.assertEqual(code, 200, body)
        await self.wait_until(lambda: self._joined_on(self.b, room_id, self.carol.user_id), "Carol's join at B")

    async def _joined_on(self, server: TestServer, room_id: str, user_id: str) -> bool:
        return await server.hs.room_server.membership(room_id, user_id) == "join"

    async def test_restricted_join_is_authorised_and_cosigned(self) -> None:
        space = await self.public_room(self.b, self.bob, "10")
        rule = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
        room = await self.b.create_room(
            self.bob, {"room_version": "10", "initial_state": [{"type": "m.room.join_rules", "content": rule}]}
        )
        # not in the space yet: refused
        self.assertMatrixError(await self.join(self.a, self.alice, room, self.b.server_name), 403, "M_FORBIDDEN")
        self.assertEqual((await self.join(self.a, self.alice, space, self.b.server_name))[0], 200)
        code, body = await self.join(self.a, self.alice, room, self.b.server_name)
        self.assertEqual(code, 200, body)
        join = await self.a.hs.room_server.current_state_event(room, "m.room.member", self.alice.user_id)
        self.assertEqual(join.content["join_authorised_via_users_server"], self.bob.user_id)
        self.assertEqual(set(join.signatures), {self.a.server_name, self.b.server_name})
        self.assertIn(self.alice.user_id, await self.joined(self.b, self.bob, room))

    async def test_restricted_without_a_member_who_may_invite(self) -> None:
        space = await self.public_room(self.b, self.bob, "10")
        rule = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
        room = await self.b.create_room(
            self.bob,
            {"room_version": "10", "initial_state": [{"type": "m.room.join_rules", "content": rule}],
             "power_level_content_override": {"invite": 101}},
        )
        self.assertEqual((await self.join(self.a, self.alice, space, self.b.server_name))[0], 200)
        result = await self.join(self.a, self.alice, room, self.b.server_name)
        self.assertMatrixError(result, 400, "M_UNABLE_TO_GRANT_JOIN")

    async def test_restricted_by_unknown_room(self) -> None:
        rule = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!elsewhere:127.0.0.1:1"}]}
        room = await self.b.create_room(
            self.bob, {"room_version": "10", "initial_state": [{"type": "m.room.join_rules", "content": rule}]}
        )
        result = await self.join(self.a, self.alice, room, self.b.server_name)
        self.assertMatrixError(result, 400, "M_UNABLE_TO_AUTHORISE_JOIN")


class TamperedAnswerTests(FederationTestMixin, TwoServerTestCase):
    """A resident whose send_join answer does not hold up: A checks it and refuses or repairs."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")
        self.room_id = await self.public_room(self.b, self.bob, "12")
        client = self.a.hs.federation_client
        self.real_put = client.put_json
        self.tamper: Callable[[dict[str, Any]], None] = lambda answer: None

        async def put_json(destination: str, path: str, body: Any, *args: Any, **kw: Any) -> Any:
            answer = await self.real_put(destination, path, body, *args, **kw)
            if "/send_join/" in path:
                self.tamper(answer)
            return answer

        client.put_json = put_json
        self.addCleanup(setattr, client, "put_json", self.real_put)

    async def test_missing_create_is_refused(self) -> None:
        def drop_create(answer: dict[str, Any]) -> None:
            for key in ("state", "auth_chain"):
                answer[key] = [e for e in answer[key] if e["type"] != "m.room.create"]

        self.tamper = drop_create
        result = await self.join(self.a, self.alice, self.room_id, self.b.server_name)
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        self.assertIsNone(await self.a.hs.room_server.get_room(self.room_id))

    async def test_forged_signatures_are_dropped(self) -> None:
        def forge(answer: dict[str, Any]) -> None:
            for e in answer["state"] + answer["auth_chain"]:
                for sigs in e["signatures"].values():
                    for kid in sigs:
                        sigs[kid] = "A" * 86
        self.tamper = forge
        result = await self.join(self.a, self.alice, self.room_id, self.b.server_name)
        self.assertMatrixError(result, 502, "M_UNKNOWN")
        self.assertIsNone(await self.a.hs.room_server.get_room(self.room_id))

    async def test_unauthorised_state_is_left_out(self) -> None:
        from mxserver.events.builder import build_event
        from mxserver.events.versions import KNOWN_ROOM_VERSIONS

        eve = self.a.user_id("eve")
        holder: dict[str, Any] = {}

        def inject(answer: dict[str, Any]) -> None:
            real = next(e for e in answer["state"] if e["type"] == "m.room.power_levels")
            forged = build_event(
                KNOWN_ROOM_VERSIONS["12"],
                type="m.room.power_levels",
                sender=eve,
                content={**real["content"], "users": {eve: 100}},
                room_id=self.room_id,
                state_key="",
                prev_event_ids=real["prev_events"],
                auth_event_ids=real["auth_events"],
                depth=real["depth"] + 1,
                origin_server_ts=real["origin_server_ts"] + 1,
                server_name=self.a.server_name,
                signing_key=self.a.hs.signing_key,
            )
            holder["forged"] = forged.event_id
            answer["state"] = [e for e in answer["state"] if e is not real] + [forged.get_pdu_json()]
            answer["auth_chain"].append(real)

        self.tamper = inject
        code, body = await self.join(self.a, self.alice, self.room_id, self.b.server_name)
        self.assertEqual(code, 200, body)
        pl = await self.a.hs.room_server.current_state_event(self.room_id, "m.room.power_levels")
        self.assertIsNone(pl)  # the forged one was rejected, and the answer had no other in the state
        stored = await self.a.hs.event_store.get_event(holder["forged"])
        self.assertIsNotNone(stored)
        self.assertTrue(stored.rejected)
        self.assertTrue(stored.metadata.outlier)


class RestartTests(FederationTestMixin, TwoServerTestCase):
    async def test_joined_room_and_invite_survive_a_restart(self) -> None:
        alice = await self.a.register("alice")
        carol = await self.a.register("carol")
        bob = await self.b.register("bob")
        room_id = await self.public_room(self.b, bob, "12", name="durable")
        other = await self.b.create_room(bob, {"preset": "private_chat", "name": "invite only"})
        self.assertEqual((await self.join(self.a, alice, room_id, self.b.server_name))[0], 200)
        code, body = await self.b.post(f"{C}/rooms/{q(other)}/invite", {"user_id": carol.user_id}, bob)
        self.assertEqual(code, 200, body)
        await self.restart(self.a)
        self.assertEqual(await self.joined(self.a, alice, room_id), {alice.user_id, bob.user_id})
        code, name = await self.a.get(f"{C}/rooms/{q(room_id)}/state/m.room.name", alice)
        self.assertEqual((code, name.get("name")), (200, "durable"))
        invite = (await self.a.sync(carol))["rooms"]["invite"][other]["invite_state"]["events"]
        self.assertIn("invite only", [e["content"].get("name") for e in invite])
        await self.send_text(self.a, alice, room_id, "still here")
        await self.until_text(self.b, bob, room_id, "still here")
        code, body = await self.join(self.a, carol, other)
        self.assertEqual(code, 200, body)


class HandshakeWaitTests(FederationTestMixin, TwoServerTestCase):
    async def test_wait_for_handshake(self) -> None:
        from twisted.internet.defer import Deferred, ensureDeferred

        remote = self.a.hs.remote_rooms
        await remote.wait_for_handshake("!none:x")  # nothing running: returns at once
        gate: Deferred[None] = Deferred()

        async def slow() -> Any:
            await gate
            return None

        running = ensureDeferred(remote._serialised("!room:x", slow))
        waited = ensureDeferred(remote.wait_for_handshake("!room:x"))
        self.assertFalse(waited.called)
        gate.callback(None)
        await running
        await waited
        self.assertNotIn("!room:x", remote._locks)
