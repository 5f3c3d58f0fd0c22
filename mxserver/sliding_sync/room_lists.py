"""The room list: which of a user's rooms a list holds, in activity order, and its windows.

MSC4186 §Lists: the server keeps, per user, the rooms they are joined to, invited
to, knocked on, were kicked or banned from (and rooms they left themselves only
when the leave is new since the connection's last pos, so that it is sent once),
sorted by recent activity: the position of the room's latest event, or of the
user's membership event when they are not joined (§Activity ordering; rooms are
*not* sorted by ``bump_stamp``). A list filters that sequence, and its ranges
index into the filtered sequence.

Everything here is per room and cheap: a room's latest position comes from
memory (:class:`~mxserver.rooms.activity.RoomActivity`, or one batched read
for rooms without an event since start-up, kept afterwards), and filters read
only what they need, batched for all the user's rooms. Nothing per room beyond
that is read until a room falls inside a range (:mod:`.rooms`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred

from mxserver.accounts.invite_permission import InvitePermissions
from mxserver.events.model import Event
from mxserver.sliding_sync.request import ListConfig, ListFilters, RoomConfig, SlidingSyncRequest
from mxserver.storage.sliding_sync import RoomTraits, traits_from_state
from mxserver.storage.sync import MembershipRow

JsonDict = dict[str, Any]

#: MSC4186 §Common fields, bump_stamp: the event types that count as "proper" activity
BUMP_EVENT_TYPES = (
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
)
_TRAIT_TYPES = frozenset({"m.room.create", "m.room.encryption", "m.room.name"})
#: entries per in-memory map before it starts afresh (every value can be read again)
MAX_INDEX_ENTRIES = 200_000


class LatestActivity(Protocol):
    """Rooms' latest positions since start-up (:class:`~mxserver.rooms.activity.RoomActivity`)."""

    def latest(self, room_id: str) -> int | None: ...

    def latest_by_room(self) -> Mapping[str, int]: ...

    def changed_since(self, room_id: str, position: int) -> bool: ...


class IndexStore(Protocol):
    """The batched room reads (:class:`~mxserver.storage.sliding_sync.SlidingSyncStore`)."""

    def latest_positions(self, room_nids: Sequence[int]) -> Deferred[dict[int, int]]: ...

    def bump_stamps(self, rooms: Sequence[tuple[int, int]], types: Sequence[str]) -> Deferred[dict[int, int]]: ...

    def room_traits(self, room_nids: Sequence[int]) -> Deferred[dict[int, RoomTraits]]: ...

    def event_senders(self, event_ids: Sequence[str]) -> Deferred[dict[str, str]]: ...

    def space_children(self, room_nid: int) -> Deferred[list[str]]: ...


class EventReader(Protocol):
    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]: ...


class ListAccountData(Protocol):
    """What list filters read of a user's account data."""

    async def direct_rooms(self, user_id: str) -> frozenset[str]: ...

    async def tags_of_rooms(self, user_id: str) -> dict[str, frozenset[str]]: ...


class RoomIndex:
    """Per-room facts read for every room of a user on every request, kept in memory.

    Subscribe :meth:`on_room_events` to the room stream (CACHES phase). Values read
    from the database are kept until an event may change them; each map starts
    afresh past :data:`MAX_INDEX_ENTRIES` (they can all be read again).
    """

    def __init__(self, activity: LatestActivity, store: IndexStore) -> None:
        self._activity = activity
        self._store = store
        #: latest positions read from the database (rooms without an event since start-up)
        self._latest: dict[str, int] = {}
        #: room -> latest bump event position (exact: every later bump event passes through here)
        self._bumps: dict[str, int] = {}
        self._traits: dict[str, RoomTraits] = {}
        #: membership event ID -> sender (kicks, invites from ignored users)
        self._senders: dict[str, str] = {}

    def on_room_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            pos = ev.metadata.stream_ordering or 0
            if ev.type in BUMP_EVENT_TYPES and pos > self._bumps.get(ev.room_id, 0):
                _put(self._bumps, ev.room_id, pos)
            if ev.state_key is not None:
                if ev.type in _TRAIT_TYPES and ev.state_key == "":
                    # Read again: the event may not have become current state (state resolution).
                    self._traits.pop(ev.room_id, None)
                elif ev.type == "m.room.member":
                    _put(self._senders, ev.event_id, ev.sender)

    def changed_since(self, room_id: str, position: int) -> bool:
        return self._activity.changed_since(room_id, position)

    async def latest_positions(self, rooms: Sequence[MembershipRow]) -> dict[str, int]:
        """Each room's latest event position (one read for the rooms not known in memory)."""
        out: dict[str, int] = {}
        missing: list[MembershipRow] = []
        # Per room of a list of thousands: plain dict look-ups, no calls.
        since_start = self._activity.latest_by_room()
        loaded_before = self._latest
        for m in rooms:
            latest = since_start.get(m.room_id)
            loaded = loaded_before.get(m.room_id)
            if loaded is None:
                if latest is None:
                    missing.append(m)
                else:
                    out[m.room_id] = latest
            else:
                out[m.room_id] = loaded if latest is None or loaded > latest else latest
        if missing:
            found = await self._store.latest_positions([m.room_nid for m in missing])
            for m in missing:
                value = found.get(m.room_nid, m.stream_ordering)
                _put(self._latest, m.room_id, value)
                # an event may have arrived while reading: the activity map has it then
                out[m.room_id] = max(value, self._activity.latest(m.room_id) or 0)
        return out

    async def bump_stamps(self, rooms: Sequence[tuple[str, int, int]]) -> dict[str, int]:
        """For each ``(room_id, room_nid, upto)``: the latest bump event position at or before
        ``upto`` (rooms without one absent)."""
        out: dict[str, int] = {}
        missing: list[tuple[str, int, int]] = []
        for room_id, nid, upto in rooms:
            known = self._bumps.get(room_id)
            if known is not None and known <= upto:
                out[room_id] = known
            else:
                missing.append((room_id, nid, upto))
        if missing:
            found = await self._store.bump_stamps([(nid, upto) for _, nid, upto in missing], BUMP_EVENT_TYPES)
            for room_id, nid, _ in missing:
                if nid in found:
                    out[room_id] = found[nid]
                    if found[nid] > self._bumps.get(room_id, 0):
                        _put(self._bumps, room_id, found[nid])
        return out

    async def traits(self, rooms: Sequence[MembershipRow]) -> dict[str, RoomTraits]:
        """Type, encryption and name of rooms whose state this server knows."""
        out: dict[str, RoomTraits] = {}
        missing = []
        for m in rooms:
            known = self._traits.get(m.room_id)
            if known is not None:
                out[m.room_id] = known
            else:
                missing.append(m)
        if missing:
            found = await self._store.room_traits([m.room_nid for m in missing])
            for m in missing:
                if m.room_nid in found:
                    out[m.room_id] = found[m.room_nid]
                    _put(self._traits, m.room_id, found[m.room_nid])
        return out

    async def senders(self, event_ids: Sequence[str]) -> dict[str, str]:
        out = {e: self._senders[e] for e in event_ids if e in self._senders}
        missing = [e for e in event_ids if e not in out]
        if missing:
            found = await self._store.event_senders(missing)
            for event_id, sender in found.items():
                out[event_id] = sender
                _put(self._senders, event_id, sender)
        return out

    async def space_children(self, room_nid: int) -> list[str]:
        return await self._store.space_children(room_nid)


def _put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= MAX_INDEX_ENTRIES and key not in cache:
        cache.clear()
    cache[key] = value


@attrs.frozen
class ListedRoom:
    """A room in a list's window or subscribed to, with the combined config of every rule it matched."""

    membership: MembershipRow
    config: RoomConfig
    lists: tuple[str, ...] = ()


@attrs.define
class RoomListsResult:
    #: the response's ``lists``
    lists: dict[str, JsonDict]
    #: rooms matched by a list window or a subscription (MSC4186 §Room results)
    relevant: dict[str, ListedRoom]
    #: list key -> the room IDs in its windows (extensions' ``lists`` scope)
    in_lists: dict[str, list[str]]
    #: subscribed rooms the user may see (extensions' ``rooms`` scope)
    subscribed: list[str]
    dm_rooms: frozenset[str]


class RoomLists:
    """Builds the room lists of a request (MSC4186 §Lists) and checks its subscriptions."""

    def __init__(
        self, index: RoomIndex, account_data: ListAccountData, events: EventReader, invites: InvitePermissions
    ) -> None:
        self._index = index
        self._invites = invites
        self._account_data = account_data
        self._events = events

    async def compute(
        self,
        user_id: str,
        memberships: Sequence[MembershipRow],
        since_room: int | None,
        request: SlidingSyncRequest,
        ignored: frozenset[str],
    ) -> RoomListsResult:
        if any(m.membership == "invite" for m in memberships) and await self._invites.blocks_invites(user_id):
            # client-server-api §Invite permission (v1.18): no invite is served while blocked
            memberships = [m for m in memberships if m.membership != "invite"]
        rooms = await self._server_list(user_id, memberships, since_room, ignored)
        dm_rooms = await self._account_data.direct_rooms(user_id)
        relevant: dict[str, ListedRoom] = {}
        lists: dict[str, JsonDict] = {}
        in_lists: dict[str, list[str]] = {}
        ordered: list[MembershipRow] | None = None
        for key, list_config in request.lists.items():
            if ordered is None:
                ordered = await self._sorted(rooms)
            matching = await self._filtered(user_id, ordered, list_config.filters, dm_rooms, memberships)
            ops, window = _windows(matching, list_config)
            lists[key] = {"count": len(matching), "ops": ops}
            in_lists[key] = [m.room_id for m in window]
            for m in window:
                _add(relevant, m, list_config.config, key)

        subscribed = []
        by_room = {m.room_id: m for m in memberships if not m.forgotten}
        for room_id, config in request.room_subscriptions.items():
            # MSC4186 §Subscriptions: only rooms the user is or was in, is invited to or knocked
            # on; others (unknown, never a member) are ignored.
            sub = by_room.get(room_id)
            if sub is None or (sub.membership == "invite" and await self._invited_by_ignored(sub, ignored)):
                continue
            subscribed.append(room_id)
            _add(relevant, sub, config, None)
        return RoomListsResult(lists, relevant, in_lists, subscribed, dm_rooms)

    async def _server_list(
        self, user_id: str, memberships: Sequence[MembershipRow], since_room: int | None, ignored: frozenset[str]
    ) -> list[MembershipRow]:
        """The rooms any list may hold (MSC4186 §Lists), unsorted."""
        leaves = [m for m in memberships if m.membership == "leave" and not m.forgotten]
        invites = [m for m in memberships if m.membership == "invite"] if ignored else []
        senders = await self._index.senders([m.event_id for m in leaves + invites]) if leaves or invites else {}
        out = []
        for m in memberships:
            if m.forgotten:
                continue
            if m.membership == "leave":
                kicked = senders.get(m.event_id, user_id) != user_id
                newly_left = since_room is not None and m.stream_ordering > since_room
                if not (kicked or newly_left):
                    continue  # left by themselves: the client knows (sent once, when new)
            elif m.membership == "invite" and senders.get(m.event_id) in ignored:
                continue  # modules/ignore_users.md: invites from ignored users are not shown
            out.append(m)
        return out

    async def _invited_by_ignored(self, m: MembershipRow, ignored: frozenset[str]) -> bool:
        if not ignored:
            return False
        return (await self._index.senders([m.event_id])).get(m.event_id) in ignored

    async def _sorted(self, rooms: Sequence[MembershipRow]) -> list[MembershipRow]:
        """Most recent activity first (MSC4186 §Activity ordering); ties by room ID."""
        joined = [m for m in rooms if m.membership == "join"]
        latest = await self._index.latest_positions(joined) if joined else {}
        # A room the user is not in shows what they saw up to their membership event. Sorted as
        # (position, room ID, row) tuples, not through a key function called per room; room IDs
        # are unique, so the rows themselves are never compared.
        decorated = [
            (-(latest.get(m.room_id, m.stream_ordering) if m.membership == "join" else m.stream_ordering), m.room_id, m)
            for m in rooms
        ]
        decorated.sort()
        return [d[2] for d in decorated]

    async def _filtered(
        self,
        user_id: str,
        rooms: list[MembershipRow],
        filters: ListFilters,
        dm_rooms: frozenset[str],
        memberships: Sequence[MembershipRow],
    ) -> list[MembershipRow]:
        out = rooms
        if filters.is_dm is not None:
            out = [m for m in out if (m.room_id in dm_rooms) == filters.is_dm]
        if filters.is_invite is not None:
            out = [m for m in out if (m.membership == "invite") == filters.is_invite]
        if filters.spaces is not None:
            children = await self._space_children(filters.spaces, memberships)
            out = [m for m in out if m.room_id in children]
        if filters.needs_traits:
            traits = await self._traits(out)
            out = [m for m in out if _traits_match(traits.get(m.room_id), filters)]
        if filters.tags is not None or filters.not_tags is not None:
            tags = await self._account_data.tags_of_rooms(user_id)
            if filters.tags is not None:
                wanted = frozenset(filters.tags)
                out = [m for m in out if tags.get(m.room_id, frozenset()) & wanted]
            if filters.not_tags is not None:
                # MSC4186 §SlidingRoomFilter: not_tags takes priority over tags.
                unwanted = frozenset(filters.not_tags)
                out = [m for m in out if not tags.get(m.room_id, frozenset()) & unwanted]
        return out

    async def _space_children(self, spaces: Sequence[str], memberships: Sequence[MembershipRow]) -> set[str]:
        """Rooms listed as ``m.space.child`` of the given spaces the user is joined to (MSC4186:
        not recursively; unknown spaces and spaces the user is not in are ignored)."""
        joined = {m.room_id: m.room_nid for m in memberships if m.membership == "join"}
        out: set[str] = set()
        for space in dict.fromkeys(spaces):
            if space in joined:
                out.update(await self._index.space_children(joined[space]))
        return out

    async def _traits(self, rooms: Sequence[MembershipRow]) -> dict[str, RoomTraits]:
        traits = await self._index.traits(rooms)
        # An invite or knock through another server: the room's state is not here, only the
        # stripped state that came with it (its unsigned invite_room_state / knock_room_state).
        outside = [m for m in rooms if m.room_id not in traits and m.membership in ("invite", "knock")]
        if outside:
            events = await self._events.get_events([m.event_id for m in outside])
            for m in outside:
                ev = events.get(m.event_id)
                stripped = ev.unsigned.get("invite_room_state", ev.unsigned.get("knock_room_state")) if ev else None
                if isinstance(stripped, list):
                    state: dict[str, Mapping[str, Any]] = {
                        e["type"]: e["content"] if isinstance(e.get("content"), dict) else {}
                        for e in stripped
                        if isinstance(e, dict) and e.get("state_key") == "" and isinstance(e.get("type"), str)
                    }
                    traits[m.room_id] = traits_from_state(state)
        return traits


def _traits_match(traits: RoomTraits | None, filters: ListFilters) -> bool:
    if traits is None or not traits.known:
        return False  # as Synapse: a room whose state is unknown matches no such filter
    if filters.is_encrypted is not None and traits.encrypted != filters.is_encrypted:
        return False
    if filters.room_types is not None and traits.room_type not in filters.room_types:
        return False
    # MSC4186: a type in both room_types and not_room_types is excluded.
    if filters.not_room_types is not None and traits.room_type in filters.not_room_types:
        return False
    if filters.room_name_like is not None:
        # Case-insensitive partial match (MSC3575's room_name_like).
        if traits.name is None or filters.room_name_like.casefold() not in traits.name.casefold():
            return False
    return True


def _windows(rooms: list[MembershipRow], config: ListConfig) -> tuple[list[JsonDict], list[MembershipRow]]:
    """The list's ``ops`` (one SYNC per range, as Synapse) and the rooms in its windows."""
    if config.ranges is None:
        # MSC4186 §SyncListConfig: without a range, the list is every matching room.
        ranges: Sequence[tuple[int, int]] = [(0, max(len(rooms) - 1, 0))]
    else:
        ranges = config.ranges
    ops: list[JsonDict] = []
    window: list[MembershipRow] = []
    seen: set[str] = set()
    for start, end in ranges:
        part = rooms[start : end + 1]
        ops.append({"op": "SYNC", "range": [start, end], "room_ids": [m.room_id for m in part]})
        for m in part:
            if m.room_id not in seen:
                seen.add(m.room_id)
                window.append(m)
    return ops, window


def _add(relevant: dict[str, ListedRoom], m: MembershipRow, config: RoomConfig, list_key: str | None) -> None:
    existing = relevant.get(m.room_id)
    lists = (list_key,) if list_key is not None else ()
    if existing is None:
        relevant[m.room_id] = ListedRoom(m, config, lists)
    else:
        # MSC4186 §Combining room configs.
        relevant[m.room_id] = ListedRoom(m, existing.config.combine(config), existing.lists + lists)


def scope_rooms(
    lists_scope: Sequence[str] | None,
    rooms_scope: Sequence[str] | None,
    in_lists: Mapping[str, list[str]],
    relevant: Iterable[str],
) -> set[str]:
    """An extension's rooms from its ``lists`` and ``rooms`` (``*``: every list, every room of
    the response's lists and subscriptions, as Synapse)."""
    out: set[str] = set()
    if rooms_scope is not None:
        if "*" in rooms_scope:
            out.update(relevant)
        else:
            wanted = set(rooms_scope)
            out.update(r for r in relevant if r in wanted)
    if lists_scope is not None:
        for key, room_ids in in_lists.items():
            if "*" in lists_scope or key in lists_scope:
                out.update(room_ids)
    return out
