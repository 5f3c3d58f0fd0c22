"""Who is joined where, in memory: the cheap answer to "who shares a room with whom".

Presence (who may see whose presence, whom to wake) and the user directory
(who may find whom) ask this on every request, so it must not cost a query.
:class:`RoomMembers` keeps, loaded lazily from ``room_memberships`` and then
maintained from the room event stream (member events):

- the joined members of a room (``members``),
- the rooms a user is joined to (``rooms_for_user``),
- the users sharing at least one room with a user (``users_sharing_rooms``),
  computed from the two above on first use and dropped (LRU, and whenever a
  membership in one of the user's rooms changes).

Races with the stream: the tables are written in the same transaction as the
events and the stream is published after commit, so a load that overlaps a
member event may or may not see it. Member events arriving while a room or
user is being loaded are recorded and replayed onto the loaded set
(idempotent set operations in stream order), so the cached set always ends
up as the current state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred

from mxserver.events.model import Event
from mxserver.storage.room_members import RoomMembersStore

#: how many users' "sharing" sets stay cached
SHARING_CACHE_SIZE = 20_000

#: told ``(room_id, user_id, joined)`` of a join or leave (possibly repeated: must be idempotent)
MembershipListener = Callable[[str, str, bool], None]


class RoomMembers:
    """``hs.room_members``: joined members per room and rooms per user, kept current.

    The Homeserver subscribes :meth:`on_room_events` to the room stream (caches phase).
    """

    def __init__(self, store: RoomMembersStore) -> None:
        self._store = store
        self._members: dict[str, set[str]] = {}
        self._rooms: dict[str, set[str]] = {}
        self._sharing: OrderedDict[str, frozenset[str]] = OrderedDict()
        # key -> (joined?) changes seen while a load of that key is running
        self._loading_rooms: dict[str, list[tuple[str, bool]]] = {}
        self._loading_users: dict[str, list[tuple[str, bool]]] = {}
        self._room_waiters: dict[str, list[Deferred[None]]] = {}
        self._user_waiters: dict[str, list[Deferred[None]]] = {}
        #: bumped by every membership change seen on the stream
        self._generation = 0
        #: told of every join/leave seen (:data:`MembershipListener`), in registration order.
        #: Register with :meth:`subscribe_memberships` (from the Homeserver); appending here
        #: directly still works while the last callers move over.
        self.listeners: list[MembershipListener] = []

    def subscribe_memberships(self, listener: MembershipListener) -> None:
        """Call ``listener(room_id, user_id, joined)`` for every join or leave from now on.

        It runs right after this cache moved (inside the room-stream publish, caches phase,
        or inside :meth:`state_replaced`): it must be cheap, synchronous and idempotent.
        """
        self.listeners.append(listener)

    # -- reads ----------------------------------------------------------------------------

    async def members(self, room_id: str) -> frozenset[str]:
        """The users joined to ``room_id`` (empty for an unknown room)."""
        await self._ensure_rooms([room_id])
        return frozenset(self._members.get(room_id, ()))

    async def members_of_rooms(self, room_ids: Iterable[str]) -> dict[str, frozenset[str]]:
        room_ids = list(dict.fromkeys(room_ids))
        await self._ensure_rooms(room_ids)
        return {r: frozenset(self._members.get(r, ())) for r in room_ids}

    async def rooms_for_user(self, user_id: str) -> frozenset[str]:
        """The rooms ``user_id`` is joined to."""
        await self._ensure_users([user_id])
        return frozenset(self._rooms.get(user_id, ()))

    async def users_sharing_rooms(self, user_id: str) -> frozenset[str]:
        """Every user joined to a room ``user_id`` is joined to (``user_id`` included if joined anywhere)."""
        cached = self._sharing.get(user_id)
        if cached is not None:
            self._sharing.move_to_end(user_id)
            return cached
        generation = self._generation
        rooms = await self.rooms_for_user(user_id)
        by_room = await self.members_of_rooms(rooms)
        result: set[str] = set()
        for members in by_room.values():
            result |= members
        sharing = frozenset(result)
        # Only cache when no membership moved while we awaited.
        if generation == self._generation:
            self._sharing[user_id] = sharing
            if len(self._sharing) > SHARING_CACHE_SIZE:
                self._sharing.popitem(last=False)
        return sharing

    async def share_a_room(self, a: str, b: str) -> bool:
        if a == b:
            return True
        return b in await self.users_sharing_rooms(a)

    # -- lazy loading -----------------------------------------------------------------------

    async def _ensure_rooms(self, room_ids: list[str]) -> None:
        missing = [r for r in room_ids if r not in self._members]
        waits = [self._wait(self._room_waiters, r) for r in missing if r in self._loading_rooms]
        to_load = [r for r in missing if r not in self._loading_rooms]
        if to_load:
            for r in to_load:
                self._loading_rooms[r] = []
                self._room_waiters[r] = []
            waits += [self._wait(self._room_waiters, r) for r in to_load]
            # The load runs on its own: a caller that goes away (a cancelled request) must not
            # cancel it under the other callers waiting for the same rooms.
            Deferred.fromCoroutine(self._load_rooms(to_load))
        for d in waits:
            await d

    async def _load_rooms(self, to_load: list[str]) -> None:
        try:
            loaded = await self._store.joined_members(to_load)
        except BaseException as e:
            self._finish(to_load, self._loading_rooms, self._room_waiters, e)
            return
        for r in to_load:
            members = loaded.get(r, set())
            for user_id, joined in self._loading_rooms[r]:
                (members.add if joined else members.discard)(user_id)
            self._members[r] = members
        self._finish(to_load, self._loading_rooms, self._room_waiters, None)

    async def _ensure_users(self, user_ids: list[str]) -> None:
        missing = [u for u in user_ids if u not in self._rooms]
        waits = [self._wait(self._user_waiters, u) for u in missing if u in self._loading_users]
        to_load = [u for u in missing if u not in self._loading_users]
        if to_load:
            for u in to_load:
                self._loading_users[u] = []
                self._user_waiters[u] = []
            waits += [self._wait(self._user_waiters, u) for u in to_load]
            Deferred.fromCoroutine(self._load_users(to_load))  # on its own, as for rooms
        for d in waits:
            await d

    async def _load_users(self, to_load: list[str]) -> None:
        try:
            loaded = await self._store.joined_rooms(to_load)
        except BaseException as e:
            self._finish(to_load, self._loading_users, self._user_waiters, e)
            return
        for u in to_load:
            rooms = loaded.get(u, set())
            for room_id, joined in self._loading_users[u]:
                (rooms.add if joined else rooms.discard)(room_id)
            self._rooms[u] = rooms
        self._finish(to_load, self._loading_users, self._user_waiters, None)

    @staticmethod
    def _wait(waiters: dict[str, list[Deferred[None]]], key: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        waiters[key].append(d)
        return d

    @staticmethod
    def _finish(
        keys: list[str],
        loading: dict[str, list[tuple[str, bool]]],
        waiters: dict[str, list[Deferred[None]]],
        error: BaseException | None,
    ) -> None:
        for key in keys:
            loading.pop(key, None)
            for d in waiters.pop(key, []):
                if d.called:
                    continue  # that caller went away (cancelled)
                if error is None:
                    d.callback(None)
                else:
                    d.errback(error)

    def state_replaced(self, room_id: str, joined: Iterable[str]) -> None:
        """The room's joined members are now ``joined``: its state was replaced as a whole
        (a join over federation adopts the resident's state), with no member event per change
        on the stream. Called after the new state is committed."""
        now = set(joined)
        members = self._members.get(room_id)
        before = set(members) if members is not None else set()
        before |= {u for u, rooms in self._rooms.items() if room_id in rooms}
        for user_id in sorted(now - before):
            self._apply(room_id, user_id, True)
        for user_id in sorted(before - now):
            self._apply(room_id, user_id, False)

    # -- the stream ---------------------------------------------------------------------------

    def on_room_events(self, events: list[Event]) -> None:
        """Room-stream subscriber: apply the joins and leaves among ``events``."""
        for ev in events:
            if ev.type != "m.room.member" or ev.state_key is None:
                continue
            if ev.rejected or ev.metadata.soft_failed or ev.metadata.outlier:
                continue
            self._apply(ev.room_id, ev.state_key, ev.membership == "join")

    def _apply(self, room_id: str, user_id: str, joined: bool) -> None:
        members = self._members.get(room_id)
        before = user_id in members if members is not None else None
        if room_id in self._loading_rooms:
            self._loading_rooms[room_id].append((user_id, joined))
        if user_id in self._loading_users:
            self._loading_users[user_id].append((room_id, joined))
        if members is not None:
            (members.add if joined else members.discard)(user_id)
        rooms = self._rooms.get(user_id)
        if rooms is not None:
            was = room_id in rooms
            before = was if before is None else before
            (rooms.add if joined else rooms.discard)(room_id)
        if before is not None and before == joined:
            return  # a profile change or a repeated leave: nobody's sharing set moves
        self._generation += 1
        self._sharing.pop(user_id, None)
        for other in members or ():
            self._sharing.pop(other, None)
        for listener in self.listeners:
            listener(room_id, user_id, joined)
