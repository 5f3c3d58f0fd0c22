"""Server signing keys: generation, the key file, and verify-key encoding.

Keys are ed25519 (appendices §Signing Details: the only supported signing
algorithm). Key objects are ``signedjson``/``pynacl`` keys carrying ``alg``
and ``version`` attributes, so the key ID is ``f"{alg}:{version}"``.

The key file uses the common one-line-per-key format::

    ed25519 <version> <unpadded-base64 32-byte seed>
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Iterable

import nacl.signing
import signedjson.key
from signedjson.types import SigningKey, VerifyKey

from mxserver.crypto.signing import decode_base64, encode_base64

ED25519 = "ed25519"

_VERSION_ALPHABET = string.ascii_letters + string.digits


def generate_key_version(length: int = 8) -> str:
    """A random alphanumeric key version (the part after ``ed25519:``)."""
    # Key IDs appear in URLs (/_matrix/key/v2/server/{keyId} historically) and
    # in JSON keys; alphanumerics avoid any escaping questions.
    return "".join(secrets.choice(_VERSION_ALPHABET) for _ in range(length))


def generate_signing_key(version: str | None = None) -> SigningKey:
    """A fresh ed25519 signing key with ID ``ed25519:<version>``."""
    return signedjson.key.generate_signing_key(version or generate_key_version())


def signing_key_from_seed(seed: bytes, version: str) -> SigningKey:
    """Rebuild a signing key from its 32-byte seed (e.g. the spec test vectors)."""
    key = nacl.signing.SigningKey(seed)
    key.version = version  # type: ignore[attr-defined]
    key.alg = ED25519  # type: ignore[attr-defined]
    return key  # type: ignore[return-value]


def key_id(key: SigningKey | VerifyKey) -> str:
    """The signing key identifier, ``<algorithm>:<version>`` (appendices §Signing Details)."""
    return f"{key.alg}:{key.version}"


def get_verify_key(signing_key: SigningKey) -> VerifyKey:
    """The public half of ``signing_key``, with the same key ID."""
    return signedjson.key.get_verify_key(signing_key)


def verify_key_base64(key: SigningKey | VerifyKey) -> str:
    """Unpadded base64 of the public key, as published in ``verify_keys``."""
    if isinstance(key, nacl.signing.SigningKey):
        key = get_verify_key(key)  # type: ignore[arg-type]
    return encode_base64(bytes(key))


def decode_verify_key(key_id_: str, key_base64: str) -> VerifyKey:
    """A verify key from its ID and unpadded base64 (``/_matrix/key/v2/server``).

    Raises ValueError for unsupported algorithms or malformed keys.
    """
    alg, sep, version = key_id_.partition(":")
    if not sep or alg != ED25519:
        raise ValueError(f"unsupported key algorithm in {key_id_!r}")
    raw = decode_base64(key_base64)
    if len(raw) != 32:
        raise ValueError("ed25519 verify keys are 32 bytes")
    return signedjson.key.decode_verify_key_bytes(key_id_, raw)


def read_signing_keys(lines: Iterable[str]) -> list[SigningKey]:
    """Parse key-file lines; blank lines and ``#`` comments are skipped."""
    keys = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"line {n}: expected '<algorithm> <version> <seed>'")
        alg, version, seed_b64 = parts
        if alg != ED25519:
            raise ValueError(f"line {n}: unsupported algorithm {alg!r}")
        seed = decode_base64(seed_b64)
        if len(seed) != 32:
            raise ValueError(f"line {n}: ed25519 seeds are 32 bytes")
        keys.append(signing_key_from_seed(seed, version))
    return keys


def format_signing_keys(keys: Iterable[SigningKey]) -> str:
    """The key-file text for ``keys``."""
    return "".join(f"{k.alg} {k.version} {encode_base64(bytes(k))}\n" for k in keys)


def read_signing_key_file(path: str) -> list[SigningKey]:
    """All signing keys in the key file at ``path``."""
    with open(path, encoding="ascii") as f:
        return read_signing_keys(f)


def write_signing_key_file(path: str, keys: Iterable[SigningKey]) -> None:
    """Write ``keys`` to ``path`` with mode 0600, atomically.

    The seed is the server's identity: it must never be readable by other
    users, not even for an instant, so the temporary file is created 0600
    before any byte is written and then renamed over ``path``.
    """
    text = format_signing_keys(keys)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:  # closes fd on any error
            os.fchmod(f.fileno(), 0o600)  # a stale tmp file must not keep a wider mode
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_or_generate_signing_key(path: str) -> SigningKey:
    """The first key in ``path``; generate and save one if the file is absent."""
    if os.path.exists(path):
        keys = read_signing_key_file(path)
        if not keys:
            raise ValueError(f"no signing keys in {path}")
        return keys[0]
    key = generate_signing_key()
    write_signing_key_file(path, [key])
    return key
