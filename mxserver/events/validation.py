"""Format checks for a PDU of a given room version.

server-server-api §Checks performed on receipt of a PDU, step 1: an event
that does not comply with its room version's event format is dropped. The
format is the ``pdu_v*.yaml`` schema for the version (rooms/vN §Event format)
plus the size limits of client-server-api §Size limits, and strict canonical
JSON from room v6 (``v6-canonical-json``).

These are structural checks only; authorisation is elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mxserver.crypto.canonical import CanonicalJSONError, check_strict_canonical_json, encode_canonical_json
from mxserver.events.versions import EventFormat, RedactionRules, RoomVersion

#: client-server-api §Size limits: the whole event, as canonical JSON in the
#: federation format including signatures.
MAX_PDU_SIZE = 65536
#: appendices §Identifier Grammar (user, room and event IDs) and §Size limits
#: (type, state_key): 255 bytes each.
MAX_ID_BYTES = 255
#: pdu_v*.yaml: "Must contain less than or equal to 20 events" / "... 10 events".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
#: pdu_v1/v3/v4.yaml: depth must not exceed the maximum integer 2^63 - 1;
#: depth_v6.yaml lowers that to 2^53 - 1 along with strict canonical JSON.
MAX_DEPTH_V1 = 2**63 - 1
MAX_DEPTH_V6 = 2**53 - 1


class EventFormatError(ValueError):
    """The PDU does not match its room version's event format."""

    def __init__(self, reason: str, *, bad_json: bool = False) -> None:
        self.reason = reason
        #: the PDU is not even JSON its room version accepts (v6-canonical-json: floats,
        #: integers out of range); the federation endpoints answer M_BAD_JSON for it
        self.bad_json = bad_json
        super().__init__(reason)


def _is_int(v: Any) -> bool:
    # JSON true/false are not numbers, though bool subclasses int in Python.
    return isinstance(v, int) and not isinstance(v, bool)


def _check_id(pdu: Mapping[str, Any], key: str, sigil: str | None, required: bool = True) -> None:
    if key not in pdu:
        if required:
            raise EventFormatError(f"missing required key '{key}'")
        return
    value = pdu[key]
    if not isinstance(value, str):
        raise EventFormatError(f"'{key}' must be a string")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise EventFormatError(f"'{key}' is longer than {MAX_ID_BYTES} bytes")
    if sigil is not None and not value.startswith(sigil):
        raise EventFormatError(f"'{key}' must start with '{sigil}'")


def _check_event_id_string(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.startswith("$"):
        raise EventFormatError(f"{where} must be event ID strings")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise EventFormatError(f"{where} contains an event ID longer than {MAX_ID_BYTES} bytes")


def _check_refs(pdu: Mapping[str, Any], key: str, limit: int, v1_pairs: bool) -> None:
    if key not in pdu:
        raise EventFormatError(f"missing required key '{key}'")
    refs = pdu[key]
    if not isinstance(refs, list):
        raise EventFormatError(f"'{key}' must be a list")
    if len(refs) > limit:
        raise EventFormatError(f"'{key}' has {len(refs)} entries; at most {limit} are allowed")
    for ref in refs:
        if v1_pairs:
            # pdu_v1.yaml: [event_id, {algorithm: hash}] pairs (minItems = maxItems = 2).
            if not isinstance(ref, list) or len(ref) != 2 or not isinstance(ref[1], dict):
                raise EventFormatError(f"'{key}' entries must be [event_id, hashes] pairs")
            _check_event_id_string(ref[0], f"'{key}'")
        else:
            _check_event_id_string(ref, f"'{key}'")


def _check_signatures(pdu: Mapping[str, Any]) -> None:
    sigs = pdu.get("signatures")
    if not isinstance(sigs, dict):
        raise EventFormatError("'signatures' must be an object")
    for server, entry in sigs.items():
        if not isinstance(entry, dict) or not all(isinstance(s, str) for s in entry.values()):
            raise EventFormatError(f"'signatures.{server}' must map key IDs to strings")


def canonical_size(pdu: Mapping[str, Any]) -> int:
    """Size in bytes of ``pdu`` as canonical JSON (what the 64 KiB limit measures)."""
    return len(encode_canonical_json(pdu))


def validate_pdu(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    *,
    size: int | None = None,
) -> None:
    """Raise :class:`EventFormatError` if ``pdu`` is malformed for ``room_version``.

    ``size`` is the canonical JSON size when the caller already knows it
    (the builder does), to avoid encoding the event again.
    """
    if not isinstance(pdu, Mapping):
        raise EventFormatError("PDU must be an object")

    # v6-canonical-json: checked first, since a float anywhere makes the
    # event unacceptable regardless of anything else, and it protects the
    # integer checks below from values that are not real JSON.
    if room_version.strict_canonicaljson:
        try:
            check_strict_canonical_json(pdu)
        except CanonicalJSONError as e:
            raise EventFormatError(f"not canonical JSON: {e}", bad_json=True) from None

    # pdu_base.yaml required keys and their types.
    _check_id(pdu, "type", None)
    _check_id(pdu, "sender", "@")
    if not isinstance(pdu.get("content"), dict):
        raise EventFormatError(
            "missing required key 'content'" if "content" not in pdu else "'content' must be an object"
        )
    if "origin_server_ts" not in pdu:
        raise EventFormatError("missing required key 'origin_server_ts'")
    if not _is_int(pdu["origin_server_ts"]):
        raise EventFormatError("'origin_server_ts' must be an integer")

    if "depth" not in pdu:
        raise EventFormatError("missing required key 'depth'")
    depth = pdu["depth"]
    max_depth = MAX_DEPTH_V6 if room_version.strict_canonicaljson else MAX_DEPTH_V1
    if not _is_int(depth) or not 0 <= depth <= max_depth:
        raise EventFormatError(f"'depth' must be an integer between 0 and {max_depth}")

    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict):
        raise EventFormatError("missing required key 'hashes'" if "hashes" not in pdu else "'hashes' must be an object")
    # event_hash.yaml: sha256 is required.
    if not isinstance(hashes.get("sha256"), str):
        raise EventFormatError("'hashes.sha256' must be a string")
    if "signatures" not in pdu:
        raise EventFormatError("missing required key 'signatures'")
    _check_signatures(pdu)

    if "state_key" in pdu:
        _check_id(pdu, "state_key", None)
    if "unsigned" in pdu and not isinstance(pdu["unsigned"], dict):
        raise EventFormatError("'unsigned' must be an object")

    fmt = room_version.event_format
    v1 = fmt is EventFormat.V1
    if v1:
        # pdu_v1.yaml: the event ID travels in the PDU (fragment v1-event-ids).
        _check_id(pdu, "event_id", "$")
        if ":" not in pdu["event_id"]:
            raise EventFormatError("'event_id' must be of the form $opaque_id:domain")
    _check_refs(pdu, "prev_events", MAX_PREV_EVENTS, v1)
    _check_refs(pdu, "auth_events", MAX_AUTH_EVENTS, v1)

    # room_id: required everywhere except on a v12 create event, whose room
    # ID is derived from its own hash (room_id_v12.yaml; v12 auth rule 1.2).
    if not room_version.create_event_has_room_id and pdu["type"] == "m.room.create":
        if "room_id" in pdu:
            raise EventFormatError("m.room.create events must not have a 'room_id' in this room version")
    else:
        _check_id(pdu, "room_id", "!")

    # `redacts` is a top-level string before v11 (pdu_v1/v3/v4/v6.yaml), and
    # moved into content from v11. Not required: it is not protected from
    # redaction before v11, so a redacted m.room.redaction legitimately lacks it.
    if "redacts" in pdu and not isinstance(pdu["redacts"], str):
        raise EventFormatError("'redacts' must be a string")
    if (
        room_version.redaction is RedactionRules.V11
        and pdu["type"] == "m.room.redaction"
        and "redacts" in pdu["content"]
    ):
        if not isinstance(pdu["content"]["redacts"], str):
            raise EventFormatError("'content.redacts' must be a string")

    if "origin" in pdu and not isinstance(pdu["origin"], str):
        raise EventFormatError("'origin' must be a string")

    if size is None:
        try:
            size = canonical_size(pdu)
        except (ValueError, TypeError) as e:  # NaN, non-JSON types
            raise EventFormatError(f"not encodable as JSON: {e}") from None
    if size > MAX_PDU_SIZE:
        raise EventFormatError(f"event is {size} bytes; at most {MAX_PDU_SIZE} are allowed")
