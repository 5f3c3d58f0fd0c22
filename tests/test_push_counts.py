"""Unread notification counts in /sync from push-rule evaluation (modules/push.md §Receiving
notifications): mentions highlight, muted rooms and notices stay quiet, read receipts reset
the counts (threaded receipts only their thread, m.read.private too), threads count apart when
the filter asks, and the counts survive a restart, including events the push reader had not
evaluated when the server stopped."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import REGISTRY

from tests.harness import C, HomeserverTestCase, TestUser, q


def rules_reads() -> float:
    """How many push-rule reads for evaluation ran in this process (the database metric)."""
    value = REGISTRY.get_sample_value("mxserver_db_transaction_seconds_count", {"desc": "get_push_rules_of_users"})
    return value or 0.0


THREADS = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


class CountsRoom(HomeserverTestCase):
    """alice's public room, with bob and carol joined, and what a client reads of it."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.carol = await self.register("carol")
        self.room = await self.create_room(self.alice, preset="public_chat")
        for user in (self.bob, self.carol):
            await self.join(user, self.room)

    async def counts(self, user: TestUser, room: str | None = None, filter: str | None = None) -> dict[str, Any]:
        path = f"{C}/sync" + (f"?filter={q(filter)}" if filter else "")
        code, body = await self.get(path, user)
        self.assertEqual(code, 200, body)
        joined = body["rooms"]["join"][room or self.room]
        out = dict(joined["unread_notifications"])
        if "unread_thread_notifications" in joined:
            out["threads"] = joined["unread_thread_notifications"]
        return out

    async def send(self, user: TestUser, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        code, body = await self.post(f"{C}/rooms/{q(self.room)}/send/{event_type}", content, user)
        self.assertEqual(code, 200, body)
        return body["event_id"]

    async def receipt(self, user: TestUser, event_id: str, receipt_type: str = "m.read", **body: Any) -> None:
        code, resp = await self.post(f"{C}/rooms/{q(self.room)}/receipt/{receipt_type}/{q(event_id)}", body, user)
        self.assertEqual(code, 200, resp)


class PushCountTests(CountsRoom):

    async def test_messages_mentions_and_notices(self) -> None:
        await self.send(self.alice, {"msgtype": "m.text", "body": "hello"})
        await self.send(self.alice, {"msgtype": "m.notice", "body": "a bot"})  # .m.rule.suppress_notices
        await self.send(self.alice, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [self.bob.user_id]}})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 2, "highlight_count": 1})
        self.assertEqual(await self.counts(self.carol), {"notification_count": 2, "highlight_count": 0})
        # Nobody is notified of their own messages.
        self.assertEqual(await self.counts(self.alice), {"notification_count": 0, "highlight_count": 0})

    async def test_own_rules_count_where_the_defaults_are_silent(self) -> None:
        """A join notifies nobody on the default rules, and the reader then evaluates only the
        users with rules of their own: carol's rule for member events still counts."""
        joins = {
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.member"}],
            "actions": ["notify"],
        }
        code, body = await self.put(f"{C}/pushrules/global/override/joins", joins, self.carol)
        self.assertEqual(code, 200, body)
        await self.join(await self.register("dave"), self.room)
        await self.send(self.alice, {"msgtype": "m.notice", "body": "a bot"})  # silent for all
        self.assertEqual(await self.counts(self.carol), {"notification_count": 1, "highlight_count": 0})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 0, "highlight_count": 0})

    async def test_room_mention_needs_the_power(self) -> None:
        mention = {"msgtype": "m.text", "body": "@room", "m.mentions": {"room": True}}
        # bob has power 0 < notifications.room (50): an ordinary message (.m.rule.message)
        await self.send(self.bob, mention)
        self.assertEqual(await self.counts(self.carol), {"notification_count": 1, "highlight_count": 0})
        await self.send(self.alice, mention)  # the creator has 100
        self.assertEqual(await self.counts(self.carol), {"notification_count": 2, "highlight_count": 1})

    async def test_state_changes_between_events_of_one_batch(self) -> None:
        """Events are evaluated in batches (what arrives within a moment), sharing what their room
        has in common; a state event between two of them is seen by the second."""
        mention = {"msgtype": "m.text", "body": "@room", "m.mentions": {"room": True}}
        dave = await self.register("dave")
        # no count asked in between: these are read together
        await self.send(self.bob, mention)  # power 0: not a room mention
        await self.set_power(self.alice, self.room, self.bob.user_id, 50)
        await self.send(self.bob, mention)  # now it is
        await self.join(dave, self.room)
        await self.send(self.alice, {"msgtype": "m.text", "body": "welcome"})
        self.assertEqual(await self.counts(self.carol), {"notification_count": 3, "highlight_count": 1})
        self.assertEqual(await self.counts(dave), {"notification_count": 1, "highlight_count": 0})

    async def test_muted_room_and_changed_rules(self) -> None:
        # bob's default rules are in use (and the store knows he never changed one)...
        await self.send(self.alice, {"msgtype": "m.text", "body": "loud"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 0})
        # ...until his first change.
        code, body = await self.put(f"{C}/pushrules/global/room/{q(self.room)}", {"actions": []}, self.bob)
        self.assertEqual(code, 200, body)
        await self.send(self.alice, {"msgtype": "m.text", "body": "quiet"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 0})
        # Rules are compiled once per user: a change is seen at the next event.
        code, body = await self.delete(f"{C}/pushrules/global/room/{q(self.room)}", token=self.bob)
        self.assertEqual(code, 200, body)
        await self.send(self.alice, {"msgtype": "m.text", "body": "loud"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 2, "highlight_count": 0})

    async def test_receipts_reset_counts(self) -> None:
        first = await self.send(self.alice, {"msgtype": "m.text", "body": "1"})
        await self.send(self.alice, {"msgtype": "m.text", "body": "2", "m.mentions": {"user_ids": [self.bob.user_id]}})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 2, "highlight_count": 1})
        await self.receipt(self.bob, first)
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 1})
        last = await self.send(self.alice, {"msgtype": "m.text", "body": "3"})
        await self.receipt(self.bob, last, "m.read.private")
        self.assertEqual(await self.counts(self.bob), {"notification_count": 0, "highlight_count": 0})

    async def test_threads_count_apart(self) -> None:
        root = await self.send(self.alice, {"msgtype": "m.text", "body": "root"})
        thread = {"rel_type": "m.thread", "event_id": root}
        in_thread = [
            await self.send(self.alice, {"msgtype": "m.text", "body": f"t{i}", "m.relates_to": thread}) for i in range(2)
        ]
        await self.send(self.alice, {"msgtype": "m.text", "body": "main", "m.mentions": {"user_ids": [self.bob.user_id]}})
        # Without the filter flag: one count for everything.
        self.assertEqual(await self.counts(self.bob), {"notification_count": 4, "highlight_count": 1})
        self.assertEqual(
            await self.counts(self.bob, filter=THREADS),
            {"notification_count": 2, "highlight_count": 1, "threads": {root: {"notification_count": 2, "highlight_count": 0}}},
        )
        # A receipt in the thread reads the thread only...
        await self.receipt(self.bob, in_thread[1], thread_id=root)
        self.assertEqual(await self.counts(self.bob, filter=THREADS), {"notification_count": 2, "highlight_count": 1})
        # ...and a main-timeline receipt the main timeline only.
        await self.send(self.alice, {"msgtype": "m.text", "body": "t2", "m.relates_to": thread})
        await self.receipt(self.bob, root, thread_id="main")
        self.assertEqual(
            await self.counts(self.bob, filter=THREADS),
            {"notification_count": 1, "highlight_count": 1, "threads": {root: {"notification_count": 1, "highlight_count": 0}}},
        )

    async def test_ignored_senders_do_not_count(self) -> None:
        """modules/ignore_users.md: the client never sees an ignored user's messages, so they are
        neither counted nor pushed; once un-ignored, new messages count (the missed ones do not)."""
        ignore = f"{C}/user/{q(self.bob.user_id)}/account_data/m.ignored_user_list"
        code, body = await self.put(ignore, {"ignored_users": {self.alice.user_id: {}}}, self.bob)
        self.assertEqual(code, 200, body)
        await self.send(self.alice, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [self.bob.user_id]}})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 0, "highlight_count": 0})
        self.assertEqual(await self.counts(self.carol), {"notification_count": 1, "highlight_count": 0})
        code, body = await self.put(ignore, {"ignored_users": {}}, self.bob)
        self.assertEqual(code, 200, body)
        await self.send(self.alice, {"msgtype": "m.text", "body": "again"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 0})

    async def test_cold_recipients_rules_are_read_in_one_transaction(self) -> None:
        """A room's members whose rules are not in memory are read together, not one query each:
        the first message into a big room after a restart must not cost a query per member
        (counted on the operator's metric of database transactions by name). Members who never
        changed a rule (alice, bob and carol here) are on the defaults: no read at all."""
        for name in ("dave", "erin", "frank"):
            user = await self.register(name)
            await self.join(user, self.room)
            # A rule of their own (for another room), so that their rules must be read.
            code, body = await self.put(f"{C}/pushrules/global/room/{q('!other:test')}", {"actions": []}, user)
            self.assertEqual(code, 200, body)
        # A notification stores the reader's position: after the restart it has nothing to
        # catch up on (which would read everyone's rules first).
        await self.send(self.alice, {"msgtype": "m.text", "body": "before"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 0})
        await self.restart()  # nobody's rules are in memory
        before = rules_reads()
        await self.send(self.alice, {"msgtype": "m.text", "body": "to all"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 2, "highlight_count": 0})
        self.assertEqual(rules_reads() - before, 1)
        # ...and kept: the next message reads none.
        await self.send(self.alice, {"msgtype": "m.text", "body": "again"})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 3, "highlight_count": 0})
        self.assertEqual(rules_reads() - before, 1)

    async def test_rows_stored_in_chunks(self) -> None:
        """A big room's rows go in several transactions (the writer is shared with sends);
        every recipient's row arrives, the event's default with the last, and the position
        moves with the last chunk."""
        from mxserver.storage import push_actions

        self.patch(push_actions, "RECORD_CHUNK", 1)
        users = {name: await self.register(name) for name in ("dave", "erin", "frank")}
        for user in users.values():
            await self.join(user, self.room)
        # bob, carol and dave highlight (the default); erin and frank have rows of their own.
        mentioned = [self.bob.user_id, self.carol.user_id, users["dave"].user_id]
        await self.send(self.alice, {"msgtype": "m.text", "body": "to all", "m.mentions": {"user_ids": mentioned}})
        for user in (self.bob, self.carol, users["dave"]):
            self.assertEqual(await self.counts(user), {"notification_count": 1, "highlight_count": 1})
        for user in (users["erin"], users["frank"]):
            self.assertEqual(await self.counts(user), {"notification_count": 1, "highlight_count": 0})
        stored = await self.hs.push_notifications._store.reader_position("push")
        self.assertEqual(stored, self.hs.push_notifications.position)

    async def test_invites_notify_the_invitee(self) -> None:
        dave = await self.register("dave")
        room = await self.create_room(self.alice)
        code, body = await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": dave.user_id}, self.alice)
        self.assertEqual(code, 200, body)
        nid = await self._nid(room)
        counts = await self.hs.push_notifications.unread_counts(dave.user_id, [(nid, 0)], self.hs.room_stream.position)
        self.assertEqual(sum(c.notifications for c in counts[nid].values()), 1)

    async def _nid(self, room: str) -> int:
        record = await self.hs.event_store.get_room(room)
        assert record is not None
        return record.room_nid

    async def test_counts_survive_a_restart(self) -> None:
        await self.send(self.alice, {"msgtype": "m.text", "body": "before", "m.mentions": {"user_ids": [self.bob.user_id]}})
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 1})
        await self.restart()
        self.assertEqual(await self.counts(self.bob), {"notification_count": 1, "highlight_count": 1})

    async def test_events_not_yet_evaluated_at_a_stop_are_caught_up(self) -> None:
        await self.send(self.alice, {"msgtype": "m.text", "body": "seen"})
        # The reader stops listening, as if the process died between persisting and evaluating.
        reader = self.hs.push_notifications
        self.hs.room_stream.unsubscribe(reader.on_room_events)
        await self.send(self.alice, {"msgtype": "m.text", "body": "unseen", "m.mentions": {"user_ids": [self.bob.user_id]}})
        await self.send(self.alice, {"msgtype": "m.text", "body": "unseen too"})
        await self.restart()
        self.assertEqual(await self.counts(self.bob), {"notification_count": 3, "highlight_count": 1})


class StoredByExceptionTests(CountsRoom):
    """Results most members share are stored once per event (the event's default), with rows
    only for the users who differ: counts, /notifications and joins must read the same as if
    every user had a row of their own."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.others = [await self.register(name) for name in ("dave", "erin", "frank", "grace", "heidi")]
        for user in self.others:
            await self.join(user, self.room)
        self.dave, self.erin, self.frank = self.others[:3]
        # bob mutes the room; erin ignores alice: neither is notified where the rest are.
        code, body = await self.put(f"{C}/pushrules/global/room/{q(self.room)}", {"actions": []}, self.bob)
        self.assertEqual(code, 200, body)
        ignore = f"{C}/user/{q(self.erin.user_id)}/account_data/m.ignored_user_list"
        code, body = await self.put(ignore, {"ignored_users": {self.alice.user_id: {}}}, self.erin)
        self.assertEqual(code, 200, body)

    async def notifications(self, user: TestUser) -> list[dict[str, Any]]:
        code, body = await self.get(f"{C}/notifications", user)
        self.assertEqual(code, 200, body)
        return list(body["notifications"])

    async def test_defaults_and_their_exceptions(self) -> None:
        hello = await self.send(self.alice, {"msgtype": "m.text", "body": "hello"})
        mention = await self.send(
            self.alice, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [self.dave.user_id]}}
        )
        for user in (self.carol, self.frank, *self.others[3:]):
            self.assertEqual(await self.counts(user), {"notification_count": 2, "highlight_count": 0})
        self.assertEqual(await self.counts(self.dave), {"notification_count": 2, "highlight_count": 1})
        for user in (self.bob, self.erin):
            self.assertEqual(await self.counts(user), {"notification_count": 0, "highlight_count": 0})
        self.assertEqual(await self.counts(self.alice), {"notification_count": 0, "highlight_count": 0})
        # A receipt resets the default rows as it does the user's own.
        await self.receipt(self.carol, hello)
        self.assertEqual(await self.counts(self.carol), {"notification_count": 1, "highlight_count": 0})
        await self.receipt(self.dave, mention)
        self.assertEqual(await self.counts(self.dave), {"notification_count": 0, "highlight_count": 0})
        # /notifications lists both kinds, newest first, with their actions.
        listed = await self.notifications(self.dave)
        self.assertEqual([n["event"]["event_id"] for n in listed], [mention, hello])
        self.assertIn({"set_tweak": "highlight"}, listed[0]["actions"])
        self.assertNotIn({"set_tweak": "highlight"}, listed[1]["actions"])
        self.assertTrue(all(n["read"] for n in listed))
        self.assertEqual(await self.notifications(self.bob), [])
        self.assertEqual(await self.notifications(self.erin), [])

    async def test_joins_count_from_the_join(self) -> None:
        await self.send(self.alice, {"msgtype": "m.text", "body": "before"})
        ivan = await self.register("ivan")
        await self.join(ivan, self.room)
        self.assertEqual(await self.counts(ivan), {"notification_count": 0, "highlight_count": 0})
        self.assertEqual(await self.notifications(ivan), [])
        # frank leaves and comes back: what was sent meanwhile, or before, is not his.
        await self.leave(self.frank, self.room)
        away = await self.send(self.alice, {"msgtype": "m.text", "body": "while away"})
        await self.join(self.frank, self.room)
        self.assertEqual(await self.counts(self.frank), {"notification_count": 0, "highlight_count": 0})
        after = await self.send(self.alice, {"msgtype": "m.text", "body": "after"})
        self.assertEqual(await self.counts(self.frank), {"notification_count": 1, "highlight_count": 0})
        listed = [n["event"]["event_id"] for n in await self.notifications(self.frank)]
        self.assertEqual(listed[0], after)
        self.assertNotIn(away, listed)
        self.assertEqual(await self.counts(ivan), {"notification_count": 2, "highlight_count": 0})
        self.assertEqual([n["event"]["event_id"] for n in await self.notifications(ivan)], [after, away])
        self.assertEqual(await self.counts(self.carol), {"notification_count": 3, "highlight_count": 0})
