"""Cross-signing: /keys/device_signing/upload (UIA rules, signature checks) and /keys/signatures/upload,
and what /keys/query shows to whom (end_to_end_encryption.md §Cross-signing)."""

from __future__ import annotations

from typing import Any

import nacl.signing

from tests.harness import C
from tests.test_account import password_auth
from tests.test_keys import FakeDevice, KeysTestCase, public, sign


class CrossSigningKeys:
    """A user's three cross-signing key pairs, and the objects to upload for them."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.master = nacl.signing.SigningKey.generate()
        self.self_signing = nacl.signing.SigningKey.generate()
        self.user_signing = nacl.signing.SigningKey.generate()

    def key_id(self, key: nacl.signing.SigningKey) -> str:
        return f"ed25519:{public(key)}"

    def _key(self, usage: str, key: nacl.signing.SigningKey) -> dict[str, Any]:
        return {"user_id": self.user_id, "usage": [usage], "keys": {self.key_id(key): public(key)}}

    def master_key(self) -> dict[str, Any]:
        return self._key("master", self.master)

    def self_signing_key(self, signer: nacl.signing.SigningKey | None = None) -> dict[str, Any]:
        signer = signer or self.master
        return sign(self._key("self_signing", self.self_signing), self.user_id, self.key_id(signer), signer)

    def user_signing_key(self) -> dict[str, Any]:
        return sign(self._key("user_signing", self.user_signing), self.user_id, self.key_id(self.master), self.master)

    def upload_body(self) -> dict[str, Any]:
        return {
            "master_key": self.master_key(),
            "self_signing_key": self.self_signing_key(),
            "user_signing_key": self.user_signing_key(),
        }


class CrossSigningTestCase(KeysTestCase):
    async def upload_cross_signing(self, device: FakeDevice, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.post(f"{C}/keys/device_signing/upload", body, device.user)

    async def set_up_cross_signing(self, device: FakeDevice) -> CrossSigningKeys:
        keys = CrossSigningKeys(device.user_id)
        self.assertEqual(await self.upload_cross_signing(device, keys.upload_body()), (200, {}))
        return keys

    async def upload_signatures(self, device: FakeDevice, body: dict[str, Any]) -> dict[str, Any]:
        code, resp = await self.post(f"{C}/keys/signatures/upload", body, device.user)
        self.assertEqual(code, 200, resp)
        return resp


class DeviceSigningUploadTests(CrossSigningTestCase):
    async def test_first_upload_needs_no_uia_and_shows_in_query(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        keys = await self.set_up_cross_signing(alice)
        own = await self.query(alice.user, {alice.user_id: []})
        self.assertEqual(own["master_keys"][alice.user_id], keys.master_key())
        self.assertEqual(own["self_signing_keys"][alice.user_id], keys.self_signing_key())
        self.assertEqual(own["user_signing_keys"][alice.user_id], keys.user_signing_key())
        # Another user sees the master and self-signing keys, never the user-signing key.
        theirs = await self.query(bob.user, {alice.user_id: []})
        self.assertEqual(theirs["master_keys"][alice.user_id], keys.master_key())
        self.assertIn(alice.user_id, theirs["self_signing_keys"])
        self.assertNotIn(alice.user_id, theirs.get("user_signing_keys", {}))

    async def test_user_signing_key_change_is_told_to_its_owner_only(self) -> None:
        # Nobody but its owner sees a user-signing key (§Cross-signing), so a new one puts
        # the owner, and nobody else, in device_lists.changed (SyTest "Changing
        # user-signing key notifies local users").
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        room_id = await self.create_room(alice.user, {"preset": "public_chat"})
        code, body = await self.post(f"{C}/join/{room_id}", {}, bob.user)
        self.assertEqual(code, 200, body)
        keys = CrossSigningKeys(alice.user_id)
        first = {"master_key": keys.master_key(), "self_signing_key": keys.self_signing_key()}
        self.assertEqual(await self.upload_cross_signing(alice, first), (200, {}))
        since = {u.user_id: (await self.sync(u.user))["next_batch"] for u in (alice, bob)}
        code, resp = await self.upload_cross_signing(alice, {"user_signing_key": keys.user_signing_key()})
        self.assertEqual(code, 401, resp)
        body = {"user_signing_key": keys.user_signing_key(), "auth": password_auth(alice.user, resp["session"])}
        self.assertEqual(await self.upload_cross_signing(alice, body), (200, {}))
        for device, told in ((alice, True), (bob, False)):
            sync = await self.sync(device.user, since[device.user_id])
            self.assertEqual(alice.user_id in sync["device_lists"]["changed"], told, device.user_id)
            code, changes = await self.get(
                f"{C}/keys/changes?from={since[device.user_id]}&to={sync['next_batch']}", device.user
            )
            self.assertEqual(code, 200, changes)
            self.assertEqual(alice.user_id in changes["changed"], told, device.user_id)
        # A new master key is everyone's news again.
        new = CrossSigningKeys(alice.user_id)
        code, resp = await self.upload_cross_signing(alice, {"master_key": new.master_key()})
        body = {"master_key": new.master_key(), "auth": password_auth(alice.user, resp["session"])}
        self.assertEqual(await self.upload_cross_signing(alice, body), (200, {}))
        sync = await self.sync(bob.user, since[bob.user_id])
        self.assertIn(alice.user_id, sync["device_lists"]["changed"])

    async def test_unstable_paths(self) -> None:
        # The pre-v1.1 (MSC1756) paths that Synapse still serves and SyTest uses.
        alice = await self.new_device("alice")
        keys = CrossSigningKeys(alice.user_id)
        code, resp = await self.post("/_matrix/client/unstable/keys/device_signing/upload", keys.upload_body(), alice.user)
        self.assertEqual((code, resp), (200, {}))
        own = await self.query(alice.user, {alice.user_id: []})
        self.assertEqual(own["master_keys"][alice.user_id], keys.master_key())
        code, resp = await self.post("/_matrix/client/unstable/keys/signatures/upload", {}, alice.user)
        self.assertEqual(code, 200, resp)

    async def test_same_keys_again_need_no_uia_new_ones_do(self) -> None:
        alice = await self.new_device("alice")
        keys = await self.set_up_cross_signing(alice)
        self.assertEqual(await self.upload_cross_signing(alice, keys.upload_body()), (200, {}))
        new = CrossSigningKeys(alice.user_id)
        code, resp = await self.upload_cross_signing(alice, new.upload_body())
        self.assertEqual(code, 401, resp)
        self.assertIn({"stages": ["m.login.password"]}, resp["flows"])
        # Nothing changed yet.
        self.assertEqual(
            (await self.query(alice.user, {alice.user_id: []}))["master_keys"][alice.user_id], keys.master_key()
        )
        body = {**new.upload_body(), "auth": password_auth(alice.user, resp["session"])}
        self.assertEqual(await self.upload_cross_signing(alice, body), (200, {}))
        self.assertEqual(
            (await self.query(alice.user, {alice.user_id: []}))["master_keys"][alice.user_id], new.master_key()
        )

    async def test_signature_checks(self) -> None:
        alice = await self.new_device("alice")
        keys = CrossSigningKeys(alice.user_id)
        # A self-signing key not signed by the master key.
        bad = {**keys.upload_body(), "self_signing_key": keys.self_signing_key(signer=keys.user_signing)}
        self.assertMatrixError(await self.upload_cross_signing(alice, bad), 400, "M_INVALID_SIGNATURE")
        unsigned = {k: v for k, v in keys.self_signing_key().items() if k != "signatures"}
        bad = {**keys.upload_body(), "self_signing_key": unsigned}
        self.assertMatrixError(await self.upload_cross_signing(alice, bad), 400, "M_INVALID_SIGNATURE")
        # No master key at all.
        self.assertMatrixError(
            await self.upload_cross_signing(alice, {"self_signing_key": keys.self_signing_key()}),
            400,
            "M_MISSING_PARAM",
        )
        # Nothing was stored by the failures.
        self.assertEqual((await self.query(alice.user, {alice.user_id: []}))["master_keys"], {})
        # Later uploads of a self-signing key are checked against the stored master key.
        # (Adding a key to an existing master key needs UIA, cross_signing.yaml.)
        await self.upload_cross_signing(alice, {"master_key": keys.master_key()})
        wrong = {"self_signing_key": CrossSigningKeys(alice.user_id).self_signing_key()}
        code, resp = await self.upload_cross_signing(alice, wrong)
        self.assertEqual(code, 401, resp)
        wrong["auth"] = password_auth(alice.user, resp["session"])
        self.assertMatrixError(await self.upload_cross_signing(alice, wrong), 400, "M_INVALID_SIGNATURE")
        body = {"self_signing_key": keys.self_signing_key()}
        code, resp = await self.upload_cross_signing(alice, body)
        body["auth"] = password_auth(alice.user, resp["session"])
        self.assertEqual(await self.upload_cross_signing(alice, body), (200, {}))

    async def test_bad_input(self) -> None:
        alice = await self.new_device("alice")
        keys = CrossSigningKeys(alice.user_id)
        for master in (
            "x",
            {**keys.master_key(), "user_id": "@bob:test"},
            {**keys.master_key(), "usage": ["self_signing"]},
            {**keys.master_key(), "keys": {}},
            {**keys.master_key(), "keys": {"ed25519:abc": "def"}},
        ):
            code, resp = await self.upload_cross_signing(alice, {"master_key": master})
            self.assertEqual(code, 400, (master, resp))
        # A key whose public part is a device ID of the user.
        user = await self.register("carol", device_id=public(keys.master))
        carol = FakeDevice(user)
        carol_keys = CrossSigningKeys(carol.user_id)
        carol_keys.master = keys.master
        self.assertMatrixError(
            await self.upload_cross_signing(carol, {"master_key": carol_keys.master_key()}), 403, "M_FORBIDDEN"
        )


class SignaturesUploadTests(CrossSigningTestCase):
    async def test_self_signing_a_device_and_visibility(self) -> None:
        alice = await self.new_device("alice", "A1")
        bob = await self.new_device("bob", "B1")
        a_keys = await self.set_up_cross_signing(alice)
        b_keys = await self.set_up_cross_signing(bob)

        # Alice signs her device with her self-signing key.
        signed_device = sign(
            alice.device_keys(), alice.user_id, a_keys.key_id(a_keys.self_signing), a_keys.self_signing
        )
        self.assertEqual(await self.upload_signatures(alice, {alice.user_id: {"A1": signed_device}}), {"failures": {}})
        for viewer in (alice, bob):
            got = (await self.query(viewer.user, {alice.user_id: []}))["device_keys"][alice.user_id]["A1"]
            self.assertIn(a_keys.key_id(a_keys.self_signing), got["signatures"][alice.user_id])

        # Alice's device signs her master key.
        signed_master = sign(a_keys.master_key(), alice.user_id, "ed25519:A1", alice.key)
        self.assertEqual(
            await self.upload_signatures(alice, {alice.user_id: {public(a_keys.master): signed_master}}),
            {"failures": {}},
        )
        got = (await self.query(bob.user, {alice.user_id: []}))["master_keys"][alice.user_id]
        self.assertIn("ed25519:A1", got["signatures"][alice.user_id])

        # Alice signs Bob's master key with her user-signing key: only Alice sees it.
        bob_master = b_keys.master_key()
        signed_bob = sign(bob_master, alice.user_id, a_keys.key_id(a_keys.user_signing), a_keys.user_signing)
        self.assertEqual(
            await self.upload_signatures(alice, {bob.user_id: {public(b_keys.master): signed_bob}}), {"failures": {}}
        )
        seen_by_alice = (await self.query(alice.user, {bob.user_id: []}))["master_keys"][bob.user_id]
        self.assertIn(a_keys.key_id(a_keys.user_signing), seen_by_alice["signatures"][alice.user_id])
        seen_by_bob = (await self.query(bob.user, {bob.user_id: []}))["master_keys"][bob.user_id]
        self.assertNotIn(alice.user_id, seen_by_bob.get("signatures", {}))
        carol = await self.new_device("carol")
        seen_by_carol = (await self.query(carol.user, {bob.user_id: []}))["master_keys"][bob.user_id]
        self.assertNotIn(alice.user_id, seen_by_carol.get("signatures", {}))

    async def test_bad_signatures_are_failures(self) -> None:
        alice = await self.new_device("alice", "A1")
        bob = await self.new_device("bob", "B1")
        a_keys = await self.set_up_cross_signing(alice)
        b_keys = await self.set_up_cross_signing(bob)
        wrong = nacl.signing.SigningKey.generate()
        # Claims to be by the self-signing key, signed by something else.
        forged = sign(alice.device_keys(), alice.user_id, a_keys.key_id(a_keys.self_signing), wrong)
        # Signed correctly, but the object differs from the stored device keys.
        changed = alice.device_keys()
        changed["algorithms"] = ["x"]
        changed = sign(changed, alice.user_id, a_keys.key_id(a_keys.self_signing), a_keys.self_signing)
        # Alice may not sign Bob's device.
        bob_device = sign(bob.device_keys(), alice.user_id, a_keys.key_id(a_keys.self_signing), a_keys.self_signing)
        resp = await self.upload_signatures(alice, {alice.user_id: {"A1": forged}, bob.user_id: {"B1": bob_device}})
        self.assertEqual(resp["failures"][alice.user_id]["A1"]["errcode"], "M_INVALID_SIGNATURE")
        self.assertIn("B1", resp["failures"][bob.user_id])
        resp = await self.upload_signatures(alice, {alice.user_id: {"A1": changed}})
        self.assertEqual(resp["failures"][alice.user_id]["A1"]["errcode"], "M_INVALID_SIGNATURE")
        # Nothing from the failures is visible.
        got = (await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id]["A1"]
        self.assertEqual(set(got["signatures"][alice.user_id]), {"ed25519:A1"})
        # A user-signing signature by the wrong key.
        forged_bob = sign(b_keys.master_key(), alice.user_id, a_keys.key_id(a_keys.user_signing), wrong)
        resp = await self.upload_signatures(alice, {bob.user_id: {public(b_keys.master): forged_bob}})
        self.assertEqual(resp["failures"][bob.user_id][public(b_keys.master)]["errcode"], "M_INVALID_SIGNATURE")
        # Unknown keys.
        resp = await self.upload_signatures(alice, {bob.user_id: {"NOSUCHKEY": forged_bob}})
        self.assertIn("NOSUCHKEY", resp["failures"][bob.user_id])
        code, resp = await self.post(f"{C}/keys/signatures/upload", {"not-a-user": {}}, alice.user)
        self.assertEqual(code, 400, resp)
