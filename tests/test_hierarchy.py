"""Space hierarchy: ``GET /_matrix/client/v1/rooms/{roomId}/hierarchy`` (space_hierarchy.yaml)
on one server, and the federation ``GET /_matrix/federation/v1/hierarchy/{roomId}`` between two."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from twisted.trial import unittest

from mxserver.room_handlers.hierarchy import child_sort_key, clean_summary, ordered_children
from tests.harness import HomeserverTestCase, InboundTestCase, TestUser, TwoServerTestCase, q
from tests.harness.metrics import federation_requests

V1 = "/_matrix/client/v1"


def hierarchy_requests() -> float:
    return federation_requests("/_matrix/federation/v1/hierarchy")


class HierarchyMixin:
    """Spaces and children through the client API."""

    async def make_space(self, user: TestUser, name: str, **body: Any) -> str:
        body.setdefault("preset", "public_chat")
        return await self.create_room(user, name=name, creation_content={"type": "m.space"}, **body)  # type: ignore[attr-defined]

    async def add_child(self, user: TestUser, space: str, child: str, **content: Any) -> None:
        content.setdefault("via", [self.server_name])  # type: ignore[attr-defined]
        await self.set_state(user, space, "m.space.child", content, child)  # type: ignore[attr-defined]

    async def hierarchy(self, user: TestUser, room: str, **params: Any) -> tuple[int, Any]:
        query = f"?{urlencode(params)}" if params else ""
        return await self.get(f"{V1}/rooms/{q(room)}/hierarchy{query}", user)  # type: ignore[attr-defined,no-any-return]

    async def room_ids(self, user: TestUser, room: str, **params: Any) -> list[str]:
        code, body = await self.hierarchy(user, room, **params)
        self.assertEqual(code, 200, body)  # type: ignore[attr-defined]
        return [r["room_id"] for r in body["rooms"]]


class OrderingTests(unittest.TestCase):
    def test_spec_example(self) -> None:
        # spaces.md §Ordering of children within a space: the worked example.
        children = [
            {"state_key": "!b:example.org", "origin_server_ts": 1640341000000, "content": {"order": " ", "via": ["x"]}},
            {"state_key": "!a:example.org", "origin_server_ts": 1640141000000, "content": {"order": "aaaa", "via": ["x"]}},
            {"state_key": "!c:example.org", "origin_server_ts": 1640841000000, "content": {"order": "first", "via": ["x"]}},
            {"state_key": "!e:example.org", "origin_server_ts": 1640641000000, "content": {"via": ["x"]}},
            {"state_key": "!d:example.org", "origin_server_ts": 1640741000000, "content": {"via": ["x"]}},
        ]
        ordered = [c["state_key"] for c in sorted(children, key=child_sort_key)]
        self.assertEqual(ordered, ["!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org"])

    def test_invalid_order_and_ties(self) -> None:
        children = [
            {"state_key": "!z:x", "origin_server_ts": 5, "content": {"order": "\u00e9"}},  # not \x20-\x7E: no order
            {"state_key": "!y:x", "origin_server_ts": 5, "content": {"order": "x" * 51}},  # too long
            {"state_key": "!w:x", "origin_server_ts": 9, "content": {"order": "m"}},
            {"state_key": "!v:x", "origin_server_ts": 7, "content": {"order": "m", "suggested": True}},
        ]
        self.assertEqual([c["state_key"] for c in ordered_children(children, False)], ["!v:x", "!w:x", "!y:x", "!z:x"])
        self.assertEqual([c["state_key"] for c in ordered_children(children, True)], ["!v:x"])

    def test_clean_summary(self) -> None:
        self.assertIsNone(clean_summary({"room_id": "nope"}))
        s = clean_summary(
            {
                "room_id": "!r:x",
                "name": 5,
                "num_joined_members": "3",
                "world_readable": "yes",
                "children_state": [
                    {"type": "m.space.child", "state_key": "!c:x", "content": {"via": ["x"]}, "origin_server_ts": 1},
                    {"type": "m.space.child", "state_key": "!d:x", "content": {}, "origin_server_ts": 1},
                    {"type": "m.room.name", "state_key": "!e:x", "content": {"via": ["x"]}},
                ],
                "extra": "dropped",
            }
        )
        assert s is not None
        self.assertNotIn("name", s)
        self.assertNotIn("extra", s)
        self.assertEqual((s["num_joined_members"], s["world_readable"]), (0, False))
        self.assertEqual([c["state_key"] for c in s["children_state"]], ["!c:x"])


class HierarchyTests(HierarchyMixin, HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def tree(self) -> dict[str, str]:
        """space ─┬─ sub (space, order "a") ── grand
                  └─ room (order "b", suggested)"""
        a = self.alice
        ids = {
            "space": await self.make_space(a, "Space", topic="the top"),
            "sub": await self.make_space(a, "Sub"),
            "grand": await self.create_room(a, name="Grand", preset="public_chat"),
            "room": await self.create_room(a, name="Room", preset="public_chat"),
        }
        await self.add_child(a, ids["space"], ids["room"], order="b", suggested=True)
        await self.add_child(a, ids["space"], ids["sub"], order="a")
        await self.add_child(a, ids["sub"], ids["grand"])
        # Not children: an empty via list (a removed child), and a room nobody knows.
        empty = await self.create_room(a, name="Removed", preset="public_chat")
        await self.add_child(a, ids["space"], empty, via=[])
        await self.add_child(a, ids["space"], "!unknown:elsewhere.invalid", order="0")
        return ids

    async def test_depth_first_walk_and_summaries(self) -> None:
        ids = await self.tree()
        code, body = await self.hierarchy(self.bob, ids["space"])
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [ids["space"], ids["sub"], ids["grand"], ids["room"]])
        self.assertNotIn("next_batch", body)
        top = body["rooms"][0]
        self.assertEqual(top["name"], "Space")
        self.assertEqual(top["topic"], "the top")
        self.assertEqual(top["room_type"], "m.space")
        self.assertEqual(top["join_rule"], "public")
        self.assertEqual(top["num_joined_members"], 1)
        self.assertIs(top["world_readable"], False)
        self.assertIs(top["guest_can_join"], False)
        self.assertEqual(top["room_version"], self.hs.config.default_room_version)
        children = top["children_state"]
        self.assertEqual([c["state_key"] for c in children], ["!unknown:elsewhere.invalid", ids["sub"], ids["room"]])
        for c in children:
            self.assertEqual(set(c), {"type", "state_key", "content", "sender", "origin_server_ts"})
            self.assertEqual((c["type"], c["sender"]), ("m.space.child", self.alice.user_id))
        leaf = body["rooms"][3]
        self.assertEqual(leaf["children_state"], [])
        self.assertNotIn("room_type", leaf)

    async def test_max_depth(self) -> None:
        ids = await self.tree()
        self.assertEqual(await self.room_ids(self.bob, ids["space"], max_depth=0), [ids["space"]])
        self.assertEqual(await self.room_ids(self.bob, ids["space"], max_depth=1), [ids["space"], ids["sub"], ids["room"]])
        self.assertEqual(len(await self.room_ids(self.bob, ids["space"], max_depth=2)), 4)

    async def test_pagination_covers_every_room_once(self) -> None:
        ids = await self.tree()
        full = await self.room_ids(self.bob, ids["space"])
        for limit in (1, 2, 3):
            seen: list[str] = []
            token = None
            for _ in range(10):
                params: dict[str, Any] = {"limit": limit}
                if token:
                    params["from"] = token
                code, body = await self.hierarchy(self.bob, ids["space"], **params)
                self.assertEqual(code, 200, body)
                self.assertLessEqual(len(body["rooms"]), limit)
                seen += [r["room_id"] for r in body["rooms"]]
                token = body.get("next_batch")
                if token is None:
                    break
            self.assertEqual(seen, full, f"limit={limit}")
        # A token can be sent again (a retry) and gives the same page.
        _, first = await self.hierarchy(self.bob, ids["space"], limit=2)
        _, again1 = await self.hierarchy(self.bob, ids["space"], limit=2, **{"from": first["next_batch"]})
        _, again2 = await self.hierarchy(self.bob, ids["space"], limit=2, **{"from": first["next_batch"]})
        self.assertEqual(again1["rooms"], again2["rooms"])

    async def test_suggested_only(self) -> None:
        ids = await self.tree()
        self.assertEqual(await self.room_ids(self.bob, ids["space"], suggested_only="true"), [ids["space"], ids["room"]])
        # A token keeps the filter; changing it is refused.
        code, body = await self.hierarchy(self.bob, ids["space"], suggested_only="true", limit=1)
        self.assertIn("next_batch", body)
        self.assertMatrixError(
            await self.hierarchy(self.bob, ids["space"], **{"from": body["next_batch"]}), 400, "M_INVALID_PARAM"
        )
        code, page = await self.hierarchy(self.bob, ids["space"], suggested_only="true", **{"from": body["next_batch"]})
        self.assertEqual((code, [r["room_id"] for r in page["rooms"]]), (200, [ids["room"]]))

    async def test_private_child_visible_once_invited(self) -> None:
        a = self.alice
        space = await self.make_space(a, "Space")
        private = await self.create_room(a, name="Secret", preset="private_chat")
        public = await self.create_room(a, name="Open", preset="public_chat")
        await self.add_child(a, space, private)
        await self.add_child(a, space, public)
        self.assertEqual(await self.room_ids(self.bob, space), [space, public])
        # The member sees it, and the children_state still names it for everyone.
        self.assertEqual(set(await self.room_ids(a, space)), {space, private, public})
        await self.invite(a, private, self.bob)
        self.assertEqual(set(await self.room_ids(self.bob, space)), {space, private, public})

    async def test_restricted_and_encrypted_child(self) -> None:
        a = self.alice
        space = await self.make_space(a, "Space")
        allow = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
        restricted = await self.create_room(
            a,
            preset="private_chat",
            initial_state=[
                {"type": "m.room.join_rules", "state_key": "", "content": allow},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        )
        await self.add_child(a, space, restricted)
        self.assertEqual(await self.room_ids(self.bob, space), [space])
        await self.join(self.bob, space)
        code, body = await self.hierarchy(self.bob, space)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [space, restricted])
        child = body["rooms"][1]
        self.assertEqual(child["join_rule"], "restricted")
        self.assertEqual(child["allowed_room_ids"], [space])
        self.assertEqual(child["encryption"], "m.megolm.v1.aes-sha2")
        self.assertEqual(body["rooms"][0]["num_joined_members"], 2)

    async def test_remote_calls_are_bounded_per_page(self) -> None:
        """Remote rooms nobody answers for (far.example does not resolve) cost at most
        MAX_REMOTE_CALLS_PER_PAGE requests per page (the server's outbound request metric)."""
        from mxserver.room_handlers.hierarchy import MAX_REMOTE_CALLS_PER_PAGE

        start = hierarchy_requests()
        space = await self.make_space(self.alice, "Space")
        local = await self.create_room(self.alice, preset="public_chat")
        remote = [f"!r{i}:far.example" for i in range(8)]
        for i, room in enumerate(remote):
            await self.add_child(self.alice, space, room, via=["far.example"], order=f"{i}")
        await self.add_child(self.alice, space, local, order="9")
        code, body = await self.hierarchy(self.bob, space)
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [space])
        self.assertEqual(hierarchy_requests() - start, MAX_REMOTE_CALLS_PER_PAGE)
        code, body = await self.hierarchy(self.bob, space, **{"from": body["next_batch"]})
        self.assertEqual([r["room_id"] for r in body["rooms"]], [local])
        self.assertNotIn("next_batch", body)
        self.assertEqual(hierarchy_requests() - start, len(remote))
        # Failures are remembered for a while: the next walk asks nobody.
        self.assertEqual(await self.room_ids(self.bob, space, limit=50), [space, local])
        self.assertEqual(hierarchy_requests() - start, len(remote))

    async def test_knockable_only_where_the_version_knows_knocking(self) -> None:
        a = self.alice
        space = await self.make_space(a, "Space")
        knock = await self.create_room(a, preset="private_chat", room_version="10")
        old = await self.create_room(a, preset="private_chat", room_version="6")
        for room in (knock, old):
            await self.set_state(a, room, "m.room.join_rules", {"join_rule": "knock"})
            await self.add_child(a, space, room)
        self.assertEqual(await self.room_ids(self.bob, space), [space, knock])

    async def test_loops_are_broken(self) -> None:
        a = self.alice
        one = await self.make_space(a, "One")
        two = await self.make_space(a, "Two")
        await self.add_child(a, one, two)
        await self.add_child(a, two, one)
        await self.add_child(a, one, one)
        self.assertEqual(await self.room_ids(self.bob, one), [one, two])

    async def test_unseen_root_is_forbidden(self) -> None:
        space = await self.make_space(self.alice, "Hidden", preset="private_chat")
        self.assertMatrixError(await self.hierarchy(self.bob, space), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.hierarchy(self.bob, "!nowhere:test"), 403, "M_FORBIDDEN")
        # world_readable makes it visible without joining.
        await self.set_state(self.alice, space, "m.room.history_visibility", {"history_visibility": "world_readable"})
        self.assertEqual(await self.room_ids(self.bob, space), [space])

    async def test_bad_params(self) -> None:
        ids = await self.tree()
        space = ids["space"]
        for params in (
            {"limit": 0},
            {"limit": -1},
            {"limit": "ten"},
            {"max_depth": -1},
            {"max_depth": "deep"},
            {"suggested_only": "maybe"},
            {"from": "not-a-token"},
        ):
            self.assertMatrixError(await self.hierarchy(self.bob, space, **params), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.hierarchy(self.bob, "not-a-room"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{V1}/rooms/{q(space)}/hierarchy"), 401, "M_MISSING_TOKEN")
        _, body = await self.hierarchy(self.bob, space, limit=1, max_depth=3)
        token = body["next_batch"]
        # A token of another query: other depth, other root, other user.
        self.assertMatrixError(await self.hierarchy(self.bob, space, max_depth=2, **{"from": token}), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.hierarchy(self.bob, ids["sub"], max_depth=3, **{"from": token}), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.hierarchy(self.alice, space, max_depth=3, **{"from": token}), 400, "M_INVALID_PARAM")
        code, page = await self.hierarchy(self.bob, space, max_depth=3, **{"from": token})
        self.assertEqual((code, page["rooms"][0]["room_id"]), (200, ids["sub"]))
        # Huge limits are capped, not refused.
        self.assertEqual(len(await self.room_ids(self.bob, space, limit=10**9, max_depth=10**9)), 4)


class HierarchyOrderingTests(HierarchyMixin, HomeserverTestCase):
    """On a fake clock: the children's events get distinct timestamps without waiting."""

    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")

    async def test_ordering_by_order_then_timestamp(self) -> None:
        a = self.alice
        space = await self.make_space(a, "Space")
        rooms = [await self.create_room(a, preset="public_chat") for _ in range(5)]
        orders: list[str | None] = ["zz", None, " ", None, "aaaa"]
        for room, order in zip(rooms, orders, strict=True):
            await self.add_child(a, space, room, **({"order": order} if order is not None else {}))
            self.clock.advance(0.005)  # distinct origin_server_ts
        got = await self.room_ids(self.bob, space)
        self.assertEqual(got, [space, rooms[2], rooms[4], rooms[0], rooms[1], rooms[3]])


class FederatedHierarchyTests(HierarchyMixin, TwoServerTestCase):
    async def create_room(self, user: TestUser, **body: Any) -> str:
        server = self.a if user.user_id.endswith(self.a.server_name) else self.b
        return await server.create_room(user, body)

    async def set_state(self, user: TestUser, room: str, etype: str, content: dict[str, Any], state_key: str = "") -> None:
        server = self.a if user.user_id.endswith(self.a.server_name) else self.b
        code, body = await server.put(f"/_matrix/client/v3/rooms/{q(room)}/state/{etype}/{q(state_key)}", content, user)
        self.assertEqual(code, 200, body)

    async def test_child_on_other_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        space = await self.make_space(alice, "Space on A")
        sub = await self.b.create_room(bob, {"name": "Sub on B", "preset": "public_chat", "creation_content": {"type": "m.space"}})
        leaf = await self.b.create_room(bob, {"name": "Leaf on B", "preset": "public_chat"})
        secret = await self.b.create_room(bob, {"name": "Secret on B", "preset": "private_chat"})
        await self.add_child(alice, space, sub, via=[self.b.server_name])
        await self.set_state(bob, sub, "m.space.child", {"via": [self.b.server_name], "order": "a"}, leaf)
        await self.set_state(bob, sub, "m.space.child", {"via": [self.b.server_name], "order": "b"}, secret)

        # B's federation endpoint, asked by A.
        path = f"/_matrix/federation/v1/hierarchy/{q(sub)}"
        answer = await self.a.hs.federation_client.get_json(self.b.server_name, path, {"suggested_only": "false"})
        self.assertEqual(answer["room"]["room_id"], sub)
        self.assertEqual(answer["room"]["name"], "Sub on B")
        self.assertEqual([c["state_key"] for c in answer["room"]["children_state"]], [leaf, secret])
        self.assertEqual([c["room_id"] for c in answer["children"]], [leaf])
        self.assertEqual(answer["inaccessible_children"], [secret])
        from mxserver.federation.client import FederationError

        with self.assertRaises(FederationError) as caught:
            await self.a.hs.federation_client.get_json(self.b.server_name, f"/_matrix/federation/v1/hierarchy/{q(secret)}")
        self.assertEqual(caught.exception.code, 404)

        # The client walk on A fills in B's rooms.
        code, body = await self.a.get(f"{V1}/rooms/{q(space)}/hierarchy", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [space, sub, leaf])
        remote = body["rooms"][1]
        self.assertEqual((remote["name"], remote["room_type"], remote["num_joined_members"]), ("Sub on B", "m.space", 1))
        self.assertEqual(body["rooms"][2]["name"], "Leaf on B")
        # Cached: a second walk asks B nothing new (A's outbound requests, as its metric counts them).
        asked = hierarchy_requests()
        code, again = await self.a.get(f"{V1}/rooms/{q(space)}/hierarchy", alice)
        self.assertEqual([r["room_id"] for r in again["rooms"]], [space, sub, leaf])
        self.assertEqual(hierarchy_requests(), asked)

    async def test_remote_root(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        # Room v10: the room ID names its server, the only hint for a root we are not in.
        root = await self.b.create_room(bob, {"name": "Root on B", "preset": "public_chat", "room_version": "10"})
        hidden = await self.b.create_room(bob, {"preset": "private_chat", "room_version": "10"})
        code, body = await self.a.get(f"{V1}/rooms/{q(root)}/hierarchy", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([(r["room_id"], r["name"], r["room_version"]) for r in body["rooms"]], [(root, "Root on B", "10")])
        code, body = await self.a.get(f"{V1}/rooms/{q(hidden)}/hierarchy", alice)
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_unreachable_via_is_skipped(self) -> None:
        alice = await self.a.register("alice")
        space = await self.make_space(alice, "Space")
        await self.add_child(alice, space, "!gone:127.0.0.1:1", via=["127.0.0.1:1"])
        code, body = await self.a.get(f"{V1}/rooms/{q(space)}/hierarchy", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["rooms"]], [space])


class FederationEndpointTests(InboundTestCase):
    """``GET /_matrix/federation/v1/hierarchy/{roomId}`` asked by a (fake) remote server."""

    async def new_room(self, **body: Any) -> str:
        code, resp = await self.post("/_matrix/client/v3/createRoom", body, self.alice)
        self.assertEqual(code, 200, resp)
        return str(resp["room_id"])

    async def state(self, room: str, etype: str, content: dict[str, Any], state_key: str = "") -> None:
        path = f"/_matrix/client/v3/rooms/{q(room)}/state/{etype}/{q(state_key)}"
        code, resp = await self.put(path, content, self.alice)
        self.assertEqual(code, 200, resp)

    async def test_children_split_by_access(self) -> None:
        space = await self.new_room(preset="public_chat", name="Space", creation_content={"type": "m.space"})
        public = await self.new_room(preset="public_chat", name="Public")
        private = await self.new_room(preset="private_chat", name="Private")
        readable = await self.new_room(preset="private_chat", name="Readable")
        await self.state(readable, "m.room.history_visibility", {"history_visibility": "world_readable"})
        for room, order in ((public, "a"), (private, "b"), (readable, "c")):
            await self.state(space, "m.space.child", {"via": ["test"], "order": order, "suggested": room == public}, room)
        await self.state(space, "m.space.child", {"via": ["elsewhere.invalid"]}, "!remote:elsewhere.invalid")
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(space)}")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["room"]["room_id"], space)
        self.assertEqual(body["room"]["room_type"], "m.space")
        self.assertEqual(len(body["room"]["children_state"]), 4)
        self.assertEqual([c["room_id"] for c in body["children"]], [public, readable])
        self.assertIs(body["children"][1]["world_readable"], True)
        self.assertEqual(body["inaccessible_children"], [private])
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(space)}?suggested_only=true")
        self.assertEqual((code, [c["room_id"] for c in body["children"]], body["inaccessible_children"]), (200, [public], []))

        # The private room itself is not found for this server; an unknown room neither.
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(private)}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q('!nope:test')}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        # Once one of its users is in the room, the server may see it.
        await self.state(private, "m.room.join_rules", {"join_rule": "public"})
        await self.join_remote_user(private)
        await self.state(private, "m.room.join_rules", {"join_rule": "invite"})
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(private)}")
        self.assertEqual((code, body["room"]["room_id"], body["room"]["join_rule"]), (200, private, "invite"))

    async def test_bad_requests(self) -> None:
        space = await self.new_room(preset="public_chat", creation_content={"type": "m.space"})
        self.assertMatrixError(await self.get(f"/_matrix/federation/v1/hierarchy/{q(space)}"), 401, "M_UNAUTHORIZED")
        code, body = await self.fed("GET", "/_matrix/federation/v1/hierarchy/not-a-room")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(space)}?suggested_only=maybe")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        await self.state(space, "m.room.server_acl", {"allow": ["*"], "deny": ["127.0.0.1"]})
        code, body = await self.fed("GET", f"/_matrix/federation/v1/hierarchy/{q(space)}")
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
