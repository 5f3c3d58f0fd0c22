"""Shutting a room down (``DELETE /_synapse/admin/v2/rooms/{roomId}``) and blocking rooms.

A deletion answers at once with a ``delete_id`` and runs in the background, in this order:

1. ``block``: the room joins the block list first, so nobody rejoins while it is emptied;
2. ``new_room_user_id``: that local user creates a new public room (``room_name``, everyone
   else at power level -10) and posts ``message`` in it;
3. every local user who is joined, invited or knocking leaves the old room (as themselves,
   through the membership handler: an admin need not be in the room to empty it), forgets it,
   and joins the new room when there is one;
4. the room's local aliases move to the new room (or are removed), and it leaves the public
   room directory;
5. ``purge``: the room's rows go from every table (refused while a local user is still joined,
   unless ``force_purge``), and what memory holds of it.

Each deletion is a background task (:mod:`mxserver.admin.tasks`) whose status is kept in the
database, so a restart does not lose it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.admin.tasks import RoomTaskRunner
from mxserver.errors import MatrixError, invalid_param, not_found
from mxserver.ids import server_of
from mxserver.room_handlers.creation import CreateRoomRequest, RoomCreationHandler
from mxserver.room_handlers.directory import DirectoryHandler
from mxserver.room_handlers.membership import MembershipHandler
from mxserver.room_handlers.messages import MessageHandler
from mxserver.rooms.room_head import RoomHead
from mxserver.rooms.room_server import RoomServer
from mxserver.storage.admin_rooms import FAILED, AdminRoomStore, BlockedRoomsStore, RoomTask
from mxserver.storage.events import RoomRecord

log = Logger()

DELETE = "delete"
DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
#: the memberships of local users a shutdown removes from the room
_REMOVED_MEMBERSHIPS = ("join", "invite", "knock")


@attrs.frozen
class DeleteRequest:
    """The body of a room deletion, its types already checked."""

    new_room_user_id: str | None = None
    room_name: str = DEFAULT_ROOM_NAME
    message: str = DEFAULT_MESSAGE
    block: bool = False
    purge: bool = True
    force_purge: bool = False


def task_status(task: RoomTask) -> dict[str, Any]:
    """A deletion's status, as ``delete_status`` answers it."""
    out: dict[str, Any] = {"delete_id": task.task_id, "room_id": task.room_id, "status": task.status}
    if task.status == FAILED and task.error is not None:
        out["error"] = task.error
    out["shutdown_room"] = task.result or _shutdown_result([], [], [], None)
    return out


def _shutdown_result(kicked: list[str], failed: list[str], aliases: list[str], new_room: str | None) -> dict[str, Any]:
    return {"kicked_users": kicked, "failed_to_kick_users": failed, "local_aliases": aliases, "new_room_id": new_room}


class RoomDeletionHandler:
    """Room deletions (in the background, with their status) and the room block list."""

    def __init__(
        self,
        store: AdminRoomStore,
        tasks: RoomTaskRunner,
        blocked: BlockedRoomsStore,
        room_server: RoomServer,
        membership: MembershipHandler,
        creation: RoomCreationHandler,
        messages: MessageHandler,
        directory: DirectoryHandler,
        clock: IReactorTime,
        server_name: str,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.blocked = blocked
        self.room_server = room_server
        self.membership = membership
        self.creation = creation
        self.messages = messages
        self.directory = directory
        self.clock = clock
        self.server_name = server_name
        #: called with the room ID once a room is purged: caches of other components forget it
        self.purged_listeners: list[Callable[[str], None]] = []
        #: awaited (with the room's lock held) before the rows of a room are removed: the readers
        #: of the room stream (push, search, appservices, the federation sender) must have
        #: written what they do of its last events, or they would write it after the purge
        self.before_purge: list[Callable[[], Awaitable[Any]]] = []

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- the block list -------------------------------------------------------------------------

    async def block_status(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/rooms/{roomId}/block``."""
        by = await self.blocked.blocked_by(room_id)
        return {"block": True, "user_id": by} if by is not None else {"block": False}

    async def set_blocked(self, requester: Requester, room_id: str, block: bool) -> dict[str, Any]:
        """``PUT /_synapse/admin/v1/rooms/{roomId}/block``: a room may be blocked before this
        server knows it."""
        if block:
            await self.blocked.block(room_id, requester.user_id, self._now_ms())
        else:
            await self.blocked.unblock(room_id)
        return {"block": block}

    # -- deletion --------------------------------------------------------------------------------

    async def delete_room(self, requester: Requester, room_id: str, req: DeleteRequest) -> str:
        """Schedule the room's deletion; its ``delete_id``."""
        if req.new_room_user_id is not None and server_of(req.new_room_user_id) != self.server_name:
            raise invalid_param("'new_room_user_id' must be a user of this server")
        if await self.room_server.get_room(room_id) is None:
            raise invalid_param(f"Unknown room {room_id}")
        if await self.tasks.busy_with(DELETE, room_id):
            raise MatrixError(400, "M_UNKNOWN", f"A deletion of {room_id} is already in progress")

        async def work(delete_id: str) -> dict[str, Any]:
            result = await self._shut_down(delete_id, requester, room_id, req)
            if req.purge:
                await self.purge_room(room_id, req.force_purge)
            return result

        return await self.tasks.schedule(DELETE, room_id, work)

    async def _shut_down(self, delete_id: str, requester: Requester, room_id: str, req: DeleteRequest) -> dict[str, Any]:
        if req.block:
            await self.blocked.block(room_id, requester.user_id, self._now_ms())
        new_room_id = None
        if req.new_room_user_id is not None:
            new_room_id = await self._make_new_room(delete_id, req)
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        kicked: list[str] = []
        failed: list[str] = []
        for user_id in await self.store.local_members(room.room_nid, _REMOVED_MEMBERSHIPS):
            user = Requester(user_id, None)
            try:
                await self.membership.leave(user, room_id)
                await self.membership.forget(user, room_id)
                if new_room_id is not None:
                    await self.membership.join(user, new_room_id)
            except MatrixError as e:
                log.warn("room shutdown: {user} not moved out of {room}: {e}", user=user_id, room=room_id, e=e.msg)
                failed.append(user_id)
            else:
                kicked.append(user_id)
        if new_room_id is not None:
            aliases = await self.directory.move_aliases(room_id, new_room_id)
        else:
            aliases = await self.directory.remove_room_aliases(room_id)
        await self.directory.publish(room_id, False)
        result = _shutdown_result(kicked, failed, aliases, new_room_id)
        # The outcome of the shutdown is shown while the purge still runs (Synapse's status).
        await self.tasks.progress(delete_id, result)
        return result

    async def _make_new_room(self, delete_id: str, req: DeleteRequest) -> str:
        assert req.new_room_user_id is not None
        creator = Requester(req.new_room_user_id, None)
        created = await self.creation.create_room(
            creator,
            CreateRoomRequest(preset="public_chat", name=req.room_name, power_level_content_override={"users_default": -10}),
        )
        new_room_id = str(created["room_id"])
        content = {"msgtype": "m.text", "body": req.message}
        await self.messages.send_event(creator, new_room_id, "m.room.message", content, f"room-shutdown-{delete_id}")
        return new_room_id

    async def run_purge(self, room_id: str, purge: Callable[[RoomRecord], Awaitable[None]]) -> None:
        """Run ``purge(room)`` holding the room's lock, once the readers of the room stream have
        written what they do of its events (see :attr:`before_purge`)."""
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")

        async def locked(head: RoomHead) -> None:
            for settle in self.before_purge:
                await settle()
            await purge(head.room)

        await self.room_server.run_locked(room_id, locked)

    async def purge_room(self, room_id: str, force: bool) -> None:
        """Remove the room from the database and from memory."""
        room = await self.room_server.get_room(room_id)
        if room is None:
            return
        if not force and await self.store.local_members(room.room_nid, ("join",)):
            raise MatrixError(400, "M_UNKNOWN", "Local users are still joined to the room: not purged (see force_purge)")

        async def purge(locked_room: RoomRecord) -> None:
            await self.store.purge_room(locked_room.room_nid, room_id)
            self.room_server.forget_room(room_id)

        await self.run_purge(room_id, purge)
        for listener in self.purged_listeners:
            listener(room_id)

    async def status_by_id(self, delete_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/rooms/delete_status/{delete_id}``."""
        task = await self.tasks.get(delete_id, DELETE)
        if task is None:
            raise not_found("delete id not found")
        return task_status(task)

    async def status_by_room(self, room_id: str) -> dict[str, Any]:
        """``GET /_synapse/admin/v2/rooms/{roomId}/delete_status``."""
        tasks = await self.tasks.for_room(DELETE, room_id)
        if not tasks:
            raise not_found(f"No delete task for room_id '{room_id}' found")
        return {"results": [task_status(t) for t in tasks]}
