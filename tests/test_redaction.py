"""Tests for mxserver.events.redaction: the four redaction algorithms.

Expected outputs are written out by hand from the fragments v1-redactions,
v6-redactions, v9-redactions and v11-redactions, not derived from the code.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from twisted.trial import unittest

from mxserver.crypto.keys import get_verify_key
from mxserver.events.hashing import compute_event_id
from mxserver.events.model import Event, EventMetadata
from mxserver.events.redaction import protected_content_keys, redact_event, redact_pdu, redacted_client_event
from mxserver.events.signing import sign_event, verify_event_signature
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, RedactionRules
from tests.test_crypto import spec_signing_key

SPEC = os.environ.get("MXSERVER_SPEC_DIR", "/work/shared/spec")
EXAMPLES = os.path.join(SPEC, "api", "server-server", "examples")


def _resolve(node: Any, base: str) -> Any:
    # Just enough of the spec's example conventions: {"$ref": file, ...overrides}
    # and {"allOf": [...]} merging objects (see openapi_extensions.md).
    if isinstance(node, dict):
        if "allOf" in node:
            out: dict[str, Any] = {}
            for part in node["allOf"]:
                out.update(_resolve(part, base))
            return out
        if "$ref" in node:
            path = os.path.join(base, node["$ref"])
            with open(path) as f:
                out = _resolve(json.load(f), os.path.dirname(path))
            out = dict(out)
            out.update({k: _resolve(v, base) for k, v in node.items() if k != "$ref"})
            return out
        return {k: _resolve(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, base) for v in node]
    return node


def load_example(name: str) -> dict[str, Any]:
    """A PDU example from api/server-server/examples, with $ref/allOf resolved."""
    with open(os.path.join(EXAMPLES, name)) as f:
        return _resolve(json.load(f), EXAMPLES)


# Which room version each PDU example is for (pdu_vN.yaml descriptions).
EXAMPLE_VERSIONS = {
    "pdu_v1.json": ["1", "2"],
    "pdu_v3.json": ["3"],
    "pdu_v4.json": ["4", "5", "6", "7", "8", "9", "10"],
    "pdu_v4_join_membership.json": ["8", "9", "10"],
    "pdu_v11.json": ["11"],
    "pdu_v12.json": ["12"],
}

V1, V6, V9, V11 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "6", "9", "11"))
ALGORITHMS = {"v1": V1, "v6": V6, "v9": V9, "v11": V11}


def event(type_: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    pdu = {
        "type": type_,
        "room_id": "!r:example.org",
        "sender": "@alice:example.org",
        "content": content,
        "depth": 5,
        "origin_server_ts": 1234,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "hashes": {"sha256": "h"},
        "signatures": {"example.org": {"ed25519:1": "s"}},
        "unsigned": {"age": 10},
    }
    pdu.update(extra)
    return pdu


class VersionMappingTests(unittest.SynchronousTestCase):
    def test_each_version_uses_the_right_algorithm(self) -> None:
        expected = {1: RedactionRules.V1, 6: RedactionRules.V6, 9: RedactionRules.V9, 11: RedactionRules.V11}
        for n in range(1, 13):
            algo = expected[max(k for k in expected if k <= n)]
            self.assertIs(KNOWN_ROOM_VERSIONS[str(n)].redaction, algo, n)


class TopLevelKeyTests(unittest.SynchronousTestCase):
    FULL = {
        "event_id": "$e:example.org",
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@a:example.org",
        "state_key": "",
        "content": {"body": "hi"},
        "hashes": {"sha256": "h"},
        "signatures": {"example.org": {"ed25519:1": "s"}},
        "depth": 3,
        "prev_events": ["$p"],
        "prev_state": [],
        "auth_events": ["$a"],
        "origin": "example.org",
        "origin_server_ts": 1,
        "membership": "join",
        "unsigned": {"age": 1},
        "redacts": "$x",
        "extra": {"nested": True},
        "age_ts": 5,
    }

    def test_pre_v11(self) -> None:
        expected = {k: v for k, v in self.FULL.items() if k not in ("unsigned", "redacts", "extra", "age_ts")}
        expected["content"] = {}
        for rv in (V1, V6, V9):
            self.assertEqual(redact_pdu(self.FULL, rv), expected)

    def test_v11_drops_origin_membership_prev_state(self) -> None:
        keep = {
            "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
            "signatures", "depth", "prev_events", "auth_events", "origin_server_ts",
        }  # fmt: skip
        expected = {k: v for k, v in self.FULL.items() if k in keep}
        expected["content"] = {}
        for v in ("11", "12"):
            self.assertEqual(redact_pdu(self.FULL, KNOWN_ROOM_VERSIONS[v]), expected)

    def test_input_not_modified(self) -> None:
        pdu = event("m.room.create", {"creator": "@a:b", "room_version": "11"})
        before = copy.deepcopy(pdu)
        for rv in ALGORITHMS.values():
            out = redact_pdu(pdu, rv)
            out["content"]["new"] = 1
        self.assertEqual(pdu, before)

    def test_malformed_content(self) -> None:
        pdu = event("m.room.member", "not an object")  # type: ignore[arg-type]
        self.assertEqual(redact_pdu(pdu, V11)["content"], {})
        pdu.pop("content")
        self.assertNotIn("content", redact_pdu(pdu, V11))


class ContentTests(unittest.SynchronousTestCase):
    """Each special event type, against each algorithm: exactly the right keys."""

    def check(self, type_: str, content: dict[str, Any], expected: dict[str, dict[str, Any]]) -> None:
        for name, rv in ALGORITHMS.items():
            out = redact_pdu(event(type_, content, state_key=""), rv)
            self.assertEqual(out["content"], expected[name], f"{type_} under {name}-redactions")
        # v12 follows v11
        out = redact_pdu(event(type_, content, state_key=""), KNOWN_ROOM_VERSIONS["12"])
        self.assertEqual(out["content"], expected["v11"])

    def test_member(self) -> None:
        signed = {"mxid": "@bob:example.org", "token": "tok", "signatures": {"id.example": {"ed25519:0": "sig"}}}
        content = {
            "membership": "join",
            "displayname": "Bob",
            "avatar_url": "mxc://x/y",
            "reason": "r",
            "is_direct": False,
            "join_authorised_via_users_server": "@admin:example.org",
            "third_party_invite": {"display_name": "bob@…", "signed": signed},
        }
        self.check(
            "m.room.member",
            content,
            {
                "v1": {"membership": "join"},
                "v6": {"membership": "join"},
                "v9": {"membership": "join", "join_authorised_via_users_server": "@admin:example.org"},
                "v11": {
                    "membership": "join",
                    "join_authorised_via_users_server": "@admin:example.org",
                    "third_party_invite": {"signed": signed},
                },
            },
        )

    def test_member_third_party_invite_without_signed(self) -> None:
        content = {"membership": "invite", "third_party_invite": {"display_name": "x"}}
        self.assertEqual(redact_pdu(event("m.room.member", content), V11)["content"], {"membership": "invite"})
        content = {"membership": "invite", "third_party_invite": "junk"}
        self.assertEqual(redact_pdu(event("m.room.member", content), V11)["content"], {"membership": "invite"})

    def test_create(self) -> None:
        content = {
            "creator": "@a:example.org",
            "room_version": "9",
            "m.federate": False,
            "predecessor": {"room_id": "!old:x"},
            "additional_creators": ["@b:example.org"],
            "type": "m.space",
        }
        only_creator = {"creator": "@a:example.org"}
        self.check(
            "m.room.create", content, {"v1": only_creator, "v6": only_creator, "v9": only_creator, "v11": content}
        )

    def test_join_rules(self) -> None:
        allow = [{"type": "m.room_membership", "room_id": "!s:example.org"}]
        content = {"join_rule": "restricted", "allow": allow, "other": 1}
        jr = {"join_rule": "restricted"}
        with_allow = {"join_rule": "restricted", "allow": allow}
        self.check("m.room.join_rules", content, {"v1": jr, "v6": jr, "v9": with_allow, "v11": with_allow})

    def test_power_levels(self) -> None:
        base = {
            "ban": 50,
            "events": {"m.room.name": 100},
            "events_default": 0,
            "kick": 50,
            "redact": 50,
            "state_default": 50,
            "users": {"@a:example.org": 100},
            "users_default": 0,
        }
        content = dict(base, invite=0, notifications={"room": 50}, historical=100)
        self.check("m.room.power_levels", content, {"v1": base, "v6": base, "v9": base, "v11": dict(base, invite=0)})

    def test_history_visibility(self) -> None:
        hv = {"history_visibility": "shared"}
        self.check("m.room.history_visibility", dict(hv, x=1), {"v1": hv, "v6": hv, "v9": hv, "v11": hv})

    def test_aliases(self) -> None:
        content = {"aliases": ["#a:example.org"], "x": 1}
        self.check("m.room.aliases", content, {"v1": {"aliases": ["#a:example.org"]}, "v6": {}, "v9": {}, "v11": {}})

    def test_redaction(self) -> None:
        content = {"redacts": "$target", "reason": "spam"}
        self.check("m.room.redaction", content, {"v1": {}, "v6": {}, "v9": {}, "v11": {"redacts": "$target"}})
        # The pre-v11 top-level `redacts` is not protected.
        for rv in ALGORITHMS.values():
            self.assertNotIn("redacts", redact_pdu(event("m.room.redaction", {}, redacts="$t"), rv))

    def test_other_types_lose_all_content(self) -> None:
        for type_ in ("m.room.message", "m.room.name", "m.room.topic", "m.room.encrypted", "m.room.third_party_invite"):
            self.check(type_, {"body": "x", "name": "n", "membership": "join"}, {k: {} for k in ALGORITHMS})

    def test_idempotent(self) -> None:
        pdu = event("m.room.member", {"membership": "join", "displayname": "x", "third_party_invite": {"signed": {}}})
        for rv in ALGORITHMS.values():
            once = redact_pdu(pdu, rv)
            self.assertEqual(redact_pdu(once, rv), once)

    def test_protected_content_keys(self) -> None:
        self.assertIsNone(protected_content_keys(V11)["m.room.create"])
        self.assertNotIn("m.room.aliases", protected_content_keys(V6))


class RedactEventTests(unittest.SynchronousTestCase):
    def test_event_id_and_signature_survive(self) -> None:
        key = spec_signing_key()
        for v in ("1", "3", "4", "9", "11", "12"):
            rv = KNOWN_ROOM_VERSIONS[v]
            pdu = event("m.room.member", {"membership": "join", "displayname": "Alice"}, state_key="@alice:example.org")
            if v in ("1", "2"):
                pdu["event_id"] = "$abc:example.org"
            pdu = sign_event(pdu, rv, "example.org", key)
            ev = Event(pdu, rv, metadata=EventMetadata(stream_ordering=7))
            red = redact_event(ev)
            self.assertEqual(red.event_id, ev.event_id)
            self.assertEqual(compute_event_id(red.get_pdu_json(), rv), ev.event_id)
            self.assertEqual(red.content, {"membership": "join"})
            self.assertEqual(red.unsigned, {})
            self.assertEqual(red.metadata.stream_ordering, 7)
            self.assertIsNot(red.metadata, ev.metadata)
            verify_event_signature(red.get_pdu_json(), rv, "example.org", get_verify_key(key))
            self.assertEqual(ev.content["displayname"], "Alice")  # original untouched

    def test_redacted_client_event(self) -> None:
        redacted = redact_pdu(event("m.room.message", {"body": "x"}), V11)
        because = {"type": "m.room.redaction", "content": {"redacts": "$x"}}
        out = redacted_client_event(redacted, because)
        self.assertEqual(out["unsigned"], {"redacted_because": because})
        self.assertNotIn("unsigned", redacted)


class SpecExampleTests(unittest.SynchronousTestCase):
    def test_examples_round_trip(self) -> None:
        for name, versions in EXAMPLE_VERSIONS.items():
            pdu = load_example(name)
            for v in versions:
                rv = KNOWN_ROOM_VERSIONS[v]
                red = redact_pdu(pdu, rv)
                self.assertNotIn("unsigned", red)
                self.assertEqual(red["signatures"], pdu["signatures"])
                self.assertEqual(red["hashes"], pdu["hashes"])
                self.assertEqual(red["prev_events"], pdu["prev_events"])
                # Redaction does not change the reference hash, hence the event ID.
                self.assertEqual(compute_event_id(red, rv), compute_event_id(pdu, rv))
                self.assertEqual(redact_pdu(red, rv), red)
                if pdu["type"] == "m.room.message":
                    self.assertEqual(red["content"], {})

    def test_join_membership_example(self) -> None:
        pdu = load_example("pdu_v4_join_membership.json")
        self.assertEqual(redact_pdu(pdu, KNOWN_ROOM_VERSIONS["8"])["content"], {"membership": "join"})
        self.assertEqual(
            redact_pdu(pdu, KNOWN_ROOM_VERSIONS["9"])["content"],
            {"membership": "join", "join_authorised_via_users_server": "@arbitrary:resident.example.com"},
        )

    def test_v3_example_redacts_dropped(self) -> None:
        pdu = load_example("pdu_v3.json")
        self.assertEqual(pdu["redacts"], "$some/old+event")
        self.assertNotIn("redacts", redact_pdu(pdu, KNOWN_ROOM_VERSIONS["3"]))
