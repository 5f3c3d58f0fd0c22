"""Tests for content/reference hashes, event and room IDs, and event signatures.

Vectors: appendices §Cryptographic Test Vectors, Event Signing.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from twisted.trial import unittest

from mxserver.crypto.canonical import encode_canonical_json
from mxserver.crypto.keys import generate_signing_key, get_verify_key
from mxserver.crypto.signing import SignatureError, decode_base64, encode_base64
from mxserver.events.hashing import (
    EventIdError,
    add_content_hash,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id_v12,
    reference_hashes,
)
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.signing import (
    add_event_signature,
    required_signature_servers,
    sign_event,
    verify_event_signature,
    verify_event_signatures,
)
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from tests.test_crypto import KEY_ID, SERVER_NAME, spec_signing_key

RV = dict(KNOWN_ROOM_VERSIONS)

MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
MINIMAL_SIGNED: dict[str, Any] = {
    "auth_events": [],
    "content": {},
    "depth": 3,
    "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "prev_events": [],
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        }
    },
    "type": "X",
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_SIGNED: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    },
    "unsigned": {"age_ts": 1000000},
}

# The vectors predate v11-redactions (they keep the top-level `origin`), so
# they hold for every room version from 1 to 10.
VECTOR_VERSIONS = [str(n) for n in range(1, 11)]


def message(depth: int = 1, **extra: Any) -> dict[str, Any]:
    pdu = {
        "type": "m.room.message",
        "room_id": "!r:example.org",
        "sender": "@u:example.org",
        "content": {"body": "hello", "msgtype": "m.text"},
        "depth": depth,
        "origin_server_ts": 1,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "signatures": {},
    }
    pdu.update(extra)
    return add_content_hash(pdu)


class ContentHashTests(unittest.SynchronousTestCase):
    def test_vectors(self) -> None:
        self.assertEqual(encode_base64(compute_content_hash(MINIMAL_EVENT)), MINIMAL_SIGNED["hashes"]["sha256"])
        self.assertEqual(encode_base64(compute_content_hash(REDACTABLE_EVENT)), REDACTABLE_SIGNED["hashes"]["sha256"])

    def test_ignores_unsigned_signatures_hashes(self) -> None:
        a = dict(MINIMAL_EVENT, unsigned={"age": 1}, signatures={"x": {}}, hashes={"sha256": "zzz"})
        self.assertEqual(compute_content_hash(a), compute_content_hash(MINIMAL_EVENT))

    def test_add_and_check(self) -> None:
        pdu = copy.deepcopy(REDACTABLE_EVENT)
        pdu["hashes"] = {"other-algo": "keep"}
        self.assertIs(add_content_hash(pdu), pdu)
        self.assertEqual(pdu["hashes"], {"other-algo": "keep", "sha256": REDACTABLE_SIGNED["hashes"]["sha256"]})
        self.assertTrue(check_content_hash(pdu))
        self.assertTrue(check_content_hash(REDACTABLE_SIGNED))

    def test_mismatch_detected(self) -> None:
        pdu = copy.deepcopy(REDACTABLE_SIGNED)
        pdu["content"]["body"] = "tampered"
        self.assertFalse(check_content_hash(pdu))
        # A redacted copy fails the hash check too (that is how redaction is detected).
        self.assertFalse(check_content_hash(redact_pdu(REDACTABLE_SIGNED, RV["1"])))

    def test_missing_or_malformed_hash(self) -> None:
        self.assertFalse(check_content_hash(REDACTABLE_EVENT))
        for hashes in ({}, {"sha256": 5}, {"sha256": "!!!"}, "str"):
            self.assertFalse(check_content_hash(dict(REDACTABLE_EVENT, hashes=hashes)))


class EventIdTests(unittest.SynchronousTestCase):
    def test_v1_v2_use_pdu_event_id(self) -> None:
        for v in ("1", "2"):
            self.assertEqual(compute_event_id(REDACTABLE_SIGNED, RV[v]), "$0:domain")
            self.assertRaises(EventIdError, compute_event_id, MINIMAL_SIGNED, RV[v])

    def test_reference_hash_definition(self) -> None:
        # §Calculating the reference hash: redact, drop signatures/unsigned, sha256.
        pdu = message()
        red = redact_pdu(pdu, RV["4"])
        red.pop("signatures")
        self.assertEqual(compute_reference_hash(pdu, RV["4"]), hashlib.sha256(encode_canonical_json(red)).digest())

    def test_encodings_per_format(self) -> None:
        # Find an event whose hash needs the characters that differ between
        # the alphabets, so that the v3/v4 distinction is really exercised.
        for depth in range(1, 200):
            pdu = message(depth)
            h = compute_reference_hash(pdu, RV["3"])
            std = encode_base64(h)
            if "+" in std or "/" in std:
                break
        else:
            self.fail("no hash with + or / found")
        self.assertEqual(compute_event_id(pdu, RV["3"]), "$" + std)
        url = "$" + encode_base64(h, urlsafe=True)
        for v in ("4", "5", "6", "7", "8", "9", "10", "11", "12"):
            self.assertEqual(compute_reference_hash(pdu, RV[v]), h)  # message: same redacted form
            self.assertEqual(compute_event_id(pdu, RV[v]), url)
        self.assertNotEqual(url, "$" + std)
        self.assertRegex(url, r"^\$[A-Za-z0-9_-]{43}$")
        self.assertRegex(compute_event_id(pdu, RV["3"]), r"^\$[A-Za-z0-9+/]{43}$")

    def test_unaffected_by_non_essential_keys(self) -> None:
        pdu = message()
        eid = compute_event_id(pdu, RV["10"])
        self.assertEqual(compute_event_id(dict(pdu, unsigned={"age": 5}), RV["10"]), eid)
        self.assertEqual(compute_event_id(dict(pdu, signatures={"x": {"ed25519:a": "b"}}), RV["10"]), eid)
        self.assertEqual(compute_event_id(redact_pdu(pdu, RV["10"]), RV["10"]), eid)
        # Changing content without re-hashing does not change the redacted form...
        self.assertEqual(compute_event_id(dict(pdu, content={"body": "other"}), RV["10"]), eid)
        # ...but the content hash is covered, and so is every protected key.
        self.assertNotEqual(compute_event_id(add_content_hash(dict(pdu, content={"body": "o"})), RV["10"]), eid)
        self.assertNotEqual(compute_event_id(dict(pdu, depth=2), RV["10"]), eid)

    def test_redaction_rules_affect_event_id(self) -> None:
        # `origin` is protected before v11 only, so it changes v10 IDs but not v11 ones.
        pdu = message()
        self.assertNotEqual(compute_event_id(dict(pdu, origin="x"), RV["10"]), compute_event_id(pdu, RV["10"]))
        self.assertEqual(compute_event_id(dict(pdu, origin="x"), RV["11"]), compute_event_id(pdu, RV["11"]))

    def test_event_model_uses_it(self) -> None:
        pdu = message()
        for v in ("3", "4", "11", "12"):
            self.assertEqual(Event(pdu, RV[v]).event_id, compute_event_id(pdu, RV[v]))
        self.assertEqual(Event(REDACTABLE_SIGNED, RV["1"]).event_id, "$0:domain")

    def test_reference_hashes_for_v1_refs(self) -> None:
        self.assertEqual(
            reference_hashes(REDACTABLE_SIGNED, RV["1"]),
            {"sha256": encode_base64(compute_reference_hash(REDACTABLE_SIGNED, RV["1"]))},
        )


class RoomIdTests(unittest.SynchronousTestCase):
    def create(self) -> dict[str, Any]:
        return add_content_hash(
            {
                "type": "m.room.create",
                "state_key": "",
                "sender": "@creator:example.org",
                "content": {"room_version": "12"},
                "depth": 1,
                "origin_server_ts": 1,
                "prev_events": [],
                "auth_events": [],
                "signatures": {},
            }
        )

    def test_v12_room_id(self) -> None:
        pdu = self.create()
        room_id = compute_room_id_v12(pdu)
        event_id = compute_event_id(pdu, RV["12"])
        self.assertEqual(room_id, "!" + event_id[1:])
        self.assertRegex(room_id, r"^![A-Za-z0-9_-]{43}$")
        self.assertEqual(compute_room_id_v12(pdu, RV["12"]), room_id)
        self.assertEqual(Event(pdu, RV["12"]).room_id, room_id)

    def test_create_content_is_covered_in_v12(self) -> None:
        # v11-redactions keeps all of the create event's content, so the room
        # ID commits to it even without the content hash.
        pdu = self.create()
        other = dict(pdu, content={"room_version": "12", "m.federate": False})
        self.assertNotEqual(compute_room_id_v12(other), compute_room_id_v12(pdu))

    def test_not_for_older_versions(self) -> None:
        self.assertRaises(EventIdError, compute_room_id_v12, self.create(), RV["11"])


class EventSigningVectorTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.key = spec_signing_key()

    def test_minimal_event(self) -> None:
        for v in VECTOR_VERSIONS:
            self.assertEqual(sign_event(MINIMAL_EVENT, RV[v], SERVER_NAME, self.key), MINIMAL_SIGNED, v)

    def test_redactable_event(self) -> None:
        for v in VECTOR_VERSIONS:
            self.assertEqual(sign_event(REDACTABLE_EVENT, RV[v], SERVER_NAME, self.key), REDACTABLE_SIGNED, v)

    def test_input_untouched(self) -> None:
        before = copy.deepcopy(MINIMAL_EVENT)
        sign_event(MINIMAL_EVENT, RV["1"], SERVER_NAME, self.key)
        self.assertEqual(MINIMAL_EVENT, before)

    def test_vectors_verify(self) -> None:
        vk = get_verify_key(self.key)
        for v in VECTOR_VERSIONS:
            verify_event_signature(MINIMAL_SIGNED, RV[v], SERVER_NAME, vk)
            verify_event_signature(REDACTABLE_SIGNED, RV[v], SERVER_NAME, {KEY_ID: vk})
        # Under v11 rules `origin` is not signed, so the vector's signature no longer matches.
        self.assertRaises(SignatureError, verify_event_signature, MINIMAL_SIGNED, RV["11"], SERVER_NAME, vk)


class EventSignatureTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.key = generate_signing_key("k1")
        self.vk = get_verify_key(self.key)

    def signed(self, v: str = "11", **extra: Any) -> dict[str, Any]:
        return sign_event(message(**extra), RV[v], "example.org", self.key)

    def test_sign_and_verify(self) -> None:
        pdu = self.signed()
        self.assertTrue(check_content_hash(pdu))
        verify_event_signature(pdu, RV["11"], "example.org", self.vk)

    def test_tampered_essential_field_fails(self) -> None:
        for key, value in (
            ("sender", "@evil:example.org"),
            ("depth", 99),
            ("prev_events", ["$other"]),
            ("type", "m.x"),
        ):
            pdu = self.signed()
            pdu[key] = value
            self.assertRaises(SignatureError, verify_event_signature, pdu, RV["11"], "example.org", self.vk)

    def test_tampered_content_keeps_signature_but_fails_hash(self) -> None:
        pdu = self.signed()
        pdu["content"] = {"body": "evil"}
        verify_event_signature(pdu, RV["11"], "example.org", self.vk)  # signature covers the redacted form
        self.assertFalse(check_content_hash(pdu))
        pdu["hashes"] = {"sha256": encode_base64(compute_content_hash(pdu))}
        self.assertRaises(SignatureError, verify_event_signature, pdu, RV["11"], "example.org", self.vk)

    def test_redacted_copy_verifies(self) -> None:
        pdu = self.signed()
        verify_event_signature(redact_pdu(pdu, RV["11"]), RV["11"], "example.org", self.vk)

    def test_wrong_key_or_server(self) -> None:
        pdu = self.signed()
        other = get_verify_key(generate_signing_key("k1"))
        self.assertRaises(SignatureError, verify_event_signature, pdu, RV["11"], "example.org", other)
        self.assertRaises(SignatureError, verify_event_signature, pdu, RV["11"], "other.org", self.vk)
        self.assertRaises(SignatureError, verify_event_signature, pdu, RV["11"], "example.org", {})

    def test_co_signing(self) -> None:
        pdu = self.signed()
        other_key = generate_signing_key("o")
        cosigned = add_event_signature(pdu, RV["11"], "resident.org", other_key)
        self.assertEqual(cosigned["hashes"], pdu["hashes"])
        self.assertEqual(set(cosigned["signatures"]), {"example.org", "resident.org"})
        self.assertEqual(set(pdu["signatures"]), {"example.org"})  # input untouched
        verify_event_signature(cosigned, RV["11"], "example.org", self.vk)
        verify_event_signature(cosigned, RV["11"], "resident.org", get_verify_key(other_key))
        self.assertEqual(compute_event_id(cosigned, RV["11"]), compute_event_id(pdu, RV["11"]))

    def test_signature_from_raw_bytes(self) -> None:
        pdu = self.signed()
        sig = decode_base64(pdu["signatures"]["example.org"]["ed25519:k1"])
        red = redact_pdu(pdu, RV["11"])
        del red["signatures"]
        self.vk.verify(encode_canonical_json(red), sig)


class RequiredSignersTests(unittest.SynchronousTestCase):
    def member(self, membership: str, **content: Any) -> dict[str, Any]:
        return {
            "type": "m.room.member",
            "sender": "@alice:a.org",
            "state_key": "@bob:b.org",
            "content": dict(content, membership=membership),
            "signatures": {},
        }

    def test_sender_only(self) -> None:
        for v in map(str, range(3, 13)):
            self.assertEqual(required_signature_servers(message(), RV[v]), {"example.org"})

    def test_v1_event_id_domain(self) -> None:
        pdu = dict(message(), event_id="$abc:other.org")
        for v in ("1", "2"):
            self.assertEqual(required_signature_servers(pdu, RV[v]), {"example.org", "other.org"})
        self.assertEqual(required_signature_servers(pdu, RV["3"]), {"example.org"})
        pdu["event_id"] = "$abc:example.org"
        self.assertEqual(required_signature_servers(pdu, RV["1"]), {"example.org"})

    def test_restricted_join(self) -> None:
        pdu = self.member("join", join_authorised_via_users_server="@admin:res.org")
        pdu["sender"] = pdu["state_key"]
        for v in map(str, range(8, 13)):
            self.assertEqual(required_signature_servers(pdu, RV[v]), {"b.org", "res.org"})
            self.assertEqual(
                required_signature_servers(pdu, RV[v], include_restricted_join_authoriser=False), {"b.org"}
            )
        self.assertEqual(required_signature_servers(pdu, RV["7"]), {"b.org"})
        pdu["content"]["membership"] = "leave"
        self.assertEqual(required_signature_servers(pdu, RV["9"]), {"b.org"})

    def test_third_party_invite(self) -> None:
        pdu = self.member("invite", third_party_invite={"signed": {"mxid": "@bob:b.org", "token": "t"}})
        # Built by the invited user's server (not signed by the inviter's server).
        self.assertEqual(required_signature_servers(pdu, RV["11"]), {"b.org"})
        # Built by the inviting server via /exchange_third_party_invite.
        pdu["signatures"] = {"a.org": {"ed25519:1": "x"}}
        self.assertEqual(required_signature_servers(pdu, RV["11"]), {"a.org"})
        plain = self.member("invite")
        self.assertEqual(required_signature_servers(plain, RV["11"]), {"a.org"})

    def test_bad_sender(self) -> None:
        self.assertRaises(ValueError, required_signature_servers, dict(message(), sender="nope"), RV["11"])

    def test_verify_all_required(self) -> None:
        alice_key, res_key = generate_signing_key("a"), generate_signing_key("r")
        pdu = self.member("join", join_authorised_via_users_server="@admin:res.org")
        pdu.update(sender="@bob:b.org", room_id="!r:x", depth=2, origin_server_ts=5, prev_events=[], auth_events=[])
        pdu = sign_event(pdu, RV["9"], "b.org", alice_key)
        keys = {"b.org": {"ed25519:a": get_verify_key(alice_key)}, "res.org": {"ed25519:r": get_verify_key(res_key)}}
        self.assertRaises(SignatureError, verify_event_signatures, pdu, RV["9"], keys)
        verify_event_signatures(pdu, RV["9"], keys, include_restricted_join_authoriser=False)
        pdu = add_event_signature(pdu, RV["9"], "res.org", res_key)
        verify_event_signatures(pdu, RV["9"], keys)
        self.assertRaises(SignatureError, verify_event_signatures, pdu, RV["9"], {"b.org": keys["b.org"]})
        self.assertTrue(re.match(r"^[A-Za-z0-9+/]{86}$", pdu["signatures"]["res.org"]["ed25519:r"]))
