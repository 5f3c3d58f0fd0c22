"""Event relationships (client-server-api §Forming relationships between events, relations.yaml):
the ``event_relations`` index written with every timeline event, and
GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].

Edits, reactions, threads and references of local events, of events received over federation
and of backfilled history are listed; replies (``m.in_reply_to``) and malformed relations are
not; pages go both ways with ``from``/``to``/``next_batch``/``prev_batch``; ``recurse`` follows
children of children; the parent and every child pass the history-visibility rules.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from mxserver.storage.migrations import prepare_database
from tests.harness import C, FakeRemote, HomeserverTestCase, InboundTestCase, TestUser, q, temp_dir
from tests.test_backfill import seed_joined_room

V1 = "/_matrix/client/v1"
#: the schema version that adds event_relations
RELATIONS_MIGRATION = 23


def ids(body: dict[str, Any]) -> list[str]:
    return [ev["event_id"] for ev in body["chunk"]]


def relates(parent: str, rel_type: str, **extra: Any) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": parent, **extra}}


class RelationsClient:
    """The /relations request and sending related events, for any of the test cases below."""

    async def relations(
        self: Any,
        user: TestUser,
        room: str,
        parent: str,
        rel_type: str | None = None,
        event_type: str | None = None,
        **params: Any,
    ) -> tuple[int, Any]:
        path = f"{V1}/rooms/{q(room)}/relations/{q(parent)}"
        if rel_type is not None:
            path += f"/{q(rel_type)}"
            if event_type is not None:
                path += f"/{q(event_type)}"
        query = urlencode({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()})
        return await self.get(path + (f"?{query}" if query else ""), user)

    async def listed(self: Any, user: TestUser, room: str, parent: str, *path: str | None, **params: Any) -> list[str]:
        code, body = await self.relations(user, room, parent, *path, **params)
        self.assertEqual(code, 200, body)
        return ids(body)

    async def send(self: Any, user: TestUser, room: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
        code, body = await self.post(f"{C}/rooms/{q(room)}/send/{q(etype)}", content, user)
        self.assertEqual(code, 200, body)
        return str(body["event_id"])

    async def react(self: Any, user: TestUser, room: str, parent: str, key: str = "👍") -> str:
        return await self.send(user, room, relates(parent, "m.annotation", key=key), "m.reaction")

    async def relation_rows(self: Any, *event_ids: str) -> dict[str, tuple[Any, ...]]:
        marks = ",".join("?" * len(event_ids))
        rows = await self.hs.db.select(
            "rows",
            "SELECT event_id, relates_to_id, rel_type, annotation_key, sender, type FROM event_relations"
            f" WHERE event_id IN ({marks})",
            *event_ids,
        )
        return {r[0]: tuple(r[1:]) for r in rows}


class RelationsTests(RelationsClient, HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)

    async def test_kinds_of_children_stored_and_listed(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        edit = await self.send(
            alice,
            room,
            {
                "msgtype": "m.text",
                "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                **relates(root, "m.replace"),
            },
        )
        reaction = await self.react(bob, room, root)
        thread = await self.send(
            bob,
            room,
            {
                "msgtype": "m.text",
                "body": "in thread",
                **relates(root, "m.thread", is_falling_back=True, **{"m.in_reply_to": {"event_id": root}}),
            },
        )
        reference = await self.send(alice, room, {"msgtype": "m.text", "body": "see", **relates(root, "m.reference")})
        # not relations: a rich reply, malformed m.relates_to, a relation to another event
        reply = await self.send(
            bob, room, {"msgtype": "m.text", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": root}}}
        )
        bad_type = await self.send(
            bob, room, {"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": 5, "event_id": root}}
        )
        no_parent = await self.send(
            bob, room, {"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.reference"}}
        )
        other = await self.send_message(alice, room, "other")
        await self.react(alice, room, other)

        self.assertEqual(await self.listed(bob, room, root, limit=50), [reference, thread, reaction, edit])
        # the index holds what the events say, and nothing for the non-relations
        rows = await self.relation_rows(edit, reaction, thread, reference, reply, bad_type, no_parent)
        self.assertEqual(rows[reaction], (root, "m.annotation", "👍", bob.user_id, "m.reaction"))
        self.assertEqual(rows[edit], (root, "m.replace", None, alice.user_id, "m.room.message"))
        self.assertEqual(rows[thread][:2], (root, "m.thread"))
        self.assertEqual(set(rows), {edit, reaction, thread, reference})

        # relType, then relType and eventType
        self.assertEqual(await self.listed(bob, room, root, "m.annotation"), [reaction])
        self.assertEqual(await self.listed(bob, room, root, "m.thread", "m.room.message"), [thread])
        self.assertEqual(await self.listed(bob, room, root, "m.annotation", "m.room.message"), [])
        self.assertEqual(await self.listed(bob, room, root, "org.example.none"), [])
        # an event without children: an empty chunk, nothing more
        code, body = await self.relations(bob, room, reply)
        self.assertEqual((code, body), (200, {"chunk": []}))

        # the children as /messages serialises them (age aside, it moves)
        code, page = await self.messages(bob, room, dir="b", limit=50)
        by_id = {ev["event_id"]: ev for ev in page["chunk"]}
        code, body = await self.relations(bob, room, root)
        for ev in body["chunk"]:
            expected = dict(by_id[ev["event_id"]])
            got = dict(ev)
            for e in (expected, got):
                e["unsigned"] = {k: v for k, v in e.get("unsigned", {}).items() if k != "age"}
            self.assertEqual(got, expected)

    async def test_pagination_both_ways(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        children = [await self.react(alice, room, root, key=str(i)) for i in range(12)]
        await self.send_message(alice, room, "after")
        newest_first = list(reversed(children))

        # default limit 5, newest first; no prev_batch on the first page
        code, first = await self.relations(alice, room, root)
        self.assertEqual(code, 200, first)
        self.assertEqual(ids(first), newest_first[:5])
        self.assertNotIn("prev_batch", first)
        code, second = await self.relations(alice, room, root, **{"from": first["next_batch"]})
        self.assertEqual(ids(second), newest_first[5:10])
        self.assertIn("prev_batch", second)
        code, third = await self.relations(alice, room, root, **{"from": second["next_batch"]})
        self.assertEqual(ids(third), newest_first[10:])
        self.assertNotIn("next_batch", third)

        # forwards from the start, in chronological order
        seen: list[str] = []
        token = None
        for _ in range(5):
            params: dict[str, Any] = {"dir": "f", "limit": 5, **({"from": token} if token else {})}
            code, page = await self.relations(alice, room, root, **params)
            self.assertEqual(code, 200, page)
            seen += ids(page)
            token = page.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, children)

        # forwards from page 1's next_batch: page 1 again, oldest first
        code, back = await self.relations(alice, room, root, dir="f", limit=5, **{"from": first["next_batch"]})
        self.assertEqual(ids(back), list(reversed(ids(first))))
        # 'to' stops at a token: from the end to page 1's next_batch is page 1
        code, upto = await self.relations(alice, room, root, limit=100, to=first["next_batch"])
        self.assertEqual(ids(upto), ids(first))
        self.assertNotIn("next_batch", upto)
        # from page 1 to page 2's next_batch: pages 2 (relations.yaml: 'from' after 'to')
        code, between = await self.relations(
            alice, room, root, limit=100, to=second["next_batch"], **{"from": first["next_batch"]}
        )
        self.assertEqual(ids(between), ids(second))
        # the other way round is empty
        code, empty = await self.relations(
            alice, room, root, limit=100, to=first["next_batch"], **{"from": second["next_batch"]}
        )
        self.assertEqual(ids(empty), [])
        # a limit beyond the maximum is capped, not refused
        code, everything = await self.relations(alice, room, root, limit=100000)
        self.assertEqual((code, ids(everything)), (200, newest_first))

    async def test_tokens_from_sync_and_messages(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        early = await self.react(alice, room, root, "a")
        sync = await self.sync(alice)
        late = await self.react(alice, room, root, "b")
        # a /sync next_batch: children up to that point, backwards
        self.assertEqual(await self.listed(alice, room, root, **{"from": sync["next_batch"]}), [early])
        self.assertEqual(await self.listed(alice, room, root, dir="f", **{"from": sync["next_batch"]}), [late])
        # a /messages start token
        code, page = await self.messages(alice, room, dir="b", limit=1)
        self.assertEqual(await self.listed(alice, room, root, **{"from": page["start"]}), [late, early])

    async def test_recurse(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        a = await self.send(alice, room, {"msgtype": "m.text", "body": "a", **relates(root, "m.thread")})
        b = await self.react(alice, room, a)
        c = await self.send(alice, room, {"msgtype": "m.text", "body": "c", **relates(b, "m.reference")})
        await self.send(alice, room, {"msgtype": "m.text", "body": "d", **relates(c, "m.reference")})  # depth 4

        code, body = await self.relations(alice, room, root, recurse=True)
        self.assertEqual((code, ids(body), body["recursion_depth"]), (200, [c, b, a], 3))
        code, body = await self.relations(alice, room, root, recurse=False)
        self.assertEqual((ids(body), body["recursion_depth"]), ([a], 0))
        code, body = await self.relations(alice, room, root)
        self.assertEqual(ids(body), [a])
        self.assertNotIn("recursion_depth", body)
        # filters apply at every level: b matches m.annotation, but only through a (m.thread)
        self.assertEqual(await self.listed(alice, room, root, "m.annotation", recurse=True), [])
        self.assertEqual(await self.listed(alice, room, a, "m.annotation", recurse=True), [b])
        x = await self.send(alice, room, {"msgtype": "m.text", "body": "x", **relates(root, "m.reference")})
        y = await self.send(alice, room, {"msgtype": "m.text", "body": "y", **relates(x, "m.reference")})
        self.assertEqual(await self.listed(alice, room, root, "m.reference", recurse=True), [y, x])
        self.assertEqual(await self.listed(alice, room, root, "m.reference", "m.reaction", recurse=True), [])
        # pages of a recursive listing
        code, page = await self.relations(alice, room, root, recurse=True, limit=2)
        self.assertEqual(ids(page), [y, x])
        code, rest = await self.relations(alice, room, root, recurse=True, limit=10, **{"from": page["next_batch"]})
        self.assertEqual(ids(rest), [c, b, a])

    async def test_parent_the_user_cannot_see(self) -> None:
        alice, bob = self.alice, self.bob
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        root = await self.send_message(alice, room, "before carol")
        await self.react(alice, room, root)
        await self.join(carol, room)
        # carol joined after it, under "joined": the parent is not hers to see
        code, body = await self.relations(carol, room, root)
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"))
        # never in the room at all
        dave = await self.register("dave")
        code, body = await self.relations(dave, room, root)
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"))
        # an unknown event, and an event of another room
        code, body = await self.relations(alice, room, "$unknown")
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"))
        elsewhere = await self.send_message(bob, self.room, "elsewhere")
        code, body = await self.relations(alice, room, elsewhere)
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"))
        # alice, who sent it, sees the reaction
        self.assertEqual(len(await self.listed(alice, room, root)), 1)

    async def test_children_the_user_cannot_see_are_left_out(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        seen = await self.react(alice, room, root, "a")
        await self.leave(bob, room)
        unseen = await self.react(alice, room, root, "b")
        # bob left: the parent and what came before are his, what came after is not
        self.assertEqual(await self.listed(alice, room, root), [unseen, seen])
        self.assertEqual(await self.listed(bob, room, root), [seen])
        self.assertEqual(await self.listed(bob, room, root, dir="f"), [seen])

    async def test_children_sent_while_away_under_joined_visibility(self) -> None:
        alice, bob = self.alice, self.bob
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        await self.join(bob, room)
        root = await self.send_message(alice, room, "root")
        first = await self.react(alice, room, root, "a")
        await self.leave(bob, room)
        away = await self.react(alice, room, root, "b")
        await self.join(bob, room)
        back = await self.react(alice, room, root, "c")
        # bob is joined again, but was not when 'away' was sent (§Room History Visibility)
        self.assertEqual(await self.listed(alice, room, root), [back, away, first])
        self.assertEqual(await self.listed(bob, room, root), [back, first])
        # a page the filter thinned out still hands on a token to the rest
        code, page = await self.relations(bob, room, root, limit=1)
        self.assertEqual(ids(page), [back])
        code, page = await self.relations(bob, room, root, limit=1, **{"from": page["next_batch"]})
        self.assertEqual(ids(page), [first])

    async def test_redacted_child_is_no_longer_related(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        kept = await self.react(alice, room, root, "a")
        gone = await self.react(alice, room, root, "b")
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(gone)}/r1", {}, alice)
        self.assertEqual(code, 200, body)
        # §Aggregations of child events: "when a child event is redacted then the relationship
        # is broken" -- the listing drops it, the index keeps the row
        self.assertEqual(await self.listed(alice, room, root), [kept])
        self.assertIn(gone, await self.relation_rows(gone))
        # a redacted parent keeps its children
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(root)}/r2", {}, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.listed(alice, room, root), [kept])

    async def test_bad_input(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        await self.react(alice, room, root)
        for params in (
            {"limit": "many"},
            {"limit": "-1"},
            {"dir": "sideways"},
            {"from": "nonsense"},
            {"to": "nonsense"},
            {"recurse": "maybe"},
        ):
            code, body = await self.relations(alice, room, root, **params)
            self.assertEqual((code, body.get("errcode")), (400, "M_INVALID_PARAM"), params)
        code, body = await self.relations(alice, room, "not-an-event-id")
        self.assertEqual((code, body.get("errcode")), (400, "M_INVALID_PARAM"))
        code, body = await self.relations(alice, "not-a-room", root)
        self.assertEqual((code, body.get("errcode")), (400, "M_INVALID_PARAM"))
        code, body = await self.get(f"{V1}/rooms/{q(room)}/relations/{q(root)}")
        self.assertEqual((code, body.get("errcode")), (401, "M_MISSING_TOKEN"))

    async def test_existing_events_are_indexed_by_the_migration(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        children = [await self.react(alice, room, root, str(i)) for i in range(3)]
        thread = await self.send(alice, room, {"msgtype": "m.text", "body": "t", **relates(root, "m.thread")})
        before = await self.relation_rows(*children, thread)
        self.assertEqual(len(before), 4)
        # the database as it was before migration 0023: the events, no index
        db = self.hs.db
        await db.execute("drop", "DROP TABLE event_relations")
        await db.execute("downgrade", "UPDATE schema_version SET version = ?", RELATIONS_MIGRATION - 1)
        version = await db.run_with_connection(prepare_database, db.dialect, RELATIONS_MIGRATION)
        self.assertEqual(version, RELATIONS_MIGRATION)
        self.assertEqual(await self.relation_rows(*children, thread), before)
        self.assertEqual(await self.listed(alice, room, root, limit=10), [thread, *reversed(children)])


class FederatedRelationsTests(RelationsClient, InboundTestCase):
    async def test_children_received_over_federation(self) -> None:
        room_id = await self.room()
        await self.join_remote_user(room_id)
        root = await self.local_message(room_id, "root")
        reaction = await self.remote_event(room_id, "m.reaction", relates(root.event_id, "m.annotation", key="🎉"))
        # eve never joined: her reaction fails the auth rules, is stored rejected, and indexed nowhere
        rejected = await self.remote_event(
            room_id,
            "m.reaction",
            relates(root.event_id, "m.annotation", key="x"),
            sender=self.remote.user("eve"),
            prev=[reaction.event_id],
        )
        code, body = await self.send_txn("t1", [reaction.get_pdu_json(), rejected.get_pdu_json()])
        self.assertEqual(code, 200, body)
        info = await self.event_info(rejected.event_id)
        assert info is not None
        self.assertIsNotNone(info.rejected_reason)
        self.assertEqual(await self.listed(self.alice, room_id, root.event_id), [reaction.event_id])
        rows = await self.relation_rows(reaction.event_id, rejected.event_id)
        self.assertEqual(
            rows, {reaction.event_id: (root.event_id, "m.annotation", "🎉", self.remote.user("bob"), "m.reaction")}
        )


class BackfilledRelationsTests(RelationsClient, HomeserverTestCase):
    config_overrides = {"federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}}

    async def test_backfilled_children(self) -> None:
        remote = FakeRemote()
        remote.listen(self, temp_dir(self))
        alice = await self.register("alice")
        room = remote.new_room()
        (root,) = room.messages(1)
        reaction = room.add("m.reaction", relates(root.event_id, "m.annotation", key="old"), None)
        # a state event: held as an outlier after the join, placed in the timeline by the backfill
        topic = room.add("m.room.topic", {"topic": "see root", **relates(root.event_id, "m.reference")}, "")
        room.messages(3, prefix="later")
        await seed_joined_room(self.hs, room, alice.user_id)
        # nothing of the history yet: the parent is unknown
        code, body = await self.relations(alice, room.room_id, root.event_id)
        self.assertEqual(code, 404, body)
        # /messages backfills it; the reaction comes with it
        events = await self.visible_history(alice, room.room_id)
        self.assertIn(reaction.event_id, events)
        self.assertEqual(await self.listed(alice, room.room_id, root.event_id), [topic.event_id, reaction.event_id])
        # forwards from the start of history: backfilled positions are negative
        self.assertEqual(
            await self.listed(alice, room.room_id, root.event_id, dir="f"), [reaction.event_id, topic.event_id]
        )
        row = await self.hs.db.select_one("row", "SELECT outlier FROM events WHERE event_id = ?", topic.event_id)
        self.assertEqual(row, (False,) if self.backend == "postgres" else (0,))

    async def visible_history(self, user: TestUser, room_id: str) -> list[str]:
        seen: list[str] = []
        token = None
        for _ in range(20):
            code, page = await self.messages(user, room_id, dir="b", limit=50, **{"from": token})
            self.assertEqual(code, 200, page)
            seen += ids(page)
            token = page.get("end")
            if token is None:
                return seen
        self.fail("pagination did not end")
