"""The room list: which of a user's rooms a list holds, in activity order, and its windows.

MSC4186 §Lists: the server keeps, per user, the rooms they are joined to, invited
to, knocked on, were kicked or banned from (and rooms they left themselves only
when the leave is new since the connection's last pos, so that it is sent once),
sorted by recent activity: the position of the room's latest event, or of the
user's membership event when they are not joined (§Activity ordering; rooms are
*not* sorted by ``bump_stamp``). A list filters that sequence, and its ranges
index into the filtered sequence.

A user's rooms in that order are kept in memory between requests (a
:class:`_UserOrder` per user, bounded across users): built once from their
memberships (a room's latest position from memory,
:class:`~mxserver.rooms.activity.RoomActivity`, or one batched read for rooms
without an event since start-up), then brought up to date by moving only the
rooms with activity since (the activity map says which), until their
memberships change. So a request's list costs what its windows hold, not what
the account holds: ``count`` is a length and a window a slice. Filters read
only what they need, batched for all the user's rooms, over the whole ordered
list. Nothing per room beyond that is read until a room falls inside a range
(:mod:`.rooms`).
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, overload

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
#: rooms held by the per-user activity orders, across users (the least recently used go first)
MAX_ORDERED_ENTRIES = 100_000


class LatestActivity(Protocol):
    """Rooms' latest positions since start-up (:class:`~mxserver.rooms.activity.RoomActivity`)."""

    def latest(self, room_id: str) -> int | None: ...

    def latest_by_room(self) -> Mapping[str, int]: ...

    def changed_since(self, room_id: str, position: int) -> bool: ...

    @property
    def sequence(self) -> int: ...

    def touched_since(self, sequence: int, limit: int) -> list[str] | None: ...


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

    @property
    def sequence(self) -> int:
        """The activity map's update number (see :meth:`touched_since`)."""
        return self._activity.sequence

    def touched_since(self, sequence: int, limit: int) -> list[str] | None:
        """Rooms whose latest position moved after update number ``sequence``; None: over ``limit``."""
        return self._activity.touched_since(sequence, limit)

    def latest_since_start(self, room_id: str) -> int | None:
        return self._activity.latest(room_id)

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


@attrs.define(eq=False)
class _UserOrder:
    """A user's rooms that lists may hold (rooms they left themselves aside), most recent
    activity first (MSC4186 §Activity ordering; ties by room ID), kept between requests."""

    #: the memberships it was built from: another list means they changed (built again)
    source: Sequence[MembershipRow]
    #: the activity map's update number the keys are current to
    sequence: int
    #: ``(-activity position, room ID)``, sorted
    keys: list[tuple[int, str]]
    key_of: dict[str, tuple[int, str]]
    #: every membership not forgotten, by room (subscriptions look rooms up here)
    rows: dict[str, MembershipRow]
    #: rooms the user left themselves (listed only when the leave is new since the pos), newest first
    own_leaves: list[MembershipRow]
    invites: list[MembershipRow]


class _Ordered(Sequence[MembershipRow]):
    """A list's rooms as a sequence over the sorted keys (nothing per room is built but what a
    window takes)."""

    __slots__ = ("_keys", "_rows")

    def __init__(self, keys: Sequence[tuple[int, str]], rows: Mapping[str, MembershipRow]) -> None:
        self._keys = keys
        self._rows = rows

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, i: int) -> MembershipRow: ...

    @overload
    def __getitem__(self, i: slice) -> list[MembershipRow]: ...

    def __getitem__(self, i: int | slice) -> MembershipRow | list[MembershipRow]:
        rows = self._rows
        if isinstance(i, slice):
            return [rows[k[1]] for k in self._keys[i]]
        return rows[self._keys[i][1]]

    def __iter__(self) -> Iterator[MembershipRow]:
        rows = self._rows
        return (rows[k[1]] for k in self._keys)


class RoomLists:
    """Builds the room lists of a request (MSC4186 §Lists) and checks its subscriptions."""

    def __init__(
        self,
        index: RoomIndex,
        account_data: ListAccountData,
        events: EventReader,
        invites: InvitePermissions,
        *,
        max_ordered_entries: int = MAX_ORDERED_ENTRIES,
    ) -> None:
        self._index = index
        self._invites = invites
        self._account_data = account_data
        self._events = events
        self._orders: OrderedDict[str, _UserOrder] = OrderedDict()
        self._ordered_entries = 0
        self._max_ordered_entries = max_ordered_entries

    @property
    def ordered_entries(self) -> int:
        """Rooms held by the per-user orders (for tests and metrics)."""
        return self._ordered_entries

    async def compute(
        self,
        user_id: str,
        memberships: Sequence[MembershipRow],
        since_room: int | None,
        request: SlidingSyncRequest,
        ignored: frozenset[str],
    ) -> RoomListsResult:
        order = await self._order(user_id, memberships)
        # client-server-api §Invite permission (v1.18): no invite is served while blocked;
        # modules/ignore_users.md: invites from ignored users are not shown.
        hidden: set[str] = set()
        if order.invites:
            if await self._invites.blocks_invites(user_id):
                hidden = {m.room_id for m in order.invites}
            elif ignored:
                senders = await self._index.senders([m.event_id for m in order.invites])
                hidden = {m.room_id for m in order.invites if senders.get(m.event_id) in ignored}
        dm_rooms = await self._account_data.direct_rooms(user_id)
        relevant: dict[str, ListedRoom] = {}
        lists: dict[str, JsonDict] = {}
        in_lists: dict[str, list[str]] = {}
        ordered: Sequence[MembershipRow] | None = None
        for key, list_config in request.lists.items():
            if ordered is None:
                ordered = self._listed(order, since_room, hidden)
            matching = await self._filtered(user_id, ordered, list_config.filters, dm_rooms, memberships)
            ops, window = _windows(matching, list_config)
            lists[key] = {"count": len(matching), "ops": ops}
            in_lists[key] = [m.room_id for m in window]
            for m in window:
                _add(relevant, m, list_config.config, key)

        subscribed = []
        for room_id, config in request.room_subscriptions.items():
            # MSC4186 §Subscriptions: only rooms the user is or was in, is invited to or knocked
            # on; others (unknown, never a member) are ignored.
            sub = order.rows.get(room_id)
            if sub is None or room_id in hidden:
                continue
            subscribed.append(room_id)
            _add(relevant, sub, config, None)
        return RoomListsResult(lists, relevant, in_lists, subscribed, dm_rooms)

    @staticmethod
    def _listed(order: _UserOrder, since_room: int | None, hidden: set[str]) -> Sequence[MembershipRow]:
        """The rooms any list may hold (MSC4186 §Lists), in activity order: the kept order, with
        the user's own leaves that are new since the pos (sent once; the client knows the
        others) and without ``hidden`` invites."""
        keys: Sequence[tuple[int, str]] = order.keys
        if hidden:
            keys = [k for k in keys if k[1] not in hidden]
        if since_room is not None and order.own_leaves and order.own_leaves[0].stream_ordering > since_room:
            new = []
            for m in order.own_leaves:
                if m.stream_ordering <= since_room:
                    break
                new.append((-m.stream_ordering, m.room_id))
            new.sort()
            keys = list(heapq.merge(keys, new))
        return _Ordered(keys, order.rows)

    async def _order(self, user_id: str, memberships: Sequence[MembershipRow]) -> _UserOrder:
        """The user's kept order, brought up to date (built afresh when their memberships changed,
        or when more rooms moved since than it is worth moving one by one)."""
        order = self._orders.get(user_id)
        if order is not None and order.source is memberships:
            touched = self._index.touched_since(order.sequence, max(64, len(order.keys) // 4))
            if touched is not None:
                self._advance(order, touched)
                self._orders.move_to_end(user_id)
                return order
        # Read before anything is awaited: activity while building is moved in at the next request.
        sequence = self._index.sequence
        rows: dict[str, MembershipRow] = {}
        own_leaves: list[MembershipRow] = []
        invites: list[MembershipRow] = []
        listed: list[MembershipRow] = []
        leaves = [m.event_id for m in memberships if m.membership == "leave" and not m.forgotten]
        senders = await self._index.senders(leaves) if leaves else {}
        for m in memberships:
            if m.forgotten:
                continue
            rows[m.room_id] = m
            if m.membership == "leave" and senders.get(m.event_id, user_id) == user_id:
                own_leaves.append(m)  # left by themselves; a kick stays listed
                continue
            if m.membership == "invite":
                invites.append(m)
            listed.append(m)
        joined = [m for m in listed if m.membership == "join"]
        latest = await self._index.latest_positions(joined) if joined else {}
        # A room the user is not in shows what they saw up to their membership event.
        keys = [
            (-(latest.get(m.room_id, m.stream_ordering) if m.membership == "join" else m.stream_ordering), m.room_id)
            for m in listed
        ]
        keys.sort()
        own_leaves.sort(key=lambda m: m.stream_ordering, reverse=True)
        order = _UserOrder(memberships, sequence, keys, {k[1]: k for k in keys}, rows, own_leaves, invites)
        # Rooms that moved while reading are moved now (their latest position is in memory).
        touched = self._index.touched_since(sequence, len(keys) + 1)
        self._advance(order, touched if touched is not None else [k[1] for k in keys])
        self._keep(user_id, order)
        return order

    def _advance(self, order: _UserOrder, touched: Sequence[str]) -> None:
        """Move the joined rooms among ``touched`` to their new places."""
        keys, key_of, rows = order.keys, order.key_of, order.rows
        order.sequence = self._index.sequence
        for room_id in touched:
            old = key_of.get(room_id)
            if old is None or rows[room_id].membership != "join":
                continue  # not listed, or not joined: placed by their membership event, which stays
            latest = self._index.latest_since_start(room_id)
            if latest is None or -latest >= old[0]:
                continue
            new = (-latest, room_id)
            del keys[bisect.bisect_left(keys, old)]
            bisect.insort(keys, new)
            key_of[room_id] = new

    def _keep(self, user_id: str, order: _UserOrder) -> None:
        previous = self._orders.pop(user_id, None)
        if previous is not None:
            self._ordered_entries -= len(previous.rows)
        self._orders[user_id] = order
        self._ordered_entries += len(order.rows)
        while len(self._orders) > 1 and self._ordered_entries > self._max_ordered_entries:
            _, dropped = self._orders.popitem(last=False)
            self._ordered_entries -= len(dropped.rows)

    async def _filtered(
        self,
        user_id: str,
        rooms: Sequence[MembershipRow],
        filters: ListFilters,
        dm_rooms: frozenset[str],
        memberships: Sequence[MembershipRow],
    ) -> Sequence[MembershipRow]:
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


def _windows(rooms: Sequence[MembershipRow], config: ListConfig) -> tuple[list[JsonDict], list[MembershipRow]]:
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
