"""Events from other servers: how the room server accepts, soft-fails or rejects them.

server-server-api §Checks performed on receipt of a PDU, steps 4-6: auth against the
event's own auth events and against the state before it (rejection, stored with the
reason), then against the room's current state (soft failure), state resolution when
the event forks the DAG. :class:`InboundReceiver` is the room server's part for this
(:class:`~mxserver.rooms.room_server.RoomServer` delegates to it); it writes through the
same :class:`~mxserver.rooms.sequencer.RoomSequencer` as local events: the same heads,
locks and persister.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms.auth import AuthError, auth_types_for, check_auth_rules
from mxserver.rooms.policy_server import PolicyServerSigner
from mxserver.rooms.power_levels import redaction_may_be_applied
from mxserver.rooms.room_head import RoomHead
from mxserver.rooms.sequencer import RoomSequencer
from mxserver.rooms.state_resolution import resolve_state
from mxserver.storage.events import EventStore, PersistItem
from mxserver.storage.state import NewSnapshot, StateKey, StateMap, StateStore

log = Logger()


class ReceiveStatus(enum.Enum):
    """What became of an event received from another server."""

    #: in the room's timeline and state, a forward extremity, published on the room stream
    ACCEPTED = "accepted"
    #: passed auth at its own state but not against the current state (server-server-api
    #: §Soft failure): stored with its state, never shown to clients nor cited by our events
    SOFT_FAILED = "soft_failed"
    #: failed auth against its auth events or the state before it (§Rejection): stored with
    #: the reason, no stream position, no effect on state
    REJECTED = "rejected"


@attrs.frozen
class ReceiveResult:
    status: ReceiveStatus
    #: why the event was rejected or soft failed (None when it was accepted, or for a
    #: duplicate of a soft-failed event: that reason is not stored)
    reason: str | None = None
    #: the event was already known: nothing was done
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.status is ReceiveStatus.ACCEPTED

    @property
    def soft_failed(self) -> bool:
        return self.status is ReceiveStatus.SOFT_FAILED

    @property
    def rejected(self) -> bool:
        return self.status is ReceiveStatus.REJECTED


class MissingEventsError(Exception):
    """A received event cites prev or auth events this server does not have.

    Nothing was stored: fetch ``missing`` (``/get_missing_events``, ``/event``),
    receive them first, then deliver the event again.
    """

    def __init__(self, event_id: str, missing: Sequence[str]) -> None:
        super().__init__(f"event {event_id} cites events we do not have: {', '.join(missing)}")
        self.event_id = event_id
        self.missing = list(missing)


class MissingStateError(Exception):
    """A received event's prev events are outliers: the state after them is not known.

    Nothing was stored: the caller must fetch the state at those events (``/state_ids``).
    """

    def __init__(self, event_id: str, event_ids: Sequence[str]) -> None:
        super().__init__(f"event {event_id}: the state after {', '.join(event_ids)} is not known")
        self.event_id = event_id
        self.event_ids = list(event_ids)


class EventStoreStateSource:
    """:class:`~mxserver.rooms.state_resolution.StateResolutionSource` over the event store,
    plus ``extra`` events that are not stored yet (the event being received)."""

    def __init__(self, store: EventStore, extra: Mapping[str, Event] | None = None) -> None:
        self.store = store
        self.extra = dict(extra or {})

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(event_ids)
        found = {i: self.extra[i] for i in ids if i in self.extra}
        rest = [i for i in ids if i not in found]
        if rest:
            found.update(await self.store.get_events(rest))
        return found

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        seeds: list[str] = []
        direct: set[str] = set()
        for event_id in event_ids:
            ev = self.extra.get(event_id)
            if ev is None:
                seeds.append(event_id)
            else:
                direct.update(ev.auth_event_ids)
        return direct | await self.store.get_auth_chain_ids([*seeds, *direct])


@attrs.define
class _StateAt:
    """The state before a received event: a stored snapshot, or a resolved map to store."""

    state: StateMap
    nid: int | None
    #: for a resolved map: the snapshot to store it as a delta on
    base_nid: int | None = None
    base: StateMap | None = None
    needs_snapshot: bool = False


class InboundReceiver:
    """Accepts, soft-fails or rejects events from other servers; stores outliers.

    Writes through the :class:`~mxserver.rooms.sequencer.RoomSequencer` like local
    events: under the room's lock, planned on its head, persisted by the same batches.
    """

    def __init__(
        self,
        store: EventStore,
        state: StateStore,
        sequencer: RoomSequencer,
        policy_signer: PolicyServerSigner | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.sequencer = sequencer
        #: server-server-api §Validating Policy Server signatures (v1.18)
        self.policy_signer = policy_signer
        # event ID -> callers waiting for a receive of the same event still in progress
        self._receiving: dict[str, list[Deferred[ReceiveResult]]] = {}

    async def receive_event(self, event: Event, *, state_before: Mapping[StateKey, str] | None = None) -> ReceiveResult:
        """Accept, soft-fail or reject an event received from another server.

        The caller (the federation receiver) has checked the event's format, signatures
        and hashes (server-server-api §Checks performed on receipt of a PDU, steps 1-3);
        this does steps 4-6 and persists the outcome in one transaction:

        * auth against the event's own auth events, then against the state before it
          (its prev events' states, resolved if there are several): failing either, the
          event is stored *rejected* with the reason: no stream position, no effect on
          state, never an extremity (§Rejection);
        * auth against the room's current state: failing it, the event is stored *soft
          failed*, with its state (later events may build on it) but no stream position,
          so clients never see it, and it is not an extremity (§Soft failure);
        * otherwise it is *accepted*: it gets a stream position, becomes a forward
          extremity replacing its prev events, and the room's current state becomes the
          state after it -- or, when it does not descend from every forward extremity,
          the resolution of the states after all forward extremities ("the resolved
          state across all forward extremities", §Soft failure), which is also the state
          before our next event, as that cites them all.

        Raises :class:`MissingEventsError` (nothing stored) if prev or auth events are
        unknown, :class:`MissingStateError` if prev events are outliers, a 404
        :class:`MatrixError` for an unknown room and ValueError for an event of another
        room version. Receiving a known event again does nothing (``duplicate``).

        ``state_before``: the state before the event as the federation receiver fetched it
        (``/state_ids`` of its prev events, the events already stored, e.g. as outliers) when
        its prev events cannot be fetched: prev events may then be missing or outliers.
        """
        event_id = event.event_id
        waiters = self._receiving.get(event_id)
        if waiters is not None:
            d: Deferred[ReceiveResult] = Deferred()
            waiters.append(d)
            return attrs.evolve(await d, duplicate=True)
        self._receiving[event_id] = []
        try:
            result = await self._receive(event, state_before)
        except BaseException as e:
            for waiter in self._receiving.pop(event_id):
                waiter.errback(e)
            raise
        for waiter in self._receiving.pop(event_id):
            waiter.callback(result)
        return result

    async def store_outliers(self, room_id: str, events: Sequence[Event]) -> dict[str, str | None]:
        """Store events whose place in the DAG is not known (state and auth chains fetched from
        another server) as *outliers*: no stream position, no state, not extremities.

        Each is checked against the auth rules with its own auth events (which must be among
        ``events`` or already stored); one that fails, or whose auth events are missing, is
        stored rejected. Events already known are left alone. Returns event ID -> rejection
        reason (None: accepted) for the events given.
        """
        head = await self.sequencer.get_head(room_id)
        rv = head.room.room_version
        by_id = {e.event_id: e for e in events}
        await head.lock.acquire()
        try:
            await self.sequencer.wait_for_queued()
            known = await self.store.get_events(list(by_id))
            create_id = head.state.get(("m.room.create", ""))
            needed = {a for e in by_id.values() for a in e.auth_event_ids if a not in by_id}
            have = await self.store.get_events([*needed, *([create_id] if create_id else [])])
            create = have.get(create_id) if create_id else None
            if create is None:
                create = next((e for e in by_id.values() if e.type == "m.room.create"), None)
            out: dict[str, str | None] = {}
            items: list[PersistItem] = []
            pending = [e for e in by_id.values() if e.event_id not in known]
            for event_id, ev in known.items():
                out[event_id] = ev.metadata.rejected_reason
            # Auth events first (the auth chain is a DAG): repeat passes over what is left.
            while pending:
                progressed = False
                rest = []
                for ev in pending:
                    waiting = [a for a in ev.auth_event_ids if a in by_id and a not in out]
                    if waiting:
                        rest.append(ev)
                        continue
                    progressed = True
                    reason: str | None
                    if ev.room_version.identifier != rv.identifier or ev.room_id != room_id:
                        reason = "event is not of this room"
                    else:
                        auth: list[Event] = []
                        reason = None
                        for a in ev.auth_event_ids:
                            aev = by_id.get(a) or have.get(a) or known.get(a)
                            if aev is None:
                                reason = f"auth event {a} is unknown"
                                break
                            if out.get(a) is not None or aev.rejected:
                                reason = f"auth event {a} was rejected"
                                break
                            auth.append(aev)
                        if reason is None:
                            reason = _auth_failure(ev, auth, create, selection=True)
                    out[ev.event_id] = reason
                    ev.metadata.outlier = True
                    ev.metadata.rejected_reason = reason
                    ev.metadata.stream_ordering = None
                    nid, _ = self.store.allocate_ids(stream=False)
                    items.append(PersistItem(ev, head.room, nid, None, None, None))
                if not progressed:  # a cycle: refuse what is left
                    for ev in rest:
                        out[ev.event_id] = "auth events form a cycle"
                        ev.metadata.outlier = True
                        ev.metadata.rejected_reason = out[ev.event_id]
                        nid, _ = self.store.allocate_ids(stream=False)
                        items.append(PersistItem(ev, head.room, nid, None, None, None))
                    rest = []
                pending = rest
            d = self.sequencer.enqueue(items) if items else None
        finally:
            head.lock.release()
        if d is not None:
            await d
        return out

    async def _receive(self, event: Event, state_before: Mapping[StateKey, str] | None = None) -> ReceiveResult:
        room_id = event.room_id

        async def check(head: RoomHead) -> tuple[ReceiveResult, Deferred[None] | None]:
            # The checks read the state and events of earlier events from the store, so
            # run_locked first waits until everything queued before is committed.
            result, items = await self._check_received(head, event, state_before)
            # No await between planning (stream position, nids) and queueing.
            return result, (self.sequencer.enqueue(items) if items else None)

        outcome: tuple[ReceiveResult, Deferred[None] | None] = await self.sequencer.run_locked(room_id, check)
        result, d = outcome
        if d is not None:
            await d
        if not result.duplicate and not result.accepted:
            log.info(
                "received {event_id} in {room_id}: {status}{why}",
                event_id=event.event_id,
                room_id=room_id,
                status=result.status.value,
                why=f" ({result.reason})" if result.reason else "",
            )
        return result

    async def _check_received(
        self, head: RoomHead, event: Event, given_state: Mapping[StateKey, str] | None = None
    ) -> tuple[ReceiveResult, list[PersistItem]]:
        """Decide what becomes of ``event`` and plan its persistence (the room lock is held)."""
        rv = head.room.room_version
        if event.room_version.identifier != rv.identifier:
            raise ValueError(f"event {event.event_id} is in room version {event.room_version.identifier}, not {rv.identifier}")
        known = await self.store.get_event(event.event_id)
        if known is not None:
            return self._known_result(known), []

        room_id = head.room.room_id
        event_id = event.event_id
        prev_ids = list(dict.fromkeys(event.prev_event_ids))
        cited = list(dict.fromkeys([*event.auth_event_ids, *prev_ids]))
        create_id = head.state.get(("m.room.create", ""))
        have = await self.store.get_events([*cited, *([create_id] if create_id else [])])
        missing = [e for e in cited if e not in have]
        if given_state is not None:
            # The state before is given: only the auth events must be here.
            missing = [e for e in dict.fromkeys(event.auth_event_ids) if e not in have]
        if missing:
            raise MissingEventsError(event_id, missing)
        prevs = [have[p] for p in prev_ids if p in have]
        no_state = [p.event_id for p in prevs if p.metadata.outlier]
        if no_state and given_state is None:
            raise MissingStateError(event_id, no_state)
        create = have.get(create_id) if create_id else None

        # Rejection (§Checks 4 and 5).
        reason: str | None = None
        if event.type == "m.room.create":
            reason = "the room already has an m.room.create event"
        elif any(p.room_id != room_id for p in prevs):
            reason = "a prev event is in another room"
        if reason is None:
            reason = _auth_failure(event, [have[a] for a in event.auth_event_ids], create, selection=True)
        if reason is not None and any(p.room_id != room_id for p in prevs):
            before = _StateAt({}, None)
        elif given_state is not None:
            before = _StateAt(dict(given_state), None, base_nid=None, base={}, needs_snapshot=True)
        else:
            before = await self._state_before(rv, prevs)
        if reason is None:
            reason = _auth_failure(event, await self._auth_state(before.state, event), create, selection=False)

        # Soft failure (§Checks 6): against the room's current state.
        soft: str | None = None
        if reason is None and (before.nid is None or before.nid != head.snapshot_nid):
            soft = _auth_failure(event, await self._auth_state(head.state, event), create, selection=False)

        if reason is None and soft is None and event.type == "m.room.redaction" and event.redacts:
            # rooms/v3 "Handling redactions": a redaction is not sent to clients until it can be
            # validated with its target, and one naming an event of another room never can be
            # (SyTest "An event which redacts an event in a different room should be ignored").
            # The auth rules accept it, so it is soft-failed, not rejected.
            target = await self.store.get_event(event.redacts)
            if target is not None and target.room_id != room_id:
                soft = "it redacts an event of another room"

        if reason is None and soft is None and self.policy_signer is not None:
            # §Checks performed on receipt of a PDU, step 7 (v1.18): the room's Policy Server
            # recommends it (judged on current state, as soft failure is)
            soft = await self.policy_signer.check_received(event, head.state)

        accepted = reason is None and soft is None
        state_event = event.is_state() and reason is None
        after_map: StateMap = before.state
        if state_event:
            after_map = {**before.state, event.state_tuple(): event_id}
        prev_set = set(prev_ids)
        extremities = [e for e in head.extremities if e not in prev_set] + [event_id]
        current: StateMap | None = None
        if accepted and len(extremities) > 1:
            current = await self._resolve_extremities(rv, event, after_map, extremities[:-1])

        # -- planning: synchronous from here on --
        room_nid = head.room.room_nid
        snaps: list[NewSnapshot] = []
        if before.needs_snapshot:
            snap = self.state.plan_from_map(room_nid, before.base_nid, before.base or {}, before.state)
            snaps.append(snap)
            before.nid = snap.snapshot_nid
        snapshot = None
        replaces = None
        after_nid = before.nid
        if state_event:
            key = event.state_tuple()
            replaces = before.state.get(key)
            snapshot = self.state.plan(room_nid, before.nid, before.state, {key: event_id})
            after_nid = snapshot.snapshot_nid
            after_map = snapshot.full_map
        event_nid, stream = self.store.allocate_ids(stream=reason is None and soft is None)
        event.metadata.rejected_reason = reason
        event.metadata.soft_failed = soft is not None
        event.metadata.stream_ordering = None
        item = PersistItem(
            event=event,
            room=head.room,
            event_nid=event_nid,
            stream_ordering=None,
            state_before=before.nid,
            state_after=after_nid,
            snapshot=snapshot,
            replaces_state=replaces,
            extra_snapshots=snaps,
        )
        if reason is not None:
            return ReceiveResult(ReceiveStatus.REJECTED, reason), [item]
        if soft is not None:
            return ReceiveResult(ReceiveStatus.SOFT_FAILED, soft), [item]
        if event.type == "m.room.redaction":
            item.applies_redaction = await self._redaction_applies(event, before.state, create)

        if current is None or current == after_map:
            current_nid, current_map = after_nid, after_map
        elif current == head.state:
            current_nid, current_map = head.snapshot_nid, head.state
        else:
            snap = self.state.plan_from_map(room_nid, head.snapshot_nid, head.state, current)
            snaps.append(snap)
            current_nid, current_map = snap.snapshot_nid, snap.full_map
        if current_nid == head.snapshot_nid:
            delta: dict[StateKey, str] = {}
            removed_keys: list[StateKey] = []
        else:
            delta = {k: v for k, v in current_map.items() if head.state.get(k) != v}
            removed_keys = [k for k in head.state if k not in current_map]
        assert stream is not None
        event.metadata.stream_ordering = stream
        item.stream_ordering = stream
        item.current_state_delta = delta or None
        item.current_state_removed = removed_keys
        item.current_state_after = current_nid if current_nid != after_nid else None
        item.extremities_removed = [e for e in head.extremities if e in prev_set]
        item.extremities_added = [event_id]
        head.extremities = extremities
        head.depth = max(head.depth, event.depth)
        if current_nid != head.snapshot_nid:
            # State maps are never mutated, only replaced: sharing the snapshot's map is safe.
            head.state = current_map if isinstance(current_map, dict) else dict(current_map)
            head.snapshot_nid = current_nid
        return ReceiveResult(ReceiveStatus.ACCEPTED), [item]

    @staticmethod
    def _known_result(event: Event) -> ReceiveResult:
        if event.rejected:
            return ReceiveResult(ReceiveStatus.REJECTED, event.metadata.rejected_reason, duplicate=True)
        if event.metadata.soft_failed:
            return ReceiveResult(ReceiveStatus.SOFT_FAILED, None, duplicate=True)
        return ReceiveResult(ReceiveStatus.ACCEPTED, None, duplicate=True)

    async def _state_before(self, rv: RoomVersion, prevs: Sequence[Event]) -> _StateAt:
        """The state before an event with these prev events: the state after its prev event,
        or the resolution of the states after them (a rejected prev event's state after is
        its state before: it did not change the state)."""
        nids = list(dict.fromkeys(p.metadata.state_after for p in prevs))
        if not nids:
            return _StateAt({}, None)
        if len(nids) == 1:
            return _StateAt(await self.state.get_state(nids[0]), nids[0])
        maps = [await self.state.get_state(nid) for nid in nids]
        resolved = await resolve_state(rv, maps, EventStoreStateSource(self.store))
        for nid, state in zip(nids, maps, strict=True):
            if state == resolved:
                return _StateAt(state, nid)
        return _StateAt(resolved, None, base_nid=nids[0], base=maps[0], needs_snapshot=True)

    async def _resolve_extremities(
        self, rv: RoomVersion, event: Event, after: StateMap, others: Sequence[str]
    ) -> StateMap:
        """The room's state with ``event`` (state ``after``) and ``others`` as forward extremities."""
        events = await self.store.get_events(others)
        maps: list[StateMap] = [after]
        seen: set[int | None] = set()
        for event_id in others:
            ev = events.get(event_id)
            if ev is None or ev.metadata.state_after in seen:
                continue
            seen.add(ev.metadata.state_after)
            maps.append(await self.state.get_state(ev.metadata.state_after))
        return await resolve_state(rv, maps, EventStoreStateSource(self.store, {event.event_id: event}))

    async def _redaction_applies(self, redaction: Event, state: StateMap, create: Event | None) -> bool:
        """Whether an accepted redaction redacts its target (if we hold it): never an event of
        another room (SyTest "An event which redacts an event in a different room should be
        ignored"), and from v3 only if rooms/v3 "Handling redactions" allows -- the auth rules
        no longer check redactions: its sender reaches the redact level in the state before it,
        or is of the target's sender's server. A target we do not hold is decided when it
        arrives (federation/backfill.py)."""
        target = await self.store.get_event(redaction.redacts) if redaction.redacts else None
        if target is None:
            return True
        if target.room_id != redaction.room_id:
            return False
        auth = await self._auth_state(state, redaction)
        return redaction_may_be_applied(redaction, target, auth, create_event=create)

    async def _auth_state(self, state: StateMap, event: Event) -> dict[StateKey, Event]:
        """The events of ``state`` that the auth rules may look at for ``event``."""
        keys = [k for k in auth_types_for(event) if k in state]
        events = await self.store.get_events([state[k] for k in keys])
        return {k: events[state[k]] for k in keys if state[k] in events}


def _auth_failure(event: Event, auth_events: Any, create: Event | None, *, selection: bool) -> str | None:
    """Why ``event`` fails the auth rules against ``auth_events``, or None if it passes."""
    try:
        check_auth_rules(event, auth_events, check_auth_event_selection=selection, create_event=create)
    except AuthError as e:
        return e.reason
    return None
