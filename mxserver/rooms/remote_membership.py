"""Room-server hooks for membership over federation (used by mxserver/federation/remote_rooms.py).

Joining a room on another server adopts the state its resident server sent
(``persist_joined_state``); an invite or knock for a room we are not in is kept as
an out-of-band membership (``persist_out_of_band_membership``); the membership
handshakes need events built on the head but not stored (``build_unpersisted``).
:class:`RemoteMembershipMixin` is part of
:class:`~mxserver.rooms.room_server.RoomServer`: the same heads, lock and persister.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms.room_head import RoomHead
from mxserver.storage.events import EventStore, PersistItem, RoomRecord
from mxserver.storage.state import StateKey, StateMap, StateStore

if TYPE_CHECKING:
    from mxserver.rooms.room_server import EventSpec

log = Logger()


class RemoteMembershipMixin:
    """Federation membership hooks of :class:`~mxserver.rooms.room_server.RoomServer`."""

    # Provided by RoomServer (mxserver/rooms/room_server.py), which mixes this class in.
    if TYPE_CHECKING:
        hs: Any
        store: EventStore
        state: StateStore
        _heads: dict[str, RoomHead]
        _next_stream: int
        _persisting: bool
        _queue: list[tuple[list[PersistItem], Deferred[None]]]

        async def get_head(self, room_id: str) -> RoomHead: ...

        def _enqueue(self, items: list[PersistItem]) -> Deferred[None]: ...

        async def _auth_events_for(
            self, head: RoomHead, spec: EventSpec
        ) -> tuple[dict[str, Event], Event | None]: ...

        def _build(
            self, head: RoomHead, spec: EventSpec, cache: Mapping[str, Event], create: Event | None
        ) -> Event: ...

    async def build_unpersisted(self, room_id: str, spec: EventSpec) -> Event:
        """Build, sign and auth-check an event on the room's current head without storing it.

        For the federation membership handshakes: make_join/make_leave/make_knock templates
        and invites that the invited user's server must co-sign before they are sent (the
        co-signed event then goes through :meth:`receive_event`). 403 if auth fails.
        """
        head = await self.get_head(room_id)
        cache, create = await self._auth_events_for(head, spec)
        return self._build(head, spec, cache, create)

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
