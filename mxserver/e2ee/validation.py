"""Checks on the key objects clients upload (end_to_end_encryption.md, keys.yaml, cross_signing.yaml).

Every check raises a :class:`MatrixError` naming what is wrong; signature
checks go through :func:`mxserver.crypto.signing.verify_signed_json`, with the
user ID in the place of a server name (appendices §Signing JSON).
"""

from __future__ import annotations

from typing import Any

from mxserver.crypto.keys import decode_verify_key
from mxserver.crypto.signing import SignatureError, verify_signed_json
from mxserver.errors import MatrixError, bad_json, invalid_param

JsonDict = dict[str, Any]

#: bounds on what one upload may hold (keeps a request's transaction small)
MAX_KEYS_PER_UPLOAD = 500
MAX_ID_LENGTH = 255

CROSS_SIGNING_USAGES = {"master": "master", "self_signing": "self_signing", "user_signing": "user_signing"}


def invalid_signature(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_SIGNATURE", msg)


def _str_map(obj: Any, what: str) -> dict[str, str]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise bad_json(f"'{what}' must be an object of strings")
    return obj


def _signatures(obj: JsonDict, what: str) -> dict[str, dict[str, str]]:
    sigs = obj.get("signatures", {})
    if not isinstance(sigs, dict):
        raise bad_json(f"'{what}.signatures' must be an object")
    for signer, by_key in sigs.items():
        _str_map(by_key, f"{what}.signatures.{signer}")
    return sigs


def verify_signature(obj: JsonDict, user_id: str, key_id: str, public_key: str, what: str) -> None:
    """Check ``user_id``'s signature on ``obj`` with ``key_id`` (``ed25519:...``); M_INVALID_SIGNATURE if not."""
    try:
        verify_key = decode_verify_key(key_id, public_key)
    except ValueError:
        raise invalid_signature(f"{what}: the signing key {key_id} is not a valid ed25519 key") from None
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict) or not isinstance(sigs.get(user_id), dict) or key_id not in sigs[user_id]:
        raise invalid_signature(f"{what} is not signed by {user_id} with {key_id}")
    try:
        verify_signed_json(obj, user_id, verify_key)
    except SignatureError:
        raise invalid_signature(f"{what} has an invalid signature from {user_id} with {key_id}") from None


def check_device_keys(device_keys: Any, user_id: str, device_id: str) -> JsonDict:
    """device_keys.yaml: the owner's IDs, algorithms, keys, and a valid self-signature."""
    if not isinstance(device_keys, dict):
        raise bad_json("'device_keys' must be an object")
    if device_keys.get("user_id") != user_id:
        raise invalid_param("'device_keys.user_id' must be the user uploading the keys")
    if device_keys.get("device_id") != device_id:
        raise invalid_param("'device_keys.device_id' must be the device uploading the keys")
    algorithms = device_keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_json("'device_keys.algorithms' must be an array of strings")
    keys = _str_map(device_keys.get("keys"), "device_keys.keys")
    _signatures(device_keys, "device_keys")
    ed_key_id = f"ed25519:{device_id}"
    if ed_key_id not in keys:
        raise invalid_param(f"'device_keys.keys' must hold the device's {ed_key_id} key")
    # end_to_end_encryption.md §Uploading keys: "must be signed by that key".
    verify_signature(device_keys, user_id, ed_key_id, keys[ed_key_id], "device_keys")
    return device_keys


def parse_key_map(
    obj: Any, what: str, ed25519_key: str | None, user_id: str, device_id: str
) -> dict[tuple[str, str], Any]:
    """``one_time_keys``/``fallback_keys``: ``{"<algorithm>:<key_id>": key}`` → ``{(algorithm, key_id): key}``.

    A key is a string (curve25519) or an object with ``key`` (signed_curve25519);
    a signed key object is checked against the device's ed25519 key when it is known.
    """
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise bad_json(f"'{what}' must be an object")
    if len(obj) > MAX_KEYS_PER_UPLOAD:
        raise bad_json(f"At most {MAX_KEYS_PER_UPLOAD} keys in '{what}'")
    out: dict[tuple[str, str], Any] = {}
    for full_id, key in obj.items():
        algorithm, sep, key_id = full_id.partition(":")
        if not sep or not algorithm or not key_id or len(full_id) > MAX_ID_LENGTH:
            raise invalid_param(f"Key ID {full_id!r} in '{what}' must be '<algorithm>:<key_id>'")
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise bad_json(f"'{what}.{full_id}.key' must be a string")
            _signatures(key, f"{what}.{full_id}")
            signer = f"ed25519:{device_id}"
            if ed25519_key is not None and signer in key.get("signatures", {}).get(user_id, {}):
                verify_signature(key, user_id, signer, ed25519_key, f"{what}.{full_id}")
        elif not isinstance(key, str):
            raise bad_json(f"'{what}.{full_id}' must be a string or an object")
        out[(algorithm, key_id)] = key
    return out


def parse_cross_signing_key(obj: Any, user_id: str, usage: str, what: str) -> tuple[str, str]:
    """cross_signing_key.yaml: owner, usage, exactly one ed25519 key; ``(key id, public key)``."""
    if not isinstance(obj, dict):
        raise bad_json(f"'{what}' must be an object")
    if obj.get("user_id") != user_id:
        raise invalid_param(f"'{what}.user_id' must be the user uploading the key")
    usages = obj.get("usage")
    if not isinstance(usages, list) or not all(isinstance(u, str) for u in usages) or usage not in usages:
        raise invalid_param(f"'{what}.usage' must include {usage!r}")
    keys = _str_map(obj.get("keys"), f"{what}.keys")
    if len(keys) != 1:
        raise invalid_param(f"'{what}.keys' must hold exactly one key")
    ((key_id, public_key),) = keys.items()
    if not key_id.startswith("ed25519:") or key_id[len("ed25519:") :] != public_key:
        raise invalid_param(f"'{what}.keys' must be 'ed25519:<public key>': <public key>")
    try:
        decode_verify_key(key_id, public_key)
    except ValueError:
        raise invalid_param(f"'{what}' holds an invalid ed25519 key") from None
    _signatures(obj, what)
    return key_id, public_key


def cross_signing_public_key(obj: JsonDict) -> tuple[str, str] | None:
    """``(key id, public key)`` of a stored or remote cross-signing key; None if it has no
    single string key (another server's answer may hold anything)."""
    keys = obj.get("keys")
    if isinstance(keys, dict) and len(keys) == 1:
        ((key_id, public_key),) = keys.items()
        if isinstance(key_id, str) and isinstance(public_key, str):
            return key_id, public_key
    return None


def strip_signatures(obj: JsonDict) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def remote_device_keys(keys: Any, user_id: str, device_id: str) -> JsonDict | None:
    """A remote server's key object for its ``user_id``'s ``device_id``, or None if unusable.

    The server speaks for its own users, and clients verify each device key object's
    self-signature before trusting it (end_to_end_encryption.md §Device keys), so an
    object is relayed as that server gave it, even partial: the spec is silent, and
    Synapse keeps it (SyTest's fake servers send ``{"device_keys": {}}``). Only an
    object that is no object, or names another user or device, is dropped: relayed, it
    would pass off keys under an identity they do not claim.
    """
    if not isinstance(keys, dict):
        return None
    if keys.get("user_id", user_id) != user_id or keys.get("device_id", device_id) != device_id:
        return None
    return keys
