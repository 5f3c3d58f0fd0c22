"""The room-version registry: every rule that differs between room versions.

Room versions are opaque identifiers (rooms/_index.md); everything that
depends on the version is read from a :class:`RoomVersion` here, never from
comparisons on the identifier string.
"""

from __future__ import annotations

import enum

import attrs


class EventFormat(enum.Enum):
    """How event IDs are formed (and whether the PDU carries one)."""

    V1 = 1  # v1-v2: "$random:server" carried in the PDU (v1-event-ids)
    V3 = 3  # v3: "$" + standard base64 of the reference hash
    V4 = 4  # v4-v11: "$" + URL-safe base64 of the reference hash (v4-event-ids)
    V12 = 12  # v12: as V4, and the create event has no room_id (room ID = its hash)


class StateResAlgorithm(enum.Enum):
    V1 = 1
    V2 = 2
    V2_1 = 21  # room v12 (MSC4297): empty starting set, conflicted subgraph


class RedactionRules(enum.Enum):
    V1 = 1  # v1-v5 (v1-redactions)
    V6 = 6  # v6-v8 (v6-redactions): m.room.aliases loses its special keys
    V9 = 9  # v9-v10 (v9-redactions): keeps join_authorised_via_users_server
    V11 = 11  # v11-v12 (v11-redactions)


@attrs.frozen
class RoomVersion:
    """The rules of one room version."""

    identifier: str
    event_format: EventFormat
    state_res: StateResAlgorithm
    redaction: RedactionRules
    #: v5+: signing keys must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    #: v1-v5: m.room.aliases has its own auth rule (sender's domain == state_key).
    special_case_aliases_auth: bool
    #: v6+: floats and out-of-range integers are rejected (v6-canonical-json).
    strict_canonicaljson: bool
    #: v6+: "notifications" power levels are checked in power-level auth.
    limit_notifications_power_levels: bool
    #: v7+: the "knock" join rule and membership.
    knock_join_rule: bool
    #: v8+: the "restricted" join rule.
    restricted_join_rule: bool
    #: v10+: the "knock_restricted" join rule.
    knock_restricted_join_rule: bool
    #: v10+: power levels must be integers, not strings.
    enforce_int_power_levels: bool
    #: v11+: the create event has no "creator"; the sender is the creator.
    implicit_room_creator: bool
    #: v12: room ID is the create event's reference hash; creators have
    #: infinite power and additional_creators exist.
    hydra: bool

    @property
    def event_id_in_pdu(self) -> bool:
        return self.event_format is EventFormat.V1

    @property
    def create_event_has_room_id(self) -> bool:
        return self.event_format is not EventFormat.V12


def _v(identifier: str, n: int) -> RoomVersion:
    if n <= 2:
        fmt = EventFormat.V1
    elif n == 3:
        fmt = EventFormat.V3
    elif n < 12:
        fmt = EventFormat.V4
    else:
        fmt = EventFormat.V12
    if n == 1:
        sr = StateResAlgorithm.V1
    elif n < 12:
        sr = StateResAlgorithm.V2
    else:
        sr = StateResAlgorithm.V2_1
    if n <= 5:
        red = RedactionRules.V1
    elif n <= 8:
        red = RedactionRules.V6
    elif n <= 10:
        red = RedactionRules.V9
    else:
        red = RedactionRules.V11
    return RoomVersion(
        identifier=identifier,
        event_format=fmt,
        state_res=sr,
        redaction=red,
        enforce_key_validity=n >= 5,
        special_case_aliases_auth=n <= 5,
        strict_canonicaljson=n >= 6,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        hydra=n >= 12,
    )


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {str(n): _v(str(n), n) for n in range(1, 13)}

DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion | None:
    """The rules for ``identifier``, or None if this server does not know it."""
    return KNOWN_ROOM_VERSIONS.get(identifier)
