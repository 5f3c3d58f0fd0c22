"""GET /_matrix/client/v1/rooms/{roomId}/threads (threads_list.yaml, client-server-api §Querying
threads in a room): the thread roots of a room, latest activity first, ``include=all`` or
``participated``, pages with ``from``/``next_batch``, each root with its bundled aggregations;
only roots the user may see; bad input answered with Matrix errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.harness import C, HomeserverTestCase, TestUser, q
from tests.test_aggregations import AggregationsClient
from tests.test_relations import relates

V1 = "/_matrix/client/v1"


class ThreadsTests(AggregationsClient, HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.carol = await self.register("carol")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)
        await self.join(self.carol, self.room)

    async def threads(self, user: TestUser, room: str, **params: Any) -> tuple[int, Any]:
        query = urlencode({k: str(v) for k, v in params.items()})
        return await self.get(f"{V1}/rooms/{q(room)}/threads" + (f"?{query}" if query else ""), user)

    async def roots(self, user: TestUser, room: str, **params: Any) -> list[str]:
        code, body = await self.threads(user, room, **params)
        self.assertEqual(code, 200, body)
        return [ev["event_id"] for ev in body["chunk"]]

    async def test_include_all_and_participated(self) -> None:
        room, alice, bob, carol = self.room, self.alice, self.bob, self.carol
        by_alice = await self.send_message(alice, room, "alice's")
        by_bob = await self.send_message(bob, room, "bob's")
        by_carol = await self.send_message(carol, room, "carol's")
        await self.send_message(alice, room, "no thread")
        await self.reply(bob, room, by_alice)
        await self.reply(carol, room, by_bob)
        await self.reply(carol, room, by_carol)

        self.assertEqual(await self.roots(alice, room), [by_carol, by_bob, by_alice])
        self.assertEqual(await self.roots(alice, room, include="all"), [by_carol, by_bob, by_alice])
        # participated: the user sent the root, or a reply (threading.md)
        self.assertEqual(await self.roots(alice, room, include="participated"), [by_alice])
        self.assertEqual(await self.roots(bob, room, include="participated"), [by_bob, by_alice])
        self.assertEqual(await self.roots(carol, room, include="participated"), [by_carol, by_bob])

        # every root carries its bundled aggregations
        code, body = await self.threads(bob, room)
        thread = body["chunk"][2]["unsigned"]["m.relations"]["m.thread"]
        self.assertEqual((thread["count"], thread["current_user_participated"]), (1, True))
        self.assertEqual(thread["latest_event"]["sender"], bob.user_id)

    async def test_ordered_by_latest_activity(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        first = await self.send_message(alice, room, "first")
        second = await self.send_message(alice, room, "second")
        await self.reply(bob, room, first)
        await self.reply(bob, room, second)
        self.assertEqual(await self.roots(alice, room), [second, first])
        # a new reply moves its thread to the top
        latest = await self.reply(bob, room, first)
        self.assertEqual(await self.roots(alice, room), [first, second])
        # ... and back when it is redacted
        await self.redact(bob, room, latest)
        self.assertEqual(await self.roots(alice, room), [second, first])
        # a thread whose replies are all redacted is no thread
        replies = [await self.reply(alice, room, second, "gone") for _ in range(2)]
        for reply in replies:
            await self.redact(alice, room, reply)
        self.assertEqual(await self.roots(alice, room), [second, first])
        code, body = await self.relations(alice, room, second, "m.thread")
        for ev in body["chunk"]:
            await self.redact(alice, room, ev["event_id"])
        self.assertEqual(await self.roots(alice, room), [first])
        # a redacted root keeps its thread (§Aggregations of child events), served redacted
        await self.redact(alice, room, first)
        code, body = await self.threads(alice, room)
        self.assertEqual([ev["event_id"] for ev in body["chunk"]], [first])
        self.assertEqual(body["chunk"][0]["content"], {})

    async def test_pagination(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        roots = [await self.send_message(alice, room, f"root {i}") for i in range(7)]
        for root in roots:
            await self.reply(bob, room, root)
        newest_first = list(reversed(roots))
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3, **({"from": token} if token else {})}
            code, body = await self.threads(alice, room, **params)
            self.assertEqual(code, 200, body)
            self.assertLessEqual(len(body["chunk"]), 3)
            seen += [ev["event_id"] for ev in body["chunk"]]
            pages += 1
            token = body.get("next_batch")
            if token is None:
                break
        self.assertEqual((seen, pages), (newest_first, 3))
        # the default limit, and one page for all
        self.assertEqual(await self.roots(alice, room), newest_first[:5])
        self.assertEqual(await self.roots(alice, room, limit=50), newest_first)
        # a /sync token: the threads with activity up to then
        sync = await self.sync(alice)
        newer = await self.send_message(alice, room, "newer")
        await self.reply(bob, room, newer)
        self.assertEqual(await self.roots(alice, room, limit=50, **{"from": sync["next_batch"]}), newest_first)
        self.assertEqual((await self.roots(alice, room, limit=50))[0], newer)

    async def test_only_threads_the_user_may_see(self) -> None:
        alice, bob, carol = self.alice, self.bob, self.carol
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        await self.join(bob, room)
        before = await self.send_message(alice, room, "before carol")
        await self.reply(bob, room, before)
        await self.join(carol, room)
        after = await self.send_message(alice, room, "after carol joined")
        await self.reply(bob, room, after)
        await self.leave(bob, room)
        late = await self.send_message(alice, room, "after bob left")
        await self.reply(alice, room, late)
        self.assertEqual(await self.roots(alice, room), [late, after, before])
        # history visibility, as /messages applies it: carol joined after 'before', bob left before 'late'
        self.assertEqual(await self.roots(carol, room), [late, after])
        self.assertEqual(await self.roots(bob, room), [after, before])
        # a page the filter thinned out still leads on to the rest
        code, body = await self.threads(carol, room, limit=1)
        self.assertEqual([ev["event_id"] for ev in body["chunk"]], [late])
        code, body = await self.threads(carol, room, limit=1, **{"from": body["next_batch"]})
        self.assertEqual([ev["event_id"] for ev in body["chunk"]], [after])
        # never in the room: 403
        dave = await self.register("dave")
        self.assertMatrixError(await self.threads(dave, room), 403, "M_FORBIDDEN")

    async def test_root_of_an_ignored_user_is_redacted(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(bob, room, "bob's root")
        await self.reply(alice, room, root)
        await self.ignore(alice, bob)
        code, body = await self.threads(alice, room)
        self.assertEqual(code, 200, body)
        # threads_list.yaml: "the event is returned redacted to the caller"
        (ev,) = body["chunk"]
        self.assertEqual((ev["event_id"], ev["content"]), (root, {}))
        self.assertEqual(ev["unsigned"]["m.relations"]["m.thread"]["count"], 1)

    async def test_no_thread_off_a_related_event(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        reply = await self.reply(bob, room, root)
        edit = await self.edit(alice, room, root, "edited")
        reaction = await self.react(bob, room, root)
        # threading.md §Validation of m.thread relationships: threads do not nest
        for parent in (reply, edit, reaction):
            content = {"msgtype": "m.text", "body": "nested", **relates(parent, "m.thread")}
            code, body = await self.post(f"{C}/rooms/{q(room)}/send/m.room.message", content, alice)
            self.assertEqual((code, body.get("errcode")), (400, "M_UNKNOWN"), parent)
        # a rich reply has no rel_type: it may start a thread
        rich = await self.send(
            bob, room, {"msgtype": "m.text", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": root}}}
        )
        await self.reply(alice, room, rich)
        self.assertEqual(await self.roots(alice, room), [rich, root])

    async def test_bad_input(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        await self.reply(alice, room, root)
        for params in (
            {"include": "mine"},
            {"include": ""},
            {"limit": "many"},
            {"limit": "0"},
            {"limit": "-2"},
            {"from": "nonsense"},
            {"from": "s"},
        ):
            self.assertMatrixError(await self.threads(alice, room, **params), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.threads(alice, "not-a-room"), 400, "M_INVALID_PARAM")
        # threads_list.yaml: 403 for a room that does not exist
        self.assertMatrixError(await self.threads(alice, "!unknown:localhost"), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{V1}/rooms/{q(room)}/threads"), 401, "M_MISSING_TOKEN")
        # a limit beyond the maximum is capped, not refused
        self.assertEqual(await self.roots(alice, room, limit=100000), [root])
        # the server kept serving
        code, body = await self.get(f"{C}/rooms/{q(room)}/event/{q(root)}", alice)
        self.assertEqual(code, 200, body)
