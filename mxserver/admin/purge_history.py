"""Purging a room's old history (``POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]``).

Synapse's documented semantics: message events before the point go; the room's state
(joins, leaves, topic, ... every state event) always stays, and so do the forward extremities
(the room's latest events: a room never loses its last message). Events sent by local users
stay unless ``delete_local_events``, as they may be the only copies in existence. The point is
an event (that event, and the others at its depth in the DAG, stay) or a timestamp (events
sent before it go). The purge runs in the background (:mod:`mxserver.admin.tasks`).
"""

from __future__ import annotations

from typing import Any

from mxserver.admin.room_deletion import RoomDeletionHandler
from mxserver.admin.tasks import RoomTaskRunner
from mxserver.errors import MatrixError, missing_param, not_found
from mxserver.rooms.api import ClientRooms
from mxserver.storage.admin_rooms import ACTIVE, FAILED, SCHEDULED, AdminRoomStore
from mxserver.storage.events import EventStore, RoomRecord

PURGE_HISTORY = "purge_history"


class PurgeHistoryHandler:
    """Schedules history purges and answers their status."""

    def __init__(
        self,
        store: AdminRoomStore,
        tasks: RoomTaskRunner,
        room_server: ClientRooms,
        events: EventStore,
        deletion: RoomDeletionHandler,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.room_server = room_server
        self.events = events
        self.deletion = deletion

    async def purge(
        self, room_id: str, event_id: str | None, before_ts: int | None, delete_local_events: bool
    ) -> str:
        """Schedule the purge; its ``purge_id``."""
        if await self.room_server.get_room(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        before_depth = None
        if event_id is not None:
            event = await self.events.get_event(event_id)
            if event is None or event.room_id != room_id:
                raise not_found(f"Event {event_id} not found in {room_id}")
            before_depth = event.depth
        elif before_ts is None:
            raise missing_param("Give the event to purge up to, or 'purge_up_to_ts'")
        if await self.tasks.busy_with(PURGE_HISTORY, room_id):
            raise MatrixError(400, "M_UNKNOWN", f"A history purge of {room_id} is already in progress")

        async def work(purge_id: str) -> dict[str, Any]:
            removed = 0

            async def purge(room: RoomRecord) -> None:
                nonlocal removed
                removed = await self.store.purge_history(room.room_nid, before_depth, before_ts, delete_local_events)
                # The event cache may hold what is gone.
                self.events.evict_room_events(room_id)

            await self.deletion.run_purge(room_id, purge)
            return {"purged_events": removed}

        return await self.tasks.schedule(PURGE_HISTORY, room_id, work)

    async def status(self, purge_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/purge_history_status/{purge_id}``: ``active``, ``complete``
        or ``failed`` (with its ``error``)."""
        task = await self.tasks.get(purge_id, PURGE_HISTORY)
        if task is None:
            raise not_found("purge id not found")
        status = ACTIVE if task.status == SCHEDULED else task.status
        out: dict[str, Any] = {"status": status}
        if status == FAILED and task.error is not None:
            out["error"] = task.error
        return out
