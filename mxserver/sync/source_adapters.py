"""The sync sources of every stream, each a small adapter over the handler that owns it.

Each adapter reads its handler through a small Protocol naming only the
methods /sync calls (so it does not depend on how the handler is built), and
turns their answers into a :class:`~mxserver.sync.sources.SyncSection`,
applying the sync's filter. They are registered in ``homeserver.py``.

:class:`RoomStreamSource` is also what /sync knows of the room stream
without the database: which rooms had events since a position, and a user's
memberships.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mxserver.events.model import Event
from mxserver.rooms.activity import RoomActivity
from mxserver.storage.sync import MembershipRow, SyncStore
from mxserver.sync.sources import SyncRequest, SyncSection
from mxserver.sync.tokens import StreamToken

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester

JsonDict = dict[str, Any]

#: how many users' memberships the room source keeps before starting afresh
MEMBERSHIP_CACHE_SIZE = 50_000


# -- what each source needs of its handler ---------------------------------------------------------


class HasPosition(Protocol):
    @property
    def current_position(self) -> int: ...


class TypingReader(HasPosition, Protocol):
    def typing_for_rooms(self, room_ids: Sequence[str], since_pos: int | None) -> Mapping[str, JsonDict]: ...


class ReceiptsReader(HasPosition, Protocol):
    async def receipts_for_rooms(
        self, user_id: str, room_ids: Sequence[str], from_pos: int | None, to_pos: int
    ) -> Mapping[str, JsonDict]: ...


class PresenceReader(HasPosition, Protocol):
    @property
    def enabled(self) -> bool: ...

    async def presence_for_sync(
        self, user_id: str, since_pos: int | None, newly_shared: Iterable[str] = ()
    ) -> Sequence[JsonDict]: ...


class MembersReader(Protocol):
    async def members(self, room_id: str) -> frozenset[str]: ...


class AccountDataReader(HasPosition, Protocol):
    async def get_account_data_for_sync(
        self, user_id: str, from_pos: int | None, to_pos: int
    ) -> tuple[Sequence[JsonDict], Mapping[str, Sequence[JsonDict]]]: ...


class ToDeviceReader(HasPosition, Protocol):
    async def ack_to_device(self, user_id: str, device_id: str | None, up_to_pos: int) -> None: ...

    async def get_to_device_for_sync(
        self, user_id: str, device_id: str | None, since_pos: int, limit: int = ..., to_pos: int | None = None
    ) -> tuple[Sequence[JsonDict], int]: ...


class DeviceListsReader(HasPosition, Protocol):
    async def sync_fields(
        self, requester: Requester, since: StreamToken | None, now: StreamToken, memberships: list[MembershipRow]
    ) -> tuple[JsonDict, bool]: ...


# -- the room stream -----------------------------------------------------------------------------------


class RoomStreamSource:
    """The ``room`` stream: its position, the rooms that changed, and users' memberships.

    Which rooms had events since a token comes from :class:`RoomActivity`; a user's
    memberships are cached until one of them changes (subscribe :meth:`on_room_events`
    in the CACHES phase). Its :meth:`sync_section` is empty: the /sync handler builds
    the rooms itself, after every other section, because a room with only ephemeral
    or account-data news is in the answer too.
    """

    name = "room"

    def __init__(self, activity: RoomActivity, store: SyncStore) -> None:
        self._activity = activity
        self._store = store
        self._memberships: dict[str, list[MembershipRow]] = {}
        #: users whose memberships are being read, and how many reads
        self._loading: dict[str, int] = {}
        #: users with a member event while their memberships were being read: that read may
        #: predate it, so it is answered but not kept
        self._changed_while_loading: set[str] = set()
        #: room -> position of its last membership event seen since start (one int per room)
        self._member_moves: dict[str, int] = {}
        #: positions after this one are all in _member_moves (None until the first event)
        self._moves_from: int | None = None

    def current_position(self) -> int:
        return self._activity.current_position

    def on_room_events(self, events: list[Event]) -> None:
        for ev in events:
            pos = ev.metadata.stream_ordering
            if pos and self._moves_from is None:
                self._moves_from = pos - 1
            if ev.type == "m.room.member" and ev.state_key is not None:
                self._memberships.pop(ev.state_key, None)
                if ev.state_key in self._loading:
                    self._changed_while_loading.add(ev.state_key)
                if pos and pos > self._member_moves.get(ev.room_id, 0):
                    self._member_moves[ev.room_id] = pos

    def room_changed_since(self, room_id: str, position: int) -> bool:
        """Whether the room has had an event after ``position`` (no database involved)."""
        return self._activity.changed_since(room_id, position)

    def members_moved_since(self, room_id: str, position: int) -> bool:
        """Whether the room may have had a membership event after ``position`` (no database
        involved; before the first event seen since start, any event counts)."""
        if self._moves_from is None or position < self._moves_from:
            return self._activity.changed_since(room_id, position)
        return self._member_moves.get(room_id, 0) > position

    async def memberships(self, user_id: str) -> list[MembershipRow]:
        """Every membership of ``user_id``, cached until one of them changes."""
        cached = self._memberships.get(user_id)
        if cached is not None:
            return cached
        self._loading[user_id] = self._loading.get(user_id, 0) + 1
        try:
            rows = await self._store.memberships(user_id)
        finally:
            left = self._loading.pop(user_id) - 1
            if left:
                self._loading[user_id] = left
        stale = user_id in self._changed_while_loading
        if not left:
            self._changed_while_loading.discard(user_id)
        if not stale:
            if len(self._memberships) > MEMBERSHIP_CACHE_SIZE:
                self._memberships.clear()
            self._memberships[user_id] = rows
        return rows

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        return SyncSection()


# -- ephemeral streams -----------------------------------------------------------------------------------


class TypingSource:
    """``m.typing`` in the joined rooms' ephemeral events."""

    name = "typing"

    def __init__(self, typing: TypingReader) -> None:
        self._typing = typing

    def current_position(self) -> int:
        return self._typing.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        section = SyncSection()
        if request.joined_room_ids and request.sync_filter.ephemeral.matches_type("m.typing"):
            got = self._typing.typing_for_rooms(request.joined_room_ids, request.since_position("typing"))
            section.room_ephemeral = {room_id: [event] for room_id, event in got.items()}
        return section


class ReceiptsSource:
    """``m.receipt`` in the joined rooms' ephemeral events."""

    name = "receipts"

    def __init__(self, receipts: ReceiptsReader) -> None:
        self._receipts = receipts

    def current_position(self) -> int:
        return self._receipts.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        section = SyncSection()
        if request.joined_room_ids and request.sync_filter.ephemeral.matches_type("m.receipt"):
            got = await self._receipts.receipts_for_rooms(
                request.user_id, request.joined_room_ids, request.since_position("receipts"), request.now.receipts
            )
            section.room_ephemeral = {room_id: [event] for room_id, event in got.items()}
        return section


class PresenceSource:
    """Top-level ``presence``: the users sharing a room with the syncing user."""

    name = "presence"

    def __init__(
        self, presence: PresenceReader, rooms: RoomStreamSource, members: MembersReader, store: SyncStore
    ) -> None:
        self._presence = presence
        self._rooms = rooms
        self._members = members
        self._store = store

    def current_position(self) -> int:
        return self._presence.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        newly = await self._newly_shared(request) if request.since is not None and self._presence.enabled else set()
        events = await self._presence.presence_for_sync(request.user_id, request.since_position("presence"), newly)
        matching = [e for e in events if request.sync_filter.presence.matches(e)]
        return SyncSection(top_level={"presence": {"events": matching}}, has_data=bool(matching))

    async def _newly_shared(self, request: SyncRequest) -> set[str]:
        """Users who came to share a room with the syncing user since its last sync: everyone in a
        room it joined, and whoever joined one of its rooms. Their presence is sent even when it
        did not change (as Synapse; SyTest 31sync/03joined.pl). One query, only for the rooms
        with membership events since then (known in memory)."""
        assert request.since is not None
        since_room, now_room = request.since.room, request.now.room
        if now_room <= since_room:
            return set()
        joined = [m for m in request.memberships if m.membership == "join"]
        out: set[str] = set()
        for m in joined:
            if since_room < m.stream_ordering <= now_room:
                out |= await self._members.members(m.room_id)
        busy = [m.room_nid for m in joined if self._rooms.members_moved_since(m.room_id, since_room)]
        if busy:
            out |= await self._store.joins_between(busy, since_room, now_room)
        out.discard(request.user_id)
        return out


# -- per-user streams ------------------------------------------------------------------------------------


class AccountDataSource:
    """Top-level ``account_data`` and each room's ``account_data`` (tags, ...)."""

    name = "account_data"

    def __init__(self, account_data: AccountDataReader) -> None:
        self._account_data = account_data

    def current_position(self) -> int:
        return self._account_data.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        global_ad, room_ad = await self._account_data.get_account_data_for_sync(
            request.user_id, request.since_position("account_data"), request.now.account_data
        )
        sync_filter = request.sync_filter
        global_events = [e for e in global_ad if sync_filter.account_data.matches(e)]
        rooms: dict[str, list[JsonDict]] = {}
        for room_id, events in room_ad.items():
            matching = [e for e in events if sync_filter.room_account_data.matches(e, room_id)]
            if matching:
                rooms[room_id] = matching
        return SyncSection(
            room_account_data=rooms, top_level={"account_data": {"events": global_events}}, has_data=bool(global_events)
        )


class ToDeviceSource:
    """Top-level ``to_device``: the device's pending messages, acknowledged by its next ``since``."""

    name = "to_device"

    def __init__(self, to_device: ToDeviceReader) -> None:
        self._to_device = to_device

    def current_position(self) -> int:
        return self._to_device.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        user_id, device_id = request.user_id, request.device_id
        if device_id is None:
            return SyncSection(top_level={"to_device": {"events": []}})
        since = request.since_position("to_device")
        since_pos = since if since is not None else 0
        if since is not None:
            # The client has everything up to its `since`: those messages can go.
            await self._to_device.ack_to_device(user_id, device_id, since_pos)
        messages, position = await self._to_device.get_to_device_for_sync(user_id, device_id, since_pos)
        # At most a batch at a time: next_batch says how far this one got.
        return SyncSection(
            top_level={"to_device": {"events": list(messages)}},
            next_position=max(position, since_pos),
            has_data=bool(messages),
        )


class DeviceListsSource:
    """end_to_end_encryption.md §Extensions to /sync: device lists and key counts."""

    name = "device_lists"

    def __init__(self, device_lists: DeviceListsReader) -> None:
        self._device_lists = device_lists

    def current_position(self) -> int:
        return self._device_lists.current_position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        fields, news = await self._device_lists.sync_fields(
            request.requester, request.since, request.now, list(request.memberships)
        )
        return SyncSection(top_level=fields, has_data=news)
