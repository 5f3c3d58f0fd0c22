"""Room results (MSC4186 §Room results): timeline, required state and room data, as deltas.

A room sent for the first time on a connection (or newly joined) is sent whole
(``initial``); otherwise only what changed since the client last got it: the
events after that point (up to the ``timeline_limit``), the required state that
changed, ``name``/``avatar``/heroes/member counts when they may have. A config
that asks for more than the client's copy was built with (a larger
``timeline_limit``, more ``required_state``) is served at once
(§Changing room configs).

Every read is batched over the rooms of the response: one interaction for the
timelines of all rooms with the same limit, one for their state changes, one
for the state they need, one for member summaries, one for unread counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.model import Event
from mxserver.sliding_sync.connections import LIVE, MAX_LAZY_MEMBERS, RoomEntry
from mxserver.sliding_sync.request import LAZY, ME, MEMBER, WILDCARD, RequiredState, RoomConfig, StateWants
from mxserver.sliding_sync.room_lists import BUMP_EVENT_TYPES, RoomIndex
from mxserver.storage.sliding_sync import SlidingSyncStore
from mxserver.storage.state import StateKey, StateStore
from mxserver.storage.sync import MembershipRow, SyncStore
from mxserver.sync.handler import NotificationCounts, VisibilityFilter, stripped_state
from mxserver.sync.tokens import room_token

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.room_handlers.aggregations import Aggregations, Bundle
    from mxserver.room_handlers.event_serializer import EventSerializer
    from mxserver.rooms.api import ReaderRooms
    from mxserver.storage.events import EventStore

JsonDict = dict[str, Any]

_NAME = ("m.room.name", "")
_AVATAR = ("m.room.avatar", "")
#: the state every room new to the client is sent from (name, avatar), required or not
_META = frozenset({_NAME, _AVATAR})


@attrs.frozen
class RoomPlan:
    """A room to send and how: from scratch, or what changed since ``from_bound``."""

    membership: MembershipRow
    config: RoomConfig
    previous: RoomEntry | None
    #: sent whole (first time on this connection, newly joined, or a fresh connection)
    initial: bool
    #: the room position the client has this room up to (None when initial)
    from_bound: int | None
    #: the timeline_limit grew: the latest events again (MSC4186 §Changes to timeline_limit)
    expanded: bool = False
    is_dm: bool = False
    #: the user's own read receipt moved: the unread counts changed
    refresh_counts: bool = False

    @property
    def room_id(self) -> str:
        return self.membership.room_id

    @property
    def joined(self) -> bool:
        return self.membership.membership == "join"


@attrs.frozen
class RoomOutcome:
    body: JsonDict
    #: whether there is anything to tell (an incremental room with nothing new is left out)
    send: bool
    entry: RoomEntry
    timeline_event_ids: tuple[str, ...] = ()


@attrs.define
class _Work:
    """One room's intermediate results while the batches run."""

    plan: RoomPlan
    upto: int
    timeline: list[Event] = attrs.Factory(list)
    limited: bool = False
    delta: set[StateKey] = attrs.Factory(set)
    lazy_needed: set[str] = attrs.Factory(set)
    delta_send: set[StateKey] = attrs.Factory(set)
    lazy_new: set[StateKey] = attrs.Factory(set)
    expansion: bool = False
    wants: StateWants = StateWants()
    fetched: dict[StateKey, str] = attrs.Factory(dict)
    summary: tuple[int, int, list[str] | None] | None = None


class RoomResults:
    """Builds the ``rooms`` entries of a response."""

    def __init__(
        self,
        *,
        sync_store: SyncStore,
        store: SlidingSyncStore,
        events: EventStore,
        state: StateStore,
        serializer: EventSerializer,
        visibility: VisibilityFilter,
        counts: NotificationCounts,
        index: RoomIndex,
        rooms: ReaderRooms,
        aggregations: Aggregations,
    ) -> None:
        self._aggregations = aggregations
        self._sync_store = sync_store
        self._store = store
        self._events = events
        self._state = state
        self._serializer = serializer
        self._visibility = visibility
        self._counts = counts
        self._index = index
        self._rooms = rooms

    async def build(
        self,
        requester: Requester,
        plans: Sequence[RoomPlan],
        since_room: int | None,
        now_room: int,
        ignored: frozenset[str],
    ) -> dict[str, RoomOutcome]:
        out: dict[str, RoomOutcome] = {}
        works: list[_Work] = []
        for plan in plans:
            if plan.membership.membership in ("invite", "knock"):
                out[plan.room_id] = await self._stripped(plan)
            else:
                # A room the user is not in any more shows nothing after their membership event.
                works.append(_Work(plan, now_room if plan.joined else plan.membership.stream_ordering))
        if not works:
            return out
        user_id = requester.user_id
        # The timelines first: the bundled aggregations wait for them, the rest is read beside.
        timelined = Deferred.fromCoroutine(self._timelines(user_id, works, ignored))
        # The unread counts wait for the push reader and read apart from everything else: they
        # are counted while the timelines and state are read.
        unread_counted = Deferred.fromCoroutine(self._unread(user_id, [w for w in works if w.plan.joined], now_room))
        bundled: Deferred[dict[str, Bundle]] | None = None
        # Rooms new to the client get their member summary whatever their timeline holds: read
        # beside the timelines (the others' need is known once their state changes are).
        initial_joined = [w.plan.membership.room_nid for w in works if w.plan.joined and w.plan.initial]
        summarized = (
            Deferred.fromCoroutine(self._sync_store.member_summaries(initial_joined, user_id, named_by=("m.room.name",)))
            if initial_joined
            else None
        )
        # Their required state too, but for the lazy members and heroes (known once the
        # timelines and summaries are): read beside them, the rest after.
        early = {
            w.plan.membership.room_nid: w.plan.config.required_state.wants(user_id).with_keys(_META)
            for w in works
            if w.plan.joined and w.plan.initial
        }
        prefetched = self._store.current_state_ids(early) if early else None
        try:
            await timelined
            # MSC4186 §timeline: bundled aggregations "if limited is true", as per /v3/sync (a room new
            # to the client is a gap too); computed once for every such timeline, beside the state.
            gapped = [e for w in works if w.limited or w.plan.initial or w.plan.expanded for e in w.timeline]
            if gapped:
                bundled = Deferred.fromCoroutine(self._aggregations.bundles(gapped, user_id))
            await self._state_changes(works)
            summaries_for = [
                w.plan.membership.room_nid
                for w in works
                if w.plan.joined and not w.plan.initial and any(k[0] == MEMBER for k in w.delta)
            ]
            summaries = dict(await summarized) if summarized is not None else {}
            if summaries_for:
                summaries.update(
                    await self._sync_store.member_summaries(summaries_for, user_id, named_by=("m.room.name",))
                )
            for w in works:
                w.summary = summaries.get(w.plan.membership.room_nid)
                self._plan_state(w, user_id)
            await self._read_state(works, early, await prefetched if prefetched is not None else {})
            bumps = await self._bump_stamps(works)

            chosen_by_room = {w.plan.room_id: self._required_state(w, user_id) for w in works}
            wanted_ids = {v for chosen in chosen_by_room.values() for v in chosen.values() if v is not None}
            wanted_ids |= {w.fetched[k] for w in works for k in (_NAME, _AVATAR) if k in w.fetched}
            wanted_ids |= {
                w.fetched[(MEMBER, u)] for w in works if w.summary and w.summary[2] for u in w.summary[2] if (MEMBER, u) in w.fetched
            }
            state_events = await self._events.get_events(wanted_ids)
            bundles = await bundled if bundled is not None else {}
            unread = await unread_counted
            # Every room's required state, then every timeline, serialized in one call each (one
            # read of the events they refer to, not two per room).
            required_by_room = {
                room_id: [state_events[v] for v in chosen.values() if v is not None and v in state_events]
                for room_id, chosen in chosen_by_room.items()
            }
            viewer = (user_id, requester.device_id)
            required_json = iter(
                await self._serializer.serialize([e for evs in required_by_room.values() for e in evs], viewer, False)
            )
            timeline_json = iter(
                await self._serializer.serialize([e for w in works for e in w.timeline], viewer, False, bundles)
            )
        except BaseException:
            # The reads started early are not awaited now: their failures are this one's.
            for started in (timelined, unread_counted, bundled, summarized, prefetched):
                if started is not None:
                    started.addErrback(lambda _: None)
            raise
        for w in works:
            room_id = w.plan.room_id
            out[room_id] = self._assemble(
                w,
                chosen_by_room[room_id],
                [next(required_json) for _ in required_by_room[room_id]],
                [next(timeline_json) for _ in w.timeline],
                state_events,
                unread,
                bumps,
                since_room,
                user_id,
            )
        return out

    # -- invites and knocks --------------------------------------------------------------------

    async def _stripped(self, plan: RoomPlan) -> RoomOutcome:
        """An invite or knock: only the stripped state that came with it (MSC4186 §Invite/knock)."""
        m = plan.membership
        body: JsonDict = {
            "notification_count": 0,
            "highlight_count": 0,
            "bump_stamp": m.stream_ordering,
            "membership": m.membership,
            "invite_state": await stripped_state(self._rooms, self._events, m),
        }
        if plan.initial:
            body["initial"] = True
        if plan.is_dm:
            body["is_dm"] = True
        previous = plan.previous or RoomEntry()
        return RoomOutcome(body, True, attrs.evolve(previous, room=LIVE, config=plan.config))

    # -- timelines -------------------------------------------------------------------------------

    async def _timelines(self, user_id: str, works: list[_Work], ignored: frozenset[str]) -> None:
        by_limit: dict[int, list[_Work]] = {}
        for w in works:
            if w.plan.config.timeline_limit > 0:
                by_limit.setdefault(w.plan.config.timeline_limit, []).append(w)
        for limit, group in by_limit.items():
            wanted = [(w.plan.membership.room_nid, _timeline_after(w.plan), w.upto) for w in group]
            recent = await self._sync_store.recent_event_ids(wanted, limit)
            ids = [e for event_ids, _ in recent.values() for e in event_ids]
            events = await self._events.get_events(ids)
            for w in group:
                event_ids, limited = recent.get(w.plan.membership.room_nid, ([], False))
                batch = [events[i] for i in event_ids if i in events]
                w.timeline = await self._visible(user_id, w.plan.membership, batch, ignored)
                w.limited = limited

    async def _visible(
        self, user_id: str, m: MembershipRow, batch: list[Event], ignored: frozenset[str]
    ) -> list[Event]:
        # modules/ignore_users.md: no events from ignored users (their state changes still count).
        kept = [e for e in batch if e.is_state() or e.sender not in ignored]
        # Joined before the first event: every event was seen as a member, no visibility check.
        if kept and not (m.membership == "join" and (kept[0].metadata.stream_ordering or 0) > m.stream_ordering):
            kept = await self._visibility.filter_events_for_user(user_id, kept)
        return kept

    # -- state -------------------------------------------------------------------------------------

    async def _state_changes(self, works: list[_Work]) -> None:
        wanted = [
            (w.plan.membership.room_nid, w.plan.from_bound, w.upto)
            for w in works
            if not w.plan.initial and w.plan.from_bound is not None and w.upto > w.plan.from_bound
        ]
        changes = await self._store.state_changes(wanted) if wanted else {}
        for w in works:
            w.delta = changes.get(w.plan.membership.room_nid, set())

    def _plan_state(self, w: _Work, user_id: str) -> None:
        """Which state keys this room needs read (kept in ``w``), following the lazy-loading rules
        of MSC4186 §Lazy loaded memberships."""
        plan = w.plan
        rs = plan.config.required_state
        lazy = rs.lazy_members and not rs.all_members
        if lazy:
            for e in w.timeline:
                w.lazy_needed.add(e.sender)
                if e.type == MEMBER and e.state_key:
                    w.lazy_needed.add(e.state_key)
        meta: set[StateKey] = set()
        if plan.initial or _NAME in w.delta:
            meta.add(_NAME)
        if plan.initial or _AVATAR in w.delta:
            meta.add(_AVATAR)
        if w.summary is not None and w.summary[2]:
            meta |= {(MEMBER, u) for u in w.summary[2]}
        if plan.initial:
            w.wants = rs.wants(user_id).with_keys(frozenset({(MEMBER, u) for u in w.lazy_needed} | meta))
            return
        previous = plan.previous.config.required_state if plan.previous and plan.previous.config else None
        prev_lazy = plan.previous.lazy_members if plan.previous else frozenset()
        for key in w.delta:
            if rs.matches(key[0], key[1], user_id):
                w.delta_send.add(key)
            elif lazy and key[0] == MEMBER and (not w.limited or key[1] in w.lazy_needed):
                # Without a gap every membership change is sent, so that clients can keep a member
                # list; with one, only the timeline's (clients must then drop their cache).
                w.delta_send.add(key)
        w.lazy_new = {(MEMBER, u) for u in w.lazy_needed if u not in prev_lazy} - w.delta_send
        w.expansion = previous is None or rs.expands(previous, user_id)
        keys = frozenset(w.delta_send | w.lazy_new | meta)
        w.wants = rs.wants(user_id).with_keys(keys) if w.expansion else StateWants(exact=keys)

    async def _read_state(
        self, works: list[_Work], early: Mapping[int, StateWants], prefetched: Mapping[int, dict[StateKey, str]]
    ) -> None:
        """The state each room's ``wants`` names: what ``early`` did not ask for already (its
        answer is ``prefetched``) is read now."""
        current: dict[int, StateWants] = {}
        for w in works:
            nid = w.plan.membership.room_nid
            if not w.plan.joined or w.wants.empty:
                continue
            asked = early.get(nid)
            if asked is None:
                current[nid] = w.wants
            elif not asked.everything and w.wants.exact - asked.exact:
                # early asked for the same types and keys of any type: only exact keys remain
                current[nid] = StateWants(exact=w.wants.exact - asked.exact)
        found = await self._store.current_state_ids(current) if current else {}
        for w in works:
            if w.plan.joined:
                nid = w.plan.membership.room_nid
                w.fetched = {**prefetched.get(nid, {}), **found.get(nid, {})}
        left = [w for w in works if not w.plan.joined and not w.wants.empty]
        if left:
            # Left or banned: the state at their membership event, not after it.
            snaps = await self._sync_store.snapshots_at([(w.plan.membership.room_nid, w.upto) for w in left])
            for w in left:
                full = await self._state.get_state(snaps.get(w.plan.membership.room_nid))
                w.fetched = _pick(full, w.wants)

    def _required_state(self, w: _Work, user_id: str) -> dict[StateKey, str | None]:
        """The ``required_state`` entries (None: a stub for state that is gone)."""
        rs = w.plan.config.required_state
        lazy = rs.lazy_members and not rs.all_members
        if w.plan.initial:
            return {
                k: v
                for k, v in w.fetched.items()
                if rs.matches(k[0], k[1], user_id) or (lazy and k[0] == MEMBER and k[1] in w.lazy_needed)
            }
        out: dict[StateKey, str | None] = {k: w.fetched.get(k) for k in w.delta_send}
        out.update({k: w.fetched[k] for k in w.lazy_new if k in w.fetched})
        if w.expansion:
            previous = w.plan.previous.config.required_state if w.plan.previous and w.plan.previous.config else None
            for k, v in w.fetched.items():
                if rs.matches(k[0], k[1], user_id) and (previous is None or not previous.matches(k[0], k[1], user_id)):
                    out[k] = v
        return out

    # -- counts and stamps --------------------------------------------------------------------------

    async def _unread(self, user_id: str, joined: list[_Work], now_room: int) -> dict[int, tuple[int, int]]:
        if not joined:
            return {}
        counts = await self._counts.unread_counts(
            user_id, [(w.plan.membership.room_nid, w.plan.membership.stream_ordering) for w in joined], now_room
        )
        return {
            nid: (sum(c.notifications for c in by_thread.values()), sum(c.highlights for c in by_thread.values()))
            for nid, by_thread in counts.items()
        }

    async def _bump_stamps(self, works: list[_Work]) -> dict[str, int]:
        """MSC4186 §bump_stamp: the latest bump event's position (a joined room), else the user's
        membership event. Sent when it may have changed: a bump event in the timeline, a gap, or
        a room new to the client (as Synapse)."""
        out: dict[str, int] = {}
        lookup = []
        for w in works:
            m = w.plan.membership
            if not w.plan.joined:
                out[m.room_id] = m.stream_ordering
                continue
            in_timeline = next(
                (e.metadata.stream_ordering for e in reversed(w.timeline) if e.type in BUMP_EVENT_TYPES), None
            )
            if in_timeline:
                out[m.room_id] = in_timeline
            elif w.plan.initial or w.plan.expanded or w.limited or w.plan.config.timeline_limit == 0:
                lookup.append((m.room_id, m.room_nid, w.upto))
        found = await self._index.bump_stamps(lookup) if lookup else {}
        for room_id, _, _ in lookup:
            out[room_id] = found.get(room_id, 0)
        by_room = {w.plan.room_id: w for w in works}
        for room_id, value in list(out.items()):
            if not value:
                # No bump event (e.g. only backfilled history): the membership event's position.
                out[room_id] = by_room[room_id].plan.membership.stream_ordering
        return out

    # -- the result -------------------------------------------------------------------------------

    def _assemble(
        self,
        w: _Work,
        chosen: dict[StateKey, str | None],
        required_json: list[JsonDict],
        timeline_json: list[JsonDict],
        state_events: Mapping[str, Event],
        unread: Mapping[int, tuple[int, int]],
        bumps: Mapping[str, int],
        since_room: int | None,
        user_id: str,
    ) -> RoomOutcome:
        """One room's response entry, from its serialized required state and timeline."""
        plan = w.plan
        m = plan.membership
        notifications, highlights = unread.get(m.room_nid, (0, 0))
        body: JsonDict = {"notification_count": notifications, "highlight_count": highlights}
        if m.room_id in bumps:
            body["bump_stamp"] = bumps[m.room_id]
        changed = plan.initial or plan.expanded or plan.refresh_counts

        if plan.initial or _NAME in w.delta:
            name = _content_str(state_events, w.fetched.get(_NAME), "name")
            if name is not None:
                body["name"] = name
            elif not plan.initial:
                body["name"] = None  # MSC4186: null when the name was removed
            changed = True
        if plan.initial or _AVATAR in w.delta:
            avatar = _content_str(state_events, w.fetched.get(_AVATAR), "url")
            if avatar is not None:
                body["avatar"] = avatar
            elif not plan.initial:
                body["avatar"] = None
            changed = True
        if w.summary is not None:
            joined_count, invited_count, heroes = w.summary
            body["joined_count"] = joined_count
            body["invited_count"] = invited_count
            if heroes:
                body["heroes"] = [_hero(u, state_events, w.fetched.get((MEMBER, u))) for u in heroes]
            changed = True
        if plan.initial:
            body["initial"] = True
        if plan.expanded:
            # MSC4186 names it expanded_timeline; Synapse 1.163 still sends the unstable name.
            body["expanded_timeline"] = True
            body["unstable_expanded_timeline"] = True

        stubs = [{"type": k[0], "state_key": k[1]} for k, v in chosen.items() if v is None]
        if required_json or stubs:
            body["required_state"] = required_json + stubs
            changed = True
        if plan.config.timeline_limit > 0:
            if w.timeline:
                body["timeline"] = timeline_json
                changed = True
            body["limited"] = w.limited
            first = w.timeline[0].metadata.stream_ordering if w.timeline else None
            body["prev_batch"] = room_token((first or 1) - 1 if first is not None else w.upto)
            body["num_live"] = _num_live(w.timeline, since_room)
        if plan.is_dm:
            body["is_dm"] = True
        body["membership"] = m.membership

        entry = attrs.evolve(
            plan.previous or RoomEntry(),
            room=LIVE,
            config=self._stored_config(w, user_id),
            lazy_members=self._lazy_members(w, chosen),
        )
        timeline_ids = tuple(e.event_id for e in w.timeline)
        return RoomOutcome(body, changed, entry, timeline_ids)

    def _stored_config(self, w: _Work, user_id: str) -> RoomConfig:
        """The config the client's copy of the room now answers to (what a later request is
        compared with to see whether it asks for more)."""
        plan = w.plan
        prev = plan.previous.config if plan.previous else None
        if plan.initial or prev is None:
            return plan.config
        limit = prev.timeline_limit
        if plan.config.timeline_limit > limit or (w.limited and plan.config.timeline_limit < limit):
            # Grown: the latest events were sent. Shrunk across a gap: the client's copy now
            # holds fewer events, so growing back must resend them.
            limit = plan.config.timeline_limit
        requested = plan.config.required_state
        if prev.required_state == requested:
            return RoomConfig(limit, requested)
        # Entries the request dropped stay remembered while their state is unchanged: asking
        # for them again then resends nothing (MSC4186: "MAY choose not to send that state").
        kept = {
            (t, k)
            for t, k in prev.required_state.entries
            if WILDCARD not in (t, k) and k != LAZY and (t, user_id if k == ME else k) not in w.delta
        }
        return RoomConfig(limit, RequiredState(requested.entries | kept))

    def _lazy_members(self, w: _Work, chosen: Mapping[StateKey, str | None]) -> frozenset[str]:
        rs = w.plan.config.required_state
        if not rs.lazy_members or rs.all_members:
            return frozenset()
        sent = {k[1] for k, v in chosen.items() if k[0] == MEMBER and v is not None}
        if w.plan.initial:
            members = sent
        else:
            previous = w.plan.previous.lazy_members if w.plan.previous else frozenset()
            # A member whose membership changed and was not sent: the client's copy is stale.
            stale = {k[1] for k in w.delta if k[0] == MEMBER and k not in chosen}
            members = (set(previous) - stale) | sent
        if len(members) > MAX_LAZY_MEMBERS:
            rest = sorted(members - sent)[: max(0, MAX_LAZY_MEMBERS - len(sent))]
            members = set(sorted(sent)[:MAX_LAZY_MEMBERS]) | set(rest)
        return frozenset(members)


def _timeline_after(plan: RoomPlan) -> int | None:
    return None if plan.initial or plan.expanded else plan.from_bound


def _num_live(timeline: Sequence[Event], since_room: int | None) -> int:
    """MSC4186 §num_live: the timeline's last events that came after the request's pos."""
    if since_room is None:
        return 0
    live = 0
    for e in reversed(timeline):
        if (e.metadata.stream_ordering or 0) <= since_room:
            break
        live += 1
    return live


def _pick(state: Mapping[StateKey, str], wants: StateWants) -> dict[StateKey, str]:
    if wants.everything:
        return dict(state)
    return {
        k: v
        for k, v in state.items()
        if k[0] in wants.types or k[1] in wants.any_type_keys or k in wants.exact
    }


def _content_str(events: Mapping[str, Event], event_id: str | None, field: str) -> str | None:
    """A state event's string field, None when unset or empty (client-server-api §m.room.name:
    an empty name is no name)."""
    ev = events.get(event_id) if event_id is not None else None
    value = ev.content.get(field) if ev is not None else None
    return value if isinstance(value, str) and value else None


def _hero(user_id: str, events: Mapping[str, Event], event_id: str | None) -> JsonDict:
    hero: JsonDict = {"user_id": user_id}
    ev = events.get(event_id) if event_id is not None else None
    if ev is not None:
        for field in ("displayname", "avatar_url"):
            value = ev.content.get(field)
            if isinstance(value, str):
                hero[field] = value
    return hero

