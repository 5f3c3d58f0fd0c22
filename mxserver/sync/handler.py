"""/sync: what changed for a user since a token, or everything on an initial sync.

The handler gathers each part from its source (room timelines and state here;
typing, receipts, presence, account data and to-device from their handlers),
and long-polls on the notifier when an incremental sync finds nothing new.
Work is batched across rooms: one database interaction for all the recent
timelines, one for member counts, and so on.

Which rooms changed is known without the database: the handler remembers,
from the room event stream, the latest position of every room that has had
an event since start-up; any other room's latest event is older than the
start-up position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.room_handlers.history import room_token
from mxserver.storage.state import StateKey
from mxserver.storage.sync import MembershipRow, SyncStore
from mxserver.streams import Phase
from mxserver.sync.tokens import StreamToken

log = Logger()

#: state shown for invited and knocking rooms (client-server-api §Stripped state)
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
)


@attrs.define
class _RoomPlan:
    membership: MembershipRow
    after: int | None  # timeline lower bound (exclusive); None = from the start (initial/full/new)
    upto: int  # timeline upper bound (inclusive)
    since_state: int | None  # room position of the client's last sync (for state deltas)


class SyncHandler:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self.store = SyncStore(hs.db)
        self._room_latest: dict[str, int] = {}
        self._baseline = 0
        self._memberships: dict[str, list[MembershipRow]] = {}
        hs.room_stream.subscribe(self._on_room_events, Phase.CACHES)
        hs.start_hooks.append(self.start)

    async def start(self) -> None:
        """A start hook: runs once the room server knows its position."""
        self._baseline = self.hs.room_server.current_position

    def _on_room_events(self, events: list[Event]) -> None:
        for ev in events:
            pos = ev.metadata.stream_ordering or 0
            if pos > self._room_latest.get(ev.room_id, 0):
                self._room_latest[ev.room_id] = pos
            if ev.type == "m.room.member" and ev.state_key is not None:
                self._memberships.pop(ev.state_key, None)

    def room_changed_since(self, room_id: str, position: int) -> bool:
        return self._room_latest.get(room_id, self._baseline) > position

    async def _user_memberships(self, user_id: str) -> list[MembershipRow]:
        cached = self._memberships.get(user_id)
        if cached is None:
            cached = await self.store.memberships(user_id)
            if len(self._memberships) > 50_000:
                self._memberships.clear()
            self._memberships[user_id] = cached
        return cached

    # -- entry point ---------------------------------------------------------------------

    async def sync(
        self,
        requester: Any,
        since: StreamToken | None,
        timeout_ms: int,
        full_state: bool,
        sync_filter: Any,
        set_presence: str | None,
    ) -> dict[str, Any]:
        hs = self.hs
        presence = getattr(hs, "presence_handler", None)
        if presence is not None:
            await presence.user_synced(requester.user_id, set_presence)
        deadline = hs.clock.seconds() + timeout_ms / 1000
        while True:
            now = hs.notifier.current_token()
            result, has_data = await self._build(requester, since, now, sync_filter, full_state)
            remaining = deadline - hs.clock.seconds()
            if has_data or since is None or full_state or remaining <= 0:
                return result
            # Nothing yet: wait, unless something arrived while we were building (checked and
            # registered in one reactor turn, so a notification cannot slip in between).
            if hs.notifier.current_token().is_after(now):
                continue
            memberships = await self._user_memberships(requester.user_id)
            if hs.notifier.current_token().is_after(now):
                continue
            rooms = [m.room_id for m in memberships if m.membership == "join"]
            await hs.notifier.wait(requester.user_id, rooms, int(remaining * 1000))

    # -- building ----------------------------------------------------------------------------

    async def _build(
        self, requester: Any, since: StreamToken | None, now: StreamToken, sync_filter: Any, full_state: bool
    ) -> tuple[dict[str, Any], bool]:
        user_id = requester.user_id
        memberships = [m for m in await self._user_memberships(user_id) if sync_filter.room_allowed(m.room_id)]
        since_room = since.room if since is not None else None
        initial = since is None

        joined = [m for m in memberships if m.membership == "join"]
        joined_ids = [m.room_id for m in joined]

        # Ephemeral and per-room account data decide which joined rooms appear too.
        ephemeral = await self._ephemeral(user_id, joined_ids, since, now, sync_filter)
        global_ad, room_ad = await self._account_data(user_id, since, now, sync_filter)

        plans: list[_RoomPlan] = []
        for m in joined:
            newly_joined = since_room is not None and m.stream_ordering > since_room
            if initial or full_state or newly_joined:
                plans.append(_RoomPlan(m, None, now.room, None))
            elif self.room_changed_since(m.room_id, since_room):  # type: ignore[arg-type]
                plans.append(_RoomPlan(m, since_room, now.room, since_room))
            elif m.room_id in ephemeral or m.room_id in room_ad:
                plans.append(_RoomPlan(m, since_room, since_room, since_room))  # type: ignore[arg-type]

        leave_plans: list[_RoomPlan] = []
        for m in memberships:
            if m.membership not in ("leave", "ban") or m.forgotten:
                continue
            if (initial and sync_filter.include_leave) or (since_room is not None and m.stream_ordering > since_room):
                # The timeline of a left room stops at the leave.
                after = None if initial or full_state else since_room
                leave_plans.append(_RoomPlan(m, after, m.stream_ordering, after))

        join_out = await self._rooms(requester, plans, sync_filter, ephemeral, room_ad, full_state, joined=True)
        leave_out = await self._rooms(requester, leave_plans, sync_filter, {}, room_ad, full_state, joined=False)

        invite_out: dict[str, Any] = {}
        knock_out: dict[str, Any] = {}
        for m in memberships:
            if m.membership not in ("invite", "knock"):
                continue
            if not (initial or full_state or m.stream_ordering > since_room):  # type: ignore[operator]
                continue
            stripped = await self._stripped_state(m)
            if m.membership == "invite":
                invite_out[m.room_id] = {"invite_state": {"events": stripped}}
            else:
                knock_out[m.room_id] = {"knock_state": {"events": stripped}}

        to_device, to_device_pos = await self._to_device(requester, since, now)
        presence_events = await self._presence(user_id, since, sync_filter)

        # end_to_end_encryption.md §Extensions to /sync: device lists and key counts.
        e2ee, e2ee_news = await self.hs.device_lists.sync_fields(
            requester, since, now, await self._user_memberships(user_id)
        )
        next_token = attrs.evolve(now, to_device=to_device_pos)
        result: dict[str, Any] = {
            "next_batch": next_token.serialize(),
            "rooms": {"join": join_out, "invite": invite_out, "leave": leave_out, "knock": knock_out},
            "presence": {"events": presence_events},
            "account_data": {"events": global_ad},
            "to_device": {"events": to_device},
            **e2ee,
        }
        has_data = bool(join_out or invite_out or leave_out or knock_out or presence_events or global_ad or to_device)
        has_data = has_data or e2ee_news
        return result, has_data

    async def _rooms(
        self,
        requester: Any,
        plans: Sequence[_RoomPlan],
        sync_filter: Any,
        ephemeral: dict[str, list[dict[str, Any]]],
        room_ad: dict[str, list[dict[str, Any]]],
        full_state: bool,
        joined: bool,
    ) -> dict[str, Any]:
        if not plans:
            return {}
        hs = self.hs
        user_id = requester.user_id
        viewer = (user_id, requester.device_id)
        limit = sync_filter.timeline.limit
        wanted = [(p.membership.room_nid, p.after, p.upto) for p in plans if p.after is None or p.upto > p.after]
        recent = await self.store.recent_event_ids(wanted, limit) if wanted else {}
        all_ids = [e for ids, _ in recent.values() for e in ids]
        events = await hs.event_store.get_events(all_ids)

        # Snapshots at the client's previous sync, for state deltas across a gap.
        since_positions = [
            (p.membership.room_nid, p.since_state)
            for p in plans
            if p.since_state is not None and recent.get(p.membership.room_nid, ([], False))[1]
        ]
        since_snapshots = await self.store.snapshots_at(since_positions) if since_positions else {}
        need_summary = [p.membership.room_nid for p in plans if joined]
        summaries = await self.store.member_summaries(need_summary, user_id) if need_summary else {}
        unread = await self._unread(user_id, [p.membership for p in plans]) if joined else {}

        out: dict[str, Any] = {}
        for plan in plans:
            m = plan.membership
            ids, limited = recent.get(m.room_nid, ([], False))
            timeline = [events[i] for i in ids if i in events]
            if plan.after is None and timeline:
                # Initial sync or a new join: history visibility decides what came before.
                timeline = await self._visible(user_id, m, timeline)
            timeline = [e for e in timeline if sync_filter.timeline.matches(e)]
            state_ids = await self._state_for(plan, timeline, limited, since_snapshots, full_state)
            state_events = await self._state_events(state_ids, timeline, sync_filter, user_id, plan, limited)
            room: dict[str, Any] = {
                "timeline": {
                    "events": self._fields(sync_filter, await hs.event_serializer.serialize(timeline, viewer, False)),
                    "limited": limited,
                    "prev_batch": room_token((timeline[0].metadata.stream_ordering or 1) - 1 if timeline else plan.upto),
                },
                "state": {"events": self._fields(sync_filter, await hs.event_serializer.serialize(state_events, viewer, False))},
                "account_data": {"events": room_ad.get(m.room_id, [])},
            }
            if joined:
                room["ephemeral"] = {"events": ephemeral.get(m.room_id, [])}
                joined_count, invited_count, heroes = summaries.get(m.room_nid, (0, 0, []))
                room["summary"] = {
                    "m.heroes": heroes,
                    "m.joined_member_count": joined_count,
                    "m.invited_member_count": invited_count,
                }
                room["unread_notifications"] = {"notification_count": unread.get(m.room_nid, 0), "highlight_count": 0}
            out[m.room_id] = room
        return out

    async def _visible(self, user_id: str, m: MembershipRow, timeline: list[Event]) -> list[Event]:
        # Joined (or left) before the first event: every event was seen as a member.
        if m.membership == "join" and (timeline[0].metadata.stream_ordering or 0) > m.stream_ordering:
            return timeline
        visibility = getattr(self.hs, "history_visibility", None)
        if visibility is None:
            return timeline
        return await visibility.filter_events_for_user(user_id, timeline)

    async def _state_for(
        self,
        plan: _RoomPlan,
        timeline: list[Event],
        limited: bool,
        since_snapshots: dict[int, int | None],
        full_state: bool,
    ) -> dict[StateKey, str]:
        hs = self.hs
        if plan.after is not None and not full_state and not limited:
            # An incremental sync without a gap: the timeline itself carries every state change.
            return {}
        # The state at the start of the timeline: before its first event, else at its end.
        if timeline:
            # An out-of-band membership (an invite or knock through another server: an outlier)
            # carries no room state, so the state at the start of a timeline beginning with it is
            # the state before its first event in the room's DAG (e.g. the join's send_join state).
            first = next((e for e in timeline if not e.metadata.outlier), timeline[0])
            start = await hs.state_store.get_state(first.metadata.state_before)
        else:
            snap = (await self.store.snapshots_at([(plan.membership.room_nid, plan.upto)])).get(plan.membership.room_nid)
            start = await hs.state_store.get_state(snap)
        if plan.after is None or full_state:
            return dict(start)
        before = await hs.state_store.get_state(since_snapshots.get(plan.membership.room_nid))
        return {k: v for k, v in start.items() if before.get(k) != v}

    async def _state_events(
        self,
        state_ids: dict[StateKey, str],
        timeline: list[Event],
        sync_filter: Any,
        user_id: str,
        plan: _RoomPlan,
        limited: bool,
    ) -> list[Event]:
        if sync_filter.lazy_load_members:
            # filtering §Lazy-loading room members: only the members who sent timeline events (and you).
            senders = {e.sender for e in timeline} | {user_id}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        in_timeline = {e.event_id for e in timeline}
        ids = [v for v in state_ids.values() if v not in in_timeline]
        events = await self.hs.event_store.get_events(ids)
        chosen = [events[i] for i in ids if i in events]
        return [e for e in chosen if sync_filter.state.matches(e)]

    def _fields(self, sync_filter: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if getattr(sync_filter, "event_fields", None):
            return [sync_filter.apply_event_fields(e) for e in events]
        return events

    async def _unread(self, user_id: str, rooms: list[MembershipRow]) -> dict[int, int]:
        """Messages from others after the user's read receipt (or their join), per room."""
        receipts = getattr(self.hs, "receipts", None)
        read: dict[str, int] = {}
        if receipts is not None:
            read = await receipts.get_read_receipt_stream_orderings(user_id, [m.room_id for m in rooms])
        positions = [(m.room_nid, max(read.get(m.room_id, 0), m.stream_ordering)) for m in rooms]
        return await self.store.unread_counts(positions, user_id)

    async def _stripped_state(self, m: MembershipRow) -> list[dict[str, Any]]:
        hs = self.hs
        try:
            state = await hs.room_server.current_state_events(m.room_id, [(t, "") for t in STRIPPED_STATE_TYPES])
        except Exception:
            state = {}
        events = list(state.values())
        own = await hs.event_store.get_event(m.event_id)
        given = _out_of_band_state(own)
        if given is not None:
            # An invite or knock through another server: the room state it sent with it.
            return given
        if own is not None:
            events.append(own)
        return [
            {"type": e.type, "state_key": e.state_key, "content": e.content, "sender": e.sender} for e in events
        ]

    # -- other sources ----------------------------------------------------------------------

    async def _ephemeral(
        self, user_id: str, room_ids: list[str], since: StreamToken | None, now: StreamToken, sync_filter: Any
    ) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if not room_ids:
            return out
        typing = getattr(self.hs, "typing_handler", None)
        if typing is not None and sync_filter.ephemeral.matches_type("m.typing"):
            for room_id, event in typing.typing_for_rooms(room_ids, since.typing if since else None).items():
                out.setdefault(room_id, []).append(event)
        receipts = getattr(self.hs, "receipts", None)
        if receipts is not None and sync_filter.ephemeral.matches_type("m.receipt"):
            got = await receipts.receipts_for_rooms(user_id, room_ids, since.receipts if since else None, now.receipts)
            for room_id, event in got.items():
                out.setdefault(room_id, []).append(event)
        return out

    async def _account_data(
        self, user_id: str, since: StreamToken | None, now: StreamToken, sync_filter: Any
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        source = getattr(self.hs, "account_data", None)
        if source is None:
            return [], {}
        global_ad, room_ad = await source.get_account_data_for_sync(
            user_id, since.account_data if since else None, now.account_data
        )
        global_ad = [e for e in global_ad if sync_filter.account_data.matches(e)]
        room_ad = {r: [e for e in evs if sync_filter.room_account_data.matches(e, r)] for r, evs in room_ad.items()}
        return global_ad, {r: evs for r, evs in room_ad.items() if evs}

    async def _to_device(self, requester: Any, since: StreamToken | None, now: StreamToken) -> tuple[list[dict[str, Any]], int]:
        source = getattr(self.hs, "to_device", None)
        if source is None or requester.device_id is None:
            return [], now.to_device
        since_pos = since.to_device if since is not None else 0
        if since is not None:
            # The client has everything up to its `since`: those messages can go.
            await source.ack_to_device(requester.user_id, requester.device_id, since_pos)
        messages, position = await source.get_to_device_for_sync(requester.user_id, requester.device_id, since_pos)
        return messages, max(position, since_pos)

    async def _presence(self, user_id: str, since: StreamToken | None, sync_filter: Any) -> list[dict[str, Any]]:
        source = getattr(self.hs, "presence_handler", None)
        if source is None:
            return []
        events = await source.presence_for_sync(user_id, since.presence if since else None)
        return [e for e in events if sync_filter.presence.matches(e)]



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
