"""Power levels: parsing, defaults, creators and the "may user X do Y" helpers.

Everything here reads ``m.room.power_levels`` / ``m.room.create`` content the
way the authorisation rules of the room's version do (see
:mod:`mxserver.rooms.auth`, which is the one place that authorises events).
The rest of the server (client API, push rules, sync) uses these helpers so
that it never disagrees with event auth about somebody's level.

Spec references:

* server-server-api.md §Definitions: *required power level*, *invite/kick/ban/
  redact level* and their defaults (invite 0, kick/ban/redact 50).
* event-schemas m.room.power_levels: ``users_default`` 0, ``events_default`` 0,
  ``state_default`` 50, ``notifications.room`` 50; with no power-levels event
  the room creator has 100 and everyone else 0 (v1-v11).
* fragments v1-stringy-power-levels (v1-v9): integer-valued properties may be
  strings such as ``" +0100 "``.
* fragments v1-floaty-power-levels (v1-v5): floats are truncated at the
  decimal point; infinities and NaN make a power-levels event invalid.
* v10: power levels must be real integers.
* v12: room creators (create ``sender`` + ``content.additional_creators``)
  have an infinitely high power level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion

StateKey = tuple[str, str]
#: A power level: an int, or ``math.inf`` for v12 room creators.
PowerLevel = int | float

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")

#: The power level of a room creator in room versions with ``hydra`` (v12+).
CREATOR_POWER_LEVEL: float = math.inf

#: v1-v11: a creator's level when the room has no m.room.power_levels event.
_CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100

#: Defaults of the top-level integer properties of m.room.power_levels
#: (server-server-api.md §Definitions; m.room.power_levels schema).
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}

#: Default for ``notifications`` entries (only ``room`` is specified: 50).
NOTIFICATION_LEVEL_DEFAULT = 50

# v1-stringy-power-levels: optional surrounding whitespace, an optional single
# sign, then base-10 ASCII digits (leading zeroes allowed). Python's int()
# alone is too lenient (it accepts "1_000" and non-ASCII digits).
_STRINGY_INT_RE = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*")


def parse_power_level(value: Any, room_version: RoomVersion | None = None) -> int | None:
    """The integer a power-level value stands for, or None if it is not one.

    ``room_version`` None means "integers only" (what this server writes).
    Booleans are never integers, though Python treats them as such.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version is None or room_version.enforce_int_power_levels:
        # v10+: "must be integers, not string representations".
        return None
    if isinstance(value, str):
        # v1-v9: v1-stringy-power-levels
        m = _STRINGY_INT_RE.fullmatch(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float) and not room_version.strict_canonicaljson:
        # v1-v5: v1-floaty-power-levels: truncate at the decimal point.
        if math.isfinite(value):
            return int(value)
        return None
    return None


def is_invalid_float(value: Any) -> bool:
    """True for a float the floaty rules reject outright (inf, -inf, NaN)."""
    return isinstance(value, float) and not math.isfinite(value)


def _content(event: Event | None) -> dict[str, Any]:
    if event is None:
        return {}
    content = event.content
    return content if isinstance(content, dict) else {}


# -- creators ----------------------------------------------------------------


def get_room_creators(create_event: Event) -> set[str]:
    """The room's creators according to its create event's room version.

    v12+: the sender plus ``content.additional_creators``; v11: the sender;
    v1-v10: ``content.creator``.
    """
    rv = create_event.room_version
    content = _content(create_event)
    if rv.hydra:
        creators = {create_event.sender}
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            # Validated by the create event's auth rule (v12 §1.4).
            creators.update(u for u in extra if isinstance(u, str))
        return creators
    if rv.implicit_room_creator:
        return {create_event.sender}
    creator = content.get("creator")
    return {creator} if isinstance(creator, str) else set()


# -- levels --------------------------------------------------------------------


def _levels_version(
    state: Mapping[StateKey, Event] | None, room_version: RoomVersion | None, create_event: Event | None
) -> RoomVersion | None:
    if room_version is not None:
        return room_version
    for ev in (create_event, (state or {}).get(CREATE_KEY), (state or {}).get(POWER_LEVELS_KEY)):
        if ev is not None:
            return ev.room_version
    return None


def get_user_power_level(
    user_id: str,
    state: Mapping[StateKey, Event],
    room_version: RoomVersion | None = None,
    *,
    create_event: Event | None = None,
) -> PowerLevel:
    """``user_id``'s power level given the room state (or an event's auth events).

    ``state`` maps (type, state_key) to events and needs the
    m.room.power_levels and m.room.create entries if the room has them. In v12
    the create event is not among an event's auth events: pass it as
    ``create_event``. Returns :data:`CREATOR_POWER_LEVEL` (infinity) for v12
    creators.
    """
    create = create_event if create_event is not None else state.get(CREATE_KEY)
    rv = _levels_version(state, room_version, create)
    if create is not None and rv is not None and rv.hydra and user_id in get_room_creators(create):
        # v12 auth rules note: "The power level of room creators is infinitely high".
        return CREATOR_POWER_LEVEL
    pl_event = state.get(POWER_LEVELS_KEY)
    if pl_event is not None:
        content = _content(pl_event)
        users = content.get("users")
        if isinstance(users, dict) and user_id in users:
            level = parse_power_level(users[user_id], rv)
            if level is not None:
                return level
        return get_named_level(content, "users_default", rv)
    # No m.room.power_levels event: the creator has 100, everyone else 0 (v1-v11).
    if create is not None and user_id in get_room_creators(create):
        return _CREATOR_LEVEL_WITHOUT_POWER_LEVELS
    return 0


def get_named_level(
    power_levels_content: Mapping[str, Any] | None, name: str, room_version: RoomVersion | None = None
) -> int:
    """A top-level level: ``ban``, ``kick``, ``redact``, ``invite``,
    ``users_default``, ``events_default`` or ``state_default``, with its default
    when absent (or not a valid level for the room version)."""
    if name not in NAMED_LEVEL_DEFAULTS:
        raise ValueError(f"unknown power level name {name!r}")
    if power_levels_content:
        level = parse_power_level(power_levels_content.get(name), room_version)
        if level is not None:
            return level
    return NAMED_LEVEL_DEFAULTS[name]


def get_required_level_for_event(
    event_type: str,
    is_state: bool,
    power_levels_content: Mapping[str, Any] | None,
    room_version: RoomVersion | None = None,
) -> int:
    """The *required power level* for an event type (server-server-api.md
    §Definitions): ``events[type]`` if set, else ``state_default`` or
    ``events_default``."""
    if power_levels_content:
        events = power_levels_content.get("events")
        if isinstance(events, dict) and event_type in events:
            level = parse_power_level(events[event_type], room_version)
            if level is not None:
                return level
    return get_named_level(power_levels_content, "state_default" if is_state else "events_default", room_version)


def get_notification_level(
    power_levels_content: Mapping[str, Any] | None, key: str = "room", room_version: RoomVersion | None = None
) -> int:
    """The level needed to trigger notification ``key`` (e.g. ``room`` for @room)."""
    if power_levels_content:
        notifications = power_levels_content.get("notifications")
        if isinstance(notifications, dict) and key in notifications:
            level = parse_power_level(notifications[key], room_version)
            if level is not None:
                return level
    return NOTIFICATION_LEVEL_DEFAULT


def user_has_named_level(
    user_id: str,
    name: str,
    state: Mapping[StateKey, Event],
    room_version: RoomVersion | None = None,
    *,
    create_event: Event | None = None,
) -> bool:
    """Whether ``user_id``'s level reaches the ``name`` level ("invite",
    "kick", "ban", "redact", ...). For kick/ban the auth rules additionally
    require the target's level to be below the sender's: see
    :func:`can_act_on_user`."""
    rv = _levels_version(state, room_version, create_event)
    pl_content = _content(state.get(POWER_LEVELS_KEY)) or None
    return get_user_power_level(user_id, state, rv, create_event=create_event) >= get_named_level(
        pl_content, name, rv
    )


def can_act_on_user(
    user_id: str,
    target_user_id: str,
    name: str,
    state: Mapping[StateKey, Event],
    room_version: RoomVersion | None = None,
    *,
    create_event: Event | None = None,
) -> bool:
    """Kick/ban check as in the auth rules: ``user_id`` reaches the ``name``
    level and ``target_user_id``'s level is strictly below ``user_id``'s."""
    rv = _levels_version(state, room_version, create_event)
    own = get_user_power_level(user_id, state, rv, create_event=create_event)
    target = get_user_power_level(target_user_id, state, rv, create_event=create_event)
    return user_has_named_level(user_id, name, state, rv, create_event=create_event) and target < own


def can_send_event(
    user_id: str,
    event_type: str,
    is_state: bool,
    state: Mapping[StateKey, Event],
    room_version: RoomVersion | None = None,
    *,
    create_event: Event | None = None,
) -> bool:
    """Whether ``user_id``'s level reaches the required level for ``event_type``."""
    rv = _levels_version(state, room_version, create_event)
    pl_content = _content(state.get(POWER_LEVELS_KEY)) or None
    return get_user_power_level(user_id, state, rv, create_event=create_event) >= get_required_level_for_event(
        event_type, is_state, pl_content, rv
    )


def redaction_may_be_applied(
    redaction: Event,
    redacted: Event,
    state: Mapping[StateKey, Event],
    *,
    create_event: Event | None = None,
) -> bool:
    """v3+ "Handling redactions" (fragment v3-handling-redactions): apply a
    redaction if its sender reaches the *redact level* or its sender's domain
    is the redacted event's sender's domain. ``state`` is the state the
    redaction is checked against. In v1/v2 the auth rules already decide
    (rule 11), so this returns True there."""
    rv = redaction.room_version
    if rv.event_id_in_pdu:
        return True
    if _domain(redaction.sender) == _domain(redacted.sender):
        return True
    return user_has_named_level(redaction.sender, "redact", state, rv, create_event=create_event)


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


# -- defaults --------------------------------------------------------------------


def default_power_levels_content(
    room_version: RoomVersion,
    creator: str,
    *,
    additional_creators: Iterable[str] = (),
    extra_admins: Iterable[str] = (),
) -> dict[str, Any]:
    """The m.room.power_levels content this server sends at room creation.

    v1-v11: the creator gets 100 in ``users``. v12: creators (``creator`` and
    ``additional_creators``) must not be listed and m.room.tombstone needs a
    level above ``state_default`` (create_room.yaml: e.g. 150).
    ``extra_admins`` (e.g. ``trusted_private_chat`` invitees in v1-v11) are
    given the creator's level. All values are integers (never strings).
    """
    creators = {creator, *additional_creators}
    users: dict[str, int] = {}
    if not room_version.hydra:
        users[creator] = 100
    for user in extra_admins:
        if not (room_version.hydra and user in creators):
            users[user] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.avatar": 50,
            "m.room.topic": 50,
            "m.room.canonical_alias": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.encryption": 100,
            "m.room.server_acl": 100,
            "m.room.tombstone": 150 if room_version.hydra else 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }
