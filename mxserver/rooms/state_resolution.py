"""Room state resolution: merging the room states of several DAG branches.

When an event has several ``prev_events`` the state before it is the
*resolution* of the states after each of them (server-server-api.md §Room
State Resolution). The algorithm depends on the room version
(:attr:`RoomVersion.state_res`):

* :attr:`StateResAlgorithm.V1` -- room version 1 (rooms/v1.md §State
  resolution): unconflicted union, then power levels, join rules and
  memberships replayed in (depth, sha1) order, then "highest depth wins" for
  everything else. Implemented in :mod:`mxserver.rooms._state_res_v1`.
* :attr:`StateResAlgorithm.V2` -- room versions 2-11
  (rooms/fragments/v2-state-res.md): auth difference, full conflicted set,
  power events in reverse topological power ordering, iterative auth checks,
  mainline ordering of the rest, unconflicted state reapplied. Implemented in
  :mod:`mxserver.rooms._state_res_v2`.
* :attr:`StateResAlgorithm.V2_1` -- room version 12 (rooms/v12.md §State
  resolution, MSC4297): as V2, but the first iterative auth checks start from
  an *empty* state map and the full conflicted set also contains the
  *conflicted state subgraph*.

This module is the public face:

* :func:`resolve_state_sync` -- the pure, synchronous core. It is given every
  event it may need (the state sets' events and, for v2/v2.1, their whole auth
  chains) and never does I/O.
* :func:`resolve_state` -- the async wrapper the room server calls. It fetches
  what the core needs from a :class:`StateResolutionSource` in two batched
  calls and then runs the core.

Both take an optional ``auth_checker``: a callable ``(event, auth_events)``
that returns None if ``event`` is allowed by the authorisation rules given
``auth_events`` (a map from ``(type, state_key)`` to event, built by the
iterative auth checks from the state being resolved) and raises
:class:`mxserver.rooms.auth.AuthError` if not. By default the room version's
authorisation rules from :mod:`mxserver.rooms.auth` are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, StateResAlgorithm
from mxserver.rooms._state_res_common import (
    AuthChecker,
    StateKey,
    StateMap,
    default_auth_checker,
    find_create_event,
)
from mxserver.rooms._state_res_v1 import resolve_v1, split_v1
from mxserver.rooms._state_res_v2 import resolve_v2, split_v2

__all__ = [
    "AuthChecker",
    "StateKey",
    "StateMap",
    "StateResolutionSource",
    "resolve_state",
    "resolve_state_sync",
]


class StateResolutionSource(Protocol):
    """Where :func:`resolve_state` gets events from (normally the event store)."""

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The events with these IDs that are known; unknown IDs are left out."""
        ...

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """The union of the auth chains of these events (v2-state-res.md §Auth
        chain: all auth events, their auth events, and so on)."""
        ...


def resolve_state_sync(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    auth_checker: AuthChecker | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` into one state map, following ``room_version``.

    ``event_map`` must hold every event the algorithm may look at: the events
    of the state sets and (for state resolution v2/v2.1) all events in their
    auth chains. Events missing from it are treated as unknown: a conflicted
    event that is missing cannot be authorised and is left out of the result,
    and missing auth events end the auth chain walk there. Unconflicted
    entries are passed through whether or not their events are present.

    The result does not depend on the order of ``state_sets`` nor on the
    iteration order of ``event_map``.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    algorithm = room_version.state_res
    create_event = find_create_event(room_version, state_sets, event_map)
    if auth_checker is None:
        auth_checker = default_auth_checker(create_event)
    if algorithm is StateResAlgorithm.V1:
        return resolve_v1(room_version, state_sets, event_map, auth_checker, create_event)
    return resolve_v2(
        room_version,
        state_sets,
        event_map,
        auth_checker,
        create_event,
        empty_starting_state=algorithm is StateResAlgorithm.V2_1,
        conflicted_subgraph=algorithm is StateResAlgorithm.V2_1,
    )


async def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    source: StateResolutionSource,
    auth_checker: AuthChecker | None = None,
) -> dict[StateKey, str]:
    """Fetch what :func:`resolve_state_sync` needs from ``source`` and run it.

    With no conflict at all (a single state set, or sets that agree on every
    key) nothing is fetched. Otherwise room version 1 needs only the state
    sets' events (its auth checks run against the state being built); v2 and
    v2.1 also need the auth chains of all those events, for the auth
    difference, the conflicted state subgraph, the orderings and the iterative
    auth checks' fallback to an event's own auth events.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if room_version.state_res is StateResAlgorithm.V1:
        unconflicted, v1_conflicts = split_v1(state_sets)
        has_conflicts = bool(v1_conflicts)
    else:
        unconflicted, v2_conflicted = split_v2(state_sets)
        has_conflicts = bool(v2_conflicted)
    if not has_conflicts:
        return unconflicted

    state_ids: set[str] = set()
    for state_set in state_sets:
        state_ids.update(state_set.values())
    if room_version.state_res is StateResAlgorithm.V1:
        wanted = state_ids
    else:
        wanted = state_ids | set(await source.get_auth_chain_ids(state_ids))
    event_map = await source.get_events(wanted)
    return resolve_state_sync(room_version, state_sets, event_map, auth_checker)
