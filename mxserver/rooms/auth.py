"""Event authorisation: the auth rules of every room version, in one place.

:func:`check_auth_rules` is the only function that decides whether an event is
authorised; everything else in the server (local event creation, the
federation receive pipeline, state resolution's iterative auth checks, the
soft-failure check) calls it. :func:`auth_types_for_event` implements
server-server-api.md §Auth events selection.

Sources: fragments ``v1-auth-rules`` (v1-v2) and ``v3-auth-rules`` (v3-v5);
inline in ``v6.md``, ``v7.md``; fragment ``v8-auth-rules`` (v8-v9); inline in
``v10.md``, ``v11.md``, ``v12.md``; server-server-api.md §Auth events
selection, §Rejection, §Soft failure. Version differences are read from the
:class:`~mxserver.events.versions.RoomVersion` flags, never from identifiers.

Rule numbers in comments are written ``§N`` in the numbering of the version
family named next to them. The same rule moves between families::

    rule                       v1-v2   v3-v5   v6-v7   v8-v11   v12
    create                     1       1       1       1        1
    room_id is the create's    -       -       -       -        2
    auth_events checks         2       2       2       2        3
    m.federate                 3       3       3       3        4
    m.room.aliases             4       4       -       -        -
    m.room.member              5       5       4       4        5
    sender must be joined      6       6       5       5        6
    m.room.third_party_invite  7       7       6       6        7
    required power level       8       8       7       7        8
    state_key starting "@"     9       9       8       8        9
    m.room.power_levels        10      10      9       9        10
    m.room.redaction           11      -       -       -        -
    otherwise allow            12      11      10      10       11
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mxserver.events.model import Event
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxserver.rooms.power_levels import (
    CREATE_KEY,
    JOIN_RULES_KEY,
    POWER_LEVELS_KEY,
    PowerLevel,
    StateKey,
    get_named_level,
    get_required_level_for_event,
    get_room_creators,
    get_user_power_level,
    is_invalid_float,
    parse_power_level,
)

__all__ = ["AuthError", "check_auth_rules", "auth_types_for_event", "auth_types_for"]


class AuthError(Exception):
    """An event is not authorised. ``reason`` is human-readable; it becomes the
    M_FORBIDDEN message for clients and the stored rejection reason for
    federation events."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


# -- identifiers ------------------------------------------------------------------

_SERVER_NAME_RE = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(:[0-9]{1,5})?")


def _is_valid_server_name(name: str) -> bool:
    # appendices.md §Server Name
    return _SERVER_NAME_RE.fullmatch(name) is not None


def is_valid_user_id(user_id: Any) -> bool:
    """User-ID validation as applied to event senders (appendices.md §User
    Identifiers, including the historical localpart rules servers MUST accept:
    any non-surrogate code point except ``:`` and NUL)."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    try:
        if len(user_id.encode("utf-8")) > 255:
            return False
    except UnicodeEncodeError:  # lone surrogates
        return False
    localpart, sep, server = user_id[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return _is_valid_server_name(server)


def _domain(identifier: str) -> str:
    """The server part of a user, room (v1-v11) or v1/v2 event ID."""
    return identifier.split(":", 1)[1] if isinstance(identifier, str) and ":" in identifier else ""


# -- auth events selection ----------------------------------------------------------


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """server-server-api.md §Auth events selection: the (type, state_key)
    pairs of the room state that an event's ``auth_events`` may cite."""
    if event_type == "m.room.create":
        return set()  # "The auth_events for the m.room.create event in a room is empty"
    selected: set[StateKey] = {POWER_LEVELS_KEY, ("m.room.member", sender)}
    if not room_version.hydra:
        # v12 note: "The m.room.create event MUST NOT be selected"; earlier
        # versions require it.
        selected.add(CREATE_KEY)
    if event_type == "m.room.member" and isinstance(content, Mapping):
        if isinstance(state_key, str):
            selected.add(("m.room.member", state_key))
        membership = content.get("membership")
        if membership in ("join", "invite", "knock"):
            selected.add(JOIN_RULES_KEY)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, Mapping):
                signed = tpi.get("signed")
                if isinstance(signed, Mapping) and isinstance(signed.get("token"), str):
                    selected.add(("m.room.third_party_invite", signed["token"]))
        if membership == "join" and room_version.restricted_join_rule:
            via = content.get("join_authorised_via_users_server")
            if isinstance(via, str):
                selected.add(("m.room.member", via))
    return selected


def auth_types_for(event: Event) -> set[StateKey]:
    """:func:`auth_types_for_event` for an existing event."""
    content = event.content if isinstance(event.content, Mapping) else {}
    return auth_types_for_event(event.room_version, event.type, event.sender, event.state_key, content)


# -- entry point ------------------------------------------------------------------------


def check_auth_rules(
    event: Event,
    auth_events: Mapping[StateKey, Event] | Iterable[Event],
    *,
    check_auth_event_selection: bool = True,
    create_event: Event | None = None,
) -> None:
    """Raise :class:`AuthError` unless ``event`` passes the auth rules of its
    room version.

    ``auth_events`` is either the event's own auth events (as a mapping
    (type, state_key) -> event, or as a plain iterable of events, which lets
    duplicates be detected) or the room state to check against (state before
    the event, or the current state for soft failure).

    With ``check_auth_event_selection`` (the default), ``auth_events`` must be
    exactly the events the event cites in ``auth_events``, and the checks on
    them are applied: duplicates, entries not matching §Auth events selection,
    rejected entries, entries from another room. Pass False when checking
    against a state map.

    In v12 the create event is never among an event's auth events; pass it as
    ``create_event`` (when checking against a state map it is also taken from
    the map's ``("m.room.create", "")`` entry).
    """
    rv = event.room_version
    if event.type == "m.room.create":
        _check_create(event, rv)
        return

    state, create = _prepare_auth_events(event, rv, auth_events, check_auth_event_selection, create_event)

    # v1 §3 / v12 §4: m.federate false keeps other servers' users out.
    if _content_of(create).get("m.federate", True) is False and _domain(event.sender) != _domain(create.sender):
        raise AuthError("room is not federated and the sender's server is not the creator's")

    if rv.special_case_aliases_auth and event.type == "m.room.aliases":
        # v1/v3 §4: aliases are authorised by the sender's server alone.
        if event.state_key is None:
            raise AuthError("m.room.aliases event has no state_key")  # §4.1
        if event.state_key != _domain(event.sender):
            raise AuthError("m.room.aliases state_key is not the sender's server")  # §4.2
        return  # §4.3

    checker = _Checker(event, rv, state, create)
    if event.type == "m.room.member":
        checker.check_membership()
        return
    checker.check_other()


# -- rule 1: create -----------------------------------------------------------------------


def _check_create(event: Event, rv: RoomVersion) -> None:
    content = _content_of(event)
    if event.prev_event_ids:
        raise AuthError("m.room.create must not have prev_events")  # §1.1
    if rv.hydra:
        if "room_id" in event:
            raise AuthError("m.room.create must not have a room_id in this room version")  # v12 §1.2
    elif _domain(event.get("room_id")) != _domain(event.sender) or not _domain(event.sender):
        raise AuthError("room_id's server does not match the sender's")  # v1 §1.2
    if "room_version" in content and (
        not isinstance(content["room_version"], str) or content["room_version"] not in KNOWN_ROOM_VERSIONS
    ):
        raise AuthError(f"unknown room version {content['room_version']!r}")  # §1.3
    if rv.hydra and "additional_creators" in content:
        extra = content["additional_creators"]
        # v12 §1.4: an array of strings each passing user ID validation
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators must be an array of valid user IDs")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("m.room.create content has no creator")  # v1-v10 §1.4
    # §1.5: allow


# -- rule 2 (v12: rules 2 and 3): the auth events -----------------------------------------------


def _prepare_auth_events(
    event: Event,
    rv: RoomVersion,
    auth_events: Mapping[StateKey, Event] | Iterable[Event],
    check_selection: bool,
    create_event: Event | None,
) -> tuple[dict[StateKey, Event], Event]:
    """Apply the auth_events rules; return (state map, create event)."""
    if isinstance(auth_events, Mapping):
        entries = list(auth_events.values())
    else:
        entries = list(auth_events)

    state: dict[StateKey, Event] = {}
    if check_selection:
        cited = list(event.auth_event_ids)
        if len(set(cited)) != len(cited):
            raise AuthError("auth_events cites the same event twice")  # §2.1
        provided = {ev.event_id for ev in entries}
        if provided != set(cited):
            missing = sorted(set(cited) - provided)
            extra = sorted(provided - set(cited))
            raise AuthError(
                "auth events given do not match the event's auth_events"
                + (f" (missing {', '.join(missing)})" if missing else "")
                + (f" (not cited: {', '.join(extra)})" if extra else "")
            )
        selected = auth_types_for(event)
        for ev in entries:
            if not ev.is_state():
                raise AuthError(f"auth event {ev.event_id} is not a state event")  # §2.2
            key = ev.state_tuple()
            if key in state:
                raise AuthError(f"duplicate auth events for {key}")  # §2.1
            if key not in selected:
                raise AuthError(f"auth event {ev.event_id} for {key} is not one the event may cite")  # §2.2
            if ev.rejected:
                raise AuthError(f"auth event {ev.event_id} was rejected")  # §2.3
            if ev.room_id != event.room_id:
                raise AuthError(f"auth event {ev.event_id} is from another room")  # §2.5 (v12 §3.5)
            state[key] = ev
    else:
        if isinstance(auth_events, Mapping):
            state = dict(auth_events)
        else:
            for ev in entries:
                if ev.is_state():
                    state[ev.state_tuple()] = ev

    if rv.hydra:
        create = create_event if create_event is not None else state.get(CREATE_KEY)
        # v12 §2: the room ID is an accepted m.room.create event's ID with "!" for "$".
        if create is None:
            raise AuthError("the room's m.room.create event is not known")
        if create.type != "m.room.create" or create.rejected:
            raise AuthError("the room's m.room.create event is not an accepted create event")
        room_id = event.room_id
        if not isinstance(room_id, str) or not room_id.startswith("!") or room_id[1:] != create.event_id[1:]:
            raise AuthError("room_id is not derived from the room's m.room.create event")
    else:
        create = state.get(CREATE_KEY)
        if create is None and not check_selection:
            create = create_event
        if create is None:
            raise AuthError("no m.room.create event among the auth events")  # §2.4
        if create.room_id != event.room_id:
            raise AuthError("m.room.create event is from another room")  # §2.5
    return state, create


# -- the remaining rules -----------------------------------------------------------------------------


class _Checker:
    """Rules 4 onwards (v1 numbering) for one event against one set of state."""

    def __init__(self, event: Event, rv: RoomVersion, state: dict[StateKey, Event], create: Event) -> None:
        self.event = event
        self.rv = rv
        self.state = state
        self.create = create
        pl = state.get(POWER_LEVELS_KEY)
        self.pl_content: dict[str, Any] | None = _content_of(pl) if pl is not None else None

    # helpers
    def membership_of(self, user_id: str) -> str | None:
        ev = self.state.get(("m.room.member", user_id))
        if ev is None:
            return None
        m = _content_of(ev).get("membership")
        return m if isinstance(m, str) else None

    def level_of(self, user_id: str) -> PowerLevel:
        return get_user_power_level(user_id, self.state, self.rv, create_event=self.create)

    def named_level(self, name: str) -> int:
        return get_named_level(self.pl_content, name, self.rv)

    def join_rule(self) -> str:
        jr = self.state.get(JOIN_RULES_KEY)
        rule = _content_of(jr).get("join_rule") if jr is not None else None
        # With no (usable) m.room.join_rules event the room is treated as
        # invite-only: the most restrictive rule that still lets invitees in.
        return rule if isinstance(rule, str) else "invite"

    # rule 5 (v6-v11: 4; v12: 5): m.room.member
    def check_membership(self) -> None:
        event, rv = self.event, self.rv
        content = _content_of(event)
        target = event.state_key
        membership = content.get("membership")
        if target is None or "membership" not in content:
            raise AuthError("m.room.member event has no state_key or no membership")  # v1 §5.1
        sender = event.sender

        if rv.restricted_join_rule and "join_authorised_via_users_server" in content:
            # v8 §4.2 / v12 §5.2: must be signed by the authorising user's server.
            via = content["join_authorised_via_users_server"]
            if not is_valid_user_id(via) or not event.signatures.get(_domain(via)):
                raise AuthError("event is not signed by the server of join_authorised_via_users_server")

        sender_membership = self.membership_of(sender)
        target_membership = self.membership_of(target)

        if membership == "join":
            self._check_join(content, sender, target, sender_membership)
            return

        if membership == "invite":
            # v1 §5.3 / v8 §4.4 / v12 §5.4
            if "third_party_invite" in content:
                self._check_third_party_invite(content, target, target_membership)  # §5.3.1
                return
            if sender_membership != "join":
                raise AuthError("inviter is not in the room")  # §5.3.2
            if target_membership in ("join", "ban"):
                raise AuthError(f"invitee's membership is {target_membership}")  # §5.3.3
            if self.level_of(sender) >= self.named_level("invite"):
                return  # §5.3.4
            raise AuthError("inviter's power level is below the invite level")  # §5.3.5

        if membership == "leave":
            # v1 §5.4 / v8 §4.5 / v12 §5.5
            if sender == target:
                allowed = ("invite", "join", "knock") if rv.knock_join_rule else ("invite", "join")
                if target_membership in allowed:
                    return  # §5.4.1 (v7 adds knock)
                raise AuthError(f"cannot leave with membership {target_membership or 'leave'}")
            if sender_membership != "join":
                raise AuthError("sender is not in the room")  # §5.4.2
            sender_level = self.level_of(sender)
            if target_membership == "ban" and sender_level < self.named_level("ban"):
                raise AuthError("unbanning needs the ban level")  # §5.4.3
            if sender_level >= self.named_level("kick") and self.level_of(target) < sender_level:
                return  # §5.4.4
            raise AuthError("sender's power level does not allow kicking this user")  # §5.4.5

        if membership == "ban":
            # v1 §5.5 / v8 §4.6 / v12 §5.6
            if sender_membership != "join":
                raise AuthError("sender is not in the room")  # §5.5.1
            sender_level = self.level_of(sender)
            if sender_level >= self.named_level("ban") and self.level_of(target) < sender_level:
                return  # §5.5.2
            raise AuthError("sender's power level does not allow banning this user")  # §5.5.3

        if membership == "knock" and rv.knock_join_rule:
            # v7 §4.6 / v8 §4.7 / v12 §5.7
            knock_rules = ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)
            if self.join_rule() not in knock_rules:
                raise AuthError("the room's join rule does not allow knocking")  # §4.7.1 (v10 adds knock_restricted)
            if sender != target:
                raise AuthError("cannot knock on behalf of another user")  # §4.7.2
            if sender_membership not in ("ban", "invite", "join"):
                return  # §4.7.3
            raise AuthError(f"cannot knock with membership {sender_membership}")  # §4.7.4

        raise AuthError(f"unknown membership {membership!r}")  # v1 §5.6 / v12 §5.8

    def _check_join(self, content: dict[str, Any], sender: str, target: str, sender_membership: str | None) -> None:
        # v1 §5.2 / v8 §4.3 / v12 §5.3
        rv = self.rv
        prevs = list(self.event.prev_event_ids)
        if len(prevs) == 1 and prevs[0] == self.create.event_id:
            # §5.2.1: the creator's own first join. v11+: "the sender of the
            # m.room.create" (not additional_creators); earlier: content.creator.
            first_creator = self.create.sender if rv.implicit_room_creator else _content_of(self.create).get("creator")
            if target == first_creator:
                return
        if sender != target:
            raise AuthError("cannot join on behalf of another user")  # §5.2.2
        if sender_membership == "ban":
            raise AuthError("sender is banned from the room")  # §5.2.3
        join_rule = self.join_rule()
        invite_rules = ("invite", "knock") if rv.knock_join_rule else ("invite",)
        restricted_rules: tuple[str, ...] = ()
        if rv.restricted_join_rule:
            restricted_rules = ("restricted", "knock_restricted") if rv.knock_restricted_join_rule else ("restricted",)
        if join_rule in invite_rules:
            # §5.2.4 (v7 adds knock)
            if sender_membership in ("invite", "join"):
                return
            raise AuthError("the room is invite-only and the user is not invited")
        if join_rule in restricted_rules:
            # v8 §4.3.5 (v10 adds knock_restricted)
            if sender_membership in ("invite", "join"):
                return  # §4.3.5.1
            via = content.get("join_authorised_via_users_server")
            if (
                not isinstance(via, str)
                or self.membership_of(via) != "join"
                or self.level_of(via) < self.named_level("invite")
            ):
                # §4.3.5.2
                raise AuthError("join_authorised_via_users_server is not a joined user able to invite")
            return  # §4.3.5.3
        if join_rule == "public":
            return  # §5.2.5
        raise AuthError(f"the room's join rule {join_rule!r} does not allow joining")  # §5.2.6

    def _check_third_party_invite(
        self, content: dict[str, Any], target: str, target_membership: str | None
    ) -> None:
        # v1 §5.3.1
        if target_membership == "ban":
            raise AuthError("invitee is banned")  # §5.3.1.1
        tpi = content.get("third_party_invite")
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        if not isinstance(signed, dict):
            raise AuthError("third_party_invite has no signed object")  # §5.3.1.2
        mxid, token = signed.get("mxid"), signed.get("token")
        if not isinstance(mxid, str) or not isinstance(token, str):
            raise AuthError("third_party_invite.signed lacks mxid or token")  # §5.3.1.3
        if mxid != target:
            raise AuthError("third_party_invite mxid does not match state_key")  # §5.3.1.4
        tpi_event = self.state.get(("m.room.third_party_invite", token))
        if tpi_event is None:
            raise AuthError("no m.room.third_party_invite for this token")  # §5.3.1.5
        if tpi_event.sender != self.event.sender:
            raise AuthError("sender did not send the m.room.third_party_invite")  # §5.3.1.6
        if _third_party_signature_matches(signed, _content_of(tpi_event)):
            return  # §5.3.1.7
        raise AuthError("no signature in third_party_invite.signed matches the invite's public keys")  # §5.3.1.8

    # rules 6 onwards (v6-v11: 5 onwards; v12: 6 onwards): any other event
    def check_other(self) -> None:
        event, rv = self.event, self.rv
        sender = event.sender
        if self.membership_of(sender) != "join":
            raise AuthError("sender is not in the room")  # v1 §6
        sender_level = self.level_of(sender)

        if event.type == "m.room.third_party_invite":
            # v1 §7
            if sender_level >= self.named_level("invite"):
                return
            raise AuthError("sender's power level is below the invite level")

        required = get_required_level_for_event(event.type, event.is_state(), self.pl_content, rv)
        if required > sender_level:
            raise AuthError(f"sender's power level is below the {required} needed for {event.type}")  # v1 §8

        state_key = event.state_key
        if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
            raise AuthError("state_key starting with '@' must be the sender's user ID")  # v1 §9

        if event.type == "m.room.power_levels":
            self._check_power_levels(sender_level)  # v1 §10
            return

        if rv.event_id_in_pdu and event.type == "m.room.redaction":
            # v1 §11 (v1-v2 only; later versions decide at "Handling redactions").
            if sender_level >= self.named_level("redact"):
                return  # §11.1
            redacts = event.redacts
            if isinstance(redacts, str) and _domain(redacts) and _domain(redacts) == _domain(event.event_id):
                return  # §11.2
            raise AuthError("cannot redact another server's event without the redact level")  # §11.3
        # v1 §12: allow

    # v1 §10 / v6 §9 / v12 §10
    def _check_power_levels(self, sender_level: PowerLevel) -> None:
        rv = self.rv
        new = _content_of(self.event)
        _validate_power_levels_content(new, rv)  # v10 §9.1-§9.3 (v1 §10.1)
        if rv.hydra:
            users = new.get("users") or {}
            creators = get_room_creators(self.create)
            if any(u in creators for u in users):
                raise AuthError("room creators cannot be listed in users")  # v12 §10.4
        if self.pl_content is None:
            return  # v1 §10.2: no previous power levels event
        old = self.pl_content

        def parse(value: Any) -> int | None:
            return parse_power_level(value, rv)

        # v1 §10.3: top-level levels added, changed or removed
        for name in ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"):
            before, after = parse(old.get(name)), parse(new.get(name))
            if before == after:
                continue
            if before is not None and before > sender_level:
                raise AuthError(f"cannot change {name} from a level above your own")  # §10.3.1
            if after is not None and after > sender_level:
                raise AuthError(f"cannot set {name} above your own level")  # §10.3.2

        # v1 §10.4/§10.5; v6 adds "notifications"
        groups = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
        for group in groups:
            old_map, new_map = _dict_or_empty(old.get(group)), _dict_or_empty(new.get(group))
            for key in old_map.keys() | new_map.keys():
                before, after = parse(old_map.get(key)), parse(new_map.get(key))
                if before == after:
                    continue
                if before is not None and before > sender_level:
                    raise AuthError(f"cannot change {group}[{key!r}] from a level above your own")
                if after is not None and after > sender_level:
                    raise AuthError(f"cannot set {group}[{key!r}] above your own level")

        # v1 §10.6/§10.7: users
        old_users, new_users = _dict_or_empty(old.get("users")), _dict_or_empty(new.get("users"))
        sender = self.event.sender
        for user in old_users.keys() | new_users.keys():
            before, after = parse(old_users.get(user)), parse(new_users.get(user))
            if before == after:
                continue
            if user != sender and before is not None and before >= sender_level:
                raise AuthError(f"cannot change the level of {user}, who is not below you")  # §10.6
            if after is not None and after > sender_level:
                raise AuthError(f"cannot give {user} a level above your own")  # §10.7
        # §10.8: allow


def _validate_power_levels_content(content: dict[str, Any], rv: RoomVersion) -> None:
    """The shape checks on a new m.room.power_levels event (v1 §10.1; v10 §9.1-§9.3)."""
    users = content.get("users", {})
    if rv.enforce_int_power_levels:
        for name in ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"):
            if name in content and not _is_int(content[name]):
                raise AuthError(f"power level {name} is not an integer")  # v10 §9.1
        for group in ("events", "notifications"):
            if group in content:
                value = content[group]
                if not isinstance(value, dict) or not all(_is_int(v) for v in value.values()):
                    raise AuthError(f"power levels {group} is not an object of integers")  # v10 §9.2
    elif not rv.strict_canonicaljson:
        # v1-floaty-power-levels: Infinity, -Infinity and NaN reject the event.
        values: list[Any] = list(content.values())
        for group in ("events", "notifications", "users"):
            if isinstance(content.get(group), dict):
                values.extend(content[group].values())
        if any(is_invalid_float(v) for v in values):
            raise AuthError("power levels contain a non-finite number")
    # v1 §10.1 / v10 §9.3: users maps valid user IDs to (stringy in v1-v9) integers
    if not isinstance(users, dict):
        raise AuthError("power levels users is not an object")
    for user, level in users.items():
        if not is_valid_user_id(user):
            raise AuthError(f"power levels users key {user!r} is not a valid user ID")
        if parse_power_level(level, rv) is None:
            raise AuthError(f"power level for {user} is not an integer")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _content_of(event: Event | None) -> dict[str, Any]:
    if event is None:
        return {}
    content = event.content
    return content if isinstance(content, dict) else {}


# -- third-party invite signatures --------------------------------------------------------


def _unpadded_b64decode(value: str) -> bytes:
    # Unpadded base64, standard or URL-safe alphabet (m.room.third_party_invite schema).
    std = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)


def _third_party_signature_matches(signed: dict[str, Any], tpi_content: dict[str, Any]) -> bool:
    """v1 §5.3.1.7: does any signature in ``signed`` verify under any public key
    of the m.room.third_party_invite (``public_key`` and ``public_keys``)?"""
    return third_party_verifying_key(signed, tpi_content) is not None


def third_party_verifying_key(signed: Any, tpi_content: Any) -> str | None:
    """The public key of the m.room.third_party_invite content (``public_key`` or an entry of
    ``public_keys``, as written there) under which a signature in ``signed`` verifies, or None.
    Signatures are over the canonical JSON of ``signed`` without ``signatures`` and
    ``unsigned`` (appendices.md §Signing JSON)."""
    if not isinstance(signed, dict) or not isinstance(tpi_content, dict):
        return None
    from canonicaljson import encode_canonical_json
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    keys: list[str] = []
    if isinstance(tpi_content.get("public_key"), str):
        keys.append(tpi_content["public_key"])
    public_keys = tpi_content.get("public_keys")
    if isinstance(public_keys, list):
        keys.extend(k["public_key"] for k in public_keys if isinstance(k, dict) and isinstance(k.get("public_key"), str))
    verify_keys = []
    for key in keys:
        try:
            verify_keys.append((key, VerifyKey(_unpadded_b64decode(key))))
        except Exception:  # malformed key: it matches nothing
            continue
    signatures = signed.get("signatures")
    if not verify_keys or not isinstance(signatures, dict):
        return None
    try:
        message = encode_canonical_json({k: v for k, v in signed.items() if k not in ("signatures", "unsigned")})
    except Exception:
        return None
    for server_sigs in signatures.values():
        if not isinstance(server_sigs, dict):
            continue
        for sig in server_sigs.values():
            if not isinstance(sig, str):
                continue
            try:
                sig_bytes = _unpadded_b64decode(sig)
            except Exception:
                continue
            for key, vk in verify_keys:
                try:
                    vk.verify(message, sig_bytes)
                    return key
                except (BadSignatureError, ValueError, TypeError):
                    continue
    return None
