"""State resolution v2 (room versions 2-11) and v2.1 (room version 12).

Private to :mod:`mxserver.rooms.state_resolution`; import from there.

Spec: rooms/fragments/v2-state-res.md (v2) and rooms/v12.md §State
resolution (v2.1, MSC4297). Section names below are those of the spec's
*Definitions* and *Algorithm* subsections.

Everything is computed over event-ID strings (whose hashes Python caches)
with memoised per-event facts in :class:`EventGraph`; each graph walk visits
an event at most once per walk, and the two orderings sort each event once
with a precomputed tuple key.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms._state_res_common import (
    INFINITY,
    POWER_LEVELS_KEY,
    AuthChecker,
    EventGraph,
    StateKey,
    StateMap,
    int_or_zero,
    is_power_event,
    iterative_auth_checks,
)

AuthOf = Callable[[str], tuple[str, ...]]


def split_v2(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], set[str]]:
    """The *unconflicted state map* and the *conflicted state set*.

    §Unconflicted state map and conflicted state set: a key present in every
    state set with the same value is unconflicted; every value of any other
    key is conflicted.
    """
    first, rest = state_sets[0], state_sets[1:]
    unconflicted: dict[StateKey, str] = {}
    conflicted: set[str] = set()
    keys: set[StateKey] = set(first)
    for state_set in rest:
        keys.update(state_set)
    for key in keys:
        value = first.get(key)
        if value is not None and all(s.get(key) == value for s in rest):
            unconflicted[key] = value
        else:
            for state_set in state_sets:
                v = state_set.get(key)
                if v is not None:
                    conflicted.add(v)
    return unconflicted, conflicted


def auth_difference(state_sets: Sequence[StateMap], auth_of: AuthOf) -> set[str]:
    """§Auth difference: ∪ C_i − ∩ C_i, C_i being the full auth chain of S_i
    (the union of the auth chains of its events, an event's auth chain not
    including the event itself).

    One walk per state set, marking each visited event with the set's bit;
    an event is in the difference unless every bit is set.
    """
    masks: dict[str, int] = {}
    for i, state_set in enumerate(state_sets):
        bit = 1 << i
        stack: list[str] = []
        for event_id in set(state_set.values()):
            stack.extend(auth_of(event_id))
        while stack:
            node = stack.pop()
            mask = masks.get(node, 0)
            if mask & bit:
                continue
            masks[node] = mask | bit
            stack.extend(auth_of(node))
    full = (1 << len(state_sets)) - 1
    return {node for node, mask in masks.items() if mask != full}


def events_between(seeds: Collection[str], auth_of: AuthOf) -> set[str]:
    """The events, other than ``seeds``, on an ``auth_events`` path from one
    seed to another: those in the auth chain of a seed that have a seed in
    their own auth chain.

    With the conflicted state set as ``seeds`` this plus the seeds that are
    endpoints of such paths is the *conflicted state subgraph* (v12.md
    §Definitions); the endpoints are in the full conflicted set anyway.
    Iterative post-order walk, so deep auth chains do not hit the recursion
    limit; a cycle (impossible with hashed event IDs) cannot loop it.
    """
    reaches: dict[str, bool] = {}  # event -> a seed is in its auth chain
    entered: set[str] = set()
    for root in seeds:
        stack: list[tuple[str, bool]] = [(c, False) for c in auth_of(root) if c not in seeds]
        while stack:
            node, children_done = stack.pop()
            if node in reaches:
                continue
            if not children_done:
                if node in entered:
                    continue
                entered.add(node)
                stack.append((node, True))
                for child in auth_of(node):
                    if child not in seeds and child not in reaches:
                        stack.append((child, False))
                continue
            found = False
            for child in auth_of(node):
                if child in seeds or reaches.get(child, False):
                    found = True
                    break
            reaches[node] = found
    return {node for node, found in reaches.items() if found}


def auth_chain_union(event_ids: Iterable[str], auth_of: AuthOf) -> set[str]:
    """The union of the auth chains of ``event_ids`` (§Auth chain)."""
    seen: set[str] = set()
    stack: list[str] = []
    for event_id in event_ids:
        stack.extend(auth_of(event_id))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(auth_of(node))
    return seen


def reverse_topological_power_order(graph: EventGraph, events: set[str]) -> list[str]:
    """§Reverse topological power ordering of ``events``.

    Kahn's algorithm over the partial order "y is in the auth chain of x",
    restricted to ``events``, always taking the smallest available event by
    (greater sender power level first, then smaller ``origin_server_ts``,
    then smaller event ID).

    The partial order is that of the whole auth DAG: an event is only
    available once every member of ``events`` in its auth chain has been
    output, even when the path between them leaves ``events``. To get this
    from Kahn's algorithm, events on such paths are added to the graph as
    pass-through nodes that are released (and not output) as soon as they
    become available. Events on an auth cycle (impossible with hashed event
    IDs, conceivable with v1/v2 ones) never become available and are left
    out.
    """
    auth_of = graph.auth_of
    between = events_between(events, auth_of)
    nodes = events | between
    pending: dict[str, int] = {}
    dependants: dict[str, list[str]] = {node: [] for node in nodes}
    for node in nodes:
        count = 0
        for auth_id in auth_of(node):
            if auth_id in nodes:
                count += 1
                dependants[auth_id].append(node)
        pending[node] = count

    def sort_key(event_id: str) -> tuple[int | float, int, str]:
        # Greater power sorts first; v12 creators have infinite power.
        return (-graph.sender_power(event_id), int_or_zero(graph.events[event_id].origin_server_ts), event_id)

    heap: list[tuple[int | float, int, str]] = []
    passthrough: list[str] = []
    for node in nodes:
        if pending[node] == 0:
            if node in between:
                passthrough.append(node)
            else:
                heap.append(sort_key(node))
    heapq.heapify(heap)

    def release(node: str) -> None:
        for dependant in dependants[node]:
            pending[dependant] -= 1
            if pending[dependant] == 0:
                if dependant in between:
                    passthrough.append(dependant)
                else:
                    heapq.heappush(heap, sort_key(dependant))

    ordered: list[str] = []
    while True:
        while passthrough:
            release(passthrough.pop())
        if not heap:
            break
        event_id = heapq.heappop(heap)[2]
        ordered.append(event_id)
        release(event_id)
    return ordered


def mainline_order(graph: EventGraph, events: Iterable[str], power_levels_id: str | None) -> list[str]:
    """§Mainline ordering of ``events`` based on ``power_levels_id``.

    The mainline of P is P, its power levels auth event, that one's, and so
    on; P_i has index i. An event's *mainline position* is the index of the
    first event in the mainline among e_1, e_2, ... (e_{j+1} being the power
    levels auth event of e_j; e_0 itself is not considered), or ∞. Events
    sort by greater position first, then smaller ``origin_server_ts``, then
    smaller event ID. Positions are memoised for every power levels event
    walked through, so each is computed once.
    """
    pl_auth = graph.power_levels_auth_event
    index: dict[str, int] = {}
    p = power_levels_id
    while p is not None and p not in index:
        index[p] = len(index)
        p = pl_auth(p)

    memo: dict[str, int | float] = {}  # power levels event -> position found from it (inclusive)

    def position_from(pl_id: str | None) -> int | float:
        path: list[str] = []
        on_path: set[str] = set()
        result: int | float = INFINITY
        while pl_id is not None:
            if pl_id in index:
                result = index[pl_id]
                break
            if pl_id in memo:
                result = memo[pl_id]
                break
            if pl_id in on_path:  # a cycle: no mainline event on it
                break
            path.append(pl_id)
            on_path.add(pl_id)
            pl_id = pl_auth(pl_id)
        for q in path:
            memo[q] = result
        return result

    def sort_key(event_id: str) -> tuple[int | float, int, str]:
        position = position_from(pl_auth(event_id))
        return (-position, int_or_zero(graph.events[event_id].origin_server_ts), event_id)

    return sorted(events, key=sort_key)


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    auth_checker: AuthChecker,
    create_event: Event | None,
    *,
    empty_starting_state: bool,
    conflicted_subgraph: bool,
) -> dict[StateKey, str]:
    """The *resolution* of ``state_sets`` (§Algorithm).

    ``empty_starting_state`` and ``conflicted_subgraph`` are the two v2.1
    changes (v12.md): step 2 starts from an empty state map, and the full
    conflicted set includes the conflicted state subgraph.
    """
    unconflicted, conflicted = split_v2(state_sets)
    if not conflicted:
        return unconflicted
    graph = EventGraph(room_version, event_map, create_event)
    auth_of = graph.auth_of

    # A conflicted event we do not have cannot be authorised: leave it out.
    conflicted = {event_id for event_id in conflicted if event_id in event_map}

    # §Full conflicted set: the conflicted state set, the auth difference and
    # (v2.1) the conflicted state subgraph.
    full_conflicted = conflicted | auth_difference(state_sets, auth_of)
    if conflicted_subgraph:
        full_conflicted |= events_between(conflicted, auth_of)

    # Step 1: the power events of the full conflicted set, plus the events of
    # their auth chains that are in the full conflicted set, in reverse
    # topological power ordering.
    power_events = {e for e in full_conflicted if is_power_event(event_map[e])}
    selected = power_events | (auth_chain_union(power_events, auth_of) & full_conflicted)
    sorted_power = reverse_topological_power_order(graph, selected)

    # Step 2: iterative auth checks from the unconflicted state map (v2) or
    # from an empty state map (v2.1).
    base: Mapping[StateKey, str] = {} if empty_starting_state else unconflicted
    partial = iterative_auth_checks(graph, auth_checker, sorted_power, base)

    # Step 3: the remaining events in mainline ordering based on the power
    # levels event of the partially resolved state.
    remaining = [e for e in full_conflicted if e not in selected]
    sorted_rest = mainline_order(graph, remaining, partial.get(POWER_LEVELS_KEY))

    # Step 4: iterative auth checks on top of the partially resolved state.
    resolved = iterative_auth_checks(graph, auth_checker, sorted_rest, partial)

    # Step 5: the unconflicted state map wins.
    resolved.update(unconflicted)
    return resolved
