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
(``mxserver/rooms/receive.py``) under the same lock: auth against its own auth
events and the state before it, soft failure against the head, state
resolution when it forks the DAG, then the same persister. The hooks for
joining rooms on other servers are in ``mxserver/rooms/remote_membership.py``.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxserver.errors import MatrixError, forbidden, not_found
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.validation import EventFormatError
from mxserver.events.versions import RoomVersion
from mxserver.rooms.auth import AuthError, auth_types_for_event, check_auth_rules
from mxserver.rooms.receive import (  # noqa: F401 (re-exported: the room server's receive API)
    EventStoreStateSource,
    MissingEventsError,
    MissingStateError,
    ReceiveResult,
    ReceiveStatus,
    ReceivingMixin,
)
from mxserver.rooms.remote_membership import RemoteMembershipMixin
from mxserver.rooms.room_head import RoomHead
from mxserver.storage.events import EventStore, PersistItem, RoomRecord
from mxserver.storage.state import StateKey, StateStore
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



class RoomServer(ReceivingMixin, RemoteMembershipMixin):
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
            cache, create = await self._auth_events_for(head, spec)
            event = self._build(head, spec, cache, create)
            await self._check_hooks(event, head)
            items: list[PersistItem] = []
            self._apply(head, event, items, txn_key)
            d = self._enqueue(items)
        finally:
            head.lock.release()
        await d
        return event

    async def _auth_events_for(self, head: RoomHead, spec: EventSpec) -> tuple[dict[str, Event], Event | None]:
        """The events of the head's state that ``spec``'s auth may cite, and the create event."""
        rv = head.room.room_version
        wanted = auth_types_for_event(rv, spec.type, spec.sender or "", spec.state_key, dict(spec.content))
        ids = [head.state[k] for k in wanted if k in head.state]
        create_id = head.state.get(("m.room.create", ""))
        if create_id:
            ids.append(create_id)
        cache = await self.store.get_events(ids)
        return cache, cache.get(create_id) if create_id else None

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
                self.stream.publish_events(events, self.store.max_stream)
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
