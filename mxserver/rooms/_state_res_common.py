"""Pieces shared by the state resolution algorithms of every room version.

Private to :mod:`mxserver.rooms.state_resolution`; import from there.

* :class:`EventGraph` -- a memoising view of the ``event_map`` given to one
  resolution: auth event IDs (restricted to known events), the
  ``m.room.power_levels`` auth event of an event, senders' power levels.
* :func:`auth_events_for_check` / :func:`check_event` -- one step of the
  *iterative auth checks* (v2-state-res.md §Definitions) and of the v1
  "allowed by the authorisation rules for a room in state R" check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms.auth import AuthError, auth_types_for, check_auth_rules
from mxserver.rooms.power_levels import get_user_power_level

StateKey = tuple[str, str]
#: A room state: ``(event_type, state_key)`` -> event ID.
StateMap = Mapping[StateKey, str]
#: ``auth_checker(event, auth_events)``: returns None if ``event`` is allowed
#: given ``auth_events``, raises :class:`mxserver.rooms.auth.AuthError` if not.
#: In v12 ``auth_events`` holds no create event (none is ever selected); a
#: custom checker that needs it must know it already.
AuthChecker = Callable[[Event, Mapping[StateKey, Event]], None]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")

INFINITY = math.inf


def default_auth_checker(create_event: Event | None) -> AuthChecker:
    """The room version's authorisation rules (:mod:`mxserver.rooms.auth`).

    The auth events are chosen by the iterative auth checks from the state
    being resolved, not from the event's own ``auth_events``, so the "auth
    events selection" checks on the event's own ``auth_events`` are off. In
    v12 the create event is not among anybody's auth events; it is passed
    separately.
    """

    def check(event: Event, auth_events: Mapping[StateKey, Event]) -> None:
        check_auth_rules(event, auth_events, check_auth_event_selection=False, create_event=create_event)

    return check


def find_create_event(
    room_version: RoomVersion, state_sets: Sequence[StateMap], event_map: Mapping[str, Event]
) -> Event | None:
    """The room's ``m.room.create`` event, if ``event_map`` has it.

    Normally the one the state sets name (ties broken by event ID, so the
    answer does not depend on the order of the state sets). In v12, where no
    event cites the create event, it is otherwise found from the room ID,
    which is the create event's ID with the ``!`` sigil (v12-event-format).
    """
    for event_id in sorted({s[CREATE_KEY] for s in state_sets if CREATE_KEY in s}):
        ev = event_map.get(event_id)
        if ev is not None and ev.type == CREATE:
            return ev
    if room_version.hydra:
        for state_set in state_sets:
            for event_id in state_set.values():
                ev = event_map.get(event_id)
                if ev is None:
                    continue
                room_id = ev.get("room_id")
                if isinstance(room_id, str) and room_id.startswith("!"):
                    create = event_map.get("$" + room_id[1:])
                    if create is not None and create.type == CREATE:
                        return create
                return None  # every event of the room has the same room ID
    return None


def _content(event: Event) -> dict[str, Any]:
    content = event.content
    return content if isinstance(content, dict) else {}


def is_power_event(event: Event) -> bool:
    """v2-state-res.md §Definitions, *power events*: power levels and join
    rules, and memberships of ``leave``/``ban`` sent by somebody else (kicks,
    bans)."""
    if not event.is_state():
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES):
        return True
    if event.type == MEMBER:
        return _content(event).get("membership") in ("leave", "ban") and event.sender != event.state_key
    return False


def int_or_zero(value: Any) -> int:
    """``origin_server_ts`` / ``depth`` as an int usable in sort keys."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class EventGraph:
    """A memoising view of the events given to one resolution.

    Every ``auth_events`` list is read once and kept as a tuple of the IDs that
    are present in the event map (deduplicated, in their original order).
    """

    __slots__ = ("room_version", "events", "create_event", "_auth", "_pl_auth", "_power")

    def __init__(self, room_version: RoomVersion, events: Mapping[str, Event], create_event: Event | None) -> None:
        self.room_version = room_version
        self.events = events
        self.create_event = create_event
        self._auth: dict[str, tuple[str, ...]] = {}
        self._pl_auth: dict[str, str | None] = {}
        self._power: dict[str, int | float] = {}

    def auth_of(self, event_id: str) -> tuple[str, ...]:
        """IDs of the known auth events of ``event_id``."""
        auth = self._auth.get(event_id)
        if auth is None:
            ev = self.events.get(event_id)
            if ev is None:
                auth = ()
            else:
                events = self.events
                auth = tuple(dict.fromkeys(a for a in ev.auth_event_ids if a in events))
            self._auth[event_id] = auth
        return auth

    def power_levels_auth_event(self, event_id: str) -> str | None:
        """The ``m.room.power_levels`` event among the auth events of
        ``event_id`` (the *e*\\ :sub:`j+1` of the mainline definition)."""
        try:
            return self._pl_auth[event_id]
        except KeyError:
            pass
        found = None
        events = self.events
        for auth_id in self.auth_of(event_id):
            ev = events[auth_id]
            if ev.type == POWER_LEVELS and ev.state_key == "":
                found = auth_id
                break
        self._pl_auth[event_id] = found
        return found

    def sender_power(self, event_id: str) -> int | float:
        """The power level of the event's sender "when looking at [its]
        ``auth_event``\\ s" (v2-state-res.md §Reverse topological power
        ordering): the ``m.room.power_levels`` and ``m.room.create`` events
        among its auth events; v12 creators are infinitely powerful.
        """
        try:
            return self._power[event_id]
        except KeyError:
            pass
        ev = self.events[event_id]
        state: dict[StateKey, Event] = {}
        events = self.events
        for auth_id in self.auth_of(event_id):
            auth_ev = events[auth_id]
            if auth_ev.type in (POWER_LEVELS, CREATE) and auth_ev.state_key == "":
                state.setdefault((auth_ev.type, ""), auth_ev)
        create = self.create_event if self.room_version.hydra else state.get(CREATE_KEY)
        if ev.type == CREATE and ev.state_key == "":
            create = ev
        if create is not None:
            state[CREATE_KEY] = create
        power = get_user_power_level(ev.sender, state, self.room_version, create_event=create)
        self._power[event_id] = power
        return power


def auth_events_for_check(
    graph: EventGraph, event: Event, state: Mapping[StateKey, str], *, fall_back_to_auth_events: bool
) -> dict[StateKey, Event]:
    """The auth events ``event`` is checked against in state ``state``.

    v2-state-res.md §Iterative auth checks: "If a (event_type, state_key) key
    that is required for checking the authorisation rules is not present in
    the state, then the appropriate state event from the event's auth_events
    is used if the auth event is not rejected." Room version 1 checks against
    the state R alone (``fall_back_to_auth_events=False``).
    """
    result: dict[StateKey, Event] = {}
    own: dict[StateKey, Event] | None = None
    events = graph.events
    # server-server-api.md §Auth events selection: the keys the rules may need.
    for key in auth_types_for(event):
        state_id = state.get(key)
        ev = events.get(state_id) if state_id is not None else None
        if ev is None and fall_back_to_auth_events:
            if own is None:
                own = {}
                for auth_id in graph.auth_of(event.event_id):
                    auth_ev = events[auth_id]
                    if auth_ev.is_state() and not auth_ev.rejected:
                        own.setdefault(auth_ev.state_tuple(), auth_ev)
            ev = own.get(key)
        if ev is not None:
            result[key] = ev
    return result


def check_event(
    graph: EventGraph,
    auth_checker: AuthChecker,
    event: Event,
    state: Mapping[StateKey, str],
    *,
    fall_back_to_auth_events: bool,
) -> bool:
    """Whether ``event`` is allowed by the authorisation rules in ``state``
    (the checker raising :class:`AuthError` means it is not)."""
    auth_events = auth_events_for_check(graph, event, state, fall_back_to_auth_events=fall_back_to_auth_events)
    try:
        auth_checker(event, auth_events)
    except AuthError:
        return False
    return True


def iterative_auth_checks(
    graph: EventGraph,
    auth_checker: AuthChecker,
    event_ids: Sequence[str],
    base_state: Mapping[StateKey, str],
) -> dict[StateKey, str]:
    """v2-state-res.md §Iterative auth checks: apply each state event in turn
    to the state if the authorisation rules allow it, ignore it otherwise."""
    state = dict(base_state)
    events = graph.events
    for event_id in event_ids:
        ev = events[event_id]
        if not ev.is_state():
            continue
        if check_event(graph, auth_checker, ev, state, fall_back_to_auth_events=True):
            state[ev.state_tuple()] = event_id
    return state
