"""Read receipts and read markers (modules/receipts.md, modules/read_markers.md), and the "receipts" stream.

- ``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``: ``m.read`` and
  ``m.read.private`` receipts, unthreaded or threaded (``thread_id`` "main"
  or a thread root's event ID); ``m.fully_read`` goes to the read marker.
- ``POST /rooms/{roomId}/read_markers``: ``m.fully_read`` (room account data,
  through ``hs.account_data``) and ``m.read`` / ``m.read.private`` receipts.

Rules: only users joined to the room; the event must be in the room's
timeline (404 otherwise); a receipt only moves forward (one for an event
earlier in the room stream than the stored one is accepted and ignored);
the fully-read marker likewise. Every change is a position on the persisted
``receipts`` stream; public receipts wake the room's /sync long-polls,
private ones only their owner's (receipts.md: servers MUST NOT send
``m.read.private`` to anyone else).

Not checked: that an event given with a thread root's ``thread_id`` belongs
to that thread (it needs relation walking; the 400 the spec allows for it is
not produced).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.ids import is_valid_event_id
from mxserver.storage.receipts import PRIVATE_TYPES, UNTHREADED, ReceiptStore, receipt_content
from mxserver.storage.stream_positions import PersistedStream

log = Logger()

READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE)
MAIN_THREAD = "main"


class ReceiptsHandler:
    """``hs.receipts``."""

    def __init__(self, hs: Any) -> None:
        self._hs = hs
        self._stream = PersistedStream(hs.db, "receipts")
        self._store = ReceiptStore(hs.db, self._stream)
        self._loaded = False

    async def start(self) -> None:
        """Load the persisted stream position (after migrations, before serving)."""
        await self._stream.load()
        self._loaded = True

    @property
    def current_position(self) -> int:
        return self._stream.current

    # -- the client API ---------------------------------------------------------------------

    async def send_receipt(
        self, requester: Any, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        """receipts.yaml: store a receipt (or, for ``m.fully_read``, move the read marker)."""
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise invalid_param(f"Unknown receipt type {receipt_type!r}")
        if thread_id is not None:
            if receipt_type == FULLY_READ:
                raise invalid_param("thread_id cannot be given for m.fully_read")
            if thread_id != MAIN_THREAD and not is_valid_event_id(thread_id):
                raise invalid_param("thread_id must be 'main' or an event ID")
        user_id = requester.user_id
        room_nid = await self._check_joined(room_id, user_id)
        event = await self._event_in_room(room_id, event_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(user_id, room_id, event)
        else:
            await self._store_receipt(room_nid, room_id, receipt_type, user_id, thread_id, event)

    async def set_read_markers(
        self, requester: Any, room_id: str, fully_read: str | None, read: str | None, read_private: str | None
    ) -> None:
        """read_markers.yaml: every given event is checked before anything is written."""
        user_id = requester.user_id
        room_nid = await self._check_joined(room_id, user_id)
        events: dict[str, Event] = {}
        for event_id in (fully_read, read, read_private):
            if event_id is not None and event_id not in events:
                events[event_id] = await self._event_in_room(room_id, event_id)
        if fully_read is not None:
            await self._set_fully_read(user_id, room_id, events[fully_read])
        if read is not None:
            await self._store_receipt(room_nid, room_id, READ, user_id, None, events[read])
        if read_private is not None:
            await self._store_receipt(room_nid, room_id, READ_PRIVATE, user_id, None, events[read_private])

    async def store_remote_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None, event_id: str, ts: int
    ) -> bool:
        """A receipt from an ``m.receipt`` EDU (the sender checked it is the origin's joined user).

        Ignored (False) when the event is not in the room's timeline here; receipts only move forward.
        """
        room = await self._hs.room_server.get_room(room_id)
        if room is None:
            return False
        try:
            event = await self._event_in_room(room_id, event_id)
        except MatrixError:
            return False
        if not self._loaded:
            await self.start()
        ordering = event.metadata.stream_ordering
        assert ordering is not None
        position = await self._store.upsert(
            room.room_nid, receipt_type, user_id, UNTHREADED if thread_id is None else thread_id, event_id, ordering, ts
        )
        if position is not None:
            self._hs.notifier.notify(room_ids=[room_id])
        return position is not None

    async def _check_joined(self, room_id: str, user_id: str) -> int:
        room = await self._hs.room_server.get_room(room_id)
        if room is None or await self._hs.room_server.membership(room_id, user_id) != "join":
            raise forbidden("You are not joined to this room")
        return int(room.room_nid)

    async def _event_in_room(self, room_id: str, event_id: str) -> Event:
        if not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        event = await self._hs.event_store.get_event(event_id)
        if (
            event is None
            or event.room_id != room_id
            or event.rejected
            or event.metadata.outlier
            or event.metadata.stream_ordering is None
        ):
            raise not_found("Unknown event")
        return event

    async def _store_receipt(
        self, room_nid: int, room_id: str, receipt_type: str, user_id: str, thread_id: str | None, event: Event
    ) -> None:
        if not self._loaded:
            await self.start()
        ordering = event.metadata.stream_ordering
        assert ordering is not None
        ts = int(self._hs.clock.seconds() * 1000)
        position = await self._store.upsert(
            room_nid, receipt_type, user_id, UNTHREADED if thread_id is None else thread_id, event.event_id, ordering, ts
        )
        if position is None:
            return  # older than the stored receipt: receipts only move forward
        if receipt_type in PRIVATE_TYPES:
            self._hs.notifier.notify(user_ids=[user_id])
        else:
            self._hs.notifier.notify(room_ids=[room_id])
            # Public receipts of local users go to the room's other servers (§Receipts).
            sender = getattr(self._hs, "federation_sender", None)
            if sender is not None:
                sender.edus.receipt(room_id, receipt_type, user_id, event.event_id, thread_id, ts)

    async def _set_fully_read(self, user_id: str, room_id: str, event: Event) -> None:
        account_data = self._hs.account_data
        try:
            current = await account_data.get_account_data(user_id, room_id, FULLY_READ)
        except MatrixError as e:
            if e.code != 404:
                raise
            current = None
        if current is not None and isinstance(current.get("event_id"), str):
            if current["event_id"] == event.event_id:
                return
            old = await self._hs.event_store.get_event(current["event_id"])
            old_ordering = old.metadata.stream_ordering if old is not None else None
            if old_ordering is not None and old_ordering > (event.metadata.stream_ordering or 0):
                return  # the marker only moves forward, like receipts
        await account_data.set_account_data(user_id, room_id, FULLY_READ, {"event_id": event.event_id}, from_client=False)

    # -- for /sync -------------------------------------------------------------------------------

    async def receipts_for_rooms(
        self, user_id: str, room_ids: Iterable[str], from_pos: int | None, to_pos: int
    ) -> dict[str, dict[str, Any]]:
        """The ``m.receipt`` ephemeral event of each room in ``room_ids`` with receipts in (from_pos, to_pos].

        ``from_pos`` None (initial sync): every current receipt in those rooms.
        Incremental: the receipts that changed, as deltas (receipts.md:
        clients replace per user, type and thread). ``m.read.private``
        receipts are only ever the syncing user's own.
        """
        if not self._loaded:
            await self.start()
        rooms = list(dict.fromkeys(room_ids))
        if not rooms or (from_pos is not None and from_pos >= to_pos):
            return {}
        if from_pos is None:
            rows = await self._store.receipts_in_rooms(rooms, to_pos, user_id)
        else:
            wanted = set(rooms)
            rows = [r for r in await self._store.receipts_changed(from_pos, to_pos, user_id) if r.room_id in wanted]
        return {room_id: {"type": "m.receipt", "content": content} for room_id, content in receipt_content(rows).items()}

    async def get_read_receipt_stream_ordering(self, user_id: str, room_id: str) -> int | None:
        """The room-stream position the user has read up to in ``room_id``, for unread counts.

        The later of the user's ``m.read`` and ``m.read.private`` receipts
        (receipts.md: the more recent one counts), among unthreaded and
        main-timeline receipts; None without any.
        """
        return (await self.get_read_receipt_stream_orderings(user_id, [room_id])).get(room_id)

    async def get_read_receipt_stream_orderings(self, user_id: str, room_ids: Iterable[str]) -> dict[str, int]:
        """:meth:`get_read_receipt_stream_ordering` for many rooms in one query (rooms without receipts absent)."""
        nids: dict[int, str] = {}
        for room_id in dict.fromkeys(room_ids):
            room = await self._hs.event_store.get_room(room_id)
            if room is not None:
                nids[room.room_nid] = room_id
        if not nids:
            return {}
        found = await self._store.read_up_to(user_id, list(nids), RECEIPT_TYPES)
        return {nids[nid]: ordering for nid, ordering in found.items()}
