"""What each consumer may ask of the room server: one narrow interface per consumer.

Client-facing handlers see :class:`ClientRooms`, the federation side (receiver,
resident and joining membership, backfill, the sender) :class:`FederationRooms`,
readers of the stream (sync, ephemeral caches, e2ee, history visibility)
:class:`ReaderRooms`. Each names only the methods its kind of consumer calls, so a
reader (and mypy) sees what a part may do to rooms, and a test can hand in a fake.
Every consumer may read the current state (:class:`ReaderRooms`); only client-facing
code creates rooms and sends local events, only federation code receives events,
stores outliers and adopts remote state. :class:`~mxserver.rooms.room_server.RoomServer`
satisfies all three.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from mxserver.events.model import Event
    from mxserver.events.versions import RoomVersion
    from mxserver.rooms.local_events import EventSpec, TxnKey
    from mxserver.rooms.receive import ReceiveResult
    from mxserver.rooms.room_head import RoomHead
    from mxserver.storage.events import RoomRecord
    from mxserver.storage.state import StateKey

_T = TypeVar("_T")


class ReaderRooms(Protocol):
    """Reads of rooms' current state, and the room stream's position."""

    @property
    def current_position(self) -> int:
        """The highest room-stream position whose events (and all before) are persisted."""
        ...

    async def get_room(self, room_id: str) -> RoomRecord | None: ...

    async def membership(self, room_id: str, user_id: str) -> str | None: ...

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]: ...

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]: ...

    async def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> Event | None: ...


class ClientRooms(ReaderRooms, Protocol):
    """What client-facing handlers do to rooms: create them and send our users' events."""

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], initial: Sequence[EventSpec]
    ) -> tuple[str, list[Event]]: ...

    async def replace_room(
        self,
        old_room_id: str,
        creator: str,
        room_version: RoomVersion,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        tombstone_content: Mapping[str, Any],
    ) -> tuple[str, Event]: ...

    async def send(self, room_id: str, spec: EventSpec, txn_key: TxnKey | None = None) -> Event: ...

    async def get_head(self, room_id: str) -> RoomHead: ...


class FederationRooms(ReaderRooms, Protocol):
    """What the federation side does to rooms: receive events, store outliers and backfilled
    history, build membership templates, adopt the state of rooms joined elsewhere."""

    async def get_head(self, room_id: str) -> RoomHead: ...

    async def run_locked(self, room_id: str, fn: Callable[[RoomHead], Awaitable[_T]]) -> _T: ...

    async def receive_event(
        self, event: Event, *, state_before: Mapping[StateKey, str] | None = None
    ) -> ReceiveResult: ...

    async def store_outliers(self, room_id: str, events: Sequence[Event]) -> dict[str, str | None]: ...

    async def build_unpersisted(self, room_id: str, spec: EventSpec) -> Event: ...

    async def persist_joined_state(
        self,
        room_id: str,
        room_version: RoomVersion,
        creator: str,
        outliers: Sequence[Event],
        event: Event,
        state_before: Mapping[StateKey, str],
    ) -> bool: ...

    async def persist_out_of_band_membership(
        self, room_id: str, room_version: RoomVersion, creator: str, event: Event
    ) -> bool: ...


if TYPE_CHECKING:
    from mxserver.rooms.room_server import RoomServer

    def _room_server_satisfies_every_consumer(rs: RoomServer) -> tuple[ClientRooms, FederationRooms, ReaderRooms]:
        return rs, rs, rs
