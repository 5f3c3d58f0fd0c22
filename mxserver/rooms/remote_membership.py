"""Room-server hooks for membership over federation (used by mxserver/federation/).

Joining a room on another server adopts the state its resident server sent
(``persist_joined_state``); an invite or knock for a room we are not in is kept as
an out-of-band membership (``persist_out_of_band_membership``). The membership
handshakes also need events built on the head but not stored: those the
:class:`~mxserver.rooms.local_events.LocalEventBuilder` builds (``build_unpersisted``).
:class:`RemoteMembershipHooks` writes through the same
:class:`~mxserver.rooms.sequencer.RoomSequencer` as every room-server part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms.room_head import RoomHead
from mxserver.rooms.sequencer import RoomSequencer
from mxserver.storage.events import EventStore, PersistItem, RoomRecord
from mxserver.storage.state import StateKey, StateMap, StateStore

log = Logger()


class RemoteMembershipHooks:
    """Stores what the federation membership handshakes bring: adopted state, out-of-band members."""

    def __init__(self, store: EventStore, state: StateStore, sequencer: RoomSequencer) -> None:
        self.store = store
        self.state = state
        self.sequencer = sequencer

    async def _lock_existing(self, room_id: str) -> tuple[RoomRecord | None, RoomHead | None]:
        """The room and its head with the lock held, or (None, None) if the room is new here."""
        room = await self.store.get_room(room_id)
        if room is None:
            return None, None
        return room, await self.sequencer.lock_existing_head(room_id)

    def _new_room_record(self, room_id: str, room_version: RoomVersion, creator: str) -> RoomRecord:
        return RoomRecord(self.store.allocate_room_nid(), room_id, room_version, creator)

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
            if head is not None:
                await self.sequencer.wait_for_queued()
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
                nid, _ = self.store.allocate_ids(stream=False)
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
            nid, stream = self.store.allocate_ids()
            event.metadata.outlier = False
            event.metadata.rejected_reason = None
            event.metadata.stream_ordering = stream
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
            self.sequencer.set_head(RoomHead(room, [event.event_id], depth, after_nid, dict(after_map)))
            d = self.sequencer.enqueue(items)
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
            if head is not None:
                await self.sequencer.wait_for_queued()
            if await self.store.get_event(event.event_id) is not None:
                return False
            new_room = room is None
            if room is None:
                room = self._new_room_record(room_id, room_version, creator)
            nid, stream = self.store.allocate_ids()
            event.metadata.outlier = True
            event.metadata.stream_ordering = stream
            # The room's latest snapshot stays what it was: the head is reloaded from it.
            snap = head.snapshot_nid if head is not None else None
            item = PersistItem(event, room, nid, stream, snap, snap, new_room=new_room, out_of_band_membership=True)
            d = self.sequencer.enqueue([item])
        finally:
            if head is not None:
                head.lock.release()
        await d
        return True
