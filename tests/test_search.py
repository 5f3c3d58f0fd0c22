"""Server-side search (client-server-api §Server Side Search, search.yaml): POST /search.

The ``event_search`` index written with every timeline event (local, received over federation,
backfilled) and emptied of redacted ones; the background job that indexes events stored before
the index existed, resumable; ``rank``/``recent`` order, ``keys``, every filter field, paging
with ``next_batch`` to the end, ``event_context`` with profiles, groupings, ``include_state``,
``count``, ``highlights``; history visibility; hostile search terms and bad input.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mxserver.storage.migrations import latest_version, prepare_database
from tests.harness import C, FakeRemote, HomeserverTestCase, InboundTestCase, TestUser, q, temp_dir
from tests.test_backfill import seed_joined_room
from tests.test_erasure import deactivate

#: the schema version that adds the search index and background jobs
SEARCH_MIGRATION = 26
#: the migration that keys the index by stream position, with the room beside the words
SEARCH_BY_STREAM_MIGRATION = 36
R0 = "/_matrix/client/r0"


def result_ids(body: dict[str, Any]) -> list[str]:
    return [r["result"]["event_id"] for r in body["search_categories"]["room_events"]["results"]]


class SearchClient:
    """The /search request, for any of the test cases below."""

    async def search(
        self: Any, user: TestUser, term: str | None, next_batch: str | None = None, **criteria: Any
    ) -> tuple[int, Any]:
        room_events = {**({"search_term": term} if term is not None else {}), **criteria}
        path = f"{C}/search" + (f"?next_batch={quote(next_batch)}" if next_batch is not None else "")
        return await self.post(path, {"search_categories": {"room_events": room_events}}, user)

    async def room_events(self: Any, user: TestUser, term: str, **criteria: Any) -> dict[str, Any]:
        code, body = await self.search(user, term, **criteria)
        self.assertEqual(code, 200, body)
        return dict(body["search_categories"]["room_events"])

    async def found(self: Any, user: TestUser, term: str, **criteria: Any) -> list[str]:
        code, body = await self.search(user, term, **criteria)
        self.assertEqual(code, 200, body)
        return result_ids(body)

    async def send(self: Any, user: TestUser, room: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
        code, body = await self.post(f"{C}/rooms/{q(room)}/send/{q(etype)}", content, user)
        self.assertEqual(code, 200, body)
        return str(body["event_id"])

    async def index_rows(self: Any) -> int:
        await self.hs.search_indexer.caught_up()
        row = await self.hs.db.select_one("rows", "SELECT COUNT(*) FROM event_search")
        return int(row[0])


class SearchTests(SearchClient, HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)

    async def test_rank_and_recent_order(self) -> None:
        alice, room = self.alice, self.room
        many = await self.send_message(alice, room, "apple apple apple")
        once = await self.send_message(alice, room, "an apple pie is a tasty thing to bake")
        await self.send_message(alice, room, "bananas only")
        # rank (the default): the more of the text the words make up, the closer
        body = await self.room_events(alice, "apple")
        self.assertEqual([r["result"]["event_id"] for r in body["results"]], [many, once])
        ranks = [r["rank"] for r in body["results"]]
        self.assertTrue(all(isinstance(r, (int, float)) for r in ranks), ranks)
        self.assertGreater(ranks[0], ranks[1])
        self.assertEqual(await self.found(alice, "apple", order_by="rank"), [many, once])
        # recent: the newest first, each still with its rank
        body = await self.room_events(alice, "apple", order_by="recent")
        self.assertEqual([r["result"]["event_id"] for r in body["results"]], [once, many])
        self.assertTrue(all(isinstance(r["rank"], (int, float)) for r in body["results"]))
        # the result is the event as clients see it
        result = body["results"][0]["result"]
        self.assertEqual(
            (result["type"], result["sender"], result["room_id"], result["content"]["body"]),
            ("m.room.message", alice.user_id, room, "an apple pie is a tasty thing to bake"),
        )
        self.assertIn("origin_server_ts", result)

    async def test_words_prefixes_and_case(self) -> None:
        alice, room = self.alice, self.room
        both = await self.send_message(alice, room, "The Martians landed near Woking")
        one = await self.send_message(alice, room, "martian weather report")
        german = await self.send_message(alice, room, "Grüße aus MÜNCHEN, 2024!")
        hindi = await self.send_message(alice, room, "नमस्ते हिन्दी")
        # every word must match the start of a word of the text, whatever the case
        self.assertCountEqual(await self.found(alice, "martian"), [both, one])
        self.assertEqual(await self.found(alice, "MARTIANS woking"), [both])
        self.assertEqual(await self.found(alice, "martians report"), [])
        self.assertEqual(await self.found(alice, "landed"), [both])
        self.assertEqual(await self.found(alice, "münchen grüße"), [german])
        self.assertEqual(await self.found(alice, "2024"), [german])
        # a word is letters, marks and digits: a Devanagari word is one word, not its pieces
        self.assertEqual(await self.found(alice, "हिन्दी"), [hindi])
        self.assertEqual(await self.found(alice, "हि"), [hindi])
        # not a word in the middle of one
        self.assertEqual(await self.found(alice, "artian"), [])

    async def test_each_key(self) -> None:
        alice = self.alice
        room = await self.create_room(alice, name="Orchard meeting", topic="pears and plums")
        message = await self.send_message(alice, room, "pears are ripe in the orchard")
        name = await self.set_state(alice, room, "m.room.name", {"name": "Quince corner"})
        # m.room.topic: `topic` and the text/plain representations of m.topic (not text/html)
        topic = await self.set_state(
            alice,
            room,
            "m.room.topic",
            {
                "topic": "figs",
                "m.topic": {
                    "m.text": [
                        {"mimetype": "text/html", "body": "<b>damsons</b>"},
                        {"body": "figs and medlars"},
                    ]
                },
            },
        )
        self.assertEqual(await self.found(alice, "quince"), [name])
        self.assertEqual(await self.found(alice, "medlars"), [topic])
        self.assertEqual(await self.found(alice, "figs"), [topic])
        self.assertEqual(await self.found(alice, "damsons"), [])
        # the createRoom name and topic are indexed too; keys restricts where to look
        self.assertEqual(len(await self.found(alice, "orchard")), 2)
        self.assertEqual(await self.found(alice, "orchard", keys=["content.body"]), [message])
        self.assertEqual(len(await self.found(alice, "orchard", keys=["content.name"])), 1)
        self.assertNotIn(message, await self.found(alice, "pears", keys=["content.topic"]))
        self.assertEqual(len(await self.found(alice, "pears", keys=["content.topic"])), 1)
        self.assertEqual(await self.found(alice, "quince", keys=["content.body", "content.topic"]), [])
        self.assertEqual(await self.found(alice, "quince", keys=[]), [])
        # only the keys of their own event type: a message's `name` is not content.name
        other = await self.send(alice, room, {"msgtype": "m.text", "body": "x", "name": "kumquat"})
        self.assertNotIn(other, await self.found(alice, "kumquat"))
        # encrypted events have nothing to index
        await self.send(alice, room, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "kumquat"}, "m.room.encrypted")
        self.assertEqual(await self.found(alice, "kumquat"), [])

    async def test_filter_fields(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        other = await self.create_room(alice, preset="public_chat")
        await self.join(bob, other)
        a1 = await self.send_message(alice, room, "walnut one")
        b1 = await self.send_message(bob, room, "walnut two")
        a2 = await self.send_message(alice, other, "walnut three")
        notice = await self.send_message(bob, other, "walnut four", msgtype="m.notice")
        image = await self.send(bob, other, {"msgtype": "m.image", "body": "walnut.png", "url": "mxc://test/abc"})
        name = await self.set_state(alice, other, "m.room.name", {"name": "walnut grove"})
        everything = {a1, b1, a2, notice, image, name}

        async def filtered(**filt: Any) -> set[str]:
            return set(await self.found(alice, "walnut", order_by="recent", filter=filt))

        self.assertEqual(await filtered(), everything)
        self.assertEqual(await filtered(rooms=[room]), {a1, b1})
        self.assertEqual(await filtered(not_rooms=[room]), {a2, notice, image, name})
        self.assertEqual(await filtered(rooms=[room, other], not_rooms=[other]), {a1, b1})
        self.assertEqual(await filtered(senders=[bob.user_id]), {b1, notice, image})
        self.assertEqual(await filtered(not_senders=[bob.user_id]), {a1, a2, name})
        self.assertEqual(await filtered(types=["m.room.name"]), {name})
        self.assertEqual(await filtered(types=["m.room.*"]), everything)
        self.assertEqual(await filtered(not_types=["m.room.message"]), {name})
        self.assertEqual(await filtered(types=[]), set())
        self.assertEqual(await filtered(rooms=[]), set())
        self.assertEqual(await filtered(contains_url=True), {image})
        self.assertEqual(await filtered(senders=[bob.user_id], contains_url=False), {b1, notice})
        # limit: the page size (the rest comes with next_batch)
        body = await self.room_events(alice, "walnut", order_by="recent", filter={"limit": 2})
        self.assertEqual(len(body["results"]), 2)
        self.assertIn("next_batch", body)
        self.assertEqual(body["count"], 6)

    async def _page_through(self, user: TestUser, term: str, order: str, limit: int) -> tuple[list[str], int]:
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            code, body = await self.search(user, term, token, order_by=order, filter={"limit": limit})
            self.assertEqual(code, 200, body)
            pages += 1
            room_events = body["search_categories"]["room_events"]
            self.assertLessEqual(len(room_events["results"]), limit)
            seen += result_ids(body)
            token = room_events.get("next_batch")
            if token is None:
                return seen, pages
            self.assertLess(pages, 50, "paging did not end")

    async def test_paging_until_exhausted(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        sent = []
        for i in range(23):
            # texts of different lengths and repeats: several ranks, some equal
            words = "needle " * (1 + i % 3) + "hay " * (i % 5)
            sent.append(await self.send_message(alice if i % 2 else bob, room, f"{words} {i}"))
        await self.send_message(alice, room, "no match here")
        for order in ("rank", "recent"):
            for limit in (1, 4, 10, 30):
                seen, pages = await self._page_through(alice, "needle", order, limit)
                self.assertEqual(len(seen), len(set(seen)), (order, limit))  # no duplicates
                self.assertCountEqual(seen, sent, (order, limit))  # none missing
                if order == "recent":
                    self.assertEqual(seen, list(reversed(sent)))
            # the pages of a rank search come in rank order
            code, body = await self.search(alice, "needle", order_by=order, filter={"limit": 30})
            ranks = [r["rank"] for r in body["search_categories"]["room_events"]["results"]]
            if order == "rank":
                self.assertEqual(ranks, sorted(ranks, reverse=True))

    async def test_paging_past_events_the_user_may_not_see(self) -> None:
        alice, bob = self.alice, self.bob
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        hidden = [await self.send_message(alice, room, f"acorn hidden {i}") for i in range(45)]
        await self.join(bob, room)
        shown = [await self.send_message(alice, room, f"acorn shown {i}") for i in range(3)]
        # the newest come first: a page is filled from what bob may see, the rest is skipped
        self.assertEqual(await self.found(bob, "acorn", order_by="recent"), list(reversed(shown)))
        seen, _ = await self._page_through(bob, "acorn", "rank", 2)
        self.assertCountEqual(seen, shown)
        self.assertEqual(len(await self.found(alice, "acorn", order_by="recent", filter={"limit": 50})), 48)
        self.assertEqual(len(hidden), 45)

    async def test_event_context_with_profiles(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        await self.set_profile(bob, displayname="Bob One", avatar_url="mxc://test/bob1")
        before = [await self.send_message(alice, room, f"before {i}") for i in range(3)]
        hit = await self.send_message(bob, room, "the hazelnut")
        after = [await self.send_message(alice, room, f"after {i}") for i in range(3)]
        # after the context window bob is someone else: the context keeps the name he had then
        await self.set_profile(bob, displayname="Bob Two")
        body = await self.room_events(
            alice, "hazelnut", event_context={"before_limit": 2, "after_limit": 2, "include_profile": True}
        )
        (result,) = body["results"]
        self.assertEqual(result["result"]["event_id"], hit)
        context = result["context"]
        # events_before nearest first, as /context returns them
        self.assertEqual([e["event_id"] for e in context["events_before"]], [before[2], before[1]])
        self.assertEqual([e["event_id"] for e in context["events_after"]], after[:2])
        self.assertEqual(
            context["profile_info"],
            {
                alice.user_id: {"displayname": "alice"},
                bob.user_id: {"displayname": "Bob One", "avatar_url": "mxc://test/bob1"},
            },
        )
        # start and end are /messages tokens around the context
        code, page = await self.messages(alice, room, dir="b", limit=1, **{"from": context["start"]})
        self.assertEqual((code, [e["event_id"] for e in page["chunk"]]), (200, [before[0]]))
        code, page = await self.messages(alice, room, dir="f", limit=1, **{"from": context["end"]})
        self.assertEqual((code, [e["event_id"] for e in page["chunk"]]), (200, [after[2]]))
        # defaults: 5 each way, no profiles; none asked: no context at all
        body = await self.room_events(alice, "hazelnut", event_context={})
        context = body["results"][0]["context"]
        self.assertEqual(len(context["events_before"]), 5)
        # after the three messages, bob's renaming (a member event)
        self.assertEqual([e["event_id"] for e in context["events_after"]][:3], after)
        self.assertEqual(context["events_after"][3]["type"], "m.room.member")
        self.assertNotIn("profile_info", context)
        body = await self.room_events(alice, "hazelnut", event_context={"before_limit": 0, "after_limit": 0})
        self.assertEqual(body["results"][0]["context"]["events_before"], [])
        self.assertEqual(body["results"][0]["context"]["events_after"], [])
        self.assertNotIn("context", (await self.room_events(alice, "hazelnut"))["results"][0])

    async def test_results_carry_bundled_aggregations(self) -> None:
        """§Aggregations of child events: /search results (and their context) are bundled like
        /messages: the thread and the latest valid edit of a root found by its text."""
        alice, bob, room = self.alice, self.bob, self.room
        root = await self.send_message(alice, room, "the almond question")
        reply = await self.send(
            bob, room, {"msgtype": "m.text", "body": "answer", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        )
        edit = await self.send(
            alice,
            room,
            {
                "msgtype": "m.text",
                "body": "* the almond question, edited",
                "m.new_content": {"msgtype": "m.text", "body": "the almond question, edited"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": root},
            },
        )
        after = await self.send_message(alice, room, "unrelated walnut")
        body = await self.room_events(bob, "question", event_context={"before_limit": 0, "after_limit": 5})
        by_id = {r["result"]["event_id"]: r for r in body["results"]}
        bundle = by_id[root]["result"]["unsigned"]["m.relations"]
        self.assertEqual(bundle["m.thread"]["count"], 1)
        self.assertEqual(bundle["m.thread"]["latest_event"]["event_id"], reply)
        self.assertIs(bundle["m.thread"]["current_user_participated"], True)
        self.assertEqual(bundle["m.replace"]["event_id"], edit)
        # the original's own text is what was found; the edit only shows in the bundle
        self.assertEqual(by_id[root]["result"]["content"]["body"], "the almond question")
        context_ids = [e["event_id"] for e in by_id[root]["context"]["events_after"]]
        self.assertIn(after, context_ids)
        (found,) = [r for r in body["results"] if r["result"]["event_id"] == root]
        self.assertNotIn("m.relations", found["context"]["events_after"][-1].get("unsigned", {}))

    async def test_groupings(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        other = await self.create_room(bob, preset="public_chat")
        await self.join(alice, other)
        in_room = [await self.send_message(alice, room, f"chestnut {i}") for i in range(3)]
        in_other = [await self.send_message(bob, other, f"chestnut {i}") for i in range(3)]
        latest = await self.send_message(bob, room, "chestnut last")
        groupings = {"group_by": [{"key": "room_id"}, {"key": "sender"}]}
        body = await self.room_events(alice, "chestnut", order_by="recent", groupings=groupings)
        groups = body["groups"]
        self.assertEqual(groups["room_id"][room]["results"], [latest, *reversed(in_room)])
        self.assertEqual(groups["room_id"][other]["results"], list(reversed(in_other)))
        # order numbers the groups as their first results come
        self.assertEqual((groups["room_id"][room]["order"], groups["room_id"][other]["order"]), (1, 2))
        self.assertEqual(groups["sender"][bob.user_id]["results"], [latest, *reversed(in_other)])
        self.assertEqual(groups["sender"][alice.user_id]["results"], list(reversed(in_room)))
        self.assertNotIn("next_batch", groups["room_id"][room])
        self.assertNotIn("next_batch", body)
        # a page with more to come: each group has a next_batch for more of that group only
        body = await self.room_events(alice, "chestnut", order_by="recent", groupings=groupings, filter={"limit": 3})
        self.assertEqual(body["groups"]["room_id"][room]["results"], [latest])
        self.assertEqual(body["groups"]["room_id"][other]["results"], list(reversed(in_other))[:2])
        room_token = body["groups"]["room_id"][room]["next_batch"]
        rest, token = [], room_token
        while token is not None:
            code, page = await self.search(
                alice, "chestnut", token, order_by="recent", groupings=groupings, filter={"limit": 2}
            )
            self.assertEqual(code, 200, page)
            rest += result_ids(page)
            room_events = page["search_categories"]["room_events"]
            self.assertEqual(set(room_events["groups"]["room_id"]), {room})
            token = room_events.get("next_batch")
        self.assertEqual(rest, list(reversed(in_room)))
        # bob's rest: his first message in the other room (alice, who had none on the page, has no group)
        self.assertEqual(set(body["groups"]["sender"]), {bob.user_id})
        sender_token = body["groups"]["sender"][bob.user_id]["next_batch"]
        code, page = await self.search(alice, "chestnut", sender_token, order_by="recent")
        self.assertEqual((code, result_ids(page)), (200, [in_other[0]]))
        # rank order groups too
        body = await self.room_events(alice, "chestnut", groupings={"group_by": [{"key": "room_id"}]})
        self.assertCountEqual(body["groups"]["room_id"], [room, other])
        self.assertNotIn("sender", body["groups"])

    async def test_include_state(self) -> None:
        alice, room = self.alice, self.room
        quiet = await self.create_room(alice, name="Quiet")
        await self.set_state(alice, room, "m.room.topic", {"topic": "pecans"})
        await self.send_message(alice, room, "pecan pie")
        body = await self.room_events(alice, "pecan", include_state=True)
        self.assertEqual(set(body["state"]), {room})
        state = {(e["type"], e["state_key"]): e for e in body["state"][room]}
        self.assertEqual(state[("m.room.topic", "")]["content"], {"topic": "pecans"})
        self.assertEqual(state[("m.room.member", self.bob.user_id)]["content"]["membership"], "join")
        self.assertIn(("m.room.create", ""), state)
        self.assertNotIn(quiet, body["state"])
        self.assertNotIn("state", await self.room_events(alice, "pecan"))

    async def test_count_and_highlights(self) -> None:
        alice, room = self.alice, self.room
        await self.send_message(alice, room, "Apples, apples and APPLESAUCE.")
        await self.send_message(alice, room, "an applet on the apple tree")
        await self.send_message(alice, room, "a pear")
        body = await self.room_events(alice, "apple")
        self.assertEqual(body["count"], 2)
        self.assertCountEqual(body["highlights"], ["Apples", "apples", "APPLESAUCE", "applet", "apple"])
        body = await self.room_events(alice, "apple tree")
        self.assertEqual(body["count"], 1)
        self.assertCountEqual(body["highlights"], ["applet", "apple", "tree"])
        body = await self.room_events(alice, "plum")
        self.assertEqual((body["count"], body["highlights"], body["results"]), (0, [], []))
        self.assertNotIn("next_batch", body)
        # the count is of all matches, not of the page
        body = await self.room_events(alice, "a", filter={"limit": 1})
        self.assertEqual((body["count"], len(body["results"])), (3, 1))

    async def test_visibility(self) -> None:
        alice, bob = self.alice, self.bob
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat", history_visibility="joined")
        early = await self.send_message(alice, room, "almond early")
        await self.join(bob, room)
        joined = await self.send_message(alice, room, "almond joined")
        # bob joined later under `joined` visibility: the earlier event is not his to find, nor
        # to count
        self.assertEqual(await self.found(bob, "almond"), [joined])
        self.assertEqual((await self.room_events(bob, "almond"))["count"], 1)
        self.assertCountEqual(await self.found(alice, "almond"), [early, joined])
        # a non-member finds nothing, even in a room they could join
        self.assertEqual(await self.found(carol, "almond"), [])
        self.assertEqual((await self.room_events(carol, "almond"))["count"], 0)
        # a former member still finds what they saw, nothing after they left (§Server Side Search)
        await self.leave(bob, room)
        later = await self.send_message(alice, room, "almond later")
        self.assertEqual(await self.found(bob, "almond"), [joined])
        body = await self.room_events(bob, "almond", event_context={}, include_state=True)
        self.assertEqual(body["results"][0]["context"]["events_after"][-1]["content"]["membership"], "leave")
        self.assertNotIn(later, [e["event_id"] for e in body["results"][0]["context"]["events_after"]])
        bob_member = [e for e in body["state"][room] if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
        self.assertEqual(bob_member[0]["content"]["membership"], "leave")
        # a forgotten room is no longer searched
        code, _ = await self.post(f"{C}/rooms/{q(room)}/forget", {}, bob)
        self.assertEqual(code, 200)
        self.assertEqual(await self.found(bob, "almond"), [])
        self.assertCountEqual(await self.found(alice, "almond"), [early, joined, later])

    async def test_a_user_in_more_rooms_than_the_index_narrows_to(self) -> None:
        """Past a few rooms (SQLite's ``max_index_rooms``), the rooms are checked on the matches'
        events instead of in the index: the same results, in both orders, and paging."""
        alice, bob = self.alice, self.bob
        rooms = [await self.create_room(alice, preset="public_chat") for _ in range(10)]
        hits = [await self.send_message(alice, room, f"pecan {i}") for i, room in enumerate(rooms)]
        outside = await self.create_room(bob, preset="public_chat")
        await self.send_message(bob, outside, "pecan outside")
        recent = await self.found(alice, "pecan", order_by="recent")
        self.assertEqual(recent, list(reversed(hits)))
        self.assertCountEqual(await self.found(alice, "pecan"), hits)
        self.assertEqual((await self.room_events(alice, "pecan"))["count"], 10)
        # a page at a time: every hit once
        seen: list[str] = []
        token = None
        for _ in range(6):
            code, body = await self.search(alice, "pecan", token, order_by="recent", filter={"limit": 3})
            self.assertEqual(code, 200, body)
            seen += result_ids(body)
            token = body["search_categories"]["room_events"].get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, list(reversed(hits)))
        # narrowed to two rooms by the filter: the index narrows again
        self.assertEqual(
            await self.found(alice, "pecan", order_by="recent", filter={"rooms": rooms[:2]}), [hits[1], hits[0]]
        )

    async def test_shared_visibility_and_world_readable(self) -> None:
        alice, bob = self.alice, self.bob
        shared = await self.create_room(alice, preset="public_chat", history_visibility="shared")
        early = await self.send_message(alice, shared, "cashew early")
        await self.join(bob, shared)
        # `shared`: a member sees what came before they joined
        self.assertEqual(await self.found(bob, "cashew"), [early])
        # a world-readable room the user never joined is not one of "their" rooms
        carol = await self.register("carol")
        open_room = await self.create_room(alice, preset="public_chat", history_visibility="world_readable")
        await self.send_message(alice, open_room, "cashew open")
        self.assertEqual(await self.found(carol, "cashew"), [])

    async def test_ignored_users(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        await self.set_power(alice, room, bob.user_id, 50)
        before = await self.send_message(alice, room, "fig before")
        theirs = await self.send_message(bob, room, "fig from bob")
        name = await self.set_state(bob, room, "m.room.name", {"name": "fig garden"})
        after = await self.send_message(alice, room, "fig after")
        path = f"{C}/user/{q(alice.user_id)}/account_data/m.ignored_user_list"
        self.assertEqual((await self.put(path, {"ignored_users": {bob.user_id: {}}}, alice))[0], 200)
        # modules/ignore_users.md: no events of an ignored user, except state events
        body = await self.room_events(alice, "fig", order_by="recent", event_context={"before_limit": 3})
        self.assertEqual([r["result"]["event_id"] for r in body["results"]], [after, name, before])
        self.assertEqual(body["count"], 3)
        context = body["results"][0]["context"]
        context_ids = [e["event_id"] for e in context["events_before"]]
        self.assertEqual(context_ids[:2], [name, before])
        self.assertNotIn(theirs, context_ids)
        # bob's own search, and others', are not affected
        self.assertIn(theirs, await self.found(bob, "fig"))

    async def test_a_message_redacted_before_the_indexer_reads_it_is_never_indexed(self) -> None:
        alice, room = self.alice, self.room
        await self.send_message(alice, room, "walnut kept")
        rows = await self.index_rows()
        gone = await self.send_message(alice, room, "walnut gone")
        # at once: the indexer reads the stream a moment after the send (or already has; the
        # redaction then removes the row)
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(gone)}/r1", {}, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.found(alice, "walnut"), [(await self.found(alice, "kept"))[0]])
        self.assertEqual(await self.index_rows(), rows)

    async def test_events_sent_while_the_indexer_was_stopped_are_indexed_after_a_restart(self) -> None:
        alice, room = self.alice, self.room
        await self.hs.search_indexer.stop()
        missed = await self.send_message(alice, room, "chestnut missed")
        await self.restart()
        self.assertEqual(await self.found(alice, "chestnut"), [missed])
        # and once: a restart after catching up indexes nothing again
        rows = await self.index_rows()
        await self.restart()
        self.assertEqual(await self.found(alice, "chestnut"), [missed])
        self.assertEqual(await self.index_rows(), rows)

    async def test_redaction_removes_the_hit(self) -> None:
        alice, room = self.alice, self.room
        kept = await self.send_message(alice, room, "pistachio kept")
        gone = await self.send_message(alice, room, "pistachio gone")
        rows = await self.index_rows()
        self.assertCountEqual(await self.found(alice, "pistachio"), [kept, gone])
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(gone)}/r1", {}, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.found(alice, "pistachio"), [kept])
        self.assertEqual(await self.found(alice, "gone"), [])
        # the text is gone from the index, not only hidden
        self.assertEqual(await self.index_rows(), rows - 1)
        self.assertEqual((await self.room_events(alice, "pistachio"))["count"], 1)

    async def test_erased_senders_events_are_not_results(self) -> None:
        alice, bob, room = self.alice, self.bob, self.room
        theirs = await self.send_message(bob, room, "macadamia from bob")
        carol = await self.register("carol")
        await self.join(carol, room)
        self.assertEqual(await self.found(carol, "macadamia"), [theirs])
        await deactivate(self, bob, self, erase=True)
        # alice was in the room when bob sent it (she may still see it); carol joined later and
        # sees it redacted: its text is not hers to find
        self.assertEqual(await self.found(alice, "macadamia"), [theirs])
        self.assertEqual(await self.found(carol, "macadamia"), [])

    async def test_hostile_terms(self) -> None:
        alice, room = self.alice, self.room
        plain = await self.send_message(alice, room, "and near or not")
        quoted = await self.send_message(alice, room, 'she said "NEAR(x y)" and left: body:secret*')
        # terms without a word find nothing, and break nothing
        for term in ('"', "*", ":", "'", "\\", "^", "-", "()", "&|!", "''", '"*"', "\x00", "", "   "):
            code, body = await self.search(alice, term)
            self.assertEqual(code, 200, (term, body))
            self.assertEqual((result_ids(body), body["search_categories"]["room_events"]["count"]), ([], 0), term)
        # operators of FTS5 or tsquery are plain words here
        self.assertCountEqual(await self.found(alice, "AND ("), [plain, quoted])
        self.assertCountEqual(await self.found(alice, "NEAR(x"), [quoted])
        self.assertCountEqual(await self.found(alice, "not OR"), [plain])
        self.assertCountEqual(await self.found(alice, "body:secret*"), [quoted])
        self.assertCountEqual(await self.found(alice, '"and near"'), [plain, quoted])
        self.assertCountEqual(await self.found(alice, "-and"), [plain, quoted])
        self.assertCountEqual(await self.found(alice, "sa:* & !x"), [quoted])
        # a term of too many words is refused
        self.assertMatrixError(await self.search(alice, " ".join(f"w{i}" for i in range(65))), 400, "M_INVALID_PARAM")
        # the same word many times is one word
        self.assertCountEqual(await self.found(alice, " ".join(["and"] * 100)), [plain, quoted])

    async def test_bad_input(self) -> None:
        alice = self.alice
        path = f"{C}/search"
        cases: list[tuple[Any, str]] = [
            ({}, "M_MISSING_PARAM"),
            ({"search_categories": []}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": "x"}}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
            ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
            ({"search_categories": {"room_events": {"search_term": None}}}, "M_BAD_JSON"),
        ]
        for body, errcode in cases:
            self.assertMatrixError(await self.post(path, body, alice), 400, errcode)
        criteria_cases: list[tuple[dict[str, Any], str]] = [
            ({"keys": "content.body"}, "M_BAD_JSON"),
            ({"keys": [1]}, "M_BAD_JSON"),
            ({"keys": ["content.msgtype"]}, "M_INVALID_PARAM"),
            ({"order_by": "oldest"}, "M_INVALID_PARAM"),
            ({"order_by": 1}, "M_BAD_JSON"),
            ({"filter": "nope"}, "M_BAD_JSON"),
            ({"filter": {"limit": 0}}, "M_INVALID_PARAM"),
            ({"filter": {"limit": "ten"}}, "M_BAD_JSON"),
            ({"filter": {"rooms": ["not-a-room"]}}, "M_INVALID_PARAM"),
            ({"filter": {"senders": "@a:test"}}, "M_BAD_JSON"),
            ({"filter": {"not_types": [1]}}, "M_BAD_JSON"),
            ({"event_context": []}, "M_BAD_JSON"),
            ({"event_context": {"before_limit": -1}}, "M_INVALID_PARAM"),
            ({"event_context": {"after_limit": "5"}}, "M_BAD_JSON"),
            ({"event_context": {"include_profile": "yes"}}, "M_BAD_JSON"),
            ({"include_state": "true"}, "M_BAD_JSON"),
            ({"groupings": []}, "M_BAD_JSON"),
            ({"groupings": {"group_by": {"key": "room_id"}}}, "M_BAD_JSON"),
            ({"groupings": {"group_by": ["room_id"]}}, "M_BAD_JSON"),
            ({"groupings": {"group_by": [{}]}}, "M_MISSING_PARAM"),
            ({"groupings": {"group_by": [{"key": "type"}]}}, "M_INVALID_PARAM"),
        ]
        for criteria, errcode in criteria_cases:
            result = await self.search(alice, "x", **criteria)
            self.assertMatrixError(result, 400, errcode)
        # next_batch: only what this server handed out, for the same order
        for token in ("nonsense", "", "e30", "eyJvIjoicmFuayIsInAiOjF9", "W10", "!!!"):
            self.assertMatrixError(await self.search(alice, "x", token), 400, "M_INVALID_PARAM")
        await self.send_message(alice, self.room, "x one")
        await self.send_message(alice, self.room, "x two")
        body = await self.room_events(alice, "x", order_by="recent", filter={"limit": 1})
        self.assertMatrixError(await self.search(alice, "x", body["next_batch"], order_by="rank"), 400, "M_INVALID_PARAM")
        # not JSON, no token
        self.assertMatrixError(await self.request("POST", path, raw=b"{", token=alice.access_token), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, {"search_categories": {}}), 401, "M_MISSING_TOKEN")
        # the server still serves
        self.assertEqual(len(await self.found(alice, "x")), 2)

    async def test_r0_and_no_category(self) -> None:
        alice, room = self.alice, self.room
        hit = await self.send_message(alice, room, "brazil nut")
        body = {"search_categories": {"room_events": {"search_term": "brazil"}}}
        code, answer = await self.post(f"{R0}/search", body, alice)
        self.assertEqual((code, result_ids(answer)), (200, [hit]))
        code, answer = await self.post(f"{C}/search", {"search_categories": {}}, alice)
        self.assertEqual((code, answer), (200, {"search_categories": {}}))


class ExistingEventsTests(SearchClient, HomeserverTestCase):
    """Events stored before the index existed: the background job indexes them."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.room = await self.create_room(self.alice, preset="public_chat", name="Hickory hall")
        self.sent = [await self.send_message(self.alice, self.room, f"hickory {i}") for i in range(6)]
        self.topic = await self.set_state(self.alice, self.room, "m.room.topic", {"topic": "hickory trees"})
        self.redacted = await self.send_message(self.alice, self.room, "hickory redacted")
        await self.put(f"{C}/rooms/{q(self.room)}/redact/{q(self.redacted)}/r1", {}, self.alice)
        self.everything = [*self.sent, self.topic]

    async def nid(self, event_id: str) -> int:
        row = await self.hs.db.select_one("nid", "SELECT event_nid FROM events WHERE event_id = ?", event_id)
        return int(row[0])

    async def forget_index(self, position: int = 0) -> None:
        """The database as an older mxserver left it: events, no index, the job to do."""
        await self.hs.search_indexer.caught_up()
        db = self.hs.db
        await db.execute("empty", "DELETE FROM event_search")
        await db.execute(
            "job",
            "INSERT INTO background_jobs (name, position, target) SELECT ?, ?, MAX(event_nid) FROM events",
            "event_search",
            position,
        )
        self.assertEqual(await self.found(self.alice, "hickory"), [])

    async def test_the_job_indexes_existing_events_after_a_restart(self) -> None:
        alice = self.alice
        self.assertEqual(len(await self.found(alice, "hickory", filter={"limit": 20})), 8)  # with the room name
        await self.forget_index()
        await self.restart()
        await self.hs.background_jobs.settle()
        found = await self.found(alice, "hickory", order_by="recent", filter={"limit": 20})
        self.assertEqual(found[:7], list(reversed(self.everything)))
        self.assertEqual(len(found), 8)
        self.assertEqual(await self.hs.background_jobs.pending(), [])
        # events persisted since are indexed as they come, once
        new = await self.send_message(alice, self.room, "hickory new")
        self.assertEqual((await self.found(alice, "hickory", order_by="recent"))[0], new)
        self.assertEqual(await self.index_rows(), 9)

    async def test_the_job_goes_in_batches_and_resumes_where_it_got(self) -> None:
        alice, jobs = self.alice, self.hs.background_jobs
        await self.forget_index()
        jobs.batch_size = 3
        top = await self.hs.db.select_one("top", "SELECT MAX(event_nid) FROM events")
        # the first batch: the room name and two messages, and the position with them
        self.assertEqual(await jobs.run_batch("event_search"), (await self.nid(self.sent[1]), top[0]))
        self.assertEqual(await self.found(alice, "hickory", order_by="recent", keys=["content.body"]), self.sent[1::-1])
        row = await self.hs.db.select_one("pos", "SELECT position FROM background_jobs WHERE name = ?", "event_search")
        self.assertEqual(row, (await self.nid(self.sent[1]),))
        # a restart goes on from there (what came before is not read again)
        row = await self.hs.db.select_one("pos", "SELECT stream_ordering FROM events WHERE event_id = ?", self.sent[0])
        await self.hs.db.execute("unindex", "DELETE FROM event_search WHERE rowid = ?" if self.backend == "sqlite"
                                 else "DELETE FROM event_search WHERE stream_ordering = ?", row[0])
        await self.restart()
        await self.hs.background_jobs.settle()
        found = await self.found(alice, "hickory", order_by="recent", filter={"limit": 20})
        # the topic, messages 5 to 1, the room name: not message 0
        self.assertEqual(found[:-1], list(reversed(self.everything[1:])))
        self.assertEqual(len(found), 7)
        self.assertEqual(await self.hs.background_jobs.pending(), [])

    async def test_a_job_stopped_with_the_server_keeps_its_position(self) -> None:
        await self.forget_index(position=await self.nid(self.sent[3]))
        jobs = self.hs.background_jobs
        jobs.batch_size = 1
        jobs.start()
        await jobs.stop()
        # stopped after at most the batch in flight: the job is still pending, further on
        self.assertEqual(await jobs.pending(), ["event_search"])
        row = await self.hs.db.select_one("pos", "SELECT position FROM background_jobs WHERE name = ?", "event_search")
        self.assertIn(row[0], (await self.nid(self.sent[3]), await self.nid(self.sent[4])))
        await self.restart()
        await self.hs.background_jobs.settle()
        self.assertCountEqual(await self.found(self.alice, "hickory"), [*self.sent[4:], self.topic])

    async def test_the_migration_schedules_the_job(self) -> None:
        db = self.hs.db
        await self.hs.search_indexer.caught_up()  # it writes to the table dropped here
        # the database as it was before migration 0026: the events, no index, no jobs
        await db.execute("drop", "DROP TABLE event_search")
        await db.execute("drop", "DROP TABLE background_jobs")
        await db.execute("downgrade", "UPDATE schema_version SET version = ?", SEARCH_MIGRATION - 1)
        version = await db.run_with_connection(prepare_database, db.dialect, SEARCH_MIGRATION)
        self.assertEqual(version, SEARCH_MIGRATION)
        row = await db.select_one("job", "SELECT position, target FROM background_jobs WHERE name = ?", "event_search")
        top = await db.select_one("top", "SELECT MAX(event_nid) FROM events")
        self.assertEqual(row, (0, top[0]))
        # The migrations after 0026 are in place already (only 0026's tables were dropped), but
        # for the one that reshapes the index: it runs again, on the empty index 0026 made.
        await db.execute("upgrade", "UPDATE schema_version SET version = ?", SEARCH_BY_STREAM_MIGRATION - 1)
        version = await db.run_with_connection(prepare_database, db.dialect, latest_version())
        self.assertEqual(version, latest_version())
        await self.restart()
        await self.hs.background_jobs.settle()
        self.assertCountEqual(await self.found(self.alice, "hickory", keys=["content.body", "content.topic"]), self.everything)


class IndexMigrationTests(SearchClient, HomeserverTestCase):
    """Migration 0036 keys the index by stream position, with the room beside the words: what
    an older mxserver indexed is carried over, not indexed again."""

    async def test_rows_of_the_older_index_are_carried_over(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        sent = [await self.send_message(alice, room, f"macadamia {i}") for i in range(3)]
        await self.hs.search_indexer.caught_up()
        db = self.hs.db
        # the index as migration 0026 left it: keyed by event_nid, the words alone
        rows = await db.select(
            "old",
            "SELECT e.event_nid, s.words FROM event_search s JOIN events e ON e.stream_ordering = s.rowid"
            if self.backend == "sqlite"
            else "SELECT e.event_nid, s.vector FROM event_search s JOIN events e ON e.stream_ordering = s.stream_ordering",
        )
        self.assertEqual(len(rows), 3)
        await db.execute("drop", "DROP TABLE event_search")
        if self.backend == "sqlite":
            await db.execute("old", "CREATE VIRTUAL TABLE event_search USING fts5(words, tokenize = 'ascii')")
            for nid, words in rows:
                await db.execute("row", "INSERT INTO event_search (rowid, words) VALUES (?, ?)", nid, words)
        else:
            await db.execute("old", "CREATE TABLE event_search (event_nid BIGINT PRIMARY KEY, vector TSVECTOR NOT NULL)")
            for nid, vector in rows:
                await db.execute("row", "INSERT INTO event_search (event_nid, vector) VALUES (?, CAST(? AS tsvector))", nid, vector)
        await db.execute("downgrade", "UPDATE schema_version SET version = ?", SEARCH_BY_STREAM_MIGRATION - 1)
        version = await db.run_with_connection(prepare_database, db.dialect, SEARCH_BY_STREAM_MIGRATION)
        self.assertEqual(version, SEARCH_BY_STREAM_MIGRATION)
        await db.execute("upgrade", "UPDATE schema_version SET version = ?", latest_version())
        await self.restart()
        self.assertEqual(await self.found(alice, "macadamia", order_by="recent"), list(reversed(sent)))
        self.assertEqual(await self.index_rows(), 3)
        # the background job has nothing to do: the rows came over with their keys
        self.assertEqual(await self.hs.background_jobs.pending(), [])


class FederatedSearchTests(SearchClient, InboundTestCase):
    async def test_events_received_over_federation(self) -> None:
        room_id = await self.room()
        await self.join_remote_user(room_id)
        message = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "remote walnut"})
        # eve never joined: her event fails the auth rules, is stored rejected, and indexed nowhere
        rejected = await self.remote_event(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "rejected walnut"},
            sender=self.remote.user("eve"),
            prev=[message.event_id],
        )
        code, body = await self.send_txn("t1", [message.get_pdu_json(), rejected.get_pdu_json()])
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.found(self.alice, "walnut"), [message.event_id])
        # a remote redaction removes it again
        redaction = await self.remote_event(room_id, "m.room.redaction", {}, redacts=message.event_id)
        code, body = await self.send_txn("t2", [redaction.get_pdu_json()])
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.found(self.alice, "walnut"), [])


class BackfilledSearchTests(SearchClient, HomeserverTestCase):
    config_overrides = {"federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}}

    async def test_backfilled_history_is_indexed(self) -> None:
        remote = FakeRemote()
        remote.listen(self, temp_dir(self))
        alice = await self.register("alice")
        room = remote.new_room()
        room.add("m.room.history_visibility", {"history_visibility": "shared"}, "")
        (old,) = room.messages(1, prefix="ancient pine")
        # a state event: held as an outlier after the join, placed in the timeline by the backfill
        topic = room.add("m.room.topic", {"topic": "pine forest"}, "")
        room.messages(3, prefix="later")
        await seed_joined_room(self.hs, room, alice.user_id)
        # nothing of the history yet
        self.assertEqual(await self.found(alice, "pine"), [])
        # /messages backfills it, and the index has it
        code, page = await self.messages(alice, room.room_id, dir="b", limit=50)
        self.assertEqual(code, 200, page)
        self.assertIn(old.event_id, [e["event_id"] for e in page["chunk"]])
        self.assertEqual(await self.found(alice, "pine", order_by="recent"), [topic.event_id, old.event_id])
        self.assertEqual(await self.found(alice, "ancient"), [old.event_id])
