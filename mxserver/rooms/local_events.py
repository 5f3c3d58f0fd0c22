"""Local events: how the room server builds, authorises and sequences what our users send.

A local event is built on the room's head (its forward extremities as prev events,
the auth events its type needs from the current state), signed, checked against the
auth rules and the modules' ``check_event_allowed`` hooks, applied to the head and
queued on the :class:`~mxserver.rooms.sequencer.RoomSequencer` -- all under the
room's lock, so events of a room are built one after another on the latest state.
A client's transaction ID makes a send idempotent (client-server-api §Transaction
identifiers): a retry, even concurrent or after a restart, answers the first event.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from signedjson.types import SigningKey
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from mxserver.errors import MatrixError, forbidden
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.validation import EventFormatError
from mxserver.events.versions import RoomVersion
from mxserver.rooms.auth import AuthError, auth_types_for_event, check_auth_rules
from mxserver.rooms.policy_server import PolicyServerSigner
from mxserver.rooms.room_head import RoomHead
from mxserver.rooms.sequencer import RoomSequencer
from mxserver.storage.events import EventStore, PersistItem, RoomRecord
from mxserver.storage.state import StateStore

if TYPE_CHECKING:
    from mxserver.module_api import EventHooks

MAX_PREV_EVENTS = 10  # a PDU may cite at most 20; fewer keeps events small
#: how long a client's transaction ID keeps its meaning after a restart
TXN_RETENTION_MS = 24 * 3600 * 1000
_ALNUM = string.ascii_letters

#: (user ID, device ID, transaction ID) of a client's send
TxnKey = tuple[str, str, str]


@attrs.define
class EventSpec:
    """An event to create: what the caller decides (the room server decides the rest)."""

    type: str
    content: Mapping[str, Any]
    state_key: str | None = None
    sender: str | None = None
    redacts: str | None = None


def _tombstone_spec(sender: str, content: Mapping[str, Any], replacement_room: str) -> EventSpec:
    return EventSpec("m.room.tombstone", {**content, "replacement_room": replacement_room}, "", sender)


class LocalEventBuilder:
    """Builds, authorises and sequences local events; deduplicates client transaction IDs.

    ``event_hooks`` is read at every send (modules may register hooks after start-up):
    each hook with a ``check_event_allowed(event, state)`` method may refuse an event
    by returning False (or an awaitable of False).
    """

    def __init__(
        self,
        store: EventStore,
        state: StateStore,
        sequencer: RoomSequencer,
        *,
        clock: IReactorTime,
        server_name: str,
        signing_key: SigningKey,
        event_hooks: EventHooks,
        policy_signer: PolicyServerSigner | None = None,
    ) -> None:
        self.store = store
        #: server-server-api §Policy Servers (v1.18): a room's Policy Server signs our events
        self.policy_signer = policy_signer
        self.state = state
        self.sequencer = sequencer
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key
        self.event_hooks = event_hooks
        # txn key -> callers waiting for the event of a send still in progress
        self._inflight_txns: dict[TxnKey, list[Deferred[str]]] = {}
        # (user, device) -> txn ID -> event ID: every transaction of a device that has sent
        # since start-up (its older ones loaded once), so a send needs no database read.
        self._txns: dict[tuple[str, str], dict[str, str]] = {}
        # origin_server_ts of the last create event built: each later one gets a later time
        self._last_create_ts = 0
        sequencer.on_commit(self._remember_txns)

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- rooms --------------------------------------------------------------------------------

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], initial: Sequence[EventSpec]
    ) -> tuple[str, list[Event]]:
        """Create a room: the create event, then ``initial`` events, persisted in one transaction."""
        return await self._create_room(creator, room_version, create_content, initial, None)

    async def replace_room(
        self,
        old_room_id: str,
        creator: str,
        room_version: RoomVersion,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        tombstone_content: Mapping[str, Any],
    ) -> tuple[str, Event]:
        """Create the replacement room of an upgrade and tombstone the old one: ``(new room ID,
        the m.room.tombstone event)``.

        modules/room_upgrades.md: the new room's create event names the predecessor's "last
        known event"; that is the tombstone itself, as Synapse does (SyTest "/upgrade creates a
        new room" checks ``predecessor.event_id`` is the tombstone's ID). So the tombstone is
        built first, on the old room's head held locked (no other event can get in between),
        naming a room ID chosen in advance; the new room is created; then the tombstone is
        queued. A tombstone the upgrader may not send (403) leaves no new room behind. In v12+
        the room ID is the create event's hash and cannot be known before it, so the create
        event names the old room's latest event before the tombstone (``predecessor.event_id``
        is optional from v12 on but "SHOULD still be populated where possible", m.room.create).
        """
        sequencer = self.sequencer
        head = await sequencer.lock_existing_head(old_room_id)
        try:
            new_room_id = None if room_version.hydra else self._new_room_id()
            content = dict(create_content)
            tombstone: Event | None = None
            if new_room_id is not None:
                tombstone = await self._build_checked(head, _tombstone_spec(creator, tombstone_content, new_room_id))
                content["predecessor"] = {**content.get("predecessor", {}), "event_id": tombstone.event_id}
            elif head.extremities:
                content["predecessor"] = {**content.get("predecessor", {}), "event_id": head.extremities[-1]}
            new_room_id, _ = await self._create_room(creator, room_version, content, initial, new_room_id)
            if tombstone is None:
                tombstone = await self._build_checked(head, _tombstone_spec(creator, tombstone_content, new_room_id))
            items: list[PersistItem] = []
            self._apply(head, tombstone, items, None)
            d = sequencer.enqueue(items)
        finally:
            head.lock.release()
        await d
        return new_room_id, tombstone

    async def _build_checked(self, head: RoomHead, spec: EventSpec) -> Event:
        """Build ``spec`` on ``head`` (locked by the caller): auth rules and module hooks."""
        cache, create = await self._auth_events_for(head, spec)
        event = self._build(head, spec, cache, create)
        await self._check_hooks(event, head)
        if self.policy_signer is not None:
            # §Asking for a Policy Server signature: "before sending them to clients and servers"
            event = await self.policy_signer.sign(event, head.state)
        return event

    def _new_room_id(self) -> str:
        return "!" + "".join(secrets.choice(_ALNUM) for _ in range(18)) + ":" + self.server_name

    async def _create_room(
        self,
        creator: str,
        room_version: RoomVersion,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        room_id: str | None,
    ) -> tuple[str, list[Event]]:
        """Create a room (``room_id`` chosen by the caller, or a new one)."""
        content = dict(create_content)
        if not room_version.implicit_room_creator:
            content["creator"] = creator
        content["room_version"] = room_version.identifier
        # v12 room IDs are the create event's hash: two rooms made by one user in the same
        # millisecond with the same content would collide, so create times never repeat.
        create_ts = max(self._now_ms(), self._last_create_ts + 1)
        self._last_create_ts = create_ts
        try:
            create = build_event(
                room_version,
                type="m.room.create",
                sender=creator,
                content=content,
                room_id=None if room_version.hydra else (room_id or self._new_room_id()),
                state_key="",
                prev_event_ids=[],
                auth_event_ids=[],
                depth=1,
                origin_server_ts=create_ts,
                server_name=self.server_name,
                signing_key=self.signing_key,
            )
        except EventFormatError as e:
            # The creator's creation_content is in the create event: bad input, not our fault.
            if "too large" in e.reason or "bytes" in e.reason:
                raise MatrixError(413, "M_TOO_LARGE", f"Event too large: {e.reason}") from None
            raise MatrixError(400, "M_BAD_JSON", f"Invalid creation_content: {e.reason}") from None
        room_id = create.room_id
        try:
            check_auth_rules(create, {})
        except AuthError as e:
            raise forbidden(e.reason) from None
        room = RoomRecord(self.store.allocate_room_nid(), room_id, room_version, creator)
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
        self.sequencer.set_head(head)
        try:
            await self.sequencer.enqueue(items)
        except Exception:
            self.sequencer.forget_head(room_id)
            raise
        return room_id, events

    # -- sending ----------------------------------------------------------------------------------

    async def send(self, room_id: str, spec: EventSpec, txn_key: TxnKey | None = None) -> Event:
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
            # An event the admin API purged is no answer: the retry is a new request.
            known = await self.store.get_event(existing) if existing else None
            event = known if known is not None else await self._send(room_id, spec, txn_key)
        except BaseException as e:
            if txn_key is not None:
                for waiter in self._inflight_txns.pop(txn_key):
                    waiter.errback(e)
            raise
        if txn_key is not None:
            for waiter in self._inflight_txns.pop(txn_key):
                waiter.callback(event.event_id)
        return event

    async def _known_txn(self, txn_key: TxnKey) -> str | None:
        device = (txn_key[0], txn_key[1])
        known = self._txns.get(device)
        if known is None:
            since = self._now_ms() - TXN_RETENTION_MS
            loaded = await self.store.get_device_txns(txn_key[0], txn_key[1], since)
            known = self._txns.setdefault(device, loaded)
        return known.get(txn_key[2])

    def _remember_txns(self, items: Sequence[PersistItem]) -> None:
        """After commit: a retry of these transactions now finds their events."""
        for item in items:
            if item.txn_key is not None:
                self._txns.setdefault((item.txn_key[0], item.txn_key[1]), {})[item.txn_key[2]] = item.event.event_id

    async def _existing(self, event_id: str) -> Event:
        ev = await self.store.get_event(event_id)
        if ev is None:
            raise MatrixError(500, "M_UNKNOWN", "Transaction refers to a missing event")
        return ev

    async def _send(self, room_id: str, spec: EventSpec, txn_key: TxnKey | None) -> Event:
        event = await self._send_unlocked(room_id, spec, txn_key)
        if txn_key is not None:
            # Only the sending device sees transaction_id (client-server-api §Transaction identifiers).
            event.metadata.txn_id = txn_key[2]
            event.metadata.device_id = txn_key[1]
        return event

    async def _send_unlocked(self, room_id: str, spec: EventSpec, txn_key: TxnKey | None) -> Event:
        sequencer = self.sequencer
        # Locked and current: a head dropped while we waited (a failed write) is reloaded, as often as needed.
        head = await sequencer.lock_existing_head(room_id)
        try:
            event = await self._build_checked(head, spec)
            items: list[PersistItem] = []
            self._apply(head, event, items, txn_key)
            d = sequencer.enqueue(items)
        finally:
            head.lock.release()
        await d
        return event

    async def build_unpersisted(self, room_id: str, spec: EventSpec) -> Event:
        """Build, sign and auth-check an event on the room's current head without storing it.

        For the federation membership handshakes: make_join/make_leave/make_knock templates
        and invites that the invited user's server must co-sign before they are sent (the
        co-signed event then goes through the inbound receiver). 403 if auth fails.
        """
        # Under the room's lock, like a send: a state event sequenced while the auth events
        # are read would otherwise change the head between the read and the build, and the
        # template would cite an auth event that was not read (403 to the joining server).
        head = await self.sequencer.lock_existing_head(room_id)
        try:
            cache, create = await self._auth_events_for(head, spec)
            return self._build(head, spec, cache, create)
        finally:
            head.lock.release()

    # -- building ----------------------------------------------------------------------------------

    async def _auth_events_for(self, head: RoomHead, spec: EventSpec) -> tuple[dict[str, Event], Event | None]:
        """The events of the head's state that ``spec``'s auth may cite, and the create event."""
        rv = head.room.room_version
        wanted = auth_types_for_event(rv, spec.type, spec.sender or "", spec.state_key, dict(spec.content))
        ids = [head.state[k] for k in wanted if k in head.state]
        create_id = head.state.get(("m.room.create", ""))
        if create_id:
            ids.append(create_id)
        cache = await self.store.get_events(ids)
        unread = [i for i in ids if i not in cache]
        if unread:
            # The head is ahead of the store: a state event planned by a write that released
            # the lock but has not committed yet (a power-levels change just before a message).
            # Its commit is queued: wait for it, then read what it wrote.
            await self.sequencer.wait_for_queued()
            cache.update(await self.store.get_events(unread))
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
                server_name=self.server_name,
                signing_key=self.signing_key,
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
        if not await self.event_hooks.check_allowed(event, dict(head.state)):
            raise forbidden("This event was refused by a server module")

    def _apply(
        self, head: RoomHead, event: Event, items: list[PersistItem], txn_key: TxnKey | None, new_room: bool = False
    ) -> None:
        """Advance ``head`` past ``event`` and plan its persistence."""
        event_nid, stream = self.store.allocate_ids()
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
