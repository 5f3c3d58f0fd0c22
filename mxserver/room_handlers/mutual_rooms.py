"""``GET /_matrix/client/v1/mutual_rooms``: the rooms two users are both joined to (mutual_rooms.yaml).

Room IDs in code-point order, in batches of :data:`BATCH`; the ``next_batch`` token is the
last room ID of the batch (base64url, so clients treat it as opaque): the next batch starts
after it, and rooms joined or left meanwhile move in or out of later batches without repeats.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Protocol

from mxserver.errors import invalid_param
from mxserver.ids import UserID

#: room IDs per answer
BATCH = 100


class JoinedRooms(Protocol):
    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",)) -> list[str]: ...


class MutualRooms:
    """The rooms a user shares with another."""

    def __init__(self, rooms: JoinedRooms) -> None:
        self._rooms = rooms

    async def shared(self, user_id: str, other: str | None, token: str | None) -> dict[str, Any]:
        if other is None:
            raise invalid_param("The user_id parameter is required")
        if not UserID.is_valid(other):
            # mutual_rooms.yaml: "non-compliant" user IDs are refused (historical ones are fine)
            raise invalid_param("The user ID provided was invalid")
        if other == user_id:
            raise invalid_param("The user ID provided is your own")
        after = _decode(token) if token is not None else None
        mine = set(await self._rooms.get_rooms_for_user(user_id, ("join",)))
        # An unknown (but well-formed) user is in no room: the answer is the empty list the
        # spec asks for.
        theirs = await self._rooms.get_rooms_for_user(other, ("join",))
        shared = sorted(r for r in theirs if r in mine)
        page = [r for r in shared if after is None or r > after][:BATCH]
        out: dict[str, Any] = {"joined": page, "count": len(shared)}
        if page and page[-1] != shared[-1]:
            out["next_batch"] = _encode(page[-1])
        return out


def _encode(room_id: str) -> str:
    return base64.urlsafe_b64encode(room_id.encode("utf-8")).decode("ascii").rstrip("=")


def _decode(token: str) -> str:
    try:
        room_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_param("The from token is not valid") from None
    if not room_id.startswith("!"):
        raise invalid_param("The from token is not valid")
    return room_id
