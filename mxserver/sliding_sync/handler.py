"""Sliding sync requests, end to end: open the connection at ``pos``, build, wait, commit.

A request is answered from the connection's state at its ``pos``
(:mod:`.connections`): which rooms the lists and subscriptions select
(:mod:`.room_lists`), which of those the client lacks or has an outdated copy
of, their results (:mod:`.rooms`) and the extensions (:mod:`.extensions`).
With nothing to send and a ``timeout``, it waits on the notifier /sync uses,
woken by the room stream and the per-user streams, and builds again. The
response's changes to the connection state are stored before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.interfaces import IReactorTime

from mxserver.sliding_sync.connections import LIVE, Connections, OpenConnection, Pos, RoomEntry
from mxserver.sliding_sync.extensions import ExtensionContext, Extensions
from mxserver.sliding_sync.request import SlidingSyncRequest
from mxserver.sliding_sync.room_lists import RoomIndex, RoomLists
from mxserver.sliding_sync.rooms import RoomPlan, RoomResults
from mxserver.storage.sync import MembershipRow, SyncStore
from mxserver.sync.handler import IgnoredUsers, OnSync
from mxserver.sync.notifier import Notifier
from mxserver.sync.source_adapters import ReceiptsReader
from mxserver.sync.tokens import STREAMS, StreamToken

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester

JsonDict = dict[str, Any]


class Memberships(Protocol):
    """A user's memberships, from the room stream (:class:`~mxserver.sync.source_adapters.RoomStreamSource`)."""

    async def memberships(self, user_id: str) -> list[MembershipRow]: ...


@attrs.frozen
class _Built:
    body: JsonDict
    changes: Mapping[str, RoomEntry]
    has_data: bool


class SlidingSyncHandler:
    """Answers ``POST .../org.matrix.simplified_msc3575/sync``."""

    def __init__(
        self,
        *,
        connections: Connections,
        room_lists: RoomLists,
        rooms: RoomResults,
        extensions: Extensions,
        index: RoomIndex,
        memberships: Memberships,
        sync_store: SyncStore,
        receipts: ReceiptsReader,
        notifier: Notifier,
        ignored: IgnoredUsers,
        on_sync: OnSync | None,
        clock: IReactorTime,
    ) -> None:
        self._connections = connections
        self._room_lists = room_lists
        self._rooms = rooms
        self._extensions = extensions
        self._index = index
        self._memberships = memberships
        self._sync_store = sync_store
        self._receipts = receipts
        self._notifier = notifier
        self._ignored = ignored
        self._on_sync = on_sync
        self._clock = clock

    async def sync(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        pos: str | None,
        timeout_ms: int,
        set_presence: str | None,
    ) -> JsonDict:
        parsed = Pos.parse(pos) if pos else None
        if self._on_sync is not None:
            await self._on_sync(requester.user_id, set_presence)
        opened = await self._connections.open(
            requester.user_id, requester.device_id or "", request.conn_id, parsed.position if parsed else None
        )
        notifier = self._notifier
        deadline = self._clock.seconds() + timeout_ms / 1000
        while True:
            now = notifier.current_token()
            since = _bounded(parsed.token, now) if parsed is not None else None
            memberships = await self._memberships.memberships(requester.user_id)
            built = await self._build(requester, request, opened, since, now, memberships)
            remaining = deadline - self._clock.seconds()
            # Without a pos the answer is immediate (MSC4186: timeout "Ignored when no pos is set").
            if built.has_data or since is None or remaining <= 0:
                break
            # Nothing yet: wait, unless something arrived while building (checked and registered
            # in one reactor turn, so a notification cannot slip in between).
            if notifier.current_token().is_after(now):
                continue
            rooms = [m.room_id for m in memberships if m.membership == "join"]
            await notifier.wait(requester.user_id, rooms, int(remaining * 1000))
        position = await self._connections.commit(opened, built.changes)
        return {"pos": Pos(now, position).serialize(), **built.body}

    async def _build(
        self,
        requester: Requester,
        request: SlidingSyncRequest,
        opened: OpenConnection,
        since: StreamToken | None,
        now: StreamToken,
        memberships: Sequence[MembershipRow],
    ) -> _Built:
        user_id = requester.user_id
        ignored = await self._ignored.ignored_users(user_id)
        since_room = since.room if since is not None else None
        lists = await self._room_lists.compute(user_id, memberships, since_room, request, ignored)
        previous = opened.rooms

        newly_joined = await self._newly_joined(user_id, [r.membership for r in lists.relevant.values()], since_room)
        own_read = await self._own_receipts_moved(user_id, lists.relevant, since, now)

        plans: list[RoomPlan] = []
        for room_id, listed in lists.relevant.items():
            m = listed.membership
            entry = previous.get(room_id)
            status = entry.room if entry is not None else None
            initial = since is None or status is None or room_id in newly_joined
            from_bound = None if initial else (since_room if status == LIVE else status)
            prev_config = entry.config if entry is not None else None
            stripped = m.membership in ("invite", "knock")
            expanded = (
                not initial
                and not stripped
                and prev_config is not None
                and listed.config.timeline_limit > prev_config.timeline_limit
            )
            state_expanded = (
                not initial
                and not stripped
                and (
                    prev_config is None
                    or listed.config.required_state.expands(prev_config.required_state, user_id)
                )
            )
            refresh = room_id in own_read
            due = (
                from_bound is None  # new to the connection (or rejoined): sent whole
                or status != LIVE  # sent before, and updates since were not: they are due now
                or expanded
                or state_expanded  # MSC4186 §Changing room configs: served at once
                or refresh
                or self._updated(m, from_bound)
            )
            if not due:
                continue
            plans.append(
                RoomPlan(
                    membership=m,
                    config=listed.config,
                    previous=entry,
                    initial=initial,
                    from_bound=from_bound,
                    expanded=expanded,
                    is_dm=room_id in lists.dm_rooms,
                    refresh_counts=refresh,
                )
            )
        outcomes = await self._rooms.build(requester, plans, since_room, now.room, ignored)
        rooms_body = {room_id: o.body for room_id, o in outcomes.items() if o.send}
        changes: dict[str, RoomEntry] = {room_id: o.entry for room_id, o in outcomes.items()}

        if since_room is not None:
            # Rooms the client has up to date that changed without being sent (out of every
            # window now): remember from where they must be brought up to date.
            by_room = {m.room_id: m for m in memberships}
            for room_id, entry in previous.items():
                if entry.room != LIVE or room_id in outcomes:
                    continue
                row = by_room.get(room_id)
                if row is not None and self._updated(row, since_room):
                    changes[room_id] = attrs.evolve(entry, room=since_room)

        ext = await self._extensions.build(
            request.extensions,
            ExtensionContext(requester, since, now, memberships, lists, previous, outcomes),
        )
        for room_id, fields in ext.patches.items():
            base = changes.get(room_id) or previous.get(room_id) or RoomEntry()
            changes[room_id] = attrs.evolve(base, **fields)
        changes = {room_id: e for room_id, e in changes.items() if previous.get(room_id) != e}

        body: JsonDict = {}
        if lists.lists:
            body["lists"] = lists.lists
        body["rooms"] = rooms_body
        body["extensions"] = ext.body
        return _Built(body, changes, bool(rooms_body) or ext.has_data)

    def _updated(self, m: MembershipRow, after: int) -> bool:
        """Whether the room has something new for the user after ``after`` (a room position)."""
        if m.membership == "join":
            return self._index.changed_since(m.room_id, after)
        # Not in the room: nothing after their own membership event is theirs to see.
        return m.stream_ordering > after

    async def _newly_joined(self, user_id: str, rooms: Sequence[MembershipRow], since_room: int | None) -> set[str]:
        """Rooms joined (or left and joined again) since the pos: sent whole (as Synapse: the client
        may only have had the invite, or dropped the room when it left). A display-name change
        also moves the membership row: the history tells them apart (one read, those rooms only)."""
        if since_room is None:
            return set()
        moved = [m for m in rooms if m.membership == "join" and m.stream_ordering > since_room]
        if not moved:
            return set()
        history = await self._sync_store.membership_history([m.room_nid for m in moved], user_id, since_room)
        out = set()
        for m in moved:
            at_since, changes = history.get(m.room_nid, ("join", []))
            if at_since != "join" or any(c != "join" for c in changes):
                out.add(m.room_id)
        return out

    async def _own_receipts_moved(
        self, user_id: str, relevant: Mapping[str, Any], since: StreamToken | None, now: StreamToken
    ) -> set[str]:
        """Joined rooms where the user's own read receipt moved: their unread counts changed (read
        on another device), so they are sent again with the new counts."""
        if since is None or now.receipts <= since.receipts:
            return set()
        joined = [room_id for room_id, listed in relevant.items() if listed.membership.membership == "join"]
        if not joined:
            return set()
        got = await self._receipts.receipts_for_rooms(user_id, joined, since.receipts, now.receipts)
        return {room_id for room_id, event in got.items() if _has_receipt_of(event, user_id)}


def _has_receipt_of(event: Mapping[str, Any], user_id: str) -> bool:
    for by_type in (event.get("content") or {}).values():
        if isinstance(by_type, dict) and any(isinstance(u, dict) and user_id in u for u in by_type.values()):
            return True
    return False


def _bounded(since: StreamToken, now: StreamToken) -> StreamToken:
    """A pos token is never ahead of the server (an in-memory stream restarted, a made-up token)."""
    return StreamToken(**{s: min(getattr(since, s), getattr(now, s)) for s in STREAMS})
