"""A deactivated account leaves its rooms.

Deactivation (account_deactivation.yaml, and the admin API's) ends the account; its
memberships would otherwise stay, so the user would still count as a member, be listed, and
be sent to. As Synapse does, the account leaves every room it is joined to and rejects every
invite and knock, each as a leave event of its own (through the membership handler, so
remote rooms are left over federation). A room that cannot be left is logged and skipped:
the deactivation itself has already happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.errors import MatrixError

log = Logger()


class RoomsOfUser(Protocol):
    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",)) -> list[str]: ...


class Leaver(Protocol):
    async def leave(self, requester: Requester, room_id: str, reason: str | None = None) -> None: ...


class DeactivatedUserParter:
    """Makes a deactivated user leave every room (see the module docstring)."""

    def __init__(self, rooms: RoomsOfUser, membership: Leaver) -> None:
        self._rooms = rooms
        self._membership = membership

    async def part(self, user_id: str) -> None:
        user = Requester(user_id, None)
        for room_id in await self._rooms.get_rooms_for_user(user_id, ("join", "invite", "knock")):
            try:
                await self._membership.leave(user, room_id)
            except MatrixError as e:
                log.warn("deactivated {user} did not leave {room}: {e}", user=user_id, room=room_id, e=e.msg)
