"""Signing JSON objects and checking their signatures (appendices §Signing JSON).

Also the unpadded base64 helpers every hash, key and signature uses
(appendices §Unpadded Base64).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import nacl.exceptions
from signedjson.types import SigningKey, VerifyKey

from mxserver.crypto.canonical import encode_canonical_json

ED25519 = "ed25519"


class SignatureError(Exception):
    """A required signature is missing, malformed, or does not verify."""


# -- unpadded base64 (appendices §Unpadded Base64) --------------------------


def encode_base64(data: bytes, urlsafe: bool = False) -> str:
    """Unpadded base64: standard alphabet, or RFC 4648 §5 URL-safe."""
    enc = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return enc.rstrip(b"=").decode("ascii")


def decode_base64(data: str | bytes, urlsafe: bool = False) -> bytes:
    """Decode base64 with or without padding; raise ValueError if malformed.

    appendices §Unpadded Base64: implementations SHOULD accept input with or
    without padding. Anything else (bad characters, impossible length) is an
    error rather than silently ignored.
    """
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("non-ASCII character in base64") from None
    data = data.rstrip(b"=")
    if len(data) % 4 == 1:
        raise ValueError("invalid base64 length")
    data += b"=" * (-len(data) % 4)
    if urlsafe:
        data = data.translate(_URLSAFE_TO_STD)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as e:
        raise ValueError(f"invalid base64: {e}") from None


_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")


# -- signing (appendices §Signing Details) ----------------------------------


def signing_bytes(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON without ``signatures``/``unsigned``."""
    if "signatures" in obj or "unsigned" in obj:
        obj = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return encode_canonical_json(obj)


def sign_bytes(data: bytes, signing_key: SigningKey) -> str:
    """The unpadded-base64 ed25519 signature of ``data``."""
    return encode_base64(signing_key.sign(data).signature)


def sign_json(obj: dict[str, Any], server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """Add ``server_name``'s signature to ``obj`` (in place) and return it.

    Existing signatures (ours under other keys, or other servers') are kept:
    they are not covered by the signature (appendices §Signing Details).
    """
    sig = sign_bytes(signing_bytes(obj), signing_key)
    key_id = f"{signing_key.alg}:{signing_key.version}"
    signatures = obj.get("signatures")
    if not isinstance(signatures, dict):
        signatures = {}
    else:
        signatures = {k: dict(v) if isinstance(v, dict) else v for k, v in signatures.items()}
    entry = signatures.get(server_name)
    if not isinstance(entry, dict):
        entry = signatures[server_name] = {}
    entry[key_id] = sig
    obj["signatures"] = signatures
    return obj


def signature_ids(obj: Mapping[str, Any], server_name: str) -> list[str]:
    """Key IDs of ``server_name``'s signatures whose algorithm we understand.

    appendices §Checking for a Signature step 2: drop unknown algorithms.
    """
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        return []
    entry = sigs.get(server_name)
    if not isinstance(entry, dict):
        return []
    return [k for k in entry if isinstance(k, str) and k.startswith(ED25519 + ":")]


def verify_signed_json(
    obj: Mapping[str, Any],
    server_name: str,
    verify_key: VerifyKey | Mapping[str, VerifyKey],
    *,
    _data: bytes | None = None,
) -> None:
    """Check ``server_name`` signed ``obj``; raise :class:`SignatureError` if not.

    ``verify_key`` is one key (its ``alg:version`` names the signature to
    check) or a mapping of key ID to key, in which case every signature from
    a known key is checked and at least one must exist
    (appendices §Checking for a Signature; server-server-api §Validating
    hashes and signatures: unknown keys are skipped).
    """
    sigs = obj.get("signatures")
    entry = sigs.get(server_name) if isinstance(sigs, dict) else None
    if not isinstance(entry, dict):
        raise SignatureError(f"no signatures from {server_name}")
    if isinstance(verify_key, Mapping):
        keys = {kid: k for kid, k in verify_key.items() if kid in entry and kid.startswith(ED25519 + ":")}
    else:
        kid = f"{verify_key.alg}:{verify_key.version}"
        keys = {kid: verify_key} if kid in entry else {}
    if not keys:
        raise SignatureError(f"no signature from {server_name} with a known key")
    data = _data if _data is not None else signing_bytes(obj)
    for kid, key in keys.items():
        sig_b64 = entry[kid]
        if not isinstance(sig_b64, str):
            raise SignatureError(f"signature {server_name} {kid} is not a string")
        try:
            sig = decode_base64(sig_b64)
        except ValueError:
            raise SignatureError(f"signature {server_name} {kid} is not valid base64") from None
        try:
            key.verify(data, sig)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            # ValueError/TypeError: wrong signature length and similar.
            raise SignatureError(f"bad signature from {server_name} with {kid}") from None
