"""Guests leave a room whose ``m.room.guest_access`` stops allowing them.

guest_access.md §Server behaviour: "If the ``m.room.guest_access`` event is changed to
stop this from being the case [``can_join``], the server MUST set those users'
``m.room.member`` state to ``leave``." Only this server knows which of its users are
guests (§Security considerations), so each server does it for its own guests, whoever
changed the event and wherever (a local client or another server over federation).

The guest leaves by its own ``leave`` event (sender and target the guest), which the
auth rules always allow, as Synapse does.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from twisted.logger import Logger

from mxserver.background import BackgroundTasks
from mxserver.errors import MatrixError
from mxserver.events.model import Event
from mxserver.identifier_checks import server_of_user
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.accounts import AccountStore

log = Logger()

GUEST_ACCESS = "m.room.guest_access"


class JoinedMembers(Protocol):
    async def members(self, room_id: str) -> Collection[str]: ...


class GuestAccessEnforcer:
    """A room-stream subscriber: on a ``m.room.guest_access`` change, the room's local guests
    leave unless the room's current state (not the event itself: it may be old, or already
    superseded) says ``can_join``."""

    def __init__(
        self, rooms: ClientRooms, accounts: AccountStore, members: JoinedMembers, server_name: str
    ) -> None:
        self._rooms = rooms
        self._accounts = accounts
        self._members = members
        self._server_name = server_name
        self._tasks = BackgroundTasks("guest access enforcement")

    def on_room_events(self, events: list[Event]) -> None:
        rooms = {ev.room_id for ev in events if ev.type == GUEST_ACCESS and ev.state_key == ""}
        for room_id in sorted(rooms):
            self._background(self._enforce(room_id))

    def _background(self, coro: Any) -> None:
        self._tasks.run(coro)

    async def settle(self) -> None:
        """Wait for the work started so far (tests)."""
        await self._tasks.settle()

    async def _enforce(self, room_id: str) -> None:
        key = (GUEST_ACCESS, "")
        state = await self._rooms.current_state_events(room_id, [key])
        current = state.get(key)
        if current is not None and current.content.get("guest_access") == "can_join":
            return
        for user_id in sorted(await self._members.members(room_id)):
            if server_of_user(user_id) != self._server_name:
                continue
            record = await self._accounts.get_user(user_id)
            if record is None or not record.is_guest:
                continue
            content: dict[str, Any] = {"membership": "leave"}
            try:
                await self._rooms.send(room_id, EventSpec("m.room.member", content, user_id, user_id))
            except MatrixError as e:
                # e.g. the guest left meanwhile; the others still go.
                log.info("guest {user_id} could not leave {room_id}: {e}", user_id=user_id, room_id=room_id, e=e)
