"""Tests for mxserver.events.builder: new local events in every room version."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial import unittest

from mxserver.crypto.canonical import encode_canonical_json
from mxserver.crypto.keys import generate_signing_key, get_verify_key
from mxserver.events.builder import build_event, generate_v1_event_id
from mxserver.events.hashing import (
    check_content_hash,
    compute_event_id,
    compute_room_id_v12,
    reference_hashes,
)
from mxserver.events.signing import verify_event_signature, verify_event_signatures
from mxserver.events.validation import MAX_PDU_SIZE, EventFormatError, validate_pdu
from mxserver.events.versions import KNOWN_ROOM_VERSIONS

RV = dict(KNOWN_ROOM_VERSIONS)
SERVER = "example.org"


class BuilderTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.key = generate_signing_key("b1")
        self.vk = get_verify_key(self.key)

    def build(self, v: str, **kw: Any):
        args: dict[str, Any] = dict(
            type="m.room.message",
            sender="@alice:example.org",
            content={"msgtype": "m.text", "body": "hello"},
            room_id="!room:example.org",
            prev_event_ids=["$prev1", "$prev2"],
            auth_event_ids=["$auth1"],
            depth=7,
            origin_server_ts=1700000000000,
            server_name=SERVER,
            signing_key=self.key,
        )
        if v in ("1", "2"):
            args["prev_event_ids"] = ["$prev1:x", "$prev2:x"]
            args["auth_event_ids"] = ["$auth1:x"]
        args.update(kw)
        return build_event(RV[v], **args)

    def test_every_version(self) -> None:
        for v, rv in RV.items():
            ev = self.build(v)
            pdu = ev.get_pdu_json()
            validate_pdu(pdu, rv)
            self.assertTrue(check_content_hash(pdu), v)
            verify_event_signature(pdu, rv, SERVER, self.vk)
            verify_event_signatures(pdu, rv, {SERVER: {"ed25519:b1": self.vk}})
            # The builder's shortcut event ID equals the from-scratch computation.
            self.assertEqual(ev.event_id, compute_event_id(pdu, rv), v)
            self.assertEqual(ev.room_id, "!room:example.org")
            self.assertEqual(ev.type, "m.room.message")
            self.assertEqual(ev.depth, 7)
            self.assertEqual(ev.content, {"msgtype": "m.text", "body": "hello"})
            self.assertFalse(ev.is_state())
            self.assertNotIn("origin", pdu)
            if v in ("1", "2"):
                self.assertRegex(ev.event_id, r"^\$[A-Za-z0-9]{18}:example\.org$")
                self.assertEqual(pdu["event_id"], ev.event_id)
                self.assertEqual(pdu["prev_events"], [["$prev1:x", {}], ["$prev2:x", {}]])
                self.assertEqual(ev.prev_event_ids, ["$prev1:x", "$prev2:x"])
                self.assertEqual(ev.auth_event_ids, ["$auth1:x"])
            else:
                self.assertNotIn("event_id", pdu)
                self.assertEqual(pdu["prev_events"], ["$prev1", "$prev2"])
                self.assertEqual(list(ev.auth_event_ids), ["$auth1"])
                alphabet = "A-Za-z0-9+/" if v == "3" else "A-Za-z0-9_-"
                self.assertRegex(ev.event_id, rf"^\$[{alphabet}]{{43}}$")

    def test_state_event(self) -> None:
        ev = self.build("11", type="m.room.name", state_key="", content={"name": "Room"})
        self.assertTrue(ev.is_state())
        self.assertEqual(ev.state_key, "")
        self.assertEqual(ev.state_tuple(), ("m.room.name", ""))

    def test_v1_ref_hashes_and_given_event_id(self) -> None:
        prev = self.build("1").get_pdu_json()
        hashes = reference_hashes(prev, RV["1"])
        ev = self.build(
            "1", prev_event_ids=[prev["event_id"]], ref_hashes={prev["event_id"]: hashes}, event_id="$mine:example.org"
        )
        self.assertEqual(ev.event_id, "$mine:example.org")
        self.assertEqual(ev.get_pdu_json()["prev_events"], [[prev["event_id"], hashes]])
        self.assertRaises(ValueError, self.build, "4", event_id="$nope")

    def test_v1_event_ids_unique(self) -> None:
        ids = {generate_v1_event_id("s.org") for _ in range(100)}
        self.assertEqual(len(ids), 100)
        self.assertTrue(all(re.match(r"^\$[A-Za-z0-9]+:s\.org$", i) for i in ids))

    def test_redacts_placement(self) -> None:
        for v in map(str, range(1, 11)):
            ev = self.build(v, type="m.room.redaction", content={"reason": "spam"}, redacts="$target")
            self.assertEqual(ev.get_pdu_json()["redacts"], "$target")
            self.assertNotIn("redacts", ev.content)
            self.assertEqual(ev.redacts, "$target")
        for v in ("11", "12"):
            content = {"reason": "spam"}
            ev = self.build(v, type="m.room.redaction", content=content, redacts="$target")
            self.assertNotIn("redacts", ev.get_pdu_json())
            self.assertEqual(ev.content, {"reason": "spam", "redacts": "$target"})
            self.assertEqual(ev.redacts, "$target")
            self.assertEqual(content, {"reason": "spam"})  # caller's dict untouched

    def test_v12_create(self) -> None:
        ev = build_event(
            RV["12"],
            type="m.room.create",
            state_key="",
            sender="@creator:example.org",
            content={"room_version": "12"},
            room_id=None,
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
            origin_server_ts=1,
            server_name=SERVER,
            signing_key=self.key,
        )
        pdu = ev.get_pdu_json()
        self.assertNotIn("room_id", pdu)
        self.assertEqual(ev.room_id, compute_room_id_v12(pdu))
        self.assertEqual(ev.room_id, "!" + ev.event_id[1:])
        # The next event goes into that room.
        nxt = self.build("12", room_id=ev.room_id, prev_event_ids=[ev.event_id], auth_event_ids=[])
        self.assertEqual(nxt.room_id, ev.room_id)

    def test_room_id_arguments(self) -> None:
        self.assertRaises(ValueError, self.build, "12", type="m.room.create", state_key="", content={})
        self.assertRaises(ValueError, self.build, "11", room_id=None)
        self.assertRaises(ValueError, self.build, "12", room_id=None)

    def test_unsigned_not_covered(self) -> None:
        a = self.build("11", unsigned={"age_ts": 5})
        pdu = a.get_pdu_json()
        self.assertEqual(pdu["unsigned"], {"age_ts": 5})
        self.assertEqual(compute_event_id(dict(pdu, unsigned={"other": 1}), RV["11"]), a.event_id)
        self.assertTrue(check_content_hash(pdu))

    def test_size_accounting_is_exact(self) -> None:
        # Measure the fixed overhead, then build an event of exactly 65536 bytes.
        for v in ("2", "5", "11", "12"):
            probe = self.build(v, content={"body": ""}, unsigned={"age_ts": 1})
            overhead = len(encode_canonical_json(probe.get_pdu_json()))
            # (v1/v2 event IDs are random but of fixed length, so the overhead is stable.)
            exact = self.build(v, content={"body": "x" * (MAX_PDU_SIZE - overhead)}, unsigned={"age_ts": 1})
            self.assertEqual(len(encode_canonical_json(exact.get_pdu_json())), MAX_PDU_SIZE)
            e = self.assertRaises(
                EventFormatError,
                self.build,
                v,
                content={"body": "x" * (MAX_PDU_SIZE - overhead + 1)},
                unsigned={"age_ts": 1},
            )
            self.assertIn("65536", e.reason)

    def test_too_big_with_multibyte_content(self) -> None:
        self.assertRaises(EventFormatError, self.build, "11", content={"body": "日" * 22000})

    def test_format_errors(self) -> None:
        self.assertRaises(EventFormatError, self.build, "11", content={"f": 1.5})
        self.build("5", content={"f": 1.5})  # lenient before v6
        self.assertRaises(EventFormatError, self.build, "11", type="t" * 256)
        self.assertRaises(EventFormatError, self.build, "11", state_key="s" * 256)
        self.assertRaises(EventFormatError, self.build, "11", prev_event_ids=[f"$p{i}" for i in range(21)])
        self.assertRaises(EventFormatError, self.build, "11", auth_event_ids=[f"$a{i}" for i in range(11)])
        self.assertRaises(EventFormatError, self.build, "11", depth=2**53)
        # validate=False skips the checks (e.g. for callers that validated already).
        self.build("11", content={"f": 1.5}, validate=False)

    def test_content_shallow_copied(self) -> None:
        content = {"body": "x"}
        ev = self.build("11", content=content)
        content["body"] = "changed"
        self.assertEqual(ev.content["body"], "x")

    def test_signatures_shape(self) -> None:
        pdu = self.build("11").get_pdu_json()
        self.assertEqual(list(pdu["signatures"]), [SERVER])
        self.assertRegex(pdu["signatures"][SERVER]["ed25519:b1"], r"^[A-Za-z0-9+/]{86}$")
        self.assertRegex(pdu["hashes"]["sha256"], r"^[A-Za-z0-9+/]{43}$")
