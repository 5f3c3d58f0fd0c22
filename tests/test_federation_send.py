"""PUT /_matrix/federation/v1/send/{txnId}: transactions from fake remote servers.

Covers server-server-api §Transactions, §Checks performed on receipt of a PDU,
§Server Access Control Lists and §Backfilling and retrieving missing events
(gap filling through get_missing_events and state_ids).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.web import server

from mxserver.crypto.keys import generate_signing_key
from mxserver.rooms.room_server import EventSpec
from tests.harness import LOOPBACK, C, InboundTestCase, wait_until


def q(value: str) -> str:
    return quote(value, safe="")


def pdu(event: Any) -> dict[str, Any]:
    return event.get_pdu_json()


class SendTestCase(InboundTestCase):
    async def joined_room(self, **kw: Any) -> str:
        room_id = await self.room(**kw)
        await self.join_remote_user(room_id)
        return room_id


class SendTests(SendTestCase):
    async def test_accepts_events(self) -> None:
        room_id = await self.joined_room()
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello"})
        code, body = await self.send_txn("t1", [pdu(msg)])
        self.assertEqual((code, body), (200, {"pdus": {msg.event_id: {}}}))
        info = await self.event_info(msg.event_id)
        assert info is not None
        self.assertIsNotNone(info.stream_ordering)  # in the timeline
        self.assertIsNone(info.rejected_reason)
        # alice sees it through the client API
        code, msgs = await self.get(f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=1", self.alice)
        self.assertEqual(msgs["chunk"][0]["content"]["body"], "hello")

    async def test_forged_signature_is_dropped(self) -> None:
        room_id = await self.joined_room()
        forged = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        p = pdu(forged)
        # re-signed with another key under the same key ID
        p["signatures"] = {self.remote.name: {"ed25519:r1": "A" * 86}}
        code, body = await self.send_txn("t1", [p])
        self.assertEqual(code, 200)
        self.assertIn("bad signature", body["pdus"][forged.event_id]["error"])
        self.assertIsNone(await self.event_info(forged.event_id))

    async def test_wrong_origin(self) -> None:
        room_id = await self.joined_room()
        other = self.new_remote()
        # signed with our key but claiming to be another server: 401
        path = "/_matrix/federation/v1/send/t1"
        body = {"origin": other.name, "origin_server_ts": 1, "pdus": []}
        code, resp = await self.fed("PUT", path, body, origin=other.name)
        self.assertEqual((code, resp["errcode"]), (401, "M_UNAUTHORIZED"))
        # a forged X-Matrix signature: 401
        code, resp = await self.fed("PUT", path, body, key=generate_signing_key("r1"))
        self.assertEqual((code, resp["errcode"]), (401, "M_UNAUTHORIZED"))
        # authenticated as remote, but the body says another origin: 400
        code, resp = await self.fed("PUT", path, body)
        self.assertEqual((code, resp["errcode"]), (400, "M_BAD_JSON"))
        # an event of a user on `other`, signed only by remote: dropped
        spoof = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"},
                                        sender=other.user("carol"))
        code, resp = await self.send_txn("t2", [pdu(spoof)])
        self.assertIn(f"not signed by {other.name}", resp["pdus"][spoof.event_id]["error"])
        self.assertIsNone(await self.event_info(spoof.event_id))

    async def test_bad_hash_is_stored_redacted(self) -> None:
        room_id = await self.joined_room()
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "original"})
        p = pdu(msg)
        p["content"] = {"msgtype": "m.text", "body": "tampered"}
        code, body = await self.send_txn("t1", [p])
        self.assertEqual(body, {"pdus": {msg.event_id: {}}})
        stored = await self.hs.event_store.get_event(msg.event_id)
        assert stored is not None
        self.assertEqual(stored.content, {})

    async def test_event_failing_auth_is_rejected(self) -> None:
        room_id = await self.joined_room()  # the remote may read the room (bob is in it)
        # eve never joined: her message fails the auth rules
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "spam"},
                                      sender=self.remote.user("eve"))
        code, body = await self.send_txn("t1", [pdu(msg)])
        self.assertEqual(code, 200)
        # handled (stored with its verdict): no error for the sender, as Synapse answers
        self.assertEqual(body["pdus"][msg.event_id], {})
        info = await self.event_info(msg.event_id)
        assert info is not None
        self.assertIsNone(info.stream_ordering)
        self.assertIsNotNone(info.rejected_reason)
        # a rejected event is not handed on to other servers
        code, err = await self.fed("GET", f"/_matrix/federation/v1/event/{q(msg.event_id)}")
        self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"))
        # nor is the room's state at it (SyTest "/state returns M_NOT_FOUND for a rejected ...")
        for endpoint in ("state", "state_ids"):
            code, err = await self.fed("GET", f"/_matrix/federation/v1/{endpoint}/{q(room_id)}?event_id={q(msg.event_id)}")
            self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"), endpoint)

    async def test_unknown_room(self) -> None:
        room_id = await self.joined_room()
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        p = pdu(msg)
        p["room_id"] = "!nowhere:elsewhere.test"
        p["event_id"] = "$claimed"
        good = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "y"})
        code, body = await self.send_txn("t1", [p, pdu(good)])
        self.assertEqual(code, 200)
        self.assertIn("Unknown room", body["pdus"]["$claimed"]["error"])
        self.assertEqual(body["pdus"][good.event_id], {})

    async def test_oversized_transactions(self) -> None:
        code, body = await self.send_txn("t1", [{}] * 51)
        self.assertEqual((code, body["errcode"]), (400, "M_BAD_JSON"))
        code, body = await self.send_txn("t2", [], [{"edu_type": "m.typing", "content": {}}] * 101)
        self.assertEqual((code, body["errcode"]), (400, "M_BAD_JSON"))
        # A transaction larger than a client body (50 PDUs near 64 KiB) is still read...
        big = {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [], "x": "a" * (3 * 1024 * 1024)}
        code, body = await self.fed("PUT", "/_matrix/federation/v1/send/t5", big)
        self.assertEqual((code, body), (200, {"pdus": {}}))
        # ... but not one past the transaction bound.
        huge = {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [], "x": "a" * (11 * 1024 * 1024)}
        code, body = await self.fed("PUT", "/_matrix/federation/v1/send/t3", huge)
        self.assertEqual((code, body["errcode"]), (413, "M_TOO_LARGE"))
        for bad in [{"pdus": "x"}, {"pdus": [], "edus": {}}, []]:
            code, body = await self.fed("PUT", "/_matrix/federation/v1/send/t4", bad)
            self.assertEqual((code, body["errcode"]), (400, "M_BAD_JSON"), bad)
        # nothing was recorded for refused transactions: t1 can still be used
        code, body = await self.send_txn("t1", [])
        self.assertEqual((code, body), (200, {"pdus": {}}))

    async def test_replayed_txn_id(self) -> None:
        room_id = await self.joined_room()
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "once"})
        edu = {
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": self.remote.user("bob"), "type": "m.test", "message_id": "m1",
                "messages": {self.alice.user_id: {self.alice.device_id: {"n": 1}}},
            },
        }
        replays = REGISTRY.get_sample_value("mxserver_federation_transactions_received_total", {"result": "replayed"}) or 0
        first = await self.send_txn("t1", [pdu(msg)], [edu])
        self.assertEqual(first, (200, {"pdus": {msg.event_id: {}}}))
        # the same txn ID with other contents: the first answer, and nothing is processed
        other = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "twice"})
        edu2 = json.loads(json.dumps(edu))
        edu2["content"]["message_id"] = "m2"
        again = await self.send_txn("t1", [pdu(other)], [edu2])
        self.assertEqual(again, first)
        self.assertEqual(
            REGISTRY.get_sample_value("mxserver_federation_transactions_received_total", {"result": "replayed"}),
            replays + 1,
        )
        self.assertIsNone(await self.event_info(other.event_id))
        messages, _ = await self.hs.to_device.get_to_device_for_sync(self.alice.user_id, self.alice.device_id, 0)
        self.assertEqual([m["content"] for m in messages], [{"n": 1}])
        # two concurrent deliveries of one transaction: processed once, both get the answer
        third = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "3"})
        a, b = await defer.gatherResults([
            defer.ensureDeferred(self.send_txn("t3", [pdu(third)])),
            defer.ensureDeferred(self.send_txn("t3", [pdu(third)])),
        ])
        self.assertEqual(a, b)
        self.assertEqual(a[1], {"pdus": {third.event_id: {}}})
        # another origin may use the same txn ID
        remote2 = self.new_remote()
        self.assertEqual(await self.send_txn("t1", [], remote=remote2), (200, {"pdus": {}}))

    async def test_acl_denied_server(self) -> None:
        room_id = await self.joined_room()
        acl = {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True}
        await self.hs.room_server.send(room_id, EventSpec("m.room.server_acl", acl, "", self.alice.user_id))
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        typing = {"edu_type": "m.typing",
                  "content": {"room_id": room_id, "user_id": self.remote.user("bob"), "typing": True}}
        code, body = await self.send_txn("t1", [pdu(msg)], [typing])
        self.assertIn("server ACL", body["pdus"][msg.event_id]["error"])
        self.assertIsNone(await self.event_info(msg.event_id))
        self.assertEqual(set(self.hs.typing.typing_in(room_id)), set())
        # and the protected read endpoints refuse it
        code, resp = await self.fed("GET", f"/_matrix/federation/v1/state_ids/{q(room_id)}?event_id={q(msg.prev_event_ids[0])}")
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))

    async def test_gap_filled_with_get_missing_events(self) -> None:
        room_id = await self.joined_room()
        head = await self.hs.room_server.get_head(room_id)
        extremities = list(head.extremities)
        e1 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "1"})
        e2 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "2"},
                                     prev=[e1.event_id], depth=e1.depth + 1)
        e3 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "3"},
                                     prev=[e2.event_id], depth=e2.depth + 1)
        path = f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()
        self.remote.routes[path] = (200, {"events": [pdu(e2), pdu(e1)]})
        code, body = await self.send_txn("t1", [pdu(e3)])
        self.assertEqual(body, {"pdus": {e3.event_id: {}}})
        (req,) = [r for r in self.remote.requests if r.path == path]
        sent = json.loads(req.body)
        self.assertEqual(sent["latest_events"], [e3.event_id])
        self.assertEqual(sorted(sent["earliest_events"]), sorted(extremities))
        self.assertEqual(sent["limit"], 10)
        infos = [await self.event_info(e.event_id) for e in (e1, e2, e3)]
        orderings = [i.stream_ordering for i in infos if i is not None]
        self.assertEqual(len(orderings), 3)
        self.assertEqual(orderings, sorted(orderings))  # received oldest first
        head = await self.hs.room_server.get_head(room_id)
        self.assertEqual(head.extremities, [e3.event_id])

    async def test_gap_filled_with_state_ids(self) -> None:
        """A gap behind the events get_missing_events gave: the oldest is given the state at
        its prev events (/state_ids), fetched from the sender."""
        room_id = await self.joined_room()
        state = await self.hs.room_server.current_state_ids(room_id)
        w = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "never sent"})
        x = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "pulled"},
                                    prev=[w.event_id], depth=w.depth + 1)
        y = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "after the gap"},
                                    prev=[x.event_id], depth=x.depth + 1)
        routes = self.remote.routes
        routes[f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()] = (200, {"events": [pdu(x)]})
        chain = sorted(await self.hs.event_store.get_auth_chain_ids(state.values()))
        routes[f"/_matrix/federation/v1/state_ids/{q(room_id)}".encode()] = (
            200, {"pdu_ids": sorted(state.values()), "auth_chain_ids": chain})
        routes[f"/_matrix/federation/v1/event/{q(w.event_id)}".encode()] = (
            200, {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [pdu(w)]})
        code, body = await self.send_txn("t1", [pdu(y)])
        self.assertEqual(body, {"pdus": {y.event_id: {}}})
        info_y, info_x, info_w = [await self.event_info(e.event_id) for e in (y, x, w)]
        assert info_x is not None and info_y is not None and info_w is not None
        self.assertIsNotNone(info_y.stream_ordering)  # y and x are in the timeline
        self.assertIsNotNone(info_x.stream_ordering)
        self.assertTrue(info_w.outlier)
        state_req = [r for r in self.remote.requests if r.path.startswith(b"/_matrix/federation/v1/state_ids/")]
        self.assertIn(q(w.event_id).encode(), state_req[0].uri)
        self.assertEqual(await self.hs.room_server.state_at_event(x.event_id, after=False), state)
        # the outlier is served to servers in the room (the current state decides its visibility)
        code, got = await self.fed("GET", f"/_matrix/federation/v1/event/{q(w.event_id)}")
        self.assertEqual((code, got["pdus"][0]["content"]["body"]), (200, "never sent"))
        # and not in state_ids: its state is not known here
        code, err = await self.fed("GET", f"/_matrix/federation/v1/state_ids/{q(room_id)}?event_id={q(w.event_id)}")
        self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"))

    async def test_pushed_event_with_undivulged_prev_events_is_dropped(self) -> None:
        """SyTest "Federation rejects inbound events where the prev_events cannot be found": a
        pushed event whose prev events get_missing_events does not give is dropped, and the
        state at those events is not asked for (as Synapse does)."""
        room_id = await self.joined_room()
        x = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "never sent"})
        y = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "after the gap"},
                                    prev=[x.event_id], depth=x.depth + 1)
        gme = f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()
        self.remote.routes[gme] = (200, {"events": []})
        code, body = await self.send_txn("t1", [pdu(y)])
        self.assertEqual(code, 200, body)
        self.assertIn("error", body["pdus"][y.event_id])
        self.assertEqual(self.remote.hits(gme), 1)
        self.assertEqual(self.remote.count("/_matrix/federation/v1/state_ids/"), 0)
        self.assertEqual(self.remote.count("/_matrix/federation/v1/event/"), 0)
        self.assertIsNone(await self.event_info(y.event_id))
        self.assertIsNone(await self.event_info(x.event_id))
        # a later event citing the dropped one asks for it again, and is dropped too
        z = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "later"},
                                    prev=[y.event_id], depth=y.depth + 1)
        code, body = await self.send_txn("t2", [pdu(z)])
        self.assertIn("error", body["pdus"][z.event_id])
        self.assertEqual(self.remote.hits(gme), 2)
        code, msgs = await self.get(f"{C}/rooms/{q(room_id)}/messages?dir=b&limit=5", self.alice)
        self.assertNotIn(z.event_id, [e["event_id"] for e in msgs["chunk"]])

    async def test_edus(self) -> None:
        room_id = await self.joined_room()
        bob = self.remote.user("bob")
        msg = await self.local_message(room_id)
        other = self.new_remote()
        edus = [
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": True}},
            # not a user of the sending server: ignored
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": other.user("x"), "typing": True}},
            # a user of the sending server who is not in the room: ignored
            {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": self.remote.user("eve"),
                                                  "typing": True}},
            # presence of a user of the origin who shares no room with us: ignored
            {"edu_type": "m.presence", "content": {"push": [{"user_id": self.remote.user("stranger"),
                                                              "presence": "online"}]}},
            # a presence update for another server's user: ignored
            {"edu_type": "m.presence", "content": {"push": [{"user_id": other.user("x"), "presence": "online"}]}},
            {"edu_type": "m.receipt", "content": {room_id: {"m.read": {bob: {"event_ids": [msg.event_id],
                                                                                  "data": {"ts": 1234}}}}}},
            {"edu_type": "m.presence", "content": {"push": [{"user_id": bob, "presence": "online",
                                                              "last_active_ago": 10, "status_msg": "here"}]}},
            {"edu_type": "m.unknown.type", "content": {}},
            {"edu_type": "m.typing", "content": "not an object"},
        ]
        code, body = await self.send_txn("t1", [], edus)
        self.assertEqual((code, body), (200, {"pdus": {}}))
        self.assertEqual(set(self.hs.typing.typing_in(room_id)), {bob})
        receipts = await self.hs.receipts.receipts_for_rooms(self.alice.user_id, [room_id], None, self.hs.receipts.current_position)
        self.assertEqual(receipts[room_id]["content"][msg.event_id]["m.read"][bob]["ts"], 1234)
        self.assertEqual(self.hs.presence.get_state(bob)["presence"], "online")
        self.assertNotEqual(self.hs.presence.get_state(other.user("x")).get("presence"), "online")
        self.assertNotEqual(self.hs.presence.get_state(self.remote.user("stranger")).get("presence"), "online")
        # typing stops
        stop = {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": False}}
        await self.send_txn("t2", [], [stop])
        self.assertEqual(set(self.hs.typing.typing_in(room_id)), set())

    async def test_to_device_idempotent_per_message_id(self) -> None:
        content = {
            "sender": self.remote.user("bob"), "type": "m.room_key_request", "message_id": "abc",
            "messages": {self.alice.user_id: {"*": {"k": "v"}}, "@nobody:elsewhere.test": {"D": {}}},
        }
        edu = {"edu_type": "m.direct_to_device", "content": content}
        await self.send_txn("t1", [], [edu])
        await self.send_txn("t2", [], [edu])  # a resend in a new transaction
        messages, _ = await self.hs.to_device.get_to_device_for_sync(self.alice.user_id, self.alice.device_id, 0)
        self.assertEqual(messages, [{"type": "m.room_key_request", "sender": self.remote.user("bob"),
                                     "content": {"k": "v"}}])
        # a sender that is not on the origin server is refused
        spoof = json.loads(json.dumps(edu))
        spoof["content"]["sender"] = "@alice:elsewhere.test"
        spoof["content"]["message_id"] = "other"
        await self.send_txn("t3", [], [spoof])
        messages, _ = await self.hs.to_device.get_to_device_for_sync(self.alice.user_id, self.alice.device_id, 0)
        self.assertEqual(len(messages), 1)

    async def test_edu_registry(self) -> None:
        seen: list[tuple[str, dict[str, Any]]] = []

        async def handler(origin: str, content: dict[str, Any]) -> None:
            seen.append((origin, content))

        def broken(origin: str, content: dict[str, Any]) -> None:
            raise RuntimeError("boom")

        self.hs.federation_edus.register("org.example.test", handler)
        self.hs.federation_edus.register("org.example.broken", broken)
        edus = [
            {"edu_type": "org.example.broken", "content": {}},
            {"edu_type": "org.example.test", "content": {"a": 1}},
        ]
        code, body = await self.send_txn("t1", [], edus)
        self.assertEqual((code, body), (200, {"pdus": {}}))
        self.assertEqual(seen, [(self.remote.name, {"a": 1})])
        self.flushLoggedErrors(RuntimeError)

    async def test_receipts_ignored_when_acl_denies(self) -> None:
        room_id = await self.joined_room()
        msg = await self.local_message(room_id)
        acl = {"allow": ["*"], "deny": ["127.0.0.1"]}
        await self.hs.room_server.send(room_id, EventSpec("m.room.server_acl", acl, "", self.alice.user_id))
        bob = self.remote.user("bob")
        edu = {"edu_type": "m.receipt",
               "content": {room_id: {"m.read": {bob: {"event_ids": [msg.event_id], "data": {"ts": 1}}}}}}
        await self.send_txn("t1", [], [edu])
        receipts = await self.hs.receipts.receipts_for_rooms(
            self.alice.user_id, [room_id], None, self.hs.receipts.current_position)
        self.assertEqual(receipts, {})

    async def test_state_from_remote_is_checked(self) -> None:
        room_id = await self.joined_room()
        state = await self.hs.room_server.current_state_ids(room_id)
        # a topic set by someone who is not in the room: rejected against its own auth events
        bad_topic = await self.remote_event(room_id, "m.room.topic", {"topic": "hijacked"}, state_key="",
                                            sender=self.remote.user("eve"))
        x = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        y = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "y"},
                                    prev=[x.event_id], depth=x.depth + 1)
        # y2 is pushed; get_missing_events gives y, whose prev event x it does not: y is given
        # the state at x, fetched from the sender
        y2 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "y2"},
                                     prev=[y.event_id], depth=y.depth + 1)
        routes = self.remote.routes
        gme = f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()
        routes[gme] = (200, {"events": [pdu(y)]})
        routes[f"/_matrix/federation/v1/state_ids/{q(room_id)}".encode()] = (
            200, {"pdu_ids": sorted([*state.values(), bad_topic.event_id]), "auth_chain_ids": []})
        for ev in (x, bad_topic):
            routes[f"/_matrix/federation/v1/event/{q(ev.event_id)}".encode()] = (
                200, {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [pdu(ev)]})
        code, body = await self.send_txn("t1", [pdu(y2)])
        self.assertEqual(body, {"pdus": {y2.event_id: {}}})
        info = await self.event_info(bad_topic.event_id)
        assert info is not None
        self.assertTrue(info.outlier)
        self.assertIsNotNone(info.rejected_reason)
        before = await self.hs.room_server.state_at_event(y.event_id, after=False)
        self.assertNotIn(("m.room.topic", ""), before)

        # a state event with a forged signature: the gap cannot be filled, the event is refused
        z = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "z"},
                                    prev=["$elsewhere"], depth=60)
        z2 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "z2"},
                                     prev=[z.event_id], depth=61)
        routes[gme] = (200, {"events": [pdu(z)]})
        forged = pdu(await self.remote_event(room_id, "m.room.name", {"name": "n"}, state_key=""))
        forged["signatures"] = {self.remote.name: {"ed25519:r1": "A" * 86}}
        forged_id = "$" + "f" * 43
        routes[f"/_matrix/federation/v1/state_ids/{q(room_id)}".encode()] = (
            200, {"pdu_ids": [forged_id], "auth_chain_ids": []})
        routes[f"/_matrix/federation/v1/event/{q(forged_id)}".encode()] = (
            200, {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [forged]})
        routes[f"/_matrix/federation/v1/event/{q('$elsewhere')}".encode()] = (404, {"errcode": "M_NOT_FOUND", "error": "x"})
        code, body = await self.send_txn("t2", [pdu(z2)])
        self.assertIn("error", body["pdus"][z2.event_id])
        self.assertIsNone(await self.event_info(z.event_id))
        self.assertIsNone(await self.event_info(z2.event_id))

    async def test_many_missing_state_events_come_from_state(self) -> None:
        room_id = await self.joined_room()
        state = await self.hs.room_server.current_state_ids(room_id)
        joins = []
        for i in range(25):
            user = self.remote.user(f"u{i}")
            joins.append(await self.remote_event(room_id, "m.room.member", {"membership": "join"}, sender=user,
                                                 state_key=user))
        x = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})
        y = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "y"},
                                    prev=[x.event_id], depth=x.depth + 1)
        y2 = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "y2"},
                                     prev=[y.event_id], depth=y.depth + 1)
        routes = self.remote.routes
        routes[f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()] = (200, {"events": [pdu(y)]})
        ids = sorted([*state.values(), *(j.event_id for j in joins)])
        routes[f"/_matrix/federation/v1/state_ids/{q(room_id)}".encode()] = (200, {"pdu_ids": ids, "auth_chain_ids": []})
        routes[f"/_matrix/federation/v1/state/{q(room_id)}".encode()] = (
            200, {"pdus": [pdu(j) for j in joins], "auth_chain": []})
        routes[f"/_matrix/federation/v1/event/{q(x.event_id)}".encode()] = (
            200, {"origin": self.remote.name, "origin_server_ts": 1, "pdus": [pdu(x)]})
        code, body = await self.send_txn("t1", [pdu(y2)])
        self.assertEqual(body, {"pdus": {y2.event_id: {}}})
        self.assertEqual(self.remote.hits(f"/_matrix/federation/v1/state/{q(room_id)}".encode()), 1)
        before = await self.hs.room_server.state_at_event(y.event_id, after=False)
        self.assertEqual(before[("m.room.member", self.remote.user("u7"))], joins[7].event_id)
        # the current state is the resolution of ours and y's: the 25 joins are in it
        current = await self.hs.room_server.current_state_ids(room_id)
        self.assertIn(("m.room.member", self.remote.user("u24")), current)


class SlowPeerTests(SendTestCase):
    """A peer that never answers the gap filling's requests holds up only its own events, for
    ``federation.gap_fetch_timeout_ms`` per request."""

    config_overrides = {"federation": {**LOOPBACK, "gap_fetch_timeout_ms": "2s"}}

    async def test_bad_peer_does_not_block_others(self) -> None:
        room_id = await self.joined_room()
        bad = self.new_remote()
        await self.join_remote_user(room_id, remote=bad, localpart="mallory")
        hanging: list[Any] = []
        arrived: defer.Deferred[None] = defer.Deferred()

        def hang(request: Any) -> Any:
            hanging.append(request)
            if not arrived.called:
                arrived.callback(None)
            return server.NOT_DONE_YET

        path = f"/_matrix/federation/v1/get_missing_events/{q(room_id)}".encode()
        bad.routes[path] = hang
        bad.routes[f"/_matrix/federation/v1/state_ids/{q(room_id)}".encode()] = hang
        gap = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "gap"},
                                      sender=bad.user("mallory"), prev=["$unknown"], remote=bad, depth=50)
        bad_send = defer.ensureDeferred(self.send_txn("b1", [pdu(gap)], remote=bad))
        await arrived  # the server is asking the bad peer, which does not answer
        # while the bad peer's transaction waits on its own server, a good one goes through
        msg = await self.remote_event(room_id, "m.room.message", {"msgtype": "m.text", "body": "good"})
        self.assertEqual(await self.send_txn("g1", [pdu(msg)]), (200, {"pdus": {msg.event_id: {}}}))
        self.assertFalse(bad_send.called)
        code, body = await bad_send
        self.assertEqual(code, 200)
        self.assertIn("error", body["pdus"][gap.event_id])
        self.assertIsNone(await self.event_info(gap.event_id))
        for r in hanging:
            if not r.finished and not r._disconnected:
                r.finish()

    async def test_rooms_processed_concurrently(self) -> None:
        slow_room = await self.joined_room()
        fast_room = await self.joined_room()
        hanging: list[Any] = []
        arrived: defer.Deferred[None] = defer.Deferred()

        def hang(request: Any) -> Any:
            hanging.append(request)
            if not arrived.called:
                arrived.callback(None)
            return server.NOT_DONE_YET

        routes = self.remote.routes
        routes[f"/_matrix/federation/v1/get_missing_events/{q(slow_room)}".encode()] = hang
        routes[f"/_matrix/federation/v1/state_ids/{q(slow_room)}".encode()] = (404, {"errcode": "M_NOT_FOUND", "error": "x"})
        gap = await self.remote_event(slow_room, "m.room.message", {"msgtype": "m.text", "body": "gap"},
                                      prev=["$unknown"], depth=50)
        fast = await self.remote_event(fast_room, "m.room.message", {"msgtype": "m.text", "body": "fast"})
        d = defer.ensureDeferred(self.send_txn("t1", [pdu(gap), pdu(fast)]))
        await arrived  # the slow room waits for its gap, which never comes
        # the other room's event gets in meanwhile (the room stream publishes it)

        async def fast_stored() -> bool:
            return await self.event_info(fast.event_id) is not None

        await wait_until(fast_stored, "the fast room's event stored", [self.hs.room_stream])
        self.assertFalse(d.called)
        code, body = await d
        self.assertEqual(body["pdus"][fast.event_id], {})
        self.assertIn("error", body["pdus"][gap.event_id])
