"""State resolution for room version 1 (rooms/v1.md §State resolution).

Private to :mod:`mxserver.rooms.state_resolution`; import from there.

The spec warns that this algorithm is known to reset state; it is kept only
so that version 1 rooms resolve the way the spec says they do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms._state_res_common import (
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    AuthChecker,
    EventGraph,
    StateKey,
    StateMap,
    check_event,
    int_or_zero,
)


def split_v1(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """The union of the states without the conflicting events, and the
    conflicts.

    v1.md: "A *conflict* occurs between states where those states have
    different ``event_ids`` for the same ``(event_type, state_key)``." A key
    that only some of the states have is therefore not a conflict (unlike in
    v2, where a key must be in every state to be unconflicted).
    """
    values: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            values.setdefault(key, set()).add(event_id)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for key, ids in values.items():
        if len(ids) == 1:
            (unconflicted[key],) = ids
        else:
            conflicted[key] = ids
    return unconflicted, conflicted


def _sha1(event_id: str) -> bytes:
    return hashlib.sha1(event_id.encode("utf-8")).digest()


def resolve_v1(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    auth_checker: AuthChecker,
    create_event: Event | None,
) -> dict[StateKey, str]:
    """v1.md §State resolution.

    R starts as the union of the states minus conflicting events. Conflicts
    on ``m.room.power_levels``, then ``m.room.join_rules``, then each
    ``m.room.member`` key, are resolved by sorting the candidates by
    ascending depth then descending sha1(event_id), taking the first and
    then each following one for as long as it is allowed in R. Every other
    conflict takes the candidate with the highest depth and lowest
    sha1(event_id) that is allowed in R (none if none is).

    "Allowed by the authorisation rules for a room in state R" is checked
    against R alone: unlike v2's iterative auth checks, v1 does not fall back
    to the event's own auth events.
    """
    graph = EventGraph(room_version, event_map, create_event)
    resolved, conflicted = split_v1(state_sets)

    def allowed(ev: Event) -> bool:
        return ev.is_state() and check_event(graph, auth_checker, ev, resolved, fall_back_to_auth_events=False)

    def candidates(key: StateKey) -> list[Event]:
        return [event_map[e] for e in conflicted[key] if e in event_map]

    # Power levels, then join rules, then memberships: ascending depth,
    # descending sha1; the first is taken, the rest while they pass auth.
    for event_type in (POWER_LEVELS, JOIN_RULES, MEMBER):
        for key in sorted(k for k in conflicted if k[0] == event_type):
            ordered = sorted(
                candidates(key),
                key=lambda ev: (int_or_zero(ev.depth), bytes(255 - b for b in _sha1(ev.event_id))),
            )
            if not ordered:
                continue
            resolved[key] = ordered[0].event_id
            for ev in ordered[1:]:
                if not allowed(ev):
                    break
                resolved[key] = ev.event_id

    # Everything else: highest depth, then lowest sha1, that passes auth in R.
    for key in sorted(k for k in conflicted if k[0] not in (POWER_LEVELS, JOIN_RULES, MEMBER)):
        ordered = sorted(candidates(key), key=lambda ev: (-int_or_zero(ev.depth), _sha1(ev.event_id)))
        for ev in ordered:
            if allowed(ev):
                resolved[key] = ev.event_id
                break
    return resolved
