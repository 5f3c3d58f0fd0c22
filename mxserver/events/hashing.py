"""Event hashes and the identifiers derived from them.

* content hash -- server-server-api §Calculating the content hash: covers the
  whole unredacted event, stored in ``hashes.sha256``.
* reference hash -- §Calculating the reference hash: covers the redacted
  event (including its content hash); v3+ event IDs and v12 room IDs are it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from mxserver.crypto.canonical import encode_canonical_json
from mxserver.crypto.signing import decode_base64, encode_base64
from mxserver.events.redaction import redact_pdu
from mxserver.events.versions import EventFormat, RoomVersion

# Keys the content hash never covers: `unsigned` changes in transit,
# `signatures` depend on `hashes`, and `hashes` cannot contain itself.
_NOT_IN_CONTENT_HASH = ("unsigned", "signatures", "hashes")


class EventIdError(ValueError):
    """The event ID cannot be determined (e.g. a v1 PDU without ``event_id``)."""


def content_hash_bytes(pdu: Mapping[str, Any]) -> bytes:
    """The canonical JSON the content hash is computed over."""
    return encode_canonical_json({k: v for k, v in pdu.items() if k not in _NOT_IN_CONTENT_HASH})


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """The SHA-256 content hash of ``pdu`` (raw 32 bytes)."""
    return hashlib.sha256(content_hash_bytes(pdu)).digest()


def add_content_hash(pdu: dict[str, Any]) -> dict[str, Any]:
    """Set ``pdu["hashes"]["sha256"]`` (in place) and return ``pdu``.

    Other algorithms already under ``hashes`` are kept: the object exists so
    that further hashes can be added later (§Example code, compute_content_hash).
    """
    hashes = pdu.get("hashes")
    hashes = dict(hashes) if isinstance(hashes, dict) else {}
    hashes["sha256"] = encode_base64(compute_content_hash(pdu))
    pdu["hashes"] = hashes
    return pdu


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """True if ``hashes.sha256`` matches the event.

    §Validating hashes and signatures: a mismatch means we were given a
    redacted copy (or a tampered one); the caller must then use the redacted
    form instead of the event as received.
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        expected = decode_base64(claimed)
    except ValueError:
        return False
    return expected == compute_content_hash(pdu)


def reference_hash_bytes(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The canonical JSON the reference hash covers (and signatures sign).

    Steps 1-3 of §Calculating the reference hash: redact, drop
    ``signatures``/``unsigned``, encode. (Redaction already drops
    ``unsigned``; ``signatures`` must go explicitly since it is protected.)
    """
    redacted = redact_pdu(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return encode_canonical_json(redacted)


def compute_reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The SHA-256 reference hash of ``pdu`` (raw 32 bytes)."""
    return hashlib.sha256(reference_hash_bytes(pdu, room_version)).digest()


def reference_hashes(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, str]:
    """``{"sha256": <unpadded base64>}`` -- the hash half of a v1/v2 event reference pair."""
    return {"sha256": encode_base64(compute_reference_hash(pdu, room_version))}


def event_id_from_reference_hash(ref_hash: bytes, room_version: RoomVersion) -> str:
    """``$`` + the hash in the encoding ``room_version`` uses for event IDs.

    v3 uses standard unpadded base64 (rooms/v3 §Event IDs); v4+ the URL-safe
    alphabet (fragment ``v4-event-ids``) so IDs can sit in URL paths.
    """
    fmt = room_version.event_format
    if fmt is EventFormat.V3:
        return "$" + encode_base64(ref_hash)
    if fmt is EventFormat.V4 or fmt is EventFormat.V12:
        return "$" + encode_base64(ref_hash, urlsafe=True)
    raise EventIdError(f"room version {room_version.identifier} event IDs are not hashes")


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID of ``pdu`` in a room of ``room_version``.

    v1/v2 (fragment ``v1-event-ids``): the PDU's own ``event_id``. v3+: the
    encoded reference hash; any ``event_id`` key in the PDU is ignored.
    """
    if room_version.event_format is EventFormat.V1:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise EventIdError("room version 1/2 PDU has no event_id")
        return event_id
    return event_id_from_reference_hash(compute_reference_hash(pdu, room_version), room_version)


def compute_room_id_v12(create_pdu: Mapping[str, Any], room_version: RoomVersion | None = None) -> str:
    """The room ID defined by a v12 ``m.room.create`` event.

    appendices §Room IDs: the create event's event ID with ``!`` instead of
    ``$`` (so URL-safe base64 of its reference hash).
    """
    if room_version is None:
        from mxserver.events.versions import get_room_version

        room_version = get_room_version("12")
        assert room_version is not None
    if room_version.create_event_has_room_id:
        raise EventIdError(f"room version {room_version.identifier} room IDs are not hashes")
    return "!" + compute_event_id(create_pdu, room_version)[1:]
