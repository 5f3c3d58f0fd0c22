"""Room history visibility: which events a user may see (client-server-api §Room History Visibility).

The rules are evaluated with the room state *at each event* (the event's
``state_before`` snapshot) and the user's membership then:

1. ``world_readable`` at the event: allow;
2. the user was joined at the event: allow;
3. ``shared``, and the user was joined at some point after the event: allow;
4. ``invited``, and the user was invited at the event: allow;
5. otherwise deny.

A ``m.room.history_visibility`` event, and a user's own ``m.room.member``
event, is visible if the rules allow it with the state before *or* after it.
Unknown or missing visibility values count as ``shared``.

:meth:`HistoryVisibility.filter_events_for_user` does this for any list of
events (several rooms are fine) with few loads: events of a page share
their state snapshots, so each distinct snapshot is loaded once (and those
are cached by the state store), and the two state events that matter per
snapshot are fetched in one go. ``/sync`` can reuse it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import ensureDeferred, gatherResults

from mxserver.errors import not_found
from mxserver.events.model import Event
from mxserver.events.redaction import redact_event
from mxserver.storage.events import EventStore, RoomRecord
from mxserver.storage.history import HistoryStore
from mxserver.storage.state import StateKey, StateStore

if TYPE_CHECKING:
    from mxserver.accounts.erasure import ErasedUsers
    from mxserver.rooms.api import ReaderRooms

HISTORY_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
_KNOWN = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})


def history_visibility_of(event: Event | None) -> str:
    """The visibility an ``m.room.history_visibility`` event sets (``shared`` if none or unknown).

    Redaction keeps ``history_visibility`` in every room version, so the
    original content is the right one to read even for a redacted event.
    """
    if event is None:
        return SHARED
    value = event.content.get("history_visibility")
    return value if isinstance(value, str) and value in _KNOWN else SHARED


@attrs.frozen
class RoomAccess:
    """What a user may read of a room right now, from its current state."""

    room: RoomRecord
    #: the user's current membership (None if they never had one)
    membership: str | None
    member_event: Event | None
    world_readable: bool

    @property
    def can_read(self) -> bool:
        """Members, former members and anyone in a world-readable room may read (subject to the rules)."""
        return self.membership in ("join", "leave", "ban") or self.world_readable

    @property
    def until(self) -> int | None:
        """The stream position after which a former member sees nothing; None if unbounded.

        §Room History Visibility: after leaving, a user sees the events they
        could see before, "but no events received after they left".
        """
        if self.membership == "join" or self.world_readable or self.member_event is None:
            return None
        if self.membership in ("leave", "ban"):
            return self.member_event.metadata.stream_ordering
        return None


@attrs.define
class _SnapshotView:
    visibility: str
    membership: str | None


class HistoryVisibility:
    """Decides which events users may see."""

    def __init__(
        self,
        room_server: ReaderRooms,
        events: EventStore,
        state: StateStore,
        history: HistoryStore,
        erasure: ErasedUsers,
    ) -> None:
        self.room_server = room_server
        self.events = events
        self.state = state
        self.history = history
        self.erasure = erasure

    async def room_access(self, user_id: str, room_id: str) -> RoomAccess:
        """The user's access to a room from its current state; M_NOT_FOUND for unknown rooms."""
        rs = self.room_server
        room = await rs.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        member_key = ("m.room.member", user_id)
        state = await rs.current_state_events(room_id, [member_key, HISTORY_VISIBILITY_KEY])
        member = state.get(member_key)
        return RoomAccess(
            room=room,
            membership=member.membership if member is not None else None,
            member_event=member,
            world_readable=history_visibility_of(state.get(HISTORY_VISIBILITY_KEY)) == WORLD_READABLE,
        )

    async def visible_timeline_event(self, user_id: str, room_id: str, event_id: str) -> tuple[Event, RoomAccess]:
        """The event, as the user may see it, and their access to its room, if it is in the room's
        timeline and the user may see it; M_NOT_FOUND otherwise (GET /event, /context, /relations)."""
        access = await self.room_access(user_id, room_id)
        event = await self.events.get_event(event_id)
        if (
            not access.can_read
            or event is None
            or event.room_id != room_id
            or event.rejected
            or event.metadata.soft_failed
            or event.metadata.stream_ordering is None
        ):
            raise not_found("Event not found")
        # as the user may see it (an erased sender's event may come redacted)
        visible = await self.filter_events_for_user(user_id, [event])
        if not visible:
            raise not_found("Event not found")
        return visible[0], access

    async def can_see_event(self, user_id: str, event: Event) -> bool:
        return bool(await self.filter_events_for_user(user_id, [event]))

    async def filter_events_for_user(self, user_id: str, events: Sequence[Event]) -> list[Event]:
        """The events of ``events`` (in order) that ``user_id`` may see, as they may see them:
        an erased sender's event is redacted unless the user was joined when it was sent
        (see :mod:`mxserver.accounts.erasure`)."""
        if not events:
            return []
        by_room: dict[str, list[Event]] = {}
        for ev in events:
            by_room.setdefault(ev.room_id, []).append(ev)
        visible: set[str] = set()
        joined: set[str] = set()
        for room_id, room_events in by_room.items():
            room_visible, room_joined = await self._visible_in_room(user_id, room_id, room_events)
            visible.update(room_visible)
            joined.update(room_joined)
        erased = await self.erasure.erased_among({ev.sender for ev in events})
        return [
            redact_event(ev) if ev.sender in erased and ev.event_id not in joined else ev
            for ev in events
            if ev.event_id in visible
        ]

    async def _visible_in_room(self, user_id: str, room_id: str, events: list[Event]) -> tuple[set[str], set[str]]:
        """``(the events the user may see, those of them sent while the user was joined)``."""
        member_key = ("m.room.member", user_id)
        nids: set[int] = set()
        for ev in events:
            if ev.metadata.state_before is not None:
                nids.add(ev.metadata.state_before)
            if _sees_both_sides(ev, user_id) and ev.metadata.state_after is not None:
                nids.add(ev.metadata.state_after)
        states = await self._load_states(nids)
        wanted = {m[k] for m in states.values() for k in (HISTORY_VISIBILITY_KEY, member_key) if k in m}
        state_events = await self.events.get_events(wanted) if wanted else {}
        views: dict[int | None, _SnapshotView] = {None: _SnapshotView(SHARED, None)}
        for nid, m in states.items():
            hv = state_events.get(m.get(HISTORY_VISIBILITY_KEY, ""))
            member = state_events.get(m.get(member_key, ""))
            views[nid] = _SnapshotView(history_visibility_of(hv), member.membership if member is not None else None)

        last_join: list[float] = []  # computed at most once, only if rule 3 needs it

        async def joined_after(position: int | None) -> bool:
            # rule 3: "shared", and the user joined at any point after the event
            if position is None:
                return False
            if not last_join:
                last_join.append(await self._last_joined_position(room_id, user_id))
            return last_join[0] > position

        visible: set[str] = set()
        joined: set[str] = set()
        default = views[None]
        for ev in events:
            meta = ev.metadata
            before = views.get(meta.state_before, default)
            if before.membership == "join":
                joined.add(ev.event_id)
            allowed = _allowed(before)
            if allowed is None:
                allowed = await joined_after(meta.stream_ordering)
            if not allowed and meta.state_after is not None and _sees_both_sides(ev, user_id):
                allowed = _allowed(views.get(meta.state_after, default))
                if allowed is None:
                    allowed = await joined_after(meta.stream_ordering)
            if allowed:
                visible.add(ev.event_id)
        return visible, joined

    async def _load_states(self, nids: Iterable[int]) -> dict[int, dict[StateKey, str]]:
        out: dict[int, dict[StateKey, str]] = {}
        missing = []
        for nid in nids:
            cached = self.state.cached(nid)
            if cached is not None:
                out[nid] = cached
            else:
                missing.append(nid)
        if missing:
            loaded = await gatherResults([ensureDeferred(self.state.get_state(n)) for n in missing], consumeErrors=True)
            out.update(zip(missing, loaded, strict=True))
        return out

    async def _last_joined_position(self, room_id: str, user_id: str) -> float:
        """The latest stream position at which the user was joined (infinite if joined now)."""
        access = await self.room_access(user_id, room_id)
        if access.membership == "join":
            return math.inf
        position = await self.history.last_join_position(access.room.room_nid, user_id)
        return -math.inf if position is None else position


def _sees_both_sides(ev: Event, user_id: str) -> bool:
    """History visibility events and the user's own membership events are judged before *or* after."""
    return ev.type == "m.room.history_visibility" or (ev.type == "m.room.member" and ev.state_key == user_id)


def _allowed(view: _SnapshotView) -> bool | None:
    """Rules 1, 2, 4 and 5; None when rule 3 decides (it needs the user's later joins)."""
    if view.visibility == WORLD_READABLE or view.membership == "join":
        return True
    if view.visibility == INVITED and view.membership == "invite":
        return True
    if view.visibility == SHARED:
        return None
    return False
