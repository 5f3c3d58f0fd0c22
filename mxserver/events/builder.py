"""Building, hashing and signing new local events.

This is on the hot path of every message send, so it does the minimum work:
the full event is canonically encoded once (for the content hash) and the
redacted event once (its bytes are both what gets signed and, for v3+, what
the event ID hashes -- server-server-api §Calculating the reference hash and
§Adding hashes and signatures are over the same redacted, signature-free
object). The final size is derived arithmetically instead of re-encoding.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Mapping, Sequence
from typing import Any

from signedjson.types import SigningKey

from mxserver.crypto.canonical import encode_canonical_json
from mxserver.crypto.signing import encode_base64
from mxserver.events.hashing import event_id_from_reference_hash
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.validation import validate_pdu
from mxserver.events.versions import EventFormat, RedactionRules, RoomVersion

_ALNUM = string.ascii_letters + string.digits


def generate_v1_event_id(server_name: str) -> str:
    """``$opaque_id:server_name`` for room versions 1 and 2 (fragment ``v1-event-ids``)."""
    # 18 alphanumerics ~ 107 bits: "locally unique" with a wide margin.
    return "$" + "".join(secrets.choice(_ALNUM) for _ in range(18)) + ":" + server_name


def _added_key_size(key: str, value: Any) -> int:
    # Adding a key to a non-empty canonical JSON object adds exactly
    # `,"key":<value>`; key order does not change the length.
    return 1 + len(encode_canonical_json(key)) + 1 + len(encode_canonical_json(value))


def build_event(
    room_version: RoomVersion,
    *,
    type: str,
    sender: str,
    content: Mapping[str, Any],
    room_id: str | None,
    state_key: str | None = None,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    redacts: str | None = None,
    unsigned: Mapping[str, Any] | None = None,
    server_name: str,
    signing_key: SigningKey,
    ref_hashes: Mapping[str, Mapping[str, str]] | None = None,
    event_id: str | None = None,
    validate: bool = True,
) -> Event:
    """Build a signed PDU in ``room_version``'s format and wrap it in an :class:`Event`.

    * v1/v2 (pdu_v1.yaml): an ``event_id`` of ``$random:server_name`` is
      generated (or ``event_id`` is used), and references are
      ``[event_id, hashes]`` pairs; ``ref_hashes`` maps an event ID to its
      ``{"sha256": <reference hash>}`` (see
      :func:`mxserver.events.hashing.reference_hashes`). Unknown IDs get
      ``{}`` -- receivers do not check these hashes.
    * v3+: references are bare event IDs, and the event ID is the reference hash.
    * v11+ (v11 §Moving the redacts property): ``redacts`` goes in ``content``;
      before that it is a top-level key.
    * v12: the ``m.room.create`` event has no ``room_id`` (its ID defines the room).

    ``content`` is shallow-copied; nested values are shared, not copied.
    Raises :class:`~mxserver.events.validation.EventFormatError` if the
    result is not a valid PDU (e.g. larger than 64 KiB) unless ``validate``
    is false, and ValueError for inconsistent arguments.
    """
    fmt = room_version.event_format
    is_v12_create = fmt is EventFormat.V12 and type == "m.room.create"
    if is_v12_create:
        if room_id is not None:
            raise ValueError("a room v12 m.room.create event has no room_id")
    elif room_id is None:
        raise ValueError("room_id is required")

    content = dict(content)
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": content,
        "depth": depth,
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redaction is RedactionRules.V11:
            content["redacts"] = redacts
        else:
            pdu["redacts"] = redacts

    if fmt is EventFormat.V1:
        if event_id is None:
            event_id = generate_v1_event_id(server_name)
        pdu["event_id"] = event_id
        hashes_for = ref_hashes or {}
        pdu["prev_events"] = [[e, dict(hashes_for.get(e, {}))] for e in prev_event_ids]
        pdu["auth_events"] = [[e, dict(hashes_for.get(e, {}))] for e in auth_event_ids]
    else:
        if event_id is not None:
            raise ValueError("event IDs are derived from the event hash in this room version")
        pdu["prev_events"] = list(prev_event_ids)
        pdu["auth_events"] = list(auth_event_ids)

    # Content hash: over everything present so far (no hashes/signatures/unsigned yet).
    full_bytes = encode_canonical_json(pdu)
    hashes = {"sha256": encode_base64(hashlib.sha256(full_bytes).digest())}
    pdu["hashes"] = hashes

    # Signing input == reference hash input: the redacted event minus
    # signatures and unsigned (neither is present yet).
    signed_bytes = encode_canonical_json(redact_pdu(pdu, room_version))
    signature = encode_base64(signing_key.sign(signed_bytes).signature)
    signatures = {server_name: {f"{signing_key.alg}:{signing_key.version}": signature}}
    pdu["signatures"] = signatures
    if fmt is not EventFormat.V1:
        event_id = event_id_from_reference_hash(hashlib.sha256(signed_bytes).digest(), room_version)

    size = len(full_bytes) + _added_key_size("hashes", hashes) + _added_key_size("signatures", signatures)
    if unsigned is not None:
        pdu["unsigned"] = dict(unsigned)
        size += _added_key_size("unsigned", pdu["unsigned"])

    if validate:
        validate_pdu(pdu, room_version, size=size)
    return Event(pdu, room_version, event_id=event_id)
