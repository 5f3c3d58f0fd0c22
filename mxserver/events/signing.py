"""Signing events and checking event signatures (server-server-api §Signing Events).

An event signature covers the *redacted* event (which still includes the
content hash), so it stays checkable after redaction; the content hash then
protects the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signedjson.types import SigningKey, VerifyKey

from mxserver.crypto.signing import SignatureError, sign_bytes, verify_signed_json
from mxserver.events.hashing import add_content_hash, reference_hash_bytes
from mxserver.events.versions import EventFormat, RoomVersion

__all__ = [
    "SignatureError",
    "sign_event",
    "add_event_signature",
    "verify_event_signature",
    "verify_event_signatures",
    "required_signature_servers",
    "is_third_party_invite",
]


def _merge_signature(pdu: dict[str, Any], server_name: str, key_id: str, sig: str) -> None:
    # Copy the nested dicts: the input PDU may share them with other objects.
    old = pdu.get("signatures")
    signatures = {k: dict(v) for k, v in old.items() if isinstance(v, dict)} if isinstance(old, dict) else {}
    signatures.setdefault(server_name, {})[key_id] = sig
    pdu["signatures"] = signatures


def sign_event(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
) -> dict[str, Any]:
    """Hash and sign an outgoing event; return the new PDU (input untouched).

    §Adding hashes and signatures to outgoing events: compute the content
    hash into ``hashes.sha256``, redact, sign the redacted object, copy the
    signature back onto the full event.
    """
    out = add_content_hash(dict(pdu))
    return add_event_signature(out, room_version, server_name, signing_key, _copy=False)


def add_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
    *,
    _copy: bool = True,
) -> dict[str, Any]:
    """Add ``server_name``'s signature to an already-hashed event.

    For co-signing another server's event (invites, restricted joins via
    send_join, third-party invite exchange): the hashes are left alone, since
    changing them would invalidate the origin's signature.
    """
    out = dict(pdu) if _copy else pdu
    assert isinstance(out, dict)
    sig = sign_bytes(reference_hash_bytes(out, room_version), signing_key)
    _merge_signature(out, server_name, f"{signing_key.alg}:{signing_key.version}", sig)
    return out


def verify_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    verify_key: VerifyKey | Mapping[str, VerifyKey],
) -> None:
    """Raise :class:`SignatureError` unless ``server_name`` validly signed ``pdu``.

    §Validating hashes and signatures: the redacted event is checked, so this
    succeeds whether we hold the full event or a redacted copy. With a
    mapping of keys, signatures by unknown keys are skipped.
    """
    # The signed bytes are exactly the reference-hash input (redacted, minus
    # signatures/unsigned); compute them directly.
    data = reference_hash_bytes(pdu, room_version)
    verify_signed_json(pdu, server_name, verify_key, _data=data)


def verify_event_signatures(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    keys_by_server: Mapping[str, Mapping[str, VerifyKey]],
    *,
    include_restricted_join_authoriser: bool = True,
    signed_bytes: bytes | None = None,
) -> None:
    """Check the signature of every server in :func:`required_signature_servers`.

    ``keys_by_server`` maps server name -> key ID -> verify key, already
    filtered by the caller to keys that are known and valid at the event's
    ``origin_server_ts`` (v5-signing-requirements). A required server with
    no usable key fails the check. ``signed_bytes``, if given, must be
    :func:`reference_hash_bytes` of ``pdu`` (a caller that also needs the
    reference hash encodes the redacted event once, not twice).
    """
    data = reference_hash_bytes(pdu, room_version) if signed_bytes is None else signed_bytes
    for server in sorted(
        required_signature_servers(
            pdu, room_version, include_restricted_join_authoriser=include_restricted_join_authoriser
        )
    ):
        verify_signed_json(pdu, server, keys_by_server.get(server, {}), _data=data)


def _domain(identifier: Any) -> str | None:
    # User IDs and v1 event IDs: the server name follows the first ':'
    # (localparts cannot contain ':'; server names can, for the port).
    if not isinstance(identifier, str):
        return None
    _, sep, domain = identifier.partition(":")
    return domain if sep and domain else None


def is_third_party_invite(pdu: Mapping[str, Any]) -> bool:
    """An ``m.room.member`` invite carrying ``third_party_invite``."""
    content = pdu.get("content")
    return (
        pdu.get("type") == "m.room.member"
        and isinstance(content, dict)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signature_servers(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    *,
    include_restricted_join_authoriser: bool = True,
) -> set[str]:
    """The servers whose signatures ``pdu`` must carry.

    §Validating hashes and signatures on received events:

    * the sender's server (v3+: only that one);
    * v1/v2: also the server in the ``event_id``, if different;
    * third-party invites: the event may be sent by a different server than
      the sender's. It is built either by the inviting (sender's) server, via
      /exchange_third_party_invite, or by the invited user's server itself
      (§Third-party invites). So the sender's server is required if it
      signed; otherwise the invited user's (``state_key``'s) server is.
    * v8+ restricted joins (``v8-auth-rules`` 4.2.1): a join naming
      ``join_authorised_via_users_server`` must be signed by that user's
      server. That is an auth-rule check (failure rejects rather than
      drops); pass ``include_restricted_join_authoriser=False`` to leave it
      to the auth rules.

    Raises ValueError if the sender is not a user ID.
    """
    sender_domain = _domain(pdu.get("sender"))
    if sender_domain is None:
        raise ValueError("event sender is not a user ID")
    servers: set[str] = set()

    if is_third_party_invite(pdu):
        sigs = pdu.get("signatures")
        signed_by_sender = isinstance(sigs, dict) and isinstance(sigs.get(sender_domain), dict)
        invitee_domain = _domain(pdu.get("state_key"))
        if signed_by_sender or invitee_domain is None:
            servers.add(sender_domain)
        else:
            servers.add(invitee_domain)
    else:
        servers.add(sender_domain)

    if room_version.event_format is EventFormat.V1:
        event_id_domain = _domain(pdu.get("event_id"))
        if event_id_domain is not None:
            servers.add(event_id_domain)

    if include_restricted_join_authoriser and room_version.restricted_join_rule:
        content = pdu.get("content")
        if pdu.get("type") == "m.room.member" and isinstance(content, dict) and content.get("membership") == "join":
            authoriser = _domain(content.get("join_authorised_via_users_server"))
            if authoriser is not None:
                servers.add(authoriser)

    return servers
