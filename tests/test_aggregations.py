"""Bundled aggregations (client-server-api §Aggregations of child events): ``unsigned["m.relations"]``
of the events /messages, /context, /event, /relations and a limited /sync timeline return.

``m.thread`` (threading.md: latest_event the reader may see with its own bundle, count,
current_user_participated), ``m.replace`` (event_replacements.md: the most recent *valid* edit;
the original's content untouched; redacting an edit brings back the previous one; none on a
redacted original) and ``m.reference`` (reference_relations.md). Redacted children and children
of ignored users are not counted. A page's bundles cost a bounded number of transactions,
however many of its events have children. Replies received over federation and backfilled ones
are aggregated too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database
from mxserver.storage.migrations import prepare_database
from tests.harness import C, FakeRemote, HomeserverTestCase, InboundTestCase, TestUser, q, temp_dir
from tests.test_backfill import seed_joined_room
from tests.test_relations import RelationsClient, ids, relates

#: the schema version that adds the threads table
THREADS_MIGRATION = 25


class CountedReads:
    """Counts the read transactions a Database runs, by name, while in a ``with`` block (a
    request that only reads; background writers, such as the push reader, are not counted)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reads: Counter[str] = Counter()

    def __enter__(self) -> Counter[str]:
        original = self.db.run_read

        def run_read(desc: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            self.reads[desc] += 1
            return original(desc, fn, *args, **kwargs)

        self.db.run_read = run_read  # type: ignore[method-assign]
        return self.reads

    def __exit__(self, *exc: object) -> None:
        del self.db.run_read


class AggregationsClient(RelationsClient):
    """Sending children, and reading the bundle of an event from each endpoint."""

    async def reply(self: Any, user: TestUser, room: str, root: str, body: str = "reply") -> str:
        return await self.send(user, room, {"msgtype": "m.text", "body": body, **relates(root, "m.thread")})

    async def edit(
        self: Any, user: TestUser, room: str, original: str, body: str, etype: str = "m.room.message", **extra: Any
    ) -> str:
        content = {
            "msgtype": "m.text",
            "body": f"* {body}",
            "m.new_content": {"msgtype": "m.text", "body": body},
            **relates(original, "m.replace"),
            **extra,
        }
        return await self.send(user, room, content, etype)

    async def reference(self: Any, user: TestUser, room: str, parent: str) -> str:
        return await self.send(user, room, {"msgtype": "m.text", "body": "ref", **relates(parent, "m.reference")})

    async def redact(self: Any, user: TestUser, room: str, event_id: str) -> None:
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(event_id)}/r{event_id[1:9]}", {}, user)
        self.assertEqual(code, 200, body)

    async def ignore(self: Any, user: TestUser, *others: TestUser) -> None:
        content = {"ignored_users": {o.user_id: {} for o in others}}
        path = f"{C}/user/{q(user.user_id)}/account_data/m.ignored_user_list"
        code, body = await self.put(path, content, user)
        self.assertEqual(code, 200, body)

    async def event_json(self: Any, user: TestUser, room: str, event_id: str) -> dict[str, Any]:
        code, body = await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", user)
        self.assertEqual(code, 200, body)
        return dict(body)

    async def bundle(self: Any, user: TestUser, room: str, event_id: str) -> dict[str, Any] | None:
        """The event's ``m.relations`` as GET /event shows it to ``user``."""
        return (await self.event_json(user, room, event_id))["unsigned"].get("m.relations")

    async def bundles_everywhere(self: Any, user: TestUser, room: str, event_id: str) -> dict[str, Any]:
        """The event's ``m.relations`` from /event, /messages, /context and a limited /sync."""
        out: dict[str, Any] = {"event": await self.bundle(user, room, event_id)}
        code, page = await self.messages(user, room, dir="b", limit=100)
        self.assertEqual(code, 200, page)
        out["messages"] = _find(page["chunk"], event_id)["unsigned"].get("m.relations")
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(event_id)}?limit=4", user)
        self.assertEqual(code, 200, ctx)
        out["context"] = ctx["event"]["unsigned"].get("m.relations")
        # an initial sync whose timeline does not reach back to the room's creation: limited
        sync = await self.sync(user, filter=json.dumps({"room": {"timeline": {"limit": 8}}}))
        timeline = sync["rooms"]["join"][room]["timeline"]
        self.assertTrue(timeline["limited"])
        out["sync"] = _find(timeline["events"], event_id)["unsigned"].get("m.relations")
        return out


def _find(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    for ev in events:
        if ev["event_id"] == event_id:
            return ev
    raise AssertionError(f"{event_id} not among {[e['event_id'] for e in events]}")


def _without(value: Any, *keys: str) -> Any:
    """An event as served, but for every one of ``keys`` in it (at any depth)."""
    if isinstance(value, dict):
        return {k: _without(v, *keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, *keys) for v in value]
    return value


class BundledAggregationsTests(AggregationsClient, HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.carol = await self.register("carol")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)
        await self.join(self.carol, self.room)

    async def test_thread_in_every_endpoint(self) -> None:
        room, alice, bob, carol = self.room, self.alice, self.bob, self.carol
        root = await self.send_message(alice, room, "root")
        first = await self.reply(bob, room, root, "first")
        latest = await self.reply(alice, room, root, "latest")
        fix = await self.edit(alice, room, latest, "latest, fixed")
        ref = await self.reference(bob, room, latest)

        everywhere = await self.bundles_everywhere(carol, room, root)
        # (ages move between two requests)
        expected_latest = _without(await self.event_json(carol, room, latest), "age")
        for endpoint, relations in everywhere.items():
            self.assertIsNotNone(relations, endpoint)
            thread = relations["m.thread"]
            self.assertEqual((thread["count"], thread["current_user_participated"]), (2, False), endpoint)
            # the latest reply, serialised as the event itself, with its own aggregations
            got = _without(thread["latest_event"], "age")
            if endpoint == "sync":
                # /sync leaves room_id out of its events, the bundled ones as well
                self.assertEqual(got, _without(got, "room_id"))
                self.assertEqual(got, _without(expected_latest, "room_id"), endpoint)
            else:
                self.assertEqual(got, expected_latest, endpoint)
            inner = thread["latest_event"]["unsigned"]["m.relations"]
            self.assertEqual(inner["m.replace"]["event_id"], fix, endpoint)
            self.assertEqual(inner["m.reference"], {"chunk": [{"event_id": ref}]}, endpoint)
            self.assertEqual(set(relations), {"m.thread"}, endpoint)
        # participation: the root's sender, a replier, not a bystander
        for user, took_part in ((alice, True), (bob, True), (carol, False)):
            thread = (await self.bundle(user, room, root) or {})["m.thread"]
            self.assertEqual(thread["current_user_participated"], took_part, user.user_id)
        # an event without children has no m.relations at all
        self.assertIsNone(await self.bundle(alice, room, first))

    async def test_no_bundles_in_an_unlimited_sync_timeline(self) -> None:
        room, alice = self.room, self.alice
        sync = await self.sync(alice)
        root = await self.send_message(alice, room, "root")
        await self.reply(alice, room, root)
        # §Aggregations of child events: bundles in /sync "when the relevant section has a limited
        # value of true"; here the client receives every child as it comes
        later = await self.sync(alice, since=sync["next_batch"])
        timeline = later["rooms"]["join"][room]["timeline"]
        self.assertFalse(timeline["limited"])
        self.assertNotIn("m.relations", _find(timeline["events"], root)["unsigned"])

    async def test_relations_chunk_carries_bundles(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        parent = await self.send_message(alice, room, "parent")
        child = await self.reference(bob, room, parent)
        grandchild = await self.reference(alice, room, child)
        fix = await self.edit(bob, room, child, "ref, fixed")
        code, body = await self.relations(alice, room, parent)
        self.assertEqual((code, ids(body)), (200, [child]))
        relations = body["chunk"][0]["unsigned"]["m.relations"]
        self.assertEqual(relations["m.reference"], {"chunk": [{"event_id": grandchild}]})
        self.assertEqual(relations["m.replace"]["event_id"], fix)

    async def test_edits(self) -> None:
        room, alice = self.room, self.alice
        original = await self.send_message(alice, room, "original")
        first = await self.edit(alice, room, original, "first")
        second = await self.edit(alice, room, original, "second")
        everywhere = await self.bundles_everywhere(self.bob, room, original)
        for endpoint, relations in everywhere.items():
            edit = relations["m.replace"]
            self.assertEqual(edit["event_id"], second, endpoint)
            # "formatted as normal"
            self.assertEqual(edit["content"]["m.new_content"], {"msgtype": "m.text", "body": "second"}, endpoint)
            self.assertEqual(edit["sender"], alice.user_id, endpoint)
        # v1.7: the server does not replace the original's content
        self.assertEqual((await self.event_json(self.bob, room, original))["content"]["body"], "original")
        # an edit of the original is served with no bundle of its own
        self.assertIsNone(await self.bundle(alice, room, first))
        # redacting the most recent edit brings back the one before it (§Redactions of edited events)
        await self.redact(alice, room, second)
        self.assertEqual((await self.bundle(alice, room, original) or {})["m.replace"]["event_id"], first)
        await self.redact(alice, room, first)
        self.assertIsNone(await self.bundle(alice, room, original))

    async def test_invalid_edits_are_not_bundled(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        original = await self.send_message(alice, room, "original")
        valid = await self.edit(alice, room, original, "valid")
        # event_replacements.md §Validity of replacement events, each rule broken by a newer edit:
        await self.edit(bob, room, original, "someone else's")  # another sender
        await self.edit(alice, room, original, "other type", etype="org.example.message")  # another type
        await self.set_state(  # a state key
            alice,
            room,
            "m.room.message",
            {"body": "* state", "m.new_content": {"body": "state"}, **relates(original, "m.replace")},
            "x",
        )
        await self.send(alice, room, {"msgtype": "m.text", "body": "* no new content", **relates(original, "m.replace")})
        await self.send(  # m.new_content that is not an object
            alice, room, {"msgtype": "m.text", "body": "*", "m.new_content": "text", **relates(original, "m.replace")}
        )
        self.assertEqual((await self.bundle(bob, room, original) or {})["m.replace"]["event_id"], valid)

        # an edit of an edit: the edit gets no bundle (and the original keeps its own)
        await self.edit(alice, room, valid, "edit of an edit")
        self.assertIsNone(await self.bundle(bob, room, valid))
        self.assertEqual((await self.bundle(bob, room, original) or {})["m.replace"]["event_id"], valid)

        # only invalid edits: nothing
        lonely = await self.send_message(alice, room, "lonely")
        await self.edit(bob, room, lonely, "not yours")
        self.assertIsNone(await self.bundle(bob, room, lonely))

        # a state event gets no bundle at all (§Aggregations of child events)
        topic = await self.set_state(alice, room, "m.room.topic", {"topic": "t"})
        await self.edit(alice, room, topic, "topic", etype="m.room.topic")
        await self.reference(alice, room, topic)
        self.assertIsNone(await self.bundle(bob, room, topic))

    async def test_encrypted_edits(self) -> None:
        room, alice = self.room, self.alice
        cipher = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s", "device_id": "D"}
        original = await self.send(alice, room, cipher, "m.room.encrypted")
        # m.new_content is in the ciphertext: the server cannot ask for it (§Editing encrypted events)
        edit = await self.send(alice, room, {**cipher, **relates(original, "m.replace")}, "m.room.encrypted")
        self.assertEqual((await self.bundle(alice, room, original) or {})["m.replace"]["event_id"], edit)
        # an encrypted edit of a cleartext message changes the type: invalid
        plain = await self.send_message(alice, room, "plain")
        await self.send(alice, room, {**cipher, **relates(plain, "m.replace")}, "m.room.encrypted")
        self.assertIsNone(await self.bundle(alice, room, plain))

    async def test_redacted_parent(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        await self.edit(alice, room, root, "edited")
        reply = await self.reply(bob, room, root)
        ref = await self.reference(bob, room, root)
        await self.redact(alice, room, root)
        relations = await self.bundle(bob, room, root)
        assert relations is not None
        # event_replacements.md: no m.replace on a redacted original; the children of a redacted
        # parent remain (§Aggregations of child events)
        self.assertNotIn("m.replace", relations)
        self.assertEqual(relations["m.thread"]["latest_event"]["event_id"], reply)
        self.assertEqual(relations["m.reference"], {"chunk": [{"event_id": ref}]})

    async def test_redacted_thread_replies(self) -> None:
        room, alice, bob, carol = self.room, self.alice, self.bob, self.carol
        root = await self.send_message(alice, room, "root")
        by_carol = await self.reply(carol, room, root, "carol")
        by_bob = await self.reply(bob, room, root, "bob")
        latest = await self.reply(bob, room, root, "bob again")
        thread = (await self.bundle(carol, room, root) or {})["m.thread"]
        self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (3, latest))
        self.assertTrue(thread["current_user_participated"])
        # the latest reply redacted: the one before it is the latest now
        await self.redact(bob, room, latest)
        thread = (await self.bundle(carol, room, root) or {})["m.thread"]
        self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (2, by_bob))
        # carol's only reply redacted: she no longer took part
        await self.redact(carol, room, by_carol)
        thread = (await self.bundle(carol, room, root) or {})["m.thread"]
        self.assertEqual((thread["count"], thread["current_user_participated"]), (1, False))
        # every reply redacted: no thread
        await self.redact(bob, room, by_bob)
        self.assertIsNone(await self.bundle(carol, room, root))

    async def test_references(self) -> None:
        room, alice, bob, carol = self.room, self.alice, self.bob, self.carol
        parent = await self.send_message(alice, room, "parent")
        refs = [await self.reference(user, room, parent) for user in (bob, carol, alice)]
        everywhere = await self.bundles_everywhere(alice, room, parent)
        for endpoint, relations in everywhere.items():
            self.assertEqual(relations, {"m.reference": {"chunk": [{"event_id": r} for r in refs]}}, endpoint)
        await self.redact(carol, room, refs[1])
        self.assertEqual(
            await self.bundle(alice, room, parent), {"m.reference": {"chunk": [{"event_id": refs[0]}, {"event_id": refs[2]}]}}
        )

    async def test_ignored_users_are_not_aggregated(self) -> None:
        room, alice, bob, carol = self.room, self.alice, self.bob, self.carol
        root = await self.send_message(alice, room, "root")
        by_bob = await self.reply(bob, room, root, "bob")
        await self.reply(carol, room, root, "carol")
        ref = await self.reference(bob, room, root)
        await self.reference(carol, room, root)
        await self.ignore(alice, carol)
        # modules/ignore_users.md, threading.md: neither count nor latest_event include carol's
        relations = await self.bundle(alice, room, root)
        assert relations is not None
        self.assertEqual((relations["m.thread"]["count"], relations["m.thread"]["latest_event"]["event_id"]), (1, by_bob))
        self.assertEqual(relations["m.reference"], {"chunk": [{"event_id": ref}]})
        # bob ignores no one
        self.assertEqual((await self.bundle(bob, room, root) or {})["m.thread"]["count"], 2)

    async def test_latest_event_the_reader_may_see(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        seen = await self.reply(alice, room, root, "before bob left")
        fix = await self.edit(alice, room, seen, "fixed before bob left")
        await self.leave(bob, room)
        unseen = await self.reply(alice, room, root, "after bob left")
        await self.edit(alice, room, seen, "fixed after bob left")
        await self.edit(alice, room, root, "root fixed after bob left")
        # §Room History Visibility: bob sees nothing sent after he left, nor in the bundles
        thread = (await self.bundle(bob, room, root) or {})["m.thread"]
        self.assertEqual(thread["latest_event"]["event_id"], seen)
        self.assertEqual(thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"], fix)
        self.assertNotIn("m.replace", (await self.bundle(bob, room, root)) or {})
        code, page = await self.messages(bob, room, dir="b", limit=50)
        self.assertEqual(_find(page["chunk"], root)["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], seen)
        self.assertEqual((await self.bundle(alice, room, root) or {})["m.thread"]["latest_event"]["event_id"], unseen)

    async def test_a_page_of_bundles_costs_a_bounded_number_of_transactions(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob

        async def busy_messages(n: int) -> None:
            for i in range(n):
                root = await self.send_message(alice, room, f"root {i}")
                reply = await self.reply(bob, room, root)
                await self.edit(bob, room, reply, "fixed reply")
                await self.edit(alice, room, root, "fixed root")
                await self.reference(bob, room, root)

        async def cost_of_page(cached: bool = False) -> tuple[Counter[str], dict[str, Any]]:
            # alice's events: the roots, not the replies (whose bundles are then read apart)
            params = {"dir": "b", "limit": 200, "filter": {"not_senders": [bob.user_id]}}
            code, page = await self.messages(alice, room, **params)
            self.assertEqual(code, 200, page)
            # the stream's readers read their own batches of the sends above: not this page's cost
            await self.readers_caught_up()
            if not cached:
                # as if the server had just started: no parent's children in memory
                self.hs.bundled_aggregations.store.invalidate(None)
            with CountedReads(self.hs.db) as reads:
                code, page = await self.messages(alice, room, **params)
            self.assertEqual(code, 200, page)
            return reads, page

        def bundled(page: dict[str, Any]) -> int:
            return sum(1 for ev in page["chunk"] if "m.thread" in ev["unsigned"].get("m.relations", {}))

        await busy_messages(2)
        few, page = await cost_of_page()
        self.assertEqual(bundled(page), 2)
        await busy_messages(20)
        many, page = await cost_of_page()
        self.assertEqual(bundled(page), 22)
        # the page's parents, then the latest replies': two reads of the relations, whatever the page
        self.assertEqual(many["bundled_children"], 2)
        self.assertEqual(sum(many.values()), sum(few.values()), (few, many))
        # the same page again: every parent's children are in memory
        again, page = await cost_of_page(cached=True)
        self.assertEqual(bundled(page), 22)
        self.assertEqual(again["bundled_children"], 0, again)

    async def test_existing_threads_are_indexed_by_the_migration(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        await self.reply(bob, room, root)
        gone = await self.reply(alice, room, root)
        await self.redact(alice, room, gone)
        latest = await self.reply(bob, room, root)
        other = await self.send_message(alice, room, "other")
        await self.reply(alice, room, other)
        before = await self.thread_rows()
        self.assertEqual(before[root], (latest, 2))
        # the database as it was before migration 0025
        db = self.hs.db
        await db.execute("drop", "DROP TABLE threads")
        await db.execute("drop", "DROP INDEX event_relations_parent_sender")
        await db.execute("downgrade", "UPDATE schema_version SET version = ?", THREADS_MIGRATION - 1)
        version = await db.run_with_connection(prepare_database, db.dialect, THREADS_MIGRATION)
        self.assertEqual(version, THREADS_MIGRATION)
        self.assertEqual(await self.thread_rows(), before)

    async def thread_rows(self) -> dict[str, tuple[str, int]]:
        rows = await self.hs.db.select("rows", "SELECT root_id, latest_event_id, reply_count FROM threads")
        return {r[0]: (r[1], r[2]) for r in rows}


class CachedBundlesTests(AggregationsClient, HomeserverTestCase):
    """Bundles and serialised events are kept in memory between requests: every change to a
    parent's children, and every redaction, shows in the next /messages."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat")
        await self.join(self.bob, self.room)

    async def page_event(self, user: TestUser, event_id: str) -> dict[str, Any]:
        """``event_id`` as the latest page of /messages shows it to ``user``."""
        code, page = await self.messages(user, self.room, dir="b", limit=50)
        self.assertEqual(code, 200, page)
        return _find(page["chunk"], event_id)

    async def relations_in_page(self, user: TestUser, event_id: str) -> dict[str, Any]:
        return dict((await self.page_event(user, event_id))["unsigned"].get("m.relations", {}))

    async def test_an_edit_after_the_first_fetch_shows_in_the_next(self) -> None:
        room, alice = self.room, self.alice
        root = await self.send_message(alice, room, "root")
        self.assertEqual(await self.relations_in_page(alice, root), {})
        first = await self.edit(alice, room, root, "first")
        self.assertEqual((await self.relations_in_page(alice, root))["m.replace"]["event_id"], first)
        second = await self.edit(alice, room, root, "second")
        edit = (await self.relations_in_page(alice, root))["m.replace"]
        self.assertEqual((edit["event_id"], edit["content"]["m.new_content"]["body"]), (second, "second"))
        # and the thread's latest reply carries its own edit, fetched after the thread was
        reply = await self.reply(alice, room, root, "reply")
        self.assertNotIn("m.relations", (await self.relations_in_page(alice, root))["m.thread"]["latest_event"]["unsigned"])
        fix = await self.edit(alice, room, reply, "reply, fixed")
        latest = (await self.relations_in_page(alice, root))["m.thread"]["latest_event"]
        self.assertEqual(latest["unsigned"]["m.relations"]["m.replace"]["event_id"], fix)

    async def test_a_new_thread_reply_updates_count_and_latest(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        first = await self.reply(alice, room, root, "first")
        for user in (alice, bob):
            thread = (await self.relations_in_page(user, root))["m.thread"]
            self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (1, first))
        self.assertFalse((await self.relations_in_page(bob, root))["m.thread"]["current_user_participated"])
        by_bob = await self.reply(bob, room, root, "bob's")
        for user in (alice, bob):
            thread = (await self.relations_in_page(user, root))["m.thread"]
            self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (2, by_bob), user.user_id)
            self.assertTrue(thread["current_user_participated"], user.user_id)
        # a reference and its redaction, each in the next page
        ref = await self.reference(bob, room, root)
        self.assertEqual((await self.relations_in_page(alice, root))["m.reference"], {"chunk": [{"event_id": ref}]})
        await self.redact(bob, room, ref)
        self.assertNotIn("m.reference", await self.relations_in_page(alice, root))

    async def test_what_each_reader_sees_is_their_own(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/root-txn", {"msgtype": "m.text", "body": "root"}, alice)
        self.assertEqual(code, 200, body)
        root = body["event_id"]
        code, body = await self.put(
            f"{C}/rooms/{q(room)}/send/m.room.message/reply-txn",
            {"msgtype": "m.text", "body": "reply", **relates(root, "m.thread")},
            bob,
        )
        self.assertEqual(code, 200, body)
        # the same events served to each in turn: the sending device's transaction ID and the
        # reader's participation are theirs alone
        for _ in range(2):
            for user, own, other in ((alice, "root-txn", None), (bob, None, "reply-txn")):
                served = await self.page_event(user, root)
                self.assertEqual(served["unsigned"].get("transaction_id"), own, user.user_id)
                thread = served["unsigned"]["m.relations"]["m.thread"]
                self.assertEqual(thread["latest_event"]["unsigned"].get("transaction_id"), other, user.user_id)
                self.assertTrue(thread["current_user_participated"], user.user_id)
                self.assertIsInstance(served["unsigned"]["age"], int)

    async def test_a_redaction_removes_content_and_bundle(self) -> None:
        room, alice, bob = self.room, self.alice, self.bob
        root = await self.send_message(alice, room, "root")
        edit = await self.edit(alice, room, root, "edited")
        reply = await self.reply(bob, room, root, "reply")
        served = await self.page_event(bob, root)
        self.assertEqual(served["content"]["body"], "root")
        self.assertEqual(served["unsigned"]["m.relations"]["m.replace"]["event_id"], edit)
        self.assertEqual(served["unsigned"]["m.relations"]["m.thread"]["latest_event"]["content"]["body"], "reply")
        # the thread's latest reply redacted: no thread left, and the reply itself has no content
        await self.redact(bob, room, reply)
        served = await self.page_event(bob, root)
        self.assertNotIn("m.thread", served["unsigned"]["m.relations"])
        redacted_reply = await self.page_event(bob, reply)
        self.assertEqual(redacted_reply["content"], {})
        self.assertIn("redacted_because", redacted_reply["unsigned"])
        # the original redacted: its content goes, and its edit with it (event_replacements.md)
        await self.redact(alice, room, root)
        served = await self.page_event(bob, root)
        self.assertEqual(served["content"], {})
        self.assertEqual(served["unsigned"]["redacted_because"]["type"], "m.room.redaction")
        self.assertNotIn("m.relations", served["unsigned"])
        # what /event says agrees with the page
        self.assertEqual(
            _without(await self.event_json(bob, room, root), "age"), _without(await self.page_event(bob, root), "age")
        )


class FederatedAggregationsTests(AggregationsClient, InboundTestCase):
    async def test_children_received_over_federation(self) -> None:
        room_id = await self.room()
        await self.join_remote_user(room_id)
        bob = self.remote.user("bob")
        root = await self.local_message(room_id, "root")
        first = await self.remote_event(room_id, "m.room.message", {"body": "r1", **relates(root.event_id, "m.thread")})
        second = await self.remote_event(
            room_id, "m.room.message", {"body": "r2", **relates(root.event_id, "m.thread")}, prev=[first.event_id]
        )
        message = await self.remote_event(room_id, "m.room.message", {"body": "bob's"}, prev=[second.event_id])
        # two edits with the same origin_server_ts: the larger event ID is the more recent
        # (event_replacements.md); a third, later in the DAG but older by its timestamp, loses
        edit = {"body": "*", "m.new_content": {"body": "new"}, **relates(message.event_id, "m.replace")}
        self._ts += 10
        tied = [await self.remote_event(room_id, "m.room.message", {**edit, "n": 0}, prev=[message.event_id])]
        self._ts -= 1  # (each remote event is a millisecond after the one before)
        tied.append(await self.remote_event(room_id, "m.room.message", {**edit, "n": 1}, prev=[message.event_id]))
        self.assertEqual(tied[0].origin_server_ts, tied[1].origin_server_ts)
        self._ts -= 5
        older = await self.remote_event(room_id, "m.room.message", edit, prev=[t.event_id for t in tied])
        code, body = await self.send_txn(
            "t1", [e.get_pdu_json() for e in (first, second, message, *tied, older)]
        )
        self.assertEqual(code, 200, body)

        thread = (await self.bundle(self.alice, room_id, root.event_id) or {})["m.thread"]
        self.assertEqual(
            (thread["count"], thread["latest_event"]["event_id"], thread["current_user_participated"]),
            (2, second.event_id, True),
        )
        self.assertEqual(thread["latest_event"]["sender"], bob)
        # and the room's thread list has it
        code, body = await self.get(f"/_matrix/client/v1/rooms/{q(room_id)}/threads", self.alice)
        self.assertEqual((code, ids(body)), (200, [root.event_id]))
        winner = max(t.event_id for t in tied)
        self.assertEqual((await self.bundle(self.alice, room_id, message.event_id) or {})["m.replace"]["event_id"], winner)


class BackfilledAggregationsTests(AggregationsClient, HomeserverTestCase):
    config_overrides = {"federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}}

    async def test_backfilled_thread_replies(self) -> None:
        remote = FakeRemote()
        remote.listen(self, temp_dir(self))
        alice = await self.register("alice")
        room = remote.new_room()
        (root,) = room.messages(1)
        replies = [room.add("m.room.message", {"body": f"r{i}", **relates(root.event_id, "m.thread")}) for i in range(3)]
        gone = room.add("m.room.redaction", {"redacts": replies[2].event_id})
        room.messages(2, prefix="later")
        await seed_joined_room(self.hs, room, alice.user_id)
        # /messages backfills the history, the replies and the redaction with it
        seen: list[str] = []
        token = None
        for _ in range(10):
            code, page = await self.messages(alice, room.room_id, dir="b", limit=50, **{"from": token})
            self.assertEqual(code, 200, page)
            seen += ids(page)
            token = page.get("end")
            if token is None:
                break
        self.assertIn(gone.event_id, seen)
        thread = (await self.bundle(alice, room.room_id, root.event_id) or {})["m.thread"]
        self.assertEqual((thread["count"], thread["latest_event"]["event_id"]), (2, replies[1].event_id))
        code, body = await self.get(f"/_matrix/client/v1/rooms/{q(room.room_id)}/threads", alice)
        self.assertEqual((code, ids(body)), (200, [root.event_id]))
