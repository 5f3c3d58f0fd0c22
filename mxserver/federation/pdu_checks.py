"""The first checks on a PDU received from another server.

server-server-api §Checks performed on receipt of a PDU, steps 1-3:

1. the PDU is a valid event of its room version (``events/validation.py``);
   otherwise it is dropped;
2. it carries valid signatures of every server that must sign it
   (§Validating hashes and signatures on received events; keys through
   the :class:`~mxserver.federation.keyring.Keyring`; from room v5 a key must be valid at the event's
   ``origin_server_ts``); otherwise it is dropped;
3. its content hash matches; otherwise the event is *redacted* (redaction
   algorithm of the room version) and the redacted copy is used from then on
   -- the signature covers the redacted form, so it is still authentic.

Steps 4-6 (auth, state, soft failure) belong to the room server
(:meth:`~mxserver.rooms.room_server.RoomServer.receive_event`). Every caller
of inbound PDUs uses :func:`check_pdu`: ``/send``, send_join responses,
backfill, get_missing_events, ``/state``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from mxserver.crypto.signing import SignatureError, signature_ids
from mxserver.events.hashing import (
    EventIdError,
    check_content_hash,
    event_id_from_reference_hash,
    reference_hash_bytes,
)
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.signing import required_signature_servers, verify_event_signatures
from mxserver.events.validation import EventFormatError, validate_pdu
from mxserver.events.versions import EventFormat, RoomVersion

if TYPE_CHECKING:
    from mxserver.federation.keyring import Keyring

log = Logger()

__all__ = ["InvalidPdu", "check_pdu", "check_pdu_format"]


class InvalidPdu(Exception):
    """The PDU must be dropped: bad format, or a required signature is missing or invalid.

    ``kind`` says which, for the endpoints that answer the sender (send_join, invite):
    ``"json"`` (not JSON of its room version), ``"format"`` or ``"signature"``.
    """

    def __init__(self, reason: str, kind: str = "format") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def check_pdu_format(pdu: Any, room_version: RoomVersion) -> None:
    """Step 1 alone: raise :class:`InvalidPdu` if ``pdu`` is not a valid PDU of ``room_version``."""
    if not isinstance(pdu, Mapping):
        raise InvalidPdu("PDU must be an object")
    try:
        validate_pdu(pdu, room_version)
    except EventFormatError as e:
        raise InvalidPdu(f"invalid event format: {e.reason}", "json" if e.bad_json else "format") from None


async def check_pdu(keyring: Keyring, pdu: dict[str, Any], room_version: RoomVersion) -> Event:
    """The event of a received ``pdu`` after steps 1-3; raises :class:`InvalidPdu`.

    A content-hash mismatch is not an error: the answer is then the redacted
    event (step 3). The input dict is not modified.
    """
    check_pdu_format(pdu, room_version)
    try:
        servers = required_signature_servers(pdu, room_version)
    except ValueError as e:
        raise InvalidPdu(str(e)) from None
    # rooms/v5 §Signing key validity: the key must be valid when the event was sent.
    # Older versions accept any key the server ever published.
    min_valid = pdu["origin_server_ts"] if room_version.enforce_key_validity else 0
    keys: dict[str, Any] = {}
    for server in sorted(servers):
        ids = signature_ids(pdu, server)
        if not ids:
            raise InvalidPdu(f"event is not signed by {server}", "signature")
        try:
            keys[server] = await keyring.get_verify_keys(server, ids, min_valid)
        except Exception as e:  # an unreachable key server: we cannot check, so we drop
            raise InvalidPdu(f"cannot fetch the keys of {server}: {e}") from None
        if not keys[server]:
            why = keyring.last_error(server)
            raise InvalidPdu(
                f"no key of {server} among {', '.join(sorted(ids))} valid at {min_valid}" + (f" ({why})" if why else ""),
                "signature",
            )
    # The signed bytes are the reference-hash input: encode the redacted event once, for the
    # signatures and for the (v3+) event ID, which is its hash and the same for the redacted copy.
    signed = reference_hash_bytes(pdu, room_version)
    try:
        verify_event_signatures(pdu, room_version, keys, signed_bytes=signed)
    except SignatureError as e:
        raise InvalidPdu(f"bad signature: {e}", "signature") from None
    event_id = None
    if room_version.event_format is not EventFormat.V1:
        event_id = event_id_from_reference_hash(hashlib.sha256(signed).digest(), room_version)

    try:
        if check_content_hash(pdu):
            return Event(pdu, room_version, event_id=event_id)
        redacted = redact_pdu(pdu, room_version)
        event = Event(redacted, room_version, event_id=event_id)
        # The event ID (v3+) is the reference hash, which redaction does not change.
        log.info("content hash mismatch on {event_id}: using the redacted event", event_id=event.event_id)
        return event
    except EventIdError as e:
        raise InvalidPdu(str(e)) from None
