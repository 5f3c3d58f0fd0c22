"""/sync: what changed for a user since a token, or everything on an initial sync.

The handler merges the sections of every registered sync source (typing,
receipts, presence, account data, to-device, device lists: see
:mod:`mxserver.sync.sources`), builds the room timelines and state itself,
and long-polls on the notifier when an incremental sync finds nothing new.
Work is batched across rooms: one database interaction for all the recent
timelines, one for member counts, and so on.

Which rooms changed is known without the database, from the room stream's
source (:class:`~mxserver.sync.source_adapters.RoomStreamSource`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.invite_permission import InvitePermissions
from mxserver.events.model import Event
from mxserver.events.stripped_state import STRIPPED_STATE_TYPES
from mxserver.storage.push_actions import MAIN_THREAD, UnreadCounts
from mxserver.storage.state import StateKey
from mxserver.storage.sync import MembershipRow, SyncStore
from mxserver.sync.filtering import DEFAULT_TIMELINE_LIMIT
from mxserver.sync.notifier import Notifier
from mxserver.sync.source_adapters import RoomStreamSource
from mxserver.sync.sources import SyncRequest, SyncSources
from mxserver.sync.tokens import StreamToken, room_token

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.events.relations import Bundle
    from mxserver.room_handlers.aggregations import Aggregations
    from mxserver.room_handlers.event_serializer import EventSerializer
    from mxserver.rooms.api import ReaderRooms
    from mxserver.storage.events import EventStore
    from mxserver.storage.state import StateStore
    from mxserver.sync.filtering import Filter

log = Logger()

JsonDict = dict[str, Any]


class VisibilityFilter(Protocol):
    """History visibility, as /sync asks it of the first timeline of a room."""

    async def filter_events_for_user(self, user_id: str, events: Sequence[Event]) -> list[Event]: ...


class NotificationCounts(Protocol):
    """Unread notification counts (the push reader's results after the user's receipts)."""

    async def unread_counts(
        self, user_id: str, rooms: Sequence[tuple[int, int]], upto: int
    ) -> Mapping[int, Mapping[str, UnreadCounts]]: ...


class IgnoredUsers(Protocol):
    """Whom a user ignores (modules/ignore_users.md), asked once per /sync."""

    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


#: timeline batches read per room when a filter or history visibility drops events (as Synapse)
MAX_TIMELINE_ROUNDS = 5
#: devices whose lazy-loaded members are remembered, and members remembered per device
LL_CACHE_DEVICES = 10_000
LL_CACHE_MEMBERS = 200

#: called at the start of every /sync with the user and its ``set_presence`` (presence's hook)
OnSync = Callable[[str, "str | None"], Awaitable[None]]


@attrs.define
class _RoomPlan:
    membership: MembershipRow
    after: int | None  # timeline lower bound (exclusive); None = from the start (initial/full/new)
    upto: int  # timeline upper bound (inclusive)
    since_state: int | None  # room position of the client's last sync (for state deltas)
    newly_joined: bool = False  # (re)joined since the client's last sync


class SyncHandler:
    """Answers /sync from the registered sources, the room stream and the room stores."""

    def __init__(
        self,
        *,
        store: SyncStore,
        events: EventStore,
        state: StateStore,
        serializer: EventSerializer,
        aggregations: Aggregations,
        visibility: VisibilityFilter,
        rooms: ReaderRooms,
        room_source: RoomStreamSource,
        sources: SyncSources,
        notifier: Notifier,
        counts: NotificationCounts,
        ignored: IgnoredUsers,
        invite_permissions: InvitePermissions,
        on_sync: OnSync | None,
        clock: IReactorTime,
        reach: Callable[[StreamToken | None], Awaitable[None]] | None = None,
    ) -> None:
        """``reach(since)``: in a cluster's sync worker, returns once the worker has caught up
        with the positions of a token minted elsewhere (so an answer never goes back before it),
        or, for an initial sync (``None``), with what main has committed."""
        self.store = store
        self._events = events
        self._reach = reach
        self._state = state
        self._serializer = serializer
        self._aggregations = aggregations
        self._visibility = visibility
        self._room_server = rooms
        self._room_source = room_source
        self._sources = sources
        self._notifier = notifier
        self._counts = counts
        self._ignored = ignored
        self._invite_permissions = invite_permissions
        self._on_sync = on_sync
        #: (user, device) -> {member user ID: member event ID} already sent to that device with a
        #: lazy-loading filter, so incremental syncs leave them out (filtering §Lazy-loading room
        #: members: "redundant" membership events). Memory only, bounded: forgetting just means
        #: sending a member again, which the spec allows.
        self._ll_sent: OrderedDict[tuple[str, str | None], OrderedDict[str, str]] = OrderedDict()
        self._clock = clock

    def room_changed_since(self, room_id: str, position: int) -> bool:
        return self._room_source.room_changed_since(room_id, position)

    # -- entry point ---------------------------------------------------------------------

    async def sync(
        self,
        requester: Requester,
        since: StreamToken | None,
        timeout_ms: int,
        full_state: bool,
        sync_filter: Filter,
        set_presence: str | None,
        use_state_after: bool = False,
    ) -> dict[str, Any]:
        """GET /sync; ``use_state_after`` (v1.16, MSC4222) answers each room's ``state_after``
        (the state up to the *end* of its timeline) instead of ``state``."""
        if self._on_sync is not None:
            await self._on_sync(requester.user_id, set_presence)
        if self._reach is not None:
            await self._reach(since)
        notifier = self._notifier
        deadline = self._clock.seconds() + timeout_ms / 1000
        while True:
            now = notifier.current_token()
            result, has_data = await self._build(requester, since, now, sync_filter, full_state, use_state_after)
            remaining = deadline - self._clock.seconds()
            if has_data or since is None or full_state or remaining <= 0:
                return result
            # Nothing yet: wait, unless something arrived while we were building (checked and
            # registered in one reactor turn, so a notification cannot slip in between).
            if notifier.current_token().is_after(now):
                continue
            memberships = await self._room_source.memberships(requester.user_id)
            if notifier.current_token().is_after(now):
                continue
            rooms = [m.room_id for m in memberships if m.membership == "join"]
            await notifier.wait(requester.user_id, rooms, int(remaining * 1000))

    # -- building ----------------------------------------------------------------------------

    async def _build(
        self,
        requester: Requester,
        since: StreamToken | None,
        now: StreamToken,
        sync_filter: Filter,
        full_state: bool,
        use_state_after: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        user_id = requester.user_id
        all_memberships = await self._room_source.memberships(user_id)
        memberships = [m for m in all_memberships if sync_filter.room_allowed(m.room_id)]
        since_room = since.room if since is not None else None
        initial = since is None

        joined = [m for m in memberships if m.membership == "join"]
        joined_ids = [m.room_id for m in joined]

        # Every source's section first: ephemeral and per-room account data decide which joined
        # rooms appear too.
        request = SyncRequest(requester, all_memberships, joined_ids, sync_filter, since, now, full_state)
        ephemeral: dict[str, list[JsonDict]] = {}
        room_ad: dict[str, list[JsonDict]] = {}
        top_level: JsonDict = {}
        next_positions: dict[str, int] = {}
        has_data = False
        for source in self._sources:
            section = await source.sync_section(request)
            for room_id, events in section.room_ephemeral.items():
                ephemeral.setdefault(room_id, []).extend(events)
            for room_id, events in section.room_account_data.items():
                room_ad.setdefault(room_id, []).extend(events)
            top_level.update(section.top_level)
            if section.next_position is not None:
                next_positions[source.name] = section.next_position
            has_data = has_data or section.has_data

        # Rooms whose membership row moved since the last sync: a (re)join (full state, as a new
        # room) or only a profile change (an incremental delta). One query for those rooms only.
        moved = [
            m.room_nid
            for m in memberships
            if since_room is not None and m.stream_ordering > since_room and m.membership in ("join", "leave", "ban")
        ]
        history = await self.store.membership_history(moved, user_id, since_room) if moved else {}  # type: ignore[arg-type]

        def newly_joined(m: MembershipRow) -> bool:
            if m.room_nid not in history:
                return False
            at_since, changes = history[m.room_nid]
            if m.membership == "join":
                # Not joined at the last sync, or left and joined again since (Synapse treats a
                # rejoin as a new room too: the client may have dropped the room on the leave).
                return at_since != "join" or any(c != "join" for c in changes)
            # Joined and left again between two syncs: the room's state was never sent.
            return "join" in changes and at_since != "join"

        plans: list[_RoomPlan] = []
        for m in joined:
            newly = not initial and newly_joined(m)
            if initial or full_state or newly:
                plans.append(_RoomPlan(m, None, now.room, None, newly_joined=newly))
            elif self._room_source.room_changed_since(m.room_id, since_room):  # type: ignore[arg-type]
                plans.append(_RoomPlan(m, since_room, now.room, since_room))
            elif m.room_id in ephemeral or m.room_id in room_ad:
                plans.append(_RoomPlan(m, since_room, since_room, since_room))  # type: ignore[arg-type]

        leave_plans: list[_RoomPlan] = []
        for m in memberships:
            if m.membership not in ("leave", "ban") or m.forgotten:
                continue
            if (initial and sync_filter.include_leave) or (since_room is not None and m.stream_ordering > since_room):
                # The timeline of a left room stops at the leave.
                newly = not initial and newly_joined(m)
                after = None if initial or full_state or newly else since_room
                leave_plans.append(_RoomPlan(m, after, m.stream_ordering, after, newly_joined=newly))

        ignored = await self._ignored.ignored_users(user_id)
        if initial or full_state:
            # A fresh start: the client keeps no member from before (lazy-loading's "redundant").
            self._ll_sent.pop((user_id, requester.device_id), None)
        join_out = await self._rooms(
            requester, plans, sync_filter, ephemeral, room_ad, full_state, ignored, True, use_state_after
        )
        leave_out = await self._rooms(
            requester, leave_plans, sync_filter, {}, room_ad, full_state, ignored, False, use_state_after
        )

        invite_out: dict[str, Any] = {}
        knock_out: dict[str, Any] = {}
        # client-server-api §Invite permission (v1.18): invites "MUST NOT be served" while the
        # user blocks them (they come back once unblocked: an initial sync lists them again)
        invites_blocked = any(m.membership == "invite" for m in memberships) and (
            await self._invite_permissions.blocks_invites(user_id)
        )
        for m in memberships:
            if m.membership not in ("invite", "knock"):
                continue
            if m.membership == "invite" and invites_blocked:
                continue
            if not (initial or full_state or m.stream_ordering > since_room):  # type: ignore[operator]
                continue
            if m.membership == "invite" and ignored and await self._invited_by_ignored(m, ignored):
                # modules/ignore_users.md: invites from ignored users are not sent.
                continue
            stripped = await self._stripped_state(m)
            if m.membership == "invite":
                invite_out[m.room_id] = {"invite_state": {"events": stripped}}
            else:
                knock_out[m.room_id] = {"knock_state": {"events": stripped}}

        next_token = attrs.evolve(now, **next_positions) if next_positions else now
        result: dict[str, Any] = {
            "next_batch": next_token.serialize(),
            "rooms": {"join": join_out, "invite": invite_out, "leave": leave_out, "knock": knock_out},
            **top_level,
        }
        has_data = has_data or bool(join_out or invite_out or leave_out or knock_out)
        return result, has_data

    async def _rooms(
        self,
        requester: Requester,
        plans: Sequence[_RoomPlan],
        sync_filter: Filter,
        ephemeral: dict[str, list[dict[str, Any]]],
        room_ad: dict[str, list[dict[str, Any]]],
        full_state: bool,
        ignored: frozenset[str],
        joined: bool,
        use_state_after: bool = False,
    ) -> dict[str, Any]:
        if not plans:
            return {}
        user_id = requester.user_id
        viewer = (user_id, requester.device_id)
        # The counts wait for the push reader to evaluate the newest events: started first, that
        # wait runs while the timelines are read (a woken /sync does not wait twice).
        upto = max((p.upto for p in plans), default=0)
        counting = (
            Deferred.fromCoroutine(_settled(self._unread(user_id, [p.membership for p in plans], upto)))
            if joined
            else None
        )
        # A sync filter's timeline always has a limit (DEFAULT_TIMELINE_LIMIT unless the filter says).
        limit = sync_filter.timeline.limit or DEFAULT_TIMELINE_LIMIT
        wanted = [(p.membership.room_nid, p.after, p.upto) for p in plans if p.after is None or p.upto > p.after]
        recent = await self.store.recent_event_ids(wanted, limit) if wanted else {}
        all_ids = [e for ids, _ in recent.values() for e in ids]
        events = await self._events.get_events(all_ids)

        need_summary = [p.membership.room_nid for p in plans if joined]
        summaries = await self.store.member_summaries(need_summary, user_id) if need_summary else {}

        # Timelines first: a filter or history visibility may move a timeline's start (and so
        # which rooms have a gap that needs a state delta).
        timelines: dict[int, tuple[list[Event], bool]] = {}
        for plan in plans:
            ids, limited = recent.get(plan.membership.room_nid, ([], False))
            batch = [events[i] for i in ids if i in events]
            timelines[plan.membership.room_nid] = await self._timeline(
                user_id, plan, batch, limited, limit, sync_filter, ignored
            )

        # Snapshots at the client's previous sync, for state deltas across a gap.
        # (state_after is a delta to the end of every timeline, gap or not)
        since_positions = [
            (p.membership.room_nid, p.since_state)
            for p in plans
            if p.since_state is not None and (use_state_after or timelines[p.membership.room_nid][1])
        ]
        since_snapshots = await self.store.snapshots_at(since_positions) if since_positions else {}
        # client-server-api §Aggregations of child events: bundles in /sync "when the relevant
        # section has a limited value of true" (otherwise the client has every child as it came),
        # computed once for the timelines of all rooms.
        gapped = [
            ev
            for p in plans
            if timelines[p.membership.room_nid][1] or p.newly_joined
            for ev in timelines[p.membership.room_nid][0]
        ]
        bundles = (
            await self._aggregations.bundles(gapped, user_id)
            if gapped and sync_filter.event_format != "federation"
            else {}
        )

        unread: Mapping[int, Mapping[str, UnreadCounts]] = {}
        if counting is not None:
            counts, error = await counting
            if error is not None:
                raise error
            unread = counts or {}
        out: dict[str, Any] = {}
        for plan in plans:
            m = plan.membership
            timeline, limited = timelines[m.room_nid]
            incremental = plan.after is not None and not full_state
            if use_state_after:
                state_ids, end = await self._state_after_ids(plan, since_snapshots, full_state)
                state_events = await self._state_events(
                    state_ids, end, timeline, sync_filter, requester, incremental, with_timeline=True
                )
            else:
                state_ids, start = await self._state_for(
                    plan, timeline, limited, since_snapshots, full_state, sync_filter
                )
                state_events = await self._state_events(state_ids, start, timeline, sync_filter, requester, incremental)
            room_ephemeral = ephemeral.get(m.room_id, []) if joined else []
            room_data = room_ad.get(m.room_id, [])
            if not joined and not timeline:
                own = await self._events.get_event(m.event_id)
                if own is not None and own.metadata.outlier:
                    # An out-of-band leave (a rejected invite through another server) is in no
                    # timeline of ours: it is the timeline (as Synapse).
                    timeline = [own]
            if joined and incremental and not (timeline or state_events or room_ephemeral or room_data):
                # Nothing this filter lets through changed: the room is left out (as Synapse does),
                # e.g. a membership change the timeline filter drops.
                continue
            room: dict[str, Any] = {
                "timeline": {
                    "events": await self._format(sync_filter, timeline, viewer, bundles),
                    # A room new to the client is always "limited" (as Synapse): what came before
                    # the join is history it has not seen.
                    "limited": limited or plan.newly_joined,
                    "prev_batch": room_token((timeline[0].metadata.stream_ordering or 1) - 1 if timeline else plan.upto),
                },
                # sync.yaml: exactly one of state / state_after, by use_state_after
                ("state_after" if use_state_after else "state"): {
                    "events": await self._format(sync_filter, state_events, viewer)
                },
                "account_data": {"events": room_data},
            }
            if joined:
                room["ephemeral"] = {"events": room_ephemeral}
                joined_count, invited_count, heroes = summaries.get(m.room_nid, (0, 0, None))
                summary: dict[str, Any] = {
                    "m.joined_member_count": joined_count,
                    "m.invited_member_count": invited_count,
                }
                if heroes is not None:
                    # client-server-api §GET /sync: m.heroes is "Required if the room's m.room.name
                    # or m.room.canonical_alias state events are unset or empty"; Synapse leaves it
                    # out otherwise (SyTest 31sync/16room-summary.pl expects that).
                    summary["m.heroes"] = heroes
                room["summary"] = summary
                _add_counts(room, unread.get(m.room_nid, {}), sync_filter.unread_thread_notifications)
            out[m.room_id] = room
        return out

    async def _timeline(
        self,
        user_id: str,
        plan: _RoomPlan,
        batch: list[Event],
        limited: bool,
        limit: int,
        sync_filter: Filter,
        ignored: frozenset[str],
    ) -> tuple[list[Event], bool]:
        """The room's timeline: the last ``limit`` events after ``plan.after`` that the filter
        passes and the user may see, and whether earlier ones were left out.

        The first batch (``limit`` events, read for all rooms at once) is usually the answer. When
        the filter, the ignore list or history visibility drops events from a full batch, earlier
        batches are read, at most MAX_TIMELINE_ROUNDS in all (as Synapse), so that a filtered
        timeline still reaches its limit.
        """
        m = plan.membership
        # Joined before the first event: every event was seen as a member, no visibility check.
        check_visibility = bool(batch) and not (
            m.membership == "join" and (batch[0].metadata.stream_ordering or 0) > m.stream_ordering
        )
        current: set[str] | None = None
        out: list[Event] = []
        rounds = MAX_TIMELINE_ROUNDS
        while True:
            # modules/ignore_users.md: no events from ignored users (their state changes still count).
            kept = [e for e in batch if sync_filter.timeline.matches(e) and (e.is_state() or e.sender not in ignored)]
            if check_visibility and kept:
                visible = await self._visibility.filter_events_for_user(user_id, kept)
                if len(visible) < len(kept):
                    # The room's current state is always in the timeline, even where it changed
                    # while the user could not see the room (Synapse's always_include_ids; SyTest
                    # "Current state appears in timeline in private history").
                    if current is None:
                        current = await self._current_ids(plan)
                    # (the visible ones as filtered: an erased sender's events come redacted)
                    seen = {e.event_id: e for e in visible}
                    visible = [seen.get(e.event_id, e) for e in kept if e.event_id in seen or e.event_id in current]
                kept = visible
            out = kept + out
            rounds -= 1
            if not limited or len(out) >= limit or rounds <= 0 or not batch:
                break
            # The batch was full but lost events: read the one before it.
            earliest = batch[0].metadata.stream_ordering or 0
            load = max(limit * 2, DEFAULT_TIMELINE_LIMIT)
            more = await self.store.recent_event_ids([(m.room_nid, plan.after, earliest - 1)], load)
            ids, limited = more.get(m.room_nid, ([], False))
            fetched = await self._events.get_events(ids)
            batch = [fetched[i] for i in ids if i in fetched]
        if len(out) > limit:
            out = out[-limit:]
            limited = True
        return out, limited

    async def _current_ids(self, plan: _RoomPlan) -> set[str]:
        """The event IDs of the room's state at the end of the plan's timeline."""
        nid = plan.membership.room_nid
        snap = (await self.store.snapshots_at([(nid, plan.upto)])).get(nid)
        return set((await self._state.get_state(snap)).values())

    async def _state_for(
        self,
        plan: _RoomPlan,
        timeline: list[Event],
        limited: bool,
        since_snapshots: dict[int, int | None],
        full_state: bool,
        sync_filter: Filter,
    ) -> tuple[dict[StateKey, str], Mapping[StateKey, str] | None]:
        """The state section's IDs, and the state at the start of the timeline when it was read
        (an incremental sync without a gap reads it only for lazy-loading's senders)."""
        gapless = plan.after is not None and not full_state and not limited
        if gapless and not (sync_filter.lazy_load_members and timeline):
            # An incremental sync without a gap: the timeline itself carries every state change.
            return {}, None
        # The state at the start of the timeline: before its first event, else at its end.
        if timeline:
            # An out-of-band membership (an invite or knock through another server: an outlier)
            # carries no room state, so the state at the start of a timeline beginning with it is
            # the state before its first event in the room's DAG (e.g. the join's send_join state).
            first = next((e for e in timeline if not e.metadata.outlier), timeline[0])
            start = await self._state.get_state(first.metadata.state_before)
        else:
            nid = plan.membership.room_nid
            snap = (await self.store.snapshots_at([(nid, plan.upto)])).get(nid)
            start = await self._state.get_state(snap)
        if gapless:
            return {}, start
        if plan.after is None or full_state:
            return dict(start), start
        before = await self._state.get_state(since_snapshots.get(plan.membership.room_nid))
        return {k: v for k, v in start.items() if before.get(k) != v}, start

    async def _state_after_ids(
        self, plan: _RoomPlan, since_snapshots: dict[int, int | None], full_state: bool
    ) -> tuple[dict[StateKey, str], Mapping[StateKey, str]]:
        """sync.yaml ``state_after``: the state at the end of the timeline (the room's state at
        ``plan.upto``: for a left room, just after the leave), whole on an initial, full-state or
        new-room sync, else what differs from the state at the client's last sync. Unlike
        ``state``, state events in the timeline are not left out: a client using state_after
        takes no state from the timeline."""
        nid = plan.membership.room_nid
        snap = (await self.store.snapshots_at([(nid, plan.upto)])).get(nid)
        end = await self._state.get_state(snap)
        if plan.after is None or full_state or plan.since_state is None:
            return dict(end), end
        before = await self._state.get_state(since_snapshots.get(nid))
        return {k: v for k, v in end.items() if before.get(k) != v}, end

    async def _state_events(
        self,
        state_ids: dict[StateKey, str],
        start: Mapping[StateKey, str] | None,
        timeline: list[Event],
        sync_filter: Filter,
        requester: Requester,
        incremental: bool,
        with_timeline: bool = False,
    ) -> list[Event]:
        """The events of a state section; those already in the timeline are left out of
        ``state`` but kept in ``state_after`` (``with_timeline``)."""
        if sync_filter.lazy_load_members:
            state_ids = self._lazy_members(state_ids, start, timeline, sync_filter, requester, incremental)
        in_timeline = set() if with_timeline else {e.event_id for e in timeline}
        ids = [v for v in state_ids.values() if v not in in_timeline]
        events = await self._events.get_events(ids)
        chosen = [events[i] for i in ids if i in events]
        return [e for e in chosen if sync_filter.state.matches(e)]

    def _lazy_members(
        self,
        state_ids: dict[StateKey, str],
        start: Mapping[StateKey, str] | None,
        timeline: list[Event],
        sync_filter: Filter,
        requester: Requester,
        incremental: bool,
    ) -> dict[StateKey, str]:
        """client-server-api §Lazy-loading room members: the membership events of the timeline's
        senders (at its start) and, on an incremental sync, every membership that changed in the
        gap; members already sent to this device are left out unless ``include_redundant_members``.
        These are Synapse's rules, which SyTest 31sync/15lazy-members.pl encodes."""
        user_id = requester.user_id
        senders = {e.sender for e in timeline}
        if incremental:
            out = dict(state_ids)  # the gap's changes, members included
            for sender in senders:
                key = ("m.room.member", sender)
                if start is not None and key in start:
                    out[key] = start[key]
        else:
            senders.add(user_id)
            out = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        cache_key = (user_id, requester.device_id)
        sent = self._ll_sent.get(cache_key)
        if sent is None:
            sent = self._ll_sent[cache_key] = OrderedDict()
            if len(self._ll_sent) > LL_CACHE_DEVICES:
                self._ll_sent.popitem(last=False)
        else:
            self._ll_sent.move_to_end(cache_key)
        if incremental and not sync_filter.include_redundant_members:
            out = {k: v for k, v in out.items() if k[0] != "m.room.member" or sent.get(k[1]) != v}
        members = [(k[1], v) for k, v in out.items() if k[0] == "m.room.member"]
        members += [(e.state_key, e.event_id) for e in timeline if e.type == "m.room.member" and e.state_key]
        for member, event_id in members:
            sent[member] = event_id
            sent.move_to_end(member)
        while len(sent) > LL_CACHE_MEMBERS:
            sent.popitem(last=False)
        return out

    async def _format(
        self,
        sync_filter: Filter,
        events: list[Event],
        viewer: tuple[str, str | None],
        bundles: Mapping[str, Bundle] | None = None,
    ) -> list[dict[str, Any]]:
        if sync_filter.event_format == "federation":
            # filter.yaml event_format "federation": events as they travel between servers.
            serialized = [self._serializer.federation_format(e) for e in events]
        else:
            serialized = await self._serializer.serialize(events, viewer, False, bundles)
        return self._fields(sync_filter, serialized)

    async def _invited_by_ignored(self, m: MembershipRow, ignored: frozenset[str]) -> bool:
        own = await self._events.get_event(m.event_id)
        return own is not None and own.sender in ignored

    def _fields(self, sync_filter: Filter, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if sync_filter.event_fields:
            return [sync_filter.apply_event_fields(e) for e in events]
        return events

    async def _unread(
        self, user_id: str, rooms: list[MembershipRow], upto: int
    ) -> Mapping[int, Mapping[str, UnreadCounts]]:
        """Notifications after the user's read receipts (or their join), per room and thread,
        counting every event up to ``upto`` (the push reader is waited for)."""
        return await self._counts.unread_counts(user_id, [(m.room_nid, m.stream_ordering) for m in rooms], upto)

    async def _stripped_state(self, m: MembershipRow) -> list[dict[str, Any]]:
        return await stripped_state(self._room_server, self._events, m)


async def stripped_state(rooms: ReaderRooms, events: EventStore, m: MembershipRow) -> list[dict[str, Any]]:
    """The stripped state of an invite or knock (``invite_state``/``knock_state``): the room's
    identifying state and the membership event itself; for one through another server, the
    state that server sent with it. /sync and sliding sync both send it.

    An invite also shows the inviter's own membership event ("The server might include
    events not described here as well", client-server-api §Stripped state), as Synapse does
    (SyTest's third-party invite tests look for it): the invitee sees who invited them."""
    own = await events.get_event(m.event_id)
    given = _out_of_band_state(own)
    if given is not None:
        # An invite or knock through another server: the room state it sent with it.
        return given
    keys = [(t, "") for t in STRIPPED_STATE_TYPES]
    if own is not None and own.membership == "invite" and own.sender != own.state_key:
        keys.append(("m.room.member", own.sender))
    try:
        state = await rooms.current_state_events(m.room_id, keys)
    except Exception:
        state = {}
    found = [state[k] for k in keys if k in state]
    if own is not None:
        found.append(own)
    return [{"type": e.type, "state_key": e.state_key, "content": e.content, "sender": e.sender} for e in found]


def _out_of_band_state(own: Event | None) -> list[dict[str, Any]] | None:
    """The stripped state of an out-of-band invite or knock (mxserver/federation/remote_rooms.py keeps
    it in the event's ``unsigned``), the membership event last; None for other memberships."""
    if own is None or not own.metadata.outlier:
        return None
    given = own.unsigned.get("invite_room_state", own.unsigned.get("knock_room_state"))
    if not isinstance(given, list):
        return None
    out = [e for e in given if isinstance(e, dict)]
    out.append({"type": own.type, "state_key": own.state_key, "content": own.content, "sender": own.sender})
    return out


T = TypeVar("T")


async def _settled(work: Awaitable[T]) -> tuple[T | None, Exception | None]:
    """``work``'s result or exception as a value: started early and awaited later, a failure is
    raised where it is awaited, and never logged as unhandled when an earlier error ends the request."""
    try:
        return await work, None
    except Exception as e:
        return None, e


def _counts_json(counts: UnreadCounts) -> dict[str, int]:
    return {"notification_count": counts.notifications, "highlight_count": counts.highlights}


def _add_counts(room: dict[str, Any], counts: Mapping[str, UnreadCounts], per_thread: bool) -> None:
    """``unread_notifications`` (and ``unread_thread_notifications`` when the filter asks for
    them: client-server-api §Receiving notifications, threads then count apart from the room)."""
    if not per_thread:
        room["unread_notifications"] = _counts_json(
            UnreadCounts(sum(c.notifications for c in counts.values()), sum(c.highlights for c in counts.values()))
        )
        return
    room["unread_notifications"] = _counts_json(counts.get(MAIN_THREAD, UnreadCounts()))
    threads = {t: _counts_json(c) for t, c in counts.items() if t != MAIN_THREAD}
    if threads:
        # Only when there is something to show, as Synapse.
        room["unread_thread_notifications"] = threads
