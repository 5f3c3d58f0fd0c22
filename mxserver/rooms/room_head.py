"""A room's head: what the room server keeps in memory for each room it writes to."""

from __future__ import annotations

import attrs
from twisted.internet.defer import DeferredLock

from mxserver.storage.events import RoomRecord
from mxserver.storage.state import StateKey


@attrs.define(eq=False)
class RoomHead:
    """Forward extremities, depth and current state of a room, and the lock its writers take."""

    room: RoomRecord
    extremities: list[str]
    depth: int
    snapshot_nid: int | None
    state: dict[StateKey, str]
    lock: DeferredLock = attrs.field(factory=DeferredLock)
