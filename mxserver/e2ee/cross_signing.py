"""Cross-signing (end_to_end_encryption.md §Cross-signing; cross_signing.yaml).

The Homeserver's ``cross_signing``: uploading a user's master, self-signing and
user-signing keys, and uploading signatures of keys. Signatures accepted by
``/keys/signatures/upload`` are exactly the kinds /keys/query may show:

- on one of the user's own devices, by the user's self-signing key;
- on the user's own master key, by one of the user's devices;
- on another user's master key, by the user's user-signing key.

Each is verified against the signing key before it is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mxserver.e2ee.validation import (
    cross_signing_public_key,
    invalid_signature,
    parse_cross_signing_key,
    strip_signatures,
    verify_signature,
)
from mxserver.errors import MatrixError, bad_json, forbidden, missing_param
from mxserver.ids import UserID
from mxserver.storage.e2ee_keys import E2eKeyStore

if TYPE_CHECKING:
    from mxserver.accounts.uia import UIARequest, UserInteractiveAuth
    from mxserver.e2ee.device_lists import DeviceListHandler

JsonDict = dict[str, Any]

_FIELDS = (("master", "master_key"), ("self_signing", "self_signing_key"), ("user_signing", "user_signing_key"))


class CrossSigningHandler:
    """/keys/device_signing/upload and /keys/signatures/upload."""

    def __init__(
        self, server_name: str, key_store: E2eKeyStore, device_lists: DeviceListHandler, uia: UserInteractiveAuth
    ) -> None:
        self.server_name = server_name
        self.store = key_store
        self.device_lists = device_lists
        self._uia = uia

    async def upload_keys(self, requester: Any, body: JsonDict, uia_request: UIARequest) -> None:
        """POST /keys/device_signing/upload."""
        user_id = requester.user_id
        new: dict[str, tuple[str, str, JsonDict]] = {}  # key_type -> (key id, public key, key)
        for key_type, field in _FIELDS:
            if body.get(field) is not None:
                key_id, public = parse_cross_signing_key(body[field], user_id, key_type, field)
                new[key_type] = (key_id, public, body[field])
        existing = (await self.store.get_cross_signing_keys([user_id])).get(user_id, {})

        # cross_signing.yaml: no UIA for the first master key, nor for re-uploading the same keys;
        # nor for an application service (spec v1.17 §Cross-signing: it "MUST NOT require" UIA).
        replacing = "master" in existing and not all(existing.get(t) == k for t, (_, _, k) in new.items())
        if replacing and getattr(requester, "app_service", None) is None:
            await self._uia.authenticate(uia_request, self._uia.reauth_flows(), user_id)
        if not new:
            return

        if "master" in new:
            master_id, master_public = new["master"][0], new["master"][1]
        elif "master" in existing:
            found = cross_signing_public_key(existing["master"])
            assert found is not None
            master_id, master_public = found
        else:
            raise missing_param("No master signing key: upload 'master_key' first")
        for key_type in ("self_signing", "user_signing"):
            if key_type in new:
                verify_signature(new[key_type][2], user_id, master_id, master_public, f"{key_type}_key")

        # §Cross-signing: a cross-signing key ID must never collide with a device ID.
        names = (await self.store.get_local_device_names([user_id])).get(user_id, {})
        for _, public, _ in new.values():
            if public in names:
                raise forbidden("The public key of a cross-signing key is one of your device IDs")

        changed = {t: (p, k) for t, (_, p, k) in new.items() if existing.get(t) != k}
        if not changed:
            return
        stream_id, prev = await self.store.set_cross_signing_keys(user_id, changed)
        if set(changed) == {"user_signing"}:
            # Only its owner sees a user-signing key (§Cross-signing): the change is theirs
            # alone (the store marks it so), and no server hears of it; Synapse likewise.
            await self.device_lists.local_changes(user_id, [])
        else:
            await self.device_lists.local_changes(user_id, [("", stream_id, prev)])

    async def upload_signatures(self, requester: Any, body: JsonDict) -> JsonDict:
        """POST /keys/signatures/upload: ``{"failures": {user: {key id: error}}}``."""
        signer = requester.user_id
        failures: dict[str, dict[str, JsonDict]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        changed: list[tuple[str, str]] = []
        targets = [u for u in body if isinstance(u, str)]
        for user_id, by_key in body.items():
            if not UserID.is_valid(user_id) or not isinstance(by_key, dict):
                raise bad_json("The body must map user IDs to objects of key ID to signed key")
        users = set(targets) | {signer}
        cross = await self.store.get_cross_signing_keys(users)
        mine = cross.get(signer, {})
        devices = (await self.store.get_device_keys([(signer, None)])).get(signer, {})
        for user_id, by_key in body.items():
            for key_id, signed in by_key.items():
                try:
                    got = self._check_one(signer, user_id, key_id, signed, mine, cross.get(user_id, {}), devices)
                except MatrixError as e:
                    failures.setdefault(user_id, {})[key_id] = e.to_json()
                    continue
                rows += got
                # A signature on a device or on the signer's own master key changes what others see.
                changed.append((user_id, key_id if user_id == signer and key_id in devices else ""))
        if rows:
            results = await self.store.add_signatures(rows, changed)
            by_user: dict[str, list[tuple[str, int, int | None]]] = {}
            for user_id, device_id, stream_id, prev in results:
                by_user.setdefault(user_id, []).append((device_id, stream_id, prev))
            for user_id, changes in by_user.items():
                if UserID.parse(user_id).server_name == self.server_name:
                    await self.device_lists.local_changes(user_id, changes)
        return {"failures": failures}

    def _check_one(
        self,
        signer: str,
        user_id: str,
        key_id: str,
        signed: Any,
        mine: dict[str, JsonDict],
        theirs: dict[str, JsonDict],
        my_devices: dict[str, tuple[JsonDict | None, str | None]],
    ) -> list[tuple[str, str, str, str, str]]:
        """The signature rows ``signed`` brings, verified; raises MatrixError for the failures map."""
        if not isinstance(signed, dict):
            raise bad_json("A signed key must be an object")
        sigs = signed.get("signatures", {})
        if not isinstance(sigs, dict) or not isinstance(sigs.get(signer), dict) or not sigs[signer]:
            raise invalid_signature(f"No signature by {signer}")
        new_sigs = sigs[signer]

        if user_id == signer and key_id in my_devices:
            # A device of mine, signed by my self-signing key.
            stored = my_devices[key_id][0]
            signing = mine.get("self_signing")
            if stored is None:
                raise MatrixError(404, "M_NOT_FOUND", f"Device {key_id} has no keys")
            if signing is None:
                raise missing_param("No self-signing key to verify the signature with")
        else:
            master = (mine if user_id == signer else theirs).get("master")
            if master is None or cross_signing_public_key(master) is None:
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown key {key_id} of {user_id}")
            if cross_signing_public_key(master)[1] != key_id:  # type: ignore[index]
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown key {key_id} of {user_id}")
            stored = master
            if user_id == signer:
                signing = None  # my master key, signed by one of my devices (checked below)
            else:
                signing = mine.get("user_signing")
                if signing is None:
                    raise missing_param("No user-signing key to verify the signature with")

        # cross_signing.yaml: the object must match the key, apart from its signatures.
        if strip_signatures(signed) != strip_signatures(stored):
            raise invalid_signature("The signed object does not match the stored key")

        rows = []
        for sig_key_id, sig in new_sigs.items():
            if signing is not None:
                found = cross_signing_public_key(signing)
                if found is None or found[0] != sig_key_id:
                    continue  # not a signature by the signing key this object needs
                verify_signature(signed, signer, found[0], found[1], f"{user_id} {key_id}")
            else:
                device_id = sig_key_id.partition(":")[2]
                device = my_devices.get(device_id, (None, None))[0]
                public = (device or {}).get("keys", {}).get(sig_key_id)
                if not sig_key_id.startswith("ed25519:") or public is None:
                    continue
                verify_signature(signed, signer, sig_key_id, public, f"{user_id} {key_id}")
            rows.append((user_id, key_id, signer, sig_key_id, sig))
        if not rows:
            raise invalid_signature("No signature by a key allowed to sign this object")
        return rows
