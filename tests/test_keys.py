"""/keys/upload, /keys/query, /keys/claim: signature checks, one-time keys claimed once, fallback reuse."""

from __future__ import annotations

import itertools
from typing import Any

import nacl.signing
from twisted.internet.defer import ensureDeferred, gatherResults

from mxserver.crypto.signing import encode_base64, signing_bytes
from tests.harness import C, HomeserverTestCase, TestUser

_counter = itertools.count(1)


def sign(obj: dict[str, Any], user_id: str, key_id: str, key: nacl.signing.SigningKey) -> dict[str, Any]:
    """``obj`` with ``user_id``'s signature by ``key`` under ``key_id`` added."""
    sig = encode_base64(key.sign(signing_bytes(obj)).signature)
    sigs = {u: dict(v) for u, v in obj.get("signatures", {}).items()}
    sigs.setdefault(user_id, {})[key_id] = sig
    return {**obj, "signatures": sigs}


def public(key: nacl.signing.SigningKey) -> str:
    return encode_base64(bytes(key.verify_key))


class FakeDevice:
    """A client device's keys: an ed25519 identity key that signs what the device uploads."""

    def __init__(self, user: TestUser) -> None:
        self.user = user
        self.user_id = user.user_id
        self.device_id = user.device_id
        self.key = nacl.signing.SigningKey.generate()
        self.curve = encode_base64(nacl.signing.SigningKey.generate().verify_key.encode())

    @property
    def ed25519(self) -> str:
        return public(self.key)

    def device_keys(self, **extra: Any) -> dict[str, Any]:
        obj = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": self.curve, f"ed25519:{self.device_id}": self.ed25519},
            **extra,
        }
        return sign(obj, self.user_id, f"ed25519:{self.device_id}", self.key)

    def signed_key(self, fallback: bool = False) -> dict[str, Any]:
        obj: dict[str, Any] = {"key": encode_base64(nacl.signing.SigningKey.generate().verify_key.encode())}
        if fallback:
            obj["fallback"] = True
        return sign(obj, self.user_id, f"ed25519:{self.device_id}", self.key)

    def one_time_keys(self, n: int) -> dict[str, Any]:
        return {f"signed_curve25519:K{next(_counter):06d}": self.signed_key() for _ in range(n)}

    def fallback_keys(self) -> dict[str, Any]:
        return {f"signed_curve25519:F{next(_counter):06d}": self.signed_key(fallback=True)}


class KeysTestCase(HomeserverTestCase):
    async def upload(self, device: FakeDevice, **body: Any) -> tuple[int, Any]:
        return await self.post(f"{C}/keys/upload", body, device.user)

    async def new_device(self, localpart: str, device_id: str | None = None, upload: bool = True) -> FakeDevice:
        user = await self.register(localpart, device_id=device_id)
        device = FakeDevice(user)
        if upload:
            code, body = await self.upload(device, device_keys=device.device_keys())
            self.assertEqual(code, 200, body)
        return device

    async def query(self, user: TestUser, device_keys: dict[str, list[str]]) -> dict[str, Any]:
        code, body = await self.post(f"{C}/keys/query", {"device_keys": device_keys}, user)
        self.assertEqual(code, 200, body)
        return body

    async def claim(self, user: TestUser, one_time_keys: dict[str, dict[str, str]]) -> dict[str, Any]:
        code, body = await self.post(f"{C}/keys/claim", {"one_time_keys": one_time_keys}, user)
        self.assertEqual(code, 200, body)
        return body


class UploadTests(KeysTestCase):
    async def test_upload_and_query_device_keys(self) -> None:
        alice = await self.new_device("alice", "ALICEPHONE")
        bob = await self.new_device("bob")
        body = await self.query(bob.user, {alice.user_id: []})
        got = body["device_keys"][alice.user_id]["ALICEPHONE"]
        self.assertEqual({k: v for k, v in got.items() if k != "unsigned"}, alice.device_keys())
        self.assertEqual(got["unsigned"], {})
        # A device name shows in unsigned.
        code, _ = await self.put(f"{C}/devices/ALICEPHONE", {"display_name": "Phone"}, alice.user)
        self.assertEqual(code, 200)
        got = (await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id]["ALICEPHONE"]
        self.assertEqual(got["unsigned"], {"device_display_name": "Phone"})
        self.assertEqual(body["failures"], {})
        # Asking for one device, or one that does not exist.
        self.assertIn(
            "ALICEPHONE", (await self.query(bob.user, {alice.user_id: ["ALICEPHONE"]}))["device_keys"][alice.user_id]
        )
        self.assertEqual((await self.query(bob.user, {alice.user_id: ["NOPE"]}))["device_keys"][alice.user_id], {})
        # An unknown local user: present, with no devices.
        self.assertEqual((await self.query(bob.user, {"@ghost:test": []}))["device_keys"]["@ghost:test"], {})

    async def test_bad_signature_rejected(self) -> None:
        alice = await self.new_device("alice", upload=False)
        keys = alice.device_keys()
        keys["keys"][f"curve25519:{alice.device_id}"] = "tampered"
        self.assertMatrixError(await self.upload(alice, device_keys=keys), 400, "M_INVALID_SIGNATURE")
        unsigned = {k: v for k, v in alice.device_keys().items() if k != "signatures"}
        self.assertMatrixError(await self.upload(alice, device_keys=unsigned), 400, "M_INVALID_SIGNATURE")
        # Signed by another key than the one in the object.
        other = nacl.signing.SigningKey.generate()
        forged = sign(unsigned, alice.user_id, f"ed25519:{alice.device_id}", other)
        self.assertMatrixError(await self.upload(alice, device_keys=forged), 400, "M_INVALID_SIGNATURE")
        # Nothing was stored.
        self.assertEqual((await self.query(alice.user, {alice.user_id: []}))["device_keys"][alice.user_id], {})

    async def test_user_and_device_must_match(self) -> None:
        alice = await self.new_device("alice", upload=False)
        bob = await self.register("bob")
        wrong_user = FakeDevice(bob)
        wrong_user.device_id = alice.device_id
        self.assertMatrixError(await self.upload(alice, device_keys=wrong_user.device_keys()), 400, "M_INVALID_PARAM")
        wrong_device = FakeDevice(alice.user)
        wrong_device.device_id = "OTHER"
        self.assertMatrixError(await self.upload(alice, device_keys=wrong_device.device_keys()), 400, "M_INVALID_PARAM")

    async def test_bad_input(self) -> None:
        alice = await self.new_device("alice")
        for body in (
            {"device_keys": "x"},
            {"device_keys": {**alice.device_keys(), "keys": []}},
            {"one_time_keys": []},
            {"one_time_keys": {"signed_curve25519:A": 5}},
            {"one_time_keys": {"signed_curve25519:A": {"no": "key"}}},
            {"fallback_keys": "x"},
        ):
            code, resp = await self.upload(alice, **body)
            self.assertEqual(code, 400, (body, resp))
            self.assertIn(resp["errcode"], ("M_BAD_JSON", "M_INVALID_PARAM"))
        self.assertMatrixError(await self.upload(alice, one_time_keys={"nocolon": "k"}), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{C}/keys/upload", {}), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(
            await self.request("POST", f"{C}/keys/upload", raw=b"{nope", token=alice.user), 400, "M_NOT_JSON"
        )
        # A signed one-time key with a bad signature.
        bad = alice.signed_key()
        bad["key"] = "changed"
        self.assertMatrixError(
            await self.upload(alice, one_time_keys={"signed_curve25519:X": bad}), 400, "M_INVALID_SIGNATURE"
        )
        for body in ({"device_keys": "x"}, {"device_keys": {"bad-user": []}}, {}):
            code, resp = await self.post(f"{C}/keys/query", body, alice.user)
            self.assertEqual(code, 400, resp)
        for body in ({"one_time_keys": []}, {"one_time_keys": {alice.user_id: {"D": 1}}}, {}):
            code, resp = await self.post(f"{C}/keys/claim", body, alice.user)
            self.assertEqual(code, 400, resp)

    async def test_otk_counts_and_conflicts(self) -> None:
        alice = await self.new_device("alice")
        otks = alice.one_time_keys(3)
        code, body = await self.upload(alice, one_time_keys=otks)
        self.assertEqual((code, body), (200, {"one_time_key_counts": {"signed_curve25519": 3}}))
        # The same keys again: no change.
        self.assertEqual(
            (await self.upload(alice, one_time_keys=otks))[1]["one_time_key_counts"]["signed_curve25519"], 3
        )
        # A known key ID with a different key is refused.
        key_id = next(iter(otks))
        self.assertMatrixError(
            await self.upload(alice, one_time_keys={key_id: alice.signed_key()}), 400, "M_INVALID_PARAM"
        )
        # Other algorithms are counted separately.
        code, body = await self.upload(alice, one_time_keys={"curve25519:plain1": "abcd"})
        self.assertEqual(body["one_time_key_counts"], {"signed_curve25519": 3, "curve25519": 1})


class ClaimTests(KeysTestCase):
    async def test_one_time_key_claimed_once(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        otks = alice.one_time_keys(2)
        await self.upload(alice, one_time_keys=otks)
        want = {alice.user_id: {alice.device_id: "signed_curve25519"}}
        first = (await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id]
        second = (await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id]
        self.assertEqual(len(first), 1)
        self.assertEqual(len(second), 1)
        self.assertNotEqual(first, second)
        self.assertEqual({**first, **second}, otks)
        # Exhausted, no fallback: nothing for that device.
        self.assertEqual((await self.claim(bob.user, want))["one_time_keys"].get(alice.user_id, {}), {})
        self.assertEqual((await self.upload(alice))[1]["one_time_key_counts"]["signed_curve25519"], 0)

    async def test_concurrent_claims_never_share_a_key(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        await self.upload(alice, one_time_keys=alice.one_time_keys(5))
        want = {alice.user_id: {alice.device_id: "signed_curve25519"}}
        results = await gatherResults([ensureDeferred(self.claim(bob.user, want)) for _ in range(8)])
        got = [k for r in results for k in r["one_time_keys"].get(alice.user_id, {}).get(alice.device_id, {})]
        self.assertEqual(len(got), 5)
        self.assertEqual(len(set(got)), 5)

    async def test_oldest_upload_first(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        old = alice.one_time_keys(1)
        await self.upload(alice, one_time_keys=old)
        await self.upload(alice, one_time_keys=alice.one_time_keys(1))
        want = {alice.user_id: {alice.device_id: "signed_curve25519"}}
        first = (await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id]
        self.assertEqual(first, old)

    async def test_fallback_key_reused_until_replaced(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        fallback = alice.fallback_keys()
        otk = alice.one_time_keys(1)
        await self.upload(alice, one_time_keys=otk, fallback_keys=fallback)
        want = {alice.user_id: {alice.device_id: "signed_curve25519"}}
        sync = await self.sync_keys(alice)
        self.assertEqual(sync["device_unused_fallback_key_types"], ["signed_curve25519"])
        self.assertEqual(sync["device_one_time_keys_count"], {"signed_curve25519": 1})
        # The one-time key first, then the fallback key, again and again.
        self.assertEqual((await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id], otk)
        for _ in range(2):
            got = (await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id]
            self.assertEqual(got, fallback)
        sync = await self.sync_keys(alice)
        self.assertEqual(sync["device_unused_fallback_key_types"], [])
        self.assertEqual(sync["device_one_time_keys_count"].get("signed_curve25519", 0), 0)
        # Re-uploading the same fallback key does not make it unused; a new one does.
        await self.upload(alice, fallback_keys=fallback)
        self.assertEqual((await self.sync_keys(alice))["device_unused_fallback_key_types"], [])
        new_fallback = alice.fallback_keys()
        await self.upload(alice, fallback_keys=new_fallback)
        self.assertEqual((await self.sync_keys(alice))["device_unused_fallback_key_types"], ["signed_curve25519"])
        got = (await self.claim(bob.user, want))["one_time_keys"][alice.user_id][alice.device_id]
        self.assertEqual(got, new_fallback)

    async def test_two_fallback_keys_of_one_algorithm_refused(self) -> None:
        alice = await self.new_device("alice")
        both = {**alice.fallback_keys(), **alice.fallback_keys()}
        self.assertMatrixError(await self.upload(alice, fallback_keys=both), 400, "M_INVALID_PARAM")

    async def test_claim_unknown(self) -> None:
        bob = await self.new_device("bob")
        body = await self.claim(bob.user, {"@ghost:test": {"DEV": "signed_curve25519"}})
        self.assertEqual(body, {"one_time_keys": {}, "failures": {}})

    async def sync_keys(self, device: FakeDevice) -> dict[str, Any]:
        code, body = await self.get(f"{C}/sync?timeout=0", device.user)
        self.assertEqual(code, 200, body)
        return body


class DeviceDeletionTests(KeysTestCase):
    async def test_deleted_device_keys_are_gone(self) -> None:
        from tests.test_account import password_auth

        alice = await self.new_device("alice", "A1")
        bob = await self.new_device("bob")
        await self.upload(alice, one_time_keys=alice.one_time_keys(2))
        path = f"{C}/devices/A1"
        code, resp = await self.request("DELETE", path, {}, token=alice.user)
        self.assertEqual(code, 401, resp)
        code, resp = await self.request(
            "DELETE", path, {"auth": password_auth(alice.user, resp["session"])}, token=alice.user
        )
        self.assertEqual(code, 200, resp)
        self.assertEqual((await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id], {})
        body = await self.claim(bob.user, {alice.user_id: {"A1": "signed_curve25519"}})
        self.assertEqual(body["one_time_keys"], {})
