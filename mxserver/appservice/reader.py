"""The appservice reader: picks what each application service is interested in and queues it.

A reader of the room event stream like the push reader (DESIGN.md §How data flows): it never
writes room state, and it keeps its own persisted position (``stream_readers``, name
``appservices``). For every new event and every service with a URL it decides interest
(application-service-api §Registration, as Synapse decides it):

- the room ID is in the service's ``rooms`` namespace;
- the sender, or the ``state_key`` of a member event, is the service's sender or a local user
  in its ``users`` namespace;
- one of the room's local aliases is in its ``aliases`` namespace;
- one of the room's joined members is its sender or a local user of its ``users`` namespace.

The room-level answers are kept per room and service: whether the room's ID or aliases are in
the namespaces, and which of the service's users are joined. The latter is read from the
room's members once, then follows the member events in stream order as the reader reads them,
so an event is judged by who was in the room when it was sent, not when it is read (a user who
joins, is sent a message and leaves before the reader gets there still gets the message). A
room's answers are forgotten when its aliases change or its state is replaced by a join over
federation. The chosen events are queued per service in the
transaction that moves the reader's position, so each is queued once, in stream order, also
across a crash; the sender (:mod:`mxserver.appservice.sender`) delivers them.

Ephemeral data (application-service-api §Pushing ephemeral data) comes from the ephemeral
streams, for services with ``receive_ephemeral``: ``m.typing`` and ``m.receipt`` of rooms the
service is interested in (private receipts only of its own users), ``m.presence`` of its users
and of users sharing a room with them, and to-device messages to its users (MSC4203, as Synapse
sends them under ``de.sorunome.msc2409.to_device``). They are queued as they happen, in order;
what happens while the server is down is not replayed (typing and presence live in memory).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.appservice.registration import AppService
from mxserver.events.model import Event
from mxserver.storage.appservices import EPHEMERAL, TO_DEVICE, AppServiceStore
from mxserver.storage.federation_sender import OrderedWrites
from mxserver.stream_reader import EventSource, StreamReader, in_timeline
from mxserver.streams import PresenceChange, ReceiptChange, RoomEventStream, ToDeviceSent, TypingChange

log = Logger()

#: the reader's name in ``stream_readers``
READER_NAME = "appservices"
#: how long published events wait to be read together (one write for a burst of sends)
BATCH_WINDOW_S = 0.01
#: rooms whose interest is remembered (per service) before the memo starts over
MAX_REMEMBERED_ROOMS = 100_000


@attrs.define
class _RoomInterest:
    """A service's interest in a room as a whole."""

    #: the room's ID or one of its local aliases is in the service's namespaces
    named: bool
    #: the service's sender and users joined to the room (as of the reader's position)
    members: set[str]

    @property
    def interested(self) -> bool:
        return self.named or bool(self.members)


#: ``{service ID: rows queued}``: the sender's cue that a queue grew
Queued = Callable[[dict[str, int]], Any]


class AppServiceReader(StreamReader):
    """Queues the events, ephemeral data and to-device messages each service is interested in."""

    def __init__(
        self,
        services: Callable[[], Sequence[AppService]],
        store: AppServiceStore,
        stream: RoomEventStream,
        events: EventSource,
        members: Callable[[str], Awaitable[Collection[str]]],
        aliases: Callable[[str], Awaitable[list[str]]],
        devices: Callable[[str], Awaitable[list[str]]],
        current_position: Callable[[], int],
        reactor: IReactorTime,
        state: Callable[[int], Awaitable[Mapping[tuple[str, str], str]]] | None = None,
    ) -> None:
        """``services``: the services with a URL, now (a reload changes them); ``members``: a
        room's joined users; ``aliases``: a room's local aliases; ``devices``: a user's device IDs;
        ``state``: a state snapshot's entries (type, state key) -> event ID, to read who was in a
        room at an event (without it: who is in it now)."""
        self._services = services
        self._store = store
        self._members = members
        self._state = state
        self._aliases = aliases
        self._devices = devices
        #: room ID -> service ID -> its interest in the whole room
        self._rooms: dict[str, dict[str, _RoomInterest]] = {}
        #: room ID -> the stream position when its aliases last changed, while events before it
        #: may still be unread
        self._aliases_from: dict[str, int] = {}
        #: alias changes so far (an answer worked out across one is worked out again)
        self._alias_changes = 0
        self._listeners: list[Queued] = []
        self._writes = OrderedWrites()
        self._seq = 0
        # Read a moment later, outside the publish: the sender's answer goes first, and a burst
        # of sends is queued in one write.
        super().__init__(READER_NAME, stream, events, current_position, reactor, BATCH_WINDOW_S)

    def on_queued(self, fn: Queued) -> None:
        """Call ``fn({service ID: rows})`` after rows for those services are stored."""
        self._listeners.append(fn)

    def _queued(self, counts: dict[str, int]) -> None:
        for fn in self._listeners:
            try:
                fn(counts)
            except Exception:
                log.failure("an appservice queue listener failed")

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the persisted position (a start hook, after migrations) and catch up from it."""
        stored = await self._store.reader_position(READER_NAME)
        self._seq = await self._store.max_ephemeral_seq()
        await self._start_from(stored, lambda position: self._store.enqueue_events(READER_NAME, position, []))

    async def stop(self) -> None:
        """Finish what is being read and take no more; the rest is read after the next start."""
        await self._halt()
        await self._writes.flush()

    # -- what changes interest --------------------------------------------------------------------

    def room_changed(self, room_id: str) -> None:
        """The room's state was replaced by a join over federation (no member event per change):
        its interest is worked out again."""
        self._rooms.pop(room_id, None)

    def aliases_changed(self, room_id: str) -> None:
        """The room's local aliases changed: its interest is worked out again, for the events
        published from now on. An alias names the room to a service from when it was made: the
        events published before it, which this reader may not have read yet (a room made and
        given an alias at once), are not sent for the alias."""
        self._rooms.pop(room_id, None)
        self._aliases_from[room_id] = self._stream.position
        self._alias_changes += 1

    def services_changed(self, *_: Any) -> None:
        """The registrations were reloaded: every room's interest is worked out again."""
        self._rooms.clear()

    # -- room events ------------------------------------------------------------------------------

    async def _process(self, events: Sequence[Event], upto: int) -> None:
        rows: list[tuple[str, int, str]] = []
        services = self._services()
        for event in events:
            if not in_timeline(event):
                continue
            order = event.metadata.stream_ordering
            assert order is not None
            self._follow_membership(event)
            for service in services:
                try:
                    if await self._interested(service, event):
                        rows.append((service.id, order, event.event_id))
                except Exception:
                    # One event must not stop every later one.
                    log.failure("deciding {id}'s interest in {event_id} failed", id=service.id, event_id=event.event_id)
        if rows or self._persist_due(upto):
            await self._store.enqueue_events(READER_NAME, upto, rows)
            self._persisted = upto
            if rows:
                counts: dict[str, int] = {}
                for service_id, _, _ in rows:
                    counts[service_id] = counts.get(service_id, 0) + 1
                self._queued(counts)
        # Else no write: reading those events again after a restart queues nothing either.
        self._advance(upto)

    async def _interested(self, service: AppService, event: Event) -> bool:
        if service.is_interested_in_user(event.sender):
            return True
        state_key = event.get("state_key")
        if event.type == "m.room.member" and isinstance(state_key, str) and service.is_interested_in_user(state_key):
            return True
        return await self.interested_in_room(
            service, event.room_id, event.metadata.stream_ordering, event.metadata.state_after
        )

    def _follow_membership(self, event: Event) -> None:
        """A member event, in stream order: the joined users the reader knows of follow it."""
        memo = self._rooms.get(event.room_id)
        state_key = event.get("state_key")
        if memo is None or event.type != "m.room.member" or not isinstance(state_key, str):
            return
        joined = event.content.get("membership") == "join"
        for service in self._services():
            interest = memo.get(service.id)
            if interest is not None and service.is_interested_in_user(state_key):
                (interest.members.add if joined else interest.members.discard)(state_key)

    async def interested_in_room(
        self, service: AppService, room_id: str, position: int | None = None, state_nid: int | None = None
    ) -> bool:
        """The room's ID or one of its local aliases is in the service's namespaces, or one of its
        joined members is the service's sender or one of its users (for an event at ``position``:
        aliases made after it do not count; with ``state_nid``, the room's state after that
        event, members are those joined then, not now: a service user who joined a moment after
        the room was made, before the reader got to it, does not make the room's first events
        the service's)."""
        while True:
            generation = self._alias_changes
            since = self._aliases_from.get(room_id)
            if since is not None and since <= self.position:
                del self._aliases_from[room_id]  # every event before the change is read
                since = None
            before_change = since is not None and position is not None and position <= since
            memo = self._rooms.get(room_id)
            if memo is not None and service.id in memo and not before_change:
                return memo[service.id].interested
            named = service.is_interested_in_room_id(room_id)
            if not named and service.aliases and not before_change:
                named = any(service.is_interested_in_alias(a) for a in await self._aliases(room_id))
            members = await self._interested_members(service, room_id, state_nid)
            if self._alias_changes != generation:
                continue  # aliases changed while these were read: which side of it is this event on?
            if before_change:
                return named or bool(members)  # not remembered: it is not the room's interest now
            break
        if len(self._rooms) > MAX_REMEMBERED_ROOMS:
            self._rooms.clear()
        # Another reading may have started following the room meanwhile: its answer stays.
        interest = self._rooms.setdefault(room_id, {}).setdefault(service.id, _RoomInterest(named, members))
        return interest.interested

    async def _interested_members(self, service: AppService, room_id: str, state_nid: int | None) -> set[str]:
        """The service's users joined to the room: after the state snapshot ``state_nid`` if
        there is one (only their member events are read), else now."""
        if state_nid is None or self._state is None:
            return {u for u in await self._members(room_id) if service.is_interested_in_user(u)}
        state = await self._state(state_nid)
        wanted = [
            event_id
            for (etype, state_key), event_id in state.items()
            if etype == "m.room.member" and service.is_interested_in_user(state_key)
        ]
        if not wanted:
            return set()
        found = await self._events.get_events(wanted)
        return {
            ev.state_key
            for ev in found.values()
            if isinstance(ev.state_key, str) and ev.content.get("membership") == "join"
        }

    # -- ephemeral data (ephemeral streams subscriber) -----------------------------------------------

    def _ephemeral_services(self) -> list[AppService]:
        return [s for s in self._services() if s.receive_ephemeral] if self._started else []

    def _in_order(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``work`` after every earlier piece of ephemeral work: a service sees typing,
        receipts and presence in the order they happened, even when working out its interest
        in a room has to read the database first."""

        async def run() -> None:
            try:
                await work()
            except Exception:
                log.failure("queueing {what} for application services failed", what=what)

        self._writes.write(run)

    async def _enqueue(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Queue ``(service ID, kind, content)`` rows (inside :meth:`_in_order`)."""
        if not rows:
            return
        numbered = []
        counts: dict[str, int] = {}
        for service_id, kind, content in rows:
            self._seq += 1
            numbered.append((service_id, self._seq, kind, content))
            counts[service_id] = counts.get(service_id, 0) + 1
        await self._store.enqueue_ephemeral(numbered)
        self._queued(counts)

    def on_typing(self, change: TypingChange) -> None:
        if change.refreshed is not None or not self._ephemeral_services():
            return
        content = {"type": "m.typing", "room_id": change.room_id, "content": {"user_ids": sorted(change.typing_now)}}
        self._in_order(lambda: self._room_ephemeral(change.room_id, content), "typing")

    def on_receipt(self, change: ReceiptChange) -> None:
        services = self._ephemeral_services()
        if not services:
            return
        receipt: dict[str, Any] = {"ts": change.ts}
        if change.thread_id is not None:
            receipt["thread_id"] = change.thread_id
        content = {
            "type": "m.receipt",
            "room_id": change.room_id,
            "content": {change.event_id: {change.receipt_type: {change.user_id: receipt}}},
        }
        # §Pushing ephemeral data: private read receipts only of the service's own users.
        private = change.receipt_type == "m.read.private"
        only = None if not private else [s for s in services if s.is_interested_in_user(change.user_id)]
        self._in_order(lambda: self._room_ephemeral(change.room_id, content, only), "a receipt")

    async def _room_ephemeral(
        self, room_id: str, content: dict[str, Any], only: list[AppService] | None = None
    ) -> None:
        rows = []
        for service in only if only is not None else self._ephemeral_services():
            if await self.interested_in_room(service, room_id):
                rows.append((service.id, EPHEMERAL, content))
        await self._enqueue(rows)

    def on_presence(self, change: PresenceChange) -> None:
        content = {"type": "m.presence", "sender": change.user_id, "content": dict(change.state)}
        rows = []
        for service in self._ephemeral_services():
            # §Pushing ephemeral data: "a presence update for a user an application service shares
            # a room with, or matching one of the application service's namespaces".
            if service.is_interested_in_user(change.user_id) or any(
                service.is_interested_in_user(u) for u in change.notify_users
            ):
                rows.append((service.id, EPHEMERAL, content))
        if rows:
            self._in_order(lambda: self._enqueue(rows), "presence")

    def on_to_device(self, sent: ToDeviceSent) -> None:
        if self._ephemeral_services():
            self._in_order(lambda: self._to_device(sent), "to-device messages")

    async def _to_device(self, sent: ToDeviceSent) -> None:
        rows = []
        for service in self._ephemeral_services():
            for user_id, by_device in sent.messages.items():
                if not service.is_interested_in_user(user_id):
                    continue
                for device_id, message in by_device.items():
                    targets = await self._devices(user_id) if device_id == "*" else [device_id]
                    for target in targets:
                        rows.append(
                            (
                                service.id,
                                TO_DEVICE,
                                {
                                    "type": sent.event_type,
                                    "sender": sent.sender,
                                    "content": message,
                                    "to_user_id": user_id,
                                    "to_device_id": target,
                                },
                            )
                        )
        await self._enqueue(rows)
