"""The redaction algorithms: which parts of a PDU survive redaction.

The redacted form is what signatures and the reference hash (hence v3+ event
IDs) cover, so this must match other servers byte for byte. Four algorithms
exist, selected by ``RoomVersion.redaction``: fragments ``v1-redactions``
(v1-v5), ``v6-redactions`` (v6-v8), ``v9-redactions`` (v9-v10) and
``v11-redactions`` (v11-v12).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mxserver.events.model import Event
from mxserver.events.versions import RedactionRules, RoomVersion

# Top-level keys kept by every algorithm before v11.
_TOP_LEVEL_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11-redactions: `origin`, `membership` and `prev_state` lose protection.
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_PL_KEYS_V1 = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

# Content keys kept per event type. A value of None means "keep the whole content".
_ContentRule = frozenset[str] | None

_CONTENT_V1: dict[str, _ContentRule] = {
    "m.room.member": frozenset({"membership"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule"}),
    "m.room.power_levels": _PL_KEYS_V1,
    "m.room.aliases": frozenset({"aliases"}),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}

# v6-redactions: m.room.aliases is no longer special.
_CONTENT_V6 = {k: v for k, v in _CONTENT_V1.items() if k != "m.room.aliases"}

# v9-redactions: restricted joins (v8) need join_authorised_via_users_server to
# stay verifiable and the join rule's `allow` list to stay enforceable.
_CONTENT_V9 = dict(_CONTENT_V6)
_CONTENT_V9["m.room.member"] = frozenset({"membership", "join_authorised_via_users_server"})
_CONTENT_V9["m.room.join_rules"] = frozenset({"join_rule", "allow"})

# v11-redactions.
_CONTENT_V11 = dict(_CONTENT_V9)
_CONTENT_V11["m.room.create"] = None  # "allows all keys"
_CONTENT_V11["m.room.power_levels"] = _PL_KEYS_V1 | {"invite"}
_CONTENT_V11["m.room.redaction"] = frozenset({"redacts"})
# (m.room.member additionally keeps third_party_invite.signed; see below.)

_RULES: dict[RedactionRules, tuple[frozenset[str], dict[str, _ContentRule]]] = {
    RedactionRules.V1: (_TOP_LEVEL_V1, _CONTENT_V1),
    RedactionRules.V6: (_TOP_LEVEL_V1, _CONTENT_V6),
    RedactionRules.V9: (_TOP_LEVEL_V1, _CONTENT_V9),
    RedactionRules.V11: (_TOP_LEVEL_V11, _CONTENT_V11),
}


def redact_pdu(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """The redacted copy of ``pdu`` under ``room_version``'s algorithm.

    The input is not modified. Top-level keys outside the protected list are
    dropped -- including ``unsigned``: the fragments keep only the listed
    keys, and ``unsigned`` is not listed. Callers serving a redacted event to
    clients add ``unsigned.redacted_because`` themselves
    (client-server-api §Redactions).
    """
    top_keys, content_rules = _RULES[room_version.redaction]
    out = {k: v for k, v in pdu.items() if k in top_keys}

    event_type = pdu.get("type")
    content = pdu.get("content")
    if not isinstance(content, dict):
        # A malformed PDU (validation rejects it anyway); keep the key's
        # presence so hashing stays a pure function of the input.
        if "content" in out:
            out["content"] = {}
        return out

    rule = content_rules.get(event_type, frozenset()) if isinstance(event_type, str) else frozenset()
    if rule is None:
        new_content = dict(content)
    else:
        new_content = {k: v for k, v in content.items() if k in rule}

    # v11-redactions: m.room.member keeps the `signed` key of
    # `third_party_invite` (and nothing else under it), so the invite's
    # identity-server signature can still be checked after redaction.
    if room_version.redaction is RedactionRules.V11 and event_type == "m.room.member":
        tpi = content.get("third_party_invite")
        if isinstance(tpi, dict) and "signed" in tpi:
            new_content["third_party_invite"] = {"signed": tpi["signed"]}

    out["content"] = new_content
    return out


def redact_event(event: Event) -> Event:
    """A new :class:`Event` holding the redacted PDU, with the same event ID.

    The event ID is carried over explicitly: for v3+ it is the reference
    hash, which redaction does not change (it is computed over the redacted
    form); for v1/v2 the ``event_id`` key is protected anyway.
    """
    return Event(
        redact_pdu(event.get_pdu_json(), event.room_version),
        event.room_version,
        event_id=event.event_id,
        metadata=attrs.evolve(event.metadata),
    )


def redacted_client_event(
    redacted_pdu: Mapping[str, Any],
    redaction_event: Mapping[str, Any],
) -> dict[str, Any]:
    """Attach ``unsigned.redacted_because`` to an already-redacted PDU (client format).

    client-server-api §Redactions: servers should include a copy of the
    ``m.room.redaction`` event under ``unsigned`` as ``redacted_because``.
    Converting either event to the client format is the caller's business.
    """
    out = dict(redacted_pdu)
    unsigned = dict(out.get("unsigned") or {})
    unsigned["redacted_because"] = dict(redaction_event)
    out["unsigned"] = unsigned
    return out


def protected_content_keys(room_version: RoomVersion) -> Mapping[str, _ContentRule]:
    """Per-type content keys kept by ``room_version``'s algorithm (None: all)."""
    return dict(_RULES[room_version.redaction][1])
