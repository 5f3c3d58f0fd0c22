"""Tests for mxserver.events.validation: PDU format checks per room version."""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial import unittest

from mxserver.crypto.canonical import encode_canonical_json
from mxserver.events.validation import (
    MAX_PDU_SIZE,
    EventFormatError,
    canonical_size,
    validate_pdu,
)
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from tests.test_redaction import EXAMPLE_VERSIONS, load_example

RV = dict(KNOWN_ROOM_VERSIONS)
ALL = list(RV)


def pdu_for(v: str, **overrides: Any) -> dict[str, Any]:
    """A minimal well-formed PDU for room version ``v``."""
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!room:example.org",
        "sender": "@alice:example.org",
        "content": {"body": "hi"},
        "depth": 3,
        "origin_server_ts": 1234,
        "hashes": {"sha256": "abc"},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
    }
    if v in ("1", "2"):
        pdu["event_id"] = "$e:example.org"
        pdu["prev_events"] = [["$p:example.org", {"sha256": "h"}]]
        pdu["auth_events"] = [["$a:example.org", {"sha256": "h"}]]
    else:
        pdu["prev_events"] = ["$p"]
        pdu["auth_events"] = ["$a"]
    pdu.update(overrides)
    return pdu


def refs(v: str, n: int) -> list[Any]:
    if v in ("1", "2"):
        return [[f"$e{i}:x", {}] for i in range(n)]
    return [f"$e{i}" for i in range(n)]


class ValidationTests(unittest.SynchronousTestCase):
    def assertRejected(self, pdu: Any, v: str, fragment: str = "") -> EventFormatError:
        e = self.assertRaises(EventFormatError, validate_pdu, pdu, RV[v])
        self.assertIn(fragment, e.reason)
        return e

    def test_minimal_valid(self) -> None:
        for v in ALL:
            validate_pdu(pdu_for(v), RV[v])

    def test_spec_examples_valid(self) -> None:
        for name, versions in EXAMPLE_VERSIONS.items():
            for v in versions:
                validate_pdu(load_example(name), RV[v])

    def test_missing_required_keys(self) -> None:
        base = ["type", "sender", "content", "origin_server_ts", "depth", "hashes", "signatures",
                "prev_events", "auth_events", "room_id"]  # fmt: skip
        for v in ALL:
            required = base + (["event_id"] if v in ("1", "2") else [])
            for key in required:
                pdu = pdu_for(v)
                del pdu[key]
                self.assertRejected(pdu, v, key)

    def test_v3_plus_event_id_not_required(self) -> None:
        for v in ALL[2:]:
            self.assertNotIn("event_id", pdu_for(v))

    def test_field_types(self) -> None:
        bad = {
            "type": 5,
            "sender": ["@a:b"],
            "content": "x",
            "origin_server_ts": "1",
            "depth": "3",
            "hashes": {"sha256": 5},
            "signatures": {"example.org": "sig"},
            "state_key": None,
            "unsigned": [],
            "redacts": 5,
            "room_id": 7,
            "origin": 5,
        }
        for v in ALL:
            for key, value in bad.items():
                self.assertRejected(pdu_for(v, **{key: value}), v, key)
            self.assertRejected(pdu_for(v, hashes={}), v, "sha256")
            self.assertRejected(pdu_for(v, signatures={"s": {"ed25519:1": 5}}), v, "signatures")
            self.assertRejected(pdu_for(v, origin_server_ts=True), v, "origin_server_ts")

    def test_sigils(self) -> None:
        for v in ALL:
            self.assertRejected(pdu_for(v, sender="alice:example.org"), v, "sender")
            self.assertRejected(pdu_for(v, room_id="room:example.org"), v, "room_id")
        self.assertRejected(pdu_for("1", event_id="e:example.org"), "1", "event_id")
        self.assertRejected(pdu_for("1", event_id="$nodomain"), "1", "event_id")

    def test_reference_formats(self) -> None:
        for v in ("1", "2"):
            self.assertRejected(pdu_for(v, prev_events=["$p:x"]), v, "pairs")
            self.assertRejected(pdu_for(v, auth_events=[["$a:x"]]), v, "pairs")
            self.assertRejected(pdu_for(v, auth_events=[["$a:x", "h"]]), v, "pairs")
            self.assertRejected(pdu_for(v, prev_events=[[5, {}]]), v, "prev_events")
        for v in ALL[2:]:
            self.assertRejected(pdu_for(v, prev_events=[["$p:x", {}]]), v, "prev_events")
            self.assertRejected(pdu_for(v, auth_events=[5]), v, "auth_events")
            self.assertRejected(pdu_for(v, auth_events="$a"), v, "auth_events")
            self.assertRejected(pdu_for(v, prev_events=["p"]), v, "prev_events")

    def test_reference_limits(self) -> None:
        for v in ALL:
            validate_pdu(pdu_for(v, prev_events=refs(v, 20), auth_events=refs(v, 10)), RV[v])
            self.assertRejected(pdu_for(v, prev_events=refs(v, 21)), v, "at most 20")
            self.assertRejected(pdu_for(v, auth_events=refs(v, 11)), v, "at most 10")

    def test_id_lengths(self) -> None:
        # 255 bytes OK, 256 rejected -- counted in UTF-8 bytes, not characters.
        for v in ALL:
            validate_pdu(pdu_for(v, state_key="é" * 127 + "x"), RV[v])
            self.assertRejected(pdu_for(v, state_key="é" * 128), v, "state_key")
            validate_pdu(pdu_for(v, type="t" * 255), RV[v])
            self.assertRejected(pdu_for(v, type="t" * 256), v, "type")
            self.assertRejected(pdu_for(v, sender="@" + "a" * 250 + ":example.org"), v, "sender")
            self.assertRejected(pdu_for(v, room_id="!" + "a" * 250 + ":example.org"), v, "room_id")
            self.assertRejected(pdu_for(v, prev_events=[self._long_ref(v)]), v, "255")
        self.assertRejected(pdu_for("1", event_id="$" + "a" * 250 + ":example.org"), "1", "event_id")

    def _long_ref(self, v: str) -> Any:
        eid = "$" + "a" * 255
        return [eid, {}] if v in ("1", "2") else eid

    def test_size_limit(self) -> None:
        for v in ("1", "6", "12"):
            pdu = pdu_for(v, content={"body": ""})
            pad = MAX_PDU_SIZE - canonical_size(pdu)
            pdu["content"]["body"] = "x" * pad
            self.assertEqual(len(encode_canonical_json(pdu)), MAX_PDU_SIZE)
            validate_pdu(pdu, RV[v])  # exactly at the limit
            pdu["content"]["body"] += "x"
            self.assertRejected(pdu, v, "65536")
            # Multi-byte characters count as bytes.
            pdu["content"]["body"] = "日" * (MAX_PDU_SIZE // 3)
            self.assertRejected(pdu, v, "bytes")

    def test_size_counts_signatures_and_unsigned(self) -> None:
        pdu = pdu_for("11", content={"body": ""})
        pdu["content"]["body"] = "x" * (MAX_PDU_SIZE - canonical_size(pdu))
        validate_pdu(pdu, RV["11"])
        self.assertRejected(dict(pdu, unsigned={"age": 1}), "11", "bytes")
        sigs = copy.deepcopy(pdu["signatures"])
        sigs["other.org"] = {"ed25519:x": "y"}
        self.assertRejected(dict(pdu, signatures=sigs), "11", "bytes")

    def test_precomputed_size(self) -> None:
        pdu = pdu_for("11")
        validate_pdu(pdu, RV["11"], size=MAX_PDU_SIZE)
        self.assertRaises(EventFormatError, validate_pdu, pdu, RV["11"], size=MAX_PDU_SIZE + 1)

    def test_floats_strict_from_v6(self) -> None:
        for v in ALL:
            pdu = pdu_for(v, content={"body": "x", "nested": [{"f": 1.5}]})
            if int(v) >= 6:
                self.assertRejected(pdu, v, "float")
            else:
                validate_pdu(pdu, RV[v])  # v1-canonical-json: not strictly enforced

    def test_power_level_floats_accepted_before_v6(self) -> None:
        # v1-floaty-power-levels example
        pl = {"users": {"@bob:localhost": 50.57}, "ban": 50}
        validate_pdu(pdu_for("5", type="m.room.power_levels", state_key="", content=pl), RV["5"])
        self.assertRejected(pdu_for("6", type="m.room.power_levels", state_key="", content=pl), "6", "float")

    def test_big_integers(self) -> None:
        for v in ALL:
            pdu = pdu_for(v, content={"n": 2**53})
            if int(v) >= 6:
                self.assertRejected(pdu, v, "range")
                validate_pdu(pdu_for(v, content={"n": 2**53 - 1, "m": -(2**53) + 1}), RV[v])
            else:
                validate_pdu(pdu, RV[v])
        self.assertRejected(pdu_for("7", unsigned={"age": 0.5}), "7", "float")

    def test_depth(self) -> None:
        for v in ALL:
            validate_pdu(pdu_for(v, depth=0), RV[v])
            validate_pdu(pdu_for(v, depth=2**53 - 1), RV[v])
            self.assertRejected(pdu_for(v, depth=-1), v, "depth")
            self.assertRejected(pdu_for(v, depth=True), v, "depth")
            self.assertRejected(pdu_for(v, depth=2**63), v, "")
            if int(v) >= 6:
                self.assertRejected(pdu_for(v, depth=2**53), v, "")
                self.assertRejected(pdu_for(v, depth=3.0), v, "")
            else:
                validate_pdu(pdu_for(v, depth=2**53), RV[v])
                validate_pdu(pdu_for(v, depth=2**63 - 1), RV[v])
                self.assertRejected(pdu_for(v, depth=3.0), v, "depth")

    def test_v12_create_event_room_id(self) -> None:
        create = pdu_for("12", type="m.room.create", state_key="", content={"room_version": "12"})
        create["prev_events"] = []
        create["auth_events"] = []
        self.assertRejected(create, "12", "room_id")
        del create["room_id"]
        validate_pdu(create, RV["12"])
        # Older versions still require room_id on the create event.
        self.assertRejected(create, "11", "room_id")
        # And v12 non-create events still need one.
        self.assertRejected({k: v for k, v in pdu_for("12").items() if k != "room_id"}, "12", "room_id")

    def test_v12_hash_room_ids_accepted(self) -> None:
        validate_pdu(pdu_for("12", room_id="!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"), RV["12"])

    def test_redaction_redacts(self) -> None:
        # Redacted m.room.redaction events legitimately lack `redacts` before v11.
        validate_pdu(pdu_for("10", type="m.room.redaction", content={}), RV["10"])
        validate_pdu(pdu_for("10", type="m.room.redaction", content={}, redacts="$x"), RV["10"])
        validate_pdu(pdu_for("11", type="m.room.redaction", content={"redacts": "$x"}), RV["11"])
        self.assertRejected(pdu_for("11", type="m.room.redaction", content={"redacts": 5}), "11", "content.redacts")
        # Pre-v11 content is opaque here.
        validate_pdu(pdu_for("10", type="m.room.redaction", content={"redacts": 5}), RV["10"])

    def test_not_an_object(self) -> None:
        self.assertRejected(["x"], "11", "object")

    def test_non_json_values_rejected(self) -> None:
        self.assertRejected(pdu_for("3", content={"x": float("nan")}), "3", "JSON")
        self.assertRejected(pdu_for("3", content={"x": b"raw"}), "3", "JSON")
        self.assertRejected(pdu_for("11", content={"x": b"raw"}), "11", "canonical")
