"""check_pdu: format, signatures and content hash of received PDUs (server-server-api
§Checks performed on receipt of a PDU, steps 1-3)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from mxserver.crypto.keys import generate_signing_key
from mxserver.crypto.signing import SignatureError
from mxserver.events.builder import build_event
from mxserver.events.hashing import compute_event_id, reference_hash_bytes
from mxserver.events.signing import add_event_signature, verify_event_signatures
from mxserver.events.versions import get_room_version
from mxserver.federation.keyring import Keyring
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu
from tests.harness import FakeKeyClient, MemoryKeyStore, key_response

DAY_MS = 24 * 3600 * 1000
NOW_S = 1_700_000_000


def rv(identifier: str) -> Any:
    version = get_room_version(identifier)
    assert version is not None
    return version


class CheckPduTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW_S)
        self.remote_key = generate_signing_key("r1")
        self.other_key = generate_signing_key("o1")
        self.fake = FakeKeyClient()
        until = NOW_S * 1000 + DAY_MS
        self.fake.answers[("remote.test", "/_matrix/key/v2/server")] = key_response("remote.test", self.remote_key, until)
        self.fake.answers[("other.test", "/_matrix/key/v2/server")] = key_response("other.test", self.other_key, until)
        self.keyring = Keyring("us.test", generate_signing_key("u1"), MemoryKeyStore(), self.fake, self.clock)

    def event(self, version: str = "12", *, server: str = "remote.test", key: Any = None, sender: str = "@bob:remote.test",
              content: dict[str, Any] | None = None, ts: int | None = None) -> dict[str, Any]:
        ev = build_event(
            rv(version),
            type="m.room.message",
            sender=sender,
            content=content if content is not None else {"msgtype": "m.text", "body": "hello"},
            room_id="!room:us.test",
            prev_event_ids=["$prev"],
            auth_event_ids=["$create"],
            depth=5,
            origin_server_ts=ts if ts is not None else NOW_S * 1000,
            server_name=server,
            signing_key=key or self.remote_key,
        )
        return ev.get_pdu_json()

    async def reason(self, pdu: Any, version: str = "12") -> str:
        with self.assertRaises(InvalidPdu) as cm:
            await check_pdu(self.keyring, pdu, rv(version))
        return cm.exception.reason

    async def test_valid_event(self) -> None:
        for version in ("1", "3", "5", "10", "11", "12"):
            pdu = self.event(version)
            event = await check_pdu(self.keyring, pdu, rv(version))
            self.assertEqual(event.event_id, compute_event_id(pdu, rv(version)))
            self.assertEqual(event.content["body"], "hello")
        # the keys were fetched once and then cached
        self.assertEqual(self.fake.count("remote.test", "/_matrix/key/v2/server"), 1)

    def test_signed_bytes_given_once(self) -> None:
        # check_pdu encodes the redacted event once and hands the bytes to the signature check:
        # the bytes of this PDU verify, those of another PDU do not.
        pdu, other = self.event(), self.event(content={"msgtype": "m.text", "body": "other"})
        keys = {"remote.test": {"ed25519:r1": self.remote_key.verify_key}}
        verify_event_signatures(pdu, rv("12"), keys, signed_bytes=reference_hash_bytes(pdu, rv("12")))
        with self.assertRaises(SignatureError):
            verify_event_signatures(pdu, rv("12"), keys, signed_bytes=reference_hash_bytes(other, rv("12")))

    async def test_bad_format(self) -> None:
        pdu = self.event()
        for mutate, expected in [
            (lambda p: p.pop("depth"), "missing required key 'depth'"),
            (lambda p: p.update(sender="bob"), "'sender' must start with '@'"),
            (lambda p: p.update(prev_events="$x"), "'prev_events' must be a list"),
            (lambda p: p.update(content={"big": "x" * 70000}), "at most 65536"),
            (lambda p: p.update(depth=1.5), "not canonical JSON"),
        ]:
            bad = dict(pdu)
            mutate(bad)
            self.assertIn(expected, await self.reason(bad))
        self.assertIn("must be an object", await self.reason(["not", "a", "pdu"]))

    async def test_forged_signature(self) -> None:
        forger = generate_signing_key("r1")  # the same key ID, another key
        reason = await self.reason(self.event(key=forger))
        self.assertIn("bad signature", reason)
        # a valid signature on other contents: the event was altered after signing
        pdu = self.event()
        pdu["origin_server_ts"] += 1
        self.assertIn("bad signature", await self.reason(pdu))

    async def test_missing_signature_of_sender_server(self) -> None:
        # other.test signs an event whose sender is on remote.test
        pdu = self.event(server="other.test", key=self.other_key, sender="@bob:remote.test")
        self.assertIn("not signed by remote.test", await self.reason(pdu))
        # adding remote.test's signature makes it acceptable
        pdu = add_event_signature(pdu, rv("12"), "remote.test", self.remote_key)
        await check_pdu(self.keyring, pdu, rv("12"))
        # a signature by an unknown key ID of the right server does not count
        pdu = self.event(key=generate_signing_key("zz"))
        self.assertIn("no key of remote.test among ed25519:zz", await self.reason(pdu))

    async def test_v1_event_id_server_must_sign(self) -> None:
        pdu = self.event("1")
        pdu["event_id"] = "$abc:other.test"
        pdu = add_event_signature({k: v for k, v in pdu.items() if k != "signatures"}, rv("1"), "remote.test", self.remote_key)
        self.assertIn("not signed by other.test", await self.reason(pdu, "1"))

    async def test_wrong_room_version(self) -> None:
        # a v12 event checked as a v1 room's: no event_id in the PDU
        self.assertIn("event_id", await self.reason(self.event("12"), "1"))
        # a v1 PDU ([event_id, hashes] reference pairs) is not a v12 PDU
        self.assertIn("prev_events", await self.reason(self.event("1"), "12"))
        # v6+ (strict canonical JSON): integers beyond 2^53 are refused; v5 accepts them
        pdu = self.event("5", content={"msgtype": "m.text", "body": "x", "n": 2**60})
        await check_pdu(self.keyring, pdu, rv("5"))
        self.assertIn("not canonical JSON", await self.reason(pdu, "6"))

    async def test_key_validity_from_v5(self) -> None:
        # an event sent after the key's valid_until_ts: accepted in v4, dropped in v5+
        late = NOW_S * 1000 + 2 * DAY_MS
        await check_pdu(self.keyring, self.event("4", ts=late), rv("4"))
        self.assertIn("no key of remote.test", await self.reason(self.event("5", ts=late), "5"))

    async def test_hash_mismatch_gives_redacted_event(self) -> None:
        pdu = self.event()
        expected_id = compute_event_id(pdu, rv("12"))
        pdu["content"] = {"msgtype": "m.text", "body": "tampered"}  # not covered by the signature
        event = await check_pdu(self.keyring, pdu, rv("12"))
        self.assertEqual(event.event_id, expected_id)
        self.assertEqual(event.content, {})
        # state events keep their protected content keys
        pl = build_event(
            rv("12"), type="m.room.join_rules", sender="@bob:remote.test", content={"join_rule": "public", "x": 1},
            room_id="!room:us.test", state_key="", prev_event_ids=["$p"], auth_event_ids=["$a"], depth=3,
            origin_server_ts=NOW_S * 1000, server_name="remote.test", signing_key=self.remote_key,
        ).get_pdu_json()
        pl["content"] = {"join_rule": "public", "x": 2}
        event = await check_pdu(self.keyring, pl, rv("12"))
        self.assertEqual(event.content, {"join_rule": "public"})
        # the input is not modified
        self.assertEqual(pl["content"], {"join_rule": "public", "x": 2})

    async def test_unreachable_key_server(self) -> None:
        pdu = self.event(server="gone.test", sender="@bob:gone.test")
        self.assertIn("no key of gone.test", await self.reason(pdu))
