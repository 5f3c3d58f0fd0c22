"""The room server: the only writer of room state.

For each room it keeps a *head* in memory (forward extremities, depth,
current state map) and serialises writers with a per-room lock. A local event
is built on the head, checked against the auth rules, applied to the head,
and queued for persistence; the persister writes everything queued so far in
one database transaction and only then answers the callers, so an
acknowledged event is always committed, and a busy room costs one commit per
batch rather than per event. After the commit the events are published on
the room event stream.

An event from another server goes through :meth:`RoomServer.receive_event`
under the same lock: auth against its own auth events and the state before
it, soft failure against the head, state resolution when it forks the DAG,
then the same persister.
"""

from __future__ import annotations

import enum
import secrets
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from mxserver.errors import MatrixError, forbidden, not_found
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.validation import EventFormatError
from mxserver.rooms.auth import AuthError, auth_types_for, auth_types_for_event, check_auth_rules
from mxserver.rooms.state_resolution import resolve_state
from mxserver.rooms.versions import RoomVersion
from mxserver.storage.events import EventStore, PersistItem, RoomRecord
from mxserver.storage.state import NewSnapshot, StateKey, StateMap, StateStore
from mxserver.streams import RoomEventStream

log = Logger()
_T = TypeVar("_T")

MAX_PREV_EVENTS = 10  # a PDU may cite at most 20; fewer keeps events small
MAX_BATCH = 500
#: how long a client's transaction ID keeps its meaning after a restart
TXN_RETENTION_MS = 24 * 3600 * 1000
_ALNUM = string.ascii_letters


@attrs.define
class EventSpec:
    """An event to create: what the caller decides (the room server decides the rest)."""

    type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    sender: str | None = None
    redacts: str | None = None


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


@attrs.define(eq=False)
class RoomHead:
    room: RoomRecord
    extremities: list[str]
    depth: int
    snapshot_nid: int | None
    state: dict[StateKey, str]
    lock: DeferredLock = attrs.field(factory=DeferredLock)


class RoomServer:
    """Creates, authorises, sequences and persists room events."""

    def __init__(self, hs: Any, store: EventStore, state: StateStore, stream: RoomEventStream) -> None:
        self.hs = hs
        self.store = store
        self.state = state
        self.stream = stream
        self._heads: dict[str, RoomHead] = {}
        self._head_loading: dict[str, list[Deferred[RoomHead]]] = {}
        self._next_stream = 1
        self._queue: list[tuple[list[PersistItem], Deferred[None]]] = []
        self._persisting = False
        # txn key -> callers waiting for the event of a send still in progress
        self._inflight_txns: dict[tuple[str, str, str], list[Deferred[str]]] = {}
        # (user, device) -> txn ID -> event ID: every transaction of a device that has sent
        # since start-up (its older ones loaded once), so a send needs no database read.
        self._txns: dict[tuple[str, str], dict[str, str]] = {}
        # origin_server_ts of the last create event built: each later one gets a later time
        self._last_create_ts = 0
        # event ID -> callers waiting for a receive of the same event still in progress
        self._receiving: dict[str, list[Deferred[ReceiveResult]]] = {}

    async def start(self) -> None:
        await self.store.load_counters()
        self._next_stream = self.store.max_stream + 1
        self.stream.position = self.store.max_stream

    @property
    def current_position(self) -> int:
        """The highest room-stream position whose events (and all before) are persisted."""
        return self.store.max_stream

    # -- heads ----------------------------------------------------------------------------

    async def get_head(self, room_id: str) -> RoomHead:
        head = self._heads.get(room_id)
        if head is not None:
            return head
        waiters = self._head_loading.get(room_id)
        if waiters is not None:
            d: Deferred[RoomHead] = Deferred()
            waiters.append(d)
            return await d
        self._head_loading[room_id] = []
        try:
            head = await self._load_head(room_id)
        except BaseException as e:
            for waiter in self._head_loading.pop(room_id):
                waiter.errback(e)
            raise
        for waiter in self._head_loading.pop(room_id):
            waiter.callback(head)
        return head

    async def _load_head(self, room_id: str) -> RoomHead:
        room = await self.store.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        extremities, depth, snapshot = await self.store.get_room_head(room.room_nid)
        state = dict(await self.state.get_state(snapshot))
        head = RoomHead(room, extremities, depth, snapshot, state)
        self._heads.setdefault(room_id, head)
        return self._heads[room_id]

    def _forget_head(self, room_id: str) -> None:
        self._heads.pop(room_id, None)

    # -- reads ------------------------------------------------------------------------------

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self.store.get_room(room_id)

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        """The room's current state map (a copy)."""
        return dict((await self.get_head(room_id)).state)

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]:
        head = await self.get_head(room_id)
        wanted = head.state if keys is None else {k: head.state[k] for k in keys if k in head.state}
        events = await self.store.get_events(wanted.values())
        return {k: events[e] for k, e in wanted.items() if e in events}

    async def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> Event | None:
        return (await self.current_state_events(room_id, [(etype, state_key)])).get((etype, state_key))

    async def membership(self, room_id: str, user_id: str) -> str | None:
        member = await self.current_state_event(room_id, "m.room.member", user_id)
        return member.membership if member is not None else None

    async def state_at_event(self, event_id: str, after: bool = True) -> dict[StateKey, str]:
        pos = await self.store.get_event_positions(event_id)
        if pos is None:
            raise not_found("Unknown event")
        return dict(await self.state.get_state(pos[3] if after else pos[2]))

    # -- writes ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.hs.clock.seconds() * 1000)

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], initial: Sequence[EventSpec]
    ) -> tuple[str, list[Event]]:
        """Create a room: the create event, then ``initial`` events, persisted in one transaction."""
        content = dict(create_content)
        if not room_version.implicit_room_creator:
            content["creator"] = creator
        content["room_version"] = room_version.identifier
        server = self.hs.server_name
        # v12 room IDs are the create event's hash: two rooms made by one user in the same
        # millisecond with the same content would collide, so create times never repeat.
        create_ts = max(self._now_ms(), self._last_create_ts + 1)
        self._last_create_ts = create_ts
        create = build_event(
            room_version,
            type="m.room.create",
            sender=creator,
            content=content,
            room_id=None if room_version.hydra else "!" + "".join(secrets.choice(_ALNUM) for _ in range(18)) + ":" + server,
            state_key="",
            prev_event_ids=[],
            auth_event_ids=[],
            depth=1,
            origin_server_ts=create_ts,
            server_name=server,
            signing_key=self.hs.signing_key,
        )
        room_id = create.room_id
        try:
            check_auth_rules(create, {})
        except AuthError as e:
            raise forbidden(e.reason) from None
        room = RoomRecord(self.store.next_room_nid, room_id, room_version, creator)
        self.store.next_room_nid += 1
        head = RoomHead(room, [], 0, None, {})
        items: list[PersistItem] = []
        events = [create]
        self._apply(head, create, items, None, new_room=True)
        cache = {create.event_id: create}
        for spec in initial:
            ev = self._build(head, spec, cache, create)
            cache[ev.event_id] = ev
            events.append(ev)
            self._apply(head, ev, items, None)
        self._heads[room_id] = head
        try:
            await self._persist(items)
        except Exception:
            self._forget_head(room_id)
            raise
        return room_id, events

    async def send(
        self,
        room_id: str,
        spec: EventSpec,
        txn_key: tuple[str, str, str] | None = None,
    ) -> Event:
        """Create, authorise and persist one local event; idempotent per ``txn_key``."""
        if txn_key is not None:
            waiters = self._inflight_txns.get(txn_key)
            if waiters is not None:
                d: Deferred[str] = Deferred()
                waiters.append(d)
                return await self._existing(await d)
            # Claim the key before the first await, so a concurrent retry waits for us.
            self._inflight_txns[txn_key] = []
        try:
            existing = await self._known_txn(txn_key) if txn_key is not None else None
            event = await self._existing(existing) if existing else await self._send(room_id, spec, txn_key)
        except BaseException as e:
            if txn_key is not None:
                for waiter in self._inflight_txns.pop(txn_key):
                    waiter.errback(e)
            raise
        if txn_key is not None:
            for waiter in self._inflight_txns.pop(txn_key):
                waiter.callback(event.event_id)
        return event

    async def _known_txn(self, txn_key: tuple[str, str, str]) -> str | None:
        device = (txn_key[0], txn_key[1])
        known = self._txns.get(device)
        if known is None:
            since = self._now_ms() - TXN_RETENTION_MS
            loaded = await self.store.get_device_txns(txn_key[0], txn_key[1], since)
            known = self._txns.setdefault(device, loaded)
        return known.get(txn_key[2])

    async def _existing(self, event_id: str) -> Event:
        ev = await self.store.get_event(event_id)
        if ev is None:
            raise MatrixError(500, "M_UNKNOWN", "Transaction refers to a missing event")
        return ev

    async def _send(self, room_id: str, spec: EventSpec, txn_key: tuple[str, str, str] | None) -> Event:
        event = await self._send_unlocked(room_id, spec, txn_key)
        if txn_key is not None:
            # Only the sending device sees transaction_id (client-server-api §Transaction identifiers).
            event.metadata.txn_id = txn_key[2]
            event.metadata.device_id = txn_key[1]
        return event

    async def _send_unlocked(self, room_id: str, spec: EventSpec, txn_key: tuple[str, str, str] | None) -> Event:
        head = await self.get_head(room_id)
        await head.lock.acquire()
        try:
            # The head may have been dropped while we waited (a failed write): rebuild it.
            if self._heads.get(room_id) is not head:
                head.lock.release()
                head = await self.get_head(room_id)
                await head.lock.acquire()
            rv = head.room.room_version
            wanted = auth_types_for_event(rv, spec.type, spec.sender or "", spec.state_key, dict(spec.content))
            ids = [head.state[k] for k in wanted if k in head.state]
            create_id = head.state.get(("m.room.create", ""))
            if create_id:
                ids.append(create_id)
            cache = await self.store.get_events(ids)
            create = cache.get(create_id) if create_id else None
            event = self._build(head, spec, cache, create)
            await self._check_hooks(event, head)
            items: list[PersistItem] = []
            self._apply(head, event, items, txn_key)
            d = self._enqueue(items)
        finally:
            head.lock.release()
        await d
        return event

    def _build(self, head: RoomHead, spec: EventSpec, cache: Mapping[str, Event], create: Event | None) -> Event:
        """Build and sign an event on ``head`` and check it against the auth rules (synchronous)."""
        rv = head.room.room_version
        sender = spec.sender
        assert sender is not None
        content = dict(spec.content)
        wanted = auth_types_for_event(rv, spec.type, sender, spec.state_key, content)
        auth_ids = [head.state[k] for k in sorted(wanted) if k in head.state]
        try:
            event = build_event(
                rv,
                type=spec.type,
                sender=sender,
                content=content,
                room_id=head.room.room_id,
                state_key=spec.state_key,
                prev_event_ids=head.extremities[-MAX_PREV_EVENTS:],
                auth_event_ids=auth_ids,
                depth=head.depth + 1,
                origin_server_ts=self._now_ms(),
                redacts=spec.redacts,
                server_name=self.hs.server_name,
                signing_key=self.hs.signing_key,
            )
        except EventFormatError as e:
            if "too large" in e.reason or "bytes" in e.reason:
                raise MatrixError(413, "M_TOO_LARGE", f"Event too large: {e.reason}") from None
            raise MatrixError(400, "M_BAD_JSON", f"Invalid event: {e.reason}") from None
        auth_events = {k: cache[head.state[k]] for k in wanted if k in head.state and head.state[k] in cache}
        try:
            check_auth_rules(event, auth_events, create_event=create)
        except AuthError as e:
            raise forbidden(e.reason) from None
        return event

    async def _check_hooks(self, event: Event, head: RoomHead) -> None:
        for hook in self.hs.event_hooks:
            check = getattr(hook, "check_event_allowed", None)
            if check is None:
                continue
            allowed = check(event, dict(head.state))
            if isinstance(allowed, Deferred) or hasattr(allowed, "__await__"):
                allowed = await allowed
            if allowed is False:
                raise forbidden("This event was refused by a server module")

    def _apply(
        self, head: RoomHead, event: Event, items: list[PersistItem], txn_key: tuple[str, str, str] | None,
        new_room: bool = False,
    ) -> None:
        """Advance ``head`` past ``event`` and plan its persistence."""
        stream = self._next_stream
        self._next_stream += 1
        state_before = head.snapshot_nid
        snapshot = None
        delta = None
        replaces = None
        if event.is_state():
            key = event.state_tuple()
            replaces = head.state.get(key)
            delta = {key: event.event_id}
            snapshot = self.state.plan(head.room.room_nid, head.snapshot_nid, head.state, delta)
            head.state = snapshot.full_map
            head.snapshot_nid = snapshot.snapshot_nid
        removed = [e for e in head.extremities if e in set(event.prev_event_ids)]
        head.extremities = [e for e in head.extremities if e not in removed] + [event.event_id]
        head.depth = max(head.depth, event.depth)
        event.metadata.stream_ordering = stream
        event_nid = self.store.next_event_nid
        self.store.next_event_nid += 1
        items.append(
            PersistItem(
                event=event,
                room=head.room,
                event_nid=event_nid,
                stream_ordering=stream,
                state_before=state_before,
                state_after=head.snapshot_nid,
                snapshot=snapshot,
                replaces_state=replaces,
                current_state_delta=delta,
                extremities_removed=removed,
                extremities_added=[event.event_id],
                txn_key=txn_key,
                new_room=new_room,
            )
        )

    # -- events from other servers ---------------------------------------------------------------

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
        head = await self.get_head(room_id)
        rv = head.room.room_version
        by_id = {e.event_id: e for e in events}
        await head.lock.acquire()
        try:
            if self._persisting or self._queue:
                await self._enqueue([])
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
                    nid = self.store.next_event_nid
                    self.store.next_event_nid += 1
                    items.append(PersistItem(ev, head.room, nid, None, None, None))
                if not progressed:  # a cycle: refuse what is left
                    for ev in rest:
                        out[ev.event_id] = "auth events form a cycle"
                        ev.metadata.outlier = True
                        ev.metadata.rejected_reason = out[ev.event_id]
                        nid = self.store.next_event_nid
                        self.store.next_event_nid += 1
                        items.append(PersistItem(ev, head.room, nid, None, None, None))
                    rest = []
                pending = rest
            d = self._enqueue(items) if items else None
        finally:
            head.lock.release()
        if d is not None:
            await d
        return out

    async def _receive(self, event: Event, state_before: Mapping[StateKey, str] | None = None) -> ReceiveResult:
        room_id = event.room_id
        while True:
            head = await self.get_head(room_id)
            await head.lock.acquire()
            try:
                if self._heads.get(room_id) is not head:
                    continue  # dropped after a failed write while we waited: reload
                if self._persisting or self._queue:
                    # The checks read the state and events of earlier events from the store:
                    # wait until everything queued before (our own sends included) is committed.
                    await self._enqueue([])
                    if self._heads.get(room_id) is not head:
                        continue
                result, items = await self._check_received(head, event, state_before)
                # No await between planning (stream position, nids) and queueing.
                d = self._enqueue(items) if items else None
            finally:
                head.lock.release()
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
        event_nid = self.store.next_event_nid
        self.store.next_event_nid += 1
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
        stream = self._next_stream
        self._next_stream += 1
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

    async def run_locked(self, room_id: str, fn: Callable[[RoomHead], Awaitable[_T]]) -> _T:
        """Run ``fn(head)`` holding the room's lock, once every write queued before is committed.

        For writers of room *history* with their own store (backfill): events they store
        are never extremities nor current state, but must not race a receive of the same
        event, and their reads must see everything queued before.
        """
        while True:
            head = await self.get_head(room_id)
            await head.lock.acquire()
            try:
                if self._heads.get(room_id) is not head:
                    continue  # dropped after a failed write while we waited: reload
                if self._persisting or self._queue:
                    await self._enqueue([])
                    if self._heads.get(room_id) is not head:
                        continue
                return await fn(head)
            finally:
                head.lock.release()

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

    async def _auth_state(self, state: StateMap, event: Event) -> dict[StateKey, Event]:
        """The events of ``state`` that the auth rules may look at for ``event``."""
        keys = [k for k in auth_types_for(event) if k in state]
        events = await self.store.get_events([state[k] for k in keys])
        return {k: events[state[k]] for k in keys if state[k] in events}

    # -- hooks for membership over federation (mxserver/rooms/remote_rooms.py) --------------------

    async def build_unpersisted(self, room_id: str, spec: EventSpec) -> Event:
        """Build, sign and auth-check an event on the room's current head without storing it.

        For the federation membership handshakes: make_join/make_leave/make_knock templates
        and invites that the invited user's server must co-sign before they are sent (the
        co-signed event then goes through :meth:`receive_event`). 403 if auth fails.
        """
        head = await self.get_head(room_id)
        rv = head.room.room_version
        wanted = auth_types_for_event(rv, spec.type, spec.sender or "", spec.state_key, dict(spec.content))
        ids = [head.state[k] for k in wanted if k in head.state]
        create_id = head.state.get(("m.room.create", ""))
        if create_id:
            ids.append(create_id)
        cache = await self.store.get_events(ids)
        return self._build(head, spec, cache, cache.get(create_id) if create_id else None)

    async def _lock_existing(self, room_id: str) -> tuple[RoomRecord | None, RoomHead | None]:
        room = await self.store.get_room(room_id)
        if room is None:
            return None, None
        while True:
            head = await self.get_head(room_id)
            await head.lock.acquire()
            if self._heads.get(room_id) is head:
                return room, head
            head.lock.release()

    def _new_room_record(self, room_id: str, room_version: RoomVersion, creator: str) -> RoomRecord:
        room = RoomRecord(self.store.next_room_nid, room_id, room_version, creator)
        self.store.next_room_nid += 1
        return room

    async def persist_joined_state(
        self,
        room_id: str,
        room_version: RoomVersion,
        creator: str,
        outliers: Sequence[Event],
        event: Event,
        state_before: Mapping[StateKey, str],
    ) -> bool:
        """Adopt the room state another server answered to our join (send_join), in one transaction.

        ``outliers`` (the auth chain and the state; rejections already decided by the caller
        in their metadata) are stored as outliers; ``event`` (our accepted membership event)
        with ``state_before`` as the state before it. The room's current state becomes the
        state after ``event``, which becomes its only forward extremity (any older extremities
        of a room we had left are dropped: we no longer follow them). Creates the room record
        if the room is new here. False if ``event`` was already stored.
        """
        room, head = await self._lock_existing(room_id)
        try:
            if head is not None and (self._persisting or self._queue):
                await self._enqueue([])
            known = await self.store.get_events([*(e.event_id for e in outliers), event.event_id])
            if event.event_id in known:
                return False
            # -- planning: synchronous from here on --
            new_room = room is None
            if room is None:
                room = self._new_room_record(room_id, room_version, creator)
            items: list[PersistItem] = []
            for ev in outliers:
                if ev.event_id in known or ev.event_id == event.event_id:
                    continue
                ev.metadata.outlier = True
                ev.metadata.stream_ordering = None
                nid = self.store.next_event_nid
                self.store.next_event_nid += 1
                items.append(PersistItem(ev, room, nid, None, None, None, new_room=new_room and not items))
            old_state: StateMap = head.state if head is not None else {}
            old_nid = head.snapshot_nid if head is not None else None
            before = self.state.plan_from_map(room.room_nid, old_nid, old_state, state_before)
            snapshot = None
            after_nid, after_map = before.snapshot_nid, before.full_map
            replaces = None
            if event.is_state():
                replaces = before.full_map.get(event.state_tuple())
                snapshot = self.state.plan(
                    room.room_nid, before.snapshot_nid, before.full_map, {event.state_tuple(): event.event_id}
                )
                after_nid, after_map = snapshot.snapshot_nid, snapshot.full_map
            stream = self._next_stream
            self._next_stream += 1
            event.metadata.outlier = False
            event.metadata.rejected_reason = None
            event.metadata.stream_ordering = stream
            nid = self.store.next_event_nid
            self.store.next_event_nid += 1
            items.append(
                PersistItem(
                    event=event,
                    room=room,
                    event_nid=nid,
                    stream_ordering=stream,
                    state_before=before.snapshot_nid,
                    state_after=after_nid,
                    snapshot=snapshot,
                    replaces_state=replaces,
                    current_state_delta={k: v for k, v in after_map.items() if old_state.get(k) != v} or None,
                    current_state_removed=[k for k in old_state if k not in after_map],
                    extra_snapshots=[before],
                    extremities_removed=list(head.extremities) if head is not None else [],
                    extremities_added=[event.event_id],
                    new_room=new_room and not items,
                )
            )
            depth = max(event.depth, head.depth if head is not None else 0)
            self._heads[room_id] = RoomHead(room, [event.event_id], depth, after_nid, dict(after_map))
            d = self._enqueue(items)
        finally:
            if head is not None:
                head.lock.release()
        await d
        return True

    async def persist_out_of_band_membership(
        self, room_id: str, room_version: RoomVersion, creator: str, event: Event
    ) -> bool:
        """Store a membership event of a local user in a room this server is not in (an invite
        from another server, our rejection of it or a knock made through another server).

        It is an outlier -- not part of the room's state or DAG here -- with a stream position,
        so /sync shows the user the invite, knock or leave (``room_memberships``). Creates the
        room record if needed. False if the event was already stored.
        """
        room, head = await self._lock_existing(room_id)
        try:
            if head is not None and (self._persisting or self._queue):
                await self._enqueue([])
            if await self.store.get_event(event.event_id) is not None:
                return False
            new_room = room is None
            if room is None:
                room = self._new_room_record(room_id, room_version, creator)
            stream = self._next_stream
            self._next_stream += 1
            event.metadata.outlier = True
            event.metadata.stream_ordering = stream
            nid = self.store.next_event_nid
            self.store.next_event_nid += 1
            # The room's latest snapshot stays what it was: the head is reloaded from it.
            snap = head.snapshot_nid if head is not None else None
            item = PersistItem(event, room, nid, stream, snap, snap, new_room=new_room, out_of_band_membership=True)
            d = self._enqueue([item])
        finally:
            if head is not None:
                head.lock.release()
        await d
        return True

    # -- persistence -----------------------------------------------------------------------------

    def _persist(self, items: list[PersistItem]) -> Deferred[None]:
        return self._enqueue(items)

    def _enqueue(self, items: list[PersistItem]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._queue.append((items, d))
        if not self._persisting:
            self._drain()
        return d

    def _drain(self) -> None:
        if not self._queue:
            self._persisting = False
            return
        self._persisting = True
        batch: list[tuple[list[PersistItem], Deferred[None]]] = []
        count = 0
        while self._queue and count < MAX_BATCH:
            items, d = self._queue.pop(0)
            batch.append((items, d))
            count += len(items)
        all_items = [i for items, _ in batch for i in items]
        d = self.store.persist(all_items, self._now_ms())

        def ok(_: Any) -> None:
            self.store.persisted(all_items)
            for item in all_items:
                if item.txn_key is not None:
                    self._txns.setdefault((item.txn_key[0], item.txn_key[1]), {})[item.txn_key[2]] = item.event.event_id
            events = [i.event for i in all_items if i.stream_ordering is not None]
            if events:
                self.stream.publish(events, self.store.max_stream)
            for _, waiter in batch:
                waiter.callback(None)

        def failed(failure: Any) -> None:
            log.failure("persisting {n} events failed", failure, n=len(all_items))
            rooms = {i.room.room_id for i in all_items}
            for room_id in rooms:
                self._forget_head(room_id)
            self.state.invalidate_planned()
            err = MatrixError(500, "M_UNKNOWN", "Could not store the event")
            for _, waiter in batch:
                waiter.errback(err)
            # Later queued events of those rooms were built on the lost ones: fail them too.
            keep = []
            for items, waiter in self._queue:
                if any(i.room.room_id in rooms for i in items):
                    waiter.errback(err)
                else:
                    keep.append((items, waiter))
            self._queue = keep

        d.addCallbacks(ok, failed)
        d.addBoth(lambda _: self._drain())


def _auth_failure(event: Event, auth_events: Any, create: Event | None, *, selection: bool) -> str | None:
    """Why ``event`` fails the auth rules against ``auth_events``, or None if it passes."""
    try:
        check_auth_rules(event, auth_events, check_auth_event_selection=selection, create_event=create)
    except AuthError as e:
        return e.reason
    return None
