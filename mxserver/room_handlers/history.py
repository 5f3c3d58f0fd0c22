"""Reading rooms: state, members, single events, /messages, /context, timestamp_to_event.

Who may read what:

* joined members read the current state and every event the history
  visibility rules allow (:mod:`mxserver.rooms.visibility`);
* former members (``leave``/``ban``) read the state as it was when they
  left and nothing after it;
* anyone may read a room whose current visibility is ``world_readable``;
* everyone else gets 403 M_FORBIDDEN (unknown rooms 404 M_NOT_FOUND).

Pagination tokens are room-stream positions, ``s<position>``, standing
*between* events: paging backwards from ``sN`` returns events at or before
``N``, forwards events after ``N``. A ``/sync`` token whose first part is
``s<position>`` (``s12_3_4``...) is read the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from mxserver.accounts.auth import Requester
from mxserver.errors import forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.room_handlers.aggregations import Aggregations, IgnoredUsers
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.rooms.api import ReaderRooms
from mxserver.rooms.visibility import HistoryVisibility, RoomAccess
from mxserver.storage.events import EventStore, RoomRecord
from mxserver.storage.history import HistoryStore
from mxserver.storage.state import StateKey, StateStore
from mxserver.sync.filtering import RoomEventFilter
from mxserver.sync.tokens import parse_room_token, room_token

EMPTY_FILTER = RoomEventFilter()

T = TypeVar("T")

#: the most events one /messages page returns, whatever the client asks
MAX_LIMIT = 1000
#: /messages queries at most this many batches to fill a page that filtering thinned out
MAX_PAGE_QUERIES = 3


def _stream_position(event: Any) -> int:
    position = event.metadata.stream_ordering
    assert position is not None
    return int(position)


async def page_visible(
    fetch: Callable[[int, int], Awaitable[list[T]]],
    keep: Callable[[list[T]], Awaitable[list[T]]],
    from_pos: int,
    to_pos: int | None,
    backwards: bool,
    limit: int,
    position: Callable[[T], int] = _stream_position,
) -> tuple[list[T], int, bool]:
    """Page through stream positions: ``fetch(pos, n)`` gives up to ``n`` items after ``pos``
    in the paging direction, ``keep`` drops those the user may not see; a page short of
    ``limit`` after filtering is topped up, at most :data:`MAX_PAGE_QUERIES` reads.
    ``position`` is where an item stands (an event's stream position by default).

    ``(items kept, position after the last one scanned, whether more may follow)``.
    """
    chunk: list[T] = []
    pos = from_pos
    for _ in range(MAX_PAGE_QUERIES):
        want = limit - len(chunk)
        if to_pos is not None and (pos <= to_pos if backwards else pos >= to_pos):
            return chunk, pos, False
        batch = await fetch(pos, want + 1)
        more = len(batch) > want
        batch = batch[:want]
        if batch:
            last = position(batch[-1])
            pos = last - 1 if backwards else last
        chunk += await keep(batch)
        if not more or len(chunk) >= limit:
            return chunk, pos, more
    return chunk, pos, True
#: timestamp_to_event looks at this many candidates for one the user may see
TIMESTAMP_CANDIDATES = 20

MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})


class Backfill(Protocol):
    """Fetching older history of a room from other servers (the federation side's backfiller)."""

    async def backfill(self, room_id: str) -> int:
        """Fetch events older than our earliest; how many joined the timeline."""
        ...

    async def may_have_more(self, room_id: str) -> bool:
        """Whether other servers may have history older than ours."""
        ...


class HistoryHandler:
    """Read-side room APIs."""

    def __init__(
        self,
        room_server: ReaderRooms,
        events: EventStore,
        state: StateStore,
        store: HistoryStore,
        visibility: HistoryVisibility,
        serializer: EventSerializer,
        aggregations: Aggregations,
        backfiller: Backfill,
        ignored: IgnoredUsers,
    ) -> None:
        self.room_server = room_server
        self.events = events
        self.state = state
        self.store = store
        self.visibility = visibility
        self.serializer = serializer
        self.aggregations = aggregations
        self.backfiller = backfiller
        self.ignored = ignored

    # -- access ---------------------------------------------------------------------------

    async def _readable(self, user_id: str, room_id: str) -> RoomAccess:
        access = await self.visibility.room_access(user_id, room_id)
        if not access.can_read:
            raise forbidden("You are not a member of this room")
        return access

    async def _admin_access(self, room_id: str) -> RoomAccess:
        """A server admin's access (the admin API): the whole room, as if it were world-readable."""
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return RoomAccess(room=room, membership=None, member_event=None, world_readable=True)

    async def _visible_state_ids(self, user_id: str, room_id: str) -> dict[StateKey, str]:
        """The state the user may see: current for members (and world-readable rooms), at leave for former members."""
        access = await self._readable(user_id, room_id)
        if access.until is None:
            return await self.room_server.current_state_ids(room_id)
        if access.membership == "ban":
            # The spec's 403 ("You aren't a member of the room and weren't previously a
            # member") leaves a banned former member open; Synapse refuses them the room's
            # state (only "leave" is a departed member it serves), and SyTest "Remote banned
            # user is kicked and may not rejoin until unbanned" expects that 403.
            raise forbidden("You are banned from this room")
        assert access.member_event is not None
        return dict(await self.state.get_state(access.member_event.metadata.state_after))

    # -- state ------------------------------------------------------------------------------

    async def get_state(self, requester: Requester, room_id: str) -> list[dict[str, Any]]:
        ids = await self._visible_state_ids(requester.user_id, room_id)
        events = await self.events.get_events(ids.values())
        ordered = [events[e] for e in ids.values() if e in events]
        return await self.serializer.serialize(ordered, viewer=(requester.user_id, requester.device_id))

    async def get_state_event(self, requester: Requester, room_id: str, etype: str, state_key: str) -> Event:
        ids = await self._visible_state_ids(requester.user_id, room_id)
        event_id = ids.get((etype, state_key))
        event = await self.events.get_event(event_id) if event_id else None
        if event is None:
            raise not_found("Event not found")
        return event

    async def get_state_content(
        self, requester: Requester, room_id: str, etype: str, state_key: str, as_event: bool
    ) -> dict[str, Any]:
        event = await self.get_state_event(requester, room_id, etype, state_key)
        formatted = await self.serializer.serialize_one(event, viewer=(requester.user_id, requester.device_id))
        return formatted if as_event else formatted["content"]

    # -- members --------------------------------------------------------------------------------

    async def members(
        self, requester: Requester, room_id: str, at: str | None, membership: str | None, not_membership: str | None
    ) -> list[dict[str, Any]]:
        user_id = requester.user_id
        access = await self._readable(user_id, room_id)
        position = parse_room_token(at, "at") if at is not None else None
        if access.until is not None:
            position = access.until if position is None else min(position, access.until)
        if position is None:
            ids = await self.room_server.current_state_ids(room_id)
        else:
            snapshot = await self.store.snapshot_at_position(access.room.room_nid, position)
            ids = dict(await self.state.get_state(snapshot))
        member_ids = [e for (t, _), e in ids.items() if t == "m.room.member"]
        events = await self.events.get_events(member_ids)
        chosen = []
        for event_id in member_ids:
            ev = events.get(event_id)
            if ev is None:
                continue
            m = ev.membership
            if membership is not None and not_membership is not None:
                # members.yaml: given together, the two parameters are an "or".
                keep = m == membership or m != not_membership
            elif membership is not None:
                keep = m == membership
            elif not_membership is not None:
                keep = m != not_membership
            else:
                keep = True
            if keep:
                chosen.append(ev)
        return await self.serializer.serialize(chosen, viewer=(user_id, requester.device_id))

    async def joined_members(self, requester: Requester, room_id: str) -> dict[str, dict[str, str | None]]:
        """joined_members: every joined user with ``display_name`` and ``avatar_url``, both keys
        always present (null when unset), as Synapse answers and SyTest 10apidoc/31room-state.pl
        expects; the spec's RoomMember lists both properties without requiring them."""
        access = await self.visibility.room_access(requester.user_id, room_id)
        if access.membership != "join":
            raise forbidden("You are not a member of this room")
        ids = await self.room_server.current_state_ids(room_id)
        events = await self.events.get_events(e for (t, _), e in ids.items() if t == "m.room.member")
        joined: dict[str, dict[str, str | None]] = {}
        for ev in events.values():
            if ev.membership != "join" or ev.state_key is None:
                continue
            content = ev.content if not ev.metadata.redacted_by else {}
            name, avatar = content.get("displayname"), content.get("avatar_url")
            joined[ev.state_key] = {
                "display_name": name if isinstance(name, str) else None,
                "avatar_url": avatar if isinstance(avatar, str) else None,
            }
        return joined

    async def joined_rooms(self, requester: Requester) -> list[str]:
        return await self.events.get_rooms_for_user(requester.user_id, ("join",))

    # -- single events ---------------------------------------------------------------------------

    async def _visible_event(self, user_id: str, room_id: str, event_id: str) -> tuple[Event, RoomAccess]:
        return await self.visibility.visible_timeline_event(user_id, room_id, event_id)

    async def get_event(self, requester: Requester, room_id: str, event_id: str) -> dict[str, Any]:
        event, _ = await self._visible_event(requester.user_id, room_id, event_id)
        bundles = await self.aggregations.bundles([event], requester.user_id)
        return await self.serializer.serialize_one(event, (requester.user_id, requester.device_id), bundles)

    # -- timeline ------------------------------------------------------------------------------------

    async def _page(
        self,
        user_id: str,
        room: RoomRecord,
        from_pos: int,
        to_pos: int | None,
        backwards: bool,
        limit: int,
        filt: RoomEventFilter,
        as_admin: bool = False,
    ) -> tuple[list[Event], int, bool]:
        """``(events the user may see, position after the last one scanned, whether more may follow)``;
        ``as_admin``: every event the filter keeps (no visibility rules, no ignored users)."""
        conditions = filt.sql_conditions()
        # modules/ignore_users.md: "the client will no longer receive events sent by that user,
        # with the exception of state events" (Synapse leaves them out of /messages and /context too).
        ignored = await self.ignored.ignored_users(user_id) if not as_admin else frozenset()

        async def fetch(pos: int, n: int) -> list[Event]:
            return await self.store.page(room.room_nid, pos, to_pos, backwards, n, conditions)

        async def keep(batch: list[Event]) -> list[Event]:
            if ignored:
                batch = [ev for ev in batch if ev.sender not in ignored or ev.state_key is not None]
            if as_admin:
                return list(filt.filter_events(batch))
            return await self.visibility.filter_events_for_user(user_id, filt.filter_events(batch))

        return await page_visible(fetch, keep, from_pos, to_pos, backwards, limit)

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        filt: RoomEventFilter = EMPTY_FILTER,
        as_admin: bool = False,
        encoded: bool = False,
    ) -> dict[str, Any]:
        """One page of the room's timeline. ``as_admin``: for a server admin, who need not be in
        the room (the admin API's room messages): every event of the timeline, whatever the
        history visibility rules say. ``encoded``: the chunk's events as JSON already encoded
        (``orjson.Fragment``), for an answer rendered as it is."""
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        backwards = direction == "b"
        from_pos = parse_room_token(from_token, "from") if from_token is not None else None
        to_pos = parse_room_token(to_token, "to") if to_token is not None else None
        user_id = requester.user_id
        access = await self._admin_access(room_id) if as_admin else await self._readable(user_id, room_id)
        if from_pos is None:
            # v1.3: without 'from', page from the end (b) or the start (f) of the visible history.
            from_pos = self.room_server.current_position if backwards else self.events.min_stream - 1
        start = from_token if from_token is not None else room_token(from_pos)
        if access.until is not None:
            if backwards:
                from_pos = min(from_pos, access.until)
            else:
                to_pos = access.until if to_pos is None else min(to_pos, access.until)
        limit = min(limit, MAX_LIMIT)
        chunk, pos, more = await self._page(user_id, access.room, from_pos, to_pos, backwards, limit, filt, as_admin)
        backfiller = self.backfiller
        if backwards and not more and to_pos is None:
            # The start of our history: older events may be on other servers
            # (server-server-api §Backfilling); they are stored below every position we have.
            if len(chunk) >= limit:
                # A full page: the client comes back for more, fetch then.
                more = await backfiller.may_have_more(room_id)
            elif await backfiller.backfill(room_id):
                rest, pos, more = await self._page(
                    user_id, access.room, pos, None, True, limit - len(chunk), filt, as_admin
                )
                chunk += rest
        viewer = (user_id, requester.device_id)
        bundles = await self.aggregations.bundles(chunk, user_id)
        serialize = self.serializer.serialize_encoded if encoded else self.serializer.serialize
        out: dict[str, Any] = {"start": start, "chunk": await serialize(chunk, viewer, bundles=bundles)}
        if more or (not backwards and chunk and to_pos is None):
            # Forwards to the live edge: events may still come after the last one, so the client
            # gets a token to go on from (as Synapse; SyTest "A next_batch token can be used in the
            # v1 messages API"). Backwards, no 'end' once the start of the room is reached.
            out["end"] = room_token(pos)
        if filt.lazy_load_members:
            out["state"] = await self._member_state(chunk, viewer)
        return out

    async def _member_state(self, events: Sequence[Event], viewer: tuple[str, str | None]) -> list[dict[str, Any]]:
        """lazy_load_members: the member events of the senders of ``events``, as of the last of them."""
        if not events:
            return []
        senders = list(dict.fromkeys(ev.sender for ev in events))
        chosen: dict[str, str] = {}
        # The state after the last event of the page, then each sender's own event as a fallback.
        last = events[-1]
        for ev in [last, *events]:
            nid = ev.metadata.state_after if ev is last else ev.metadata.state_before
            if nid is None:
                continue
            state = await self.state.get_state(nid)
            for sender in senders:
                if sender not in chosen and ("m.room.member", sender) in state:
                    chosen[sender] = state[("m.room.member", sender)]
            if len(chosen) == len(senders):
                break
        found = await self.events.get_events(chosen.values())
        return await self.serializer.serialize([found[e] for e in chosen.values() if e in found], viewer=viewer)

    async def context(
        self, requester: Requester, room_id: str, event_id: str, limit: int, filt: RoomEventFilter = EMPTY_FILTER
    ) -> dict[str, Any]:
        user_id = requester.user_id
        if not (await self.visibility.room_access(user_id, room_id)).can_read:
            # event_context.yaml lists no errors; a user who was never in a room that is not world
            # readable gets 403 as from /messages (Synapse's answer, SyTest 30rooms/50context.pl).
            raise forbidden("You are not allowed to read this room")
        event, access = await self._visible_event(user_id, room_id, event_id)
        position = event.metadata.stream_ordering
        assert position is not None
        limit = min(limit, MAX_LIMIT)
        # event_context.yaml: the limit is shared by events_before and events_after.
        before_limit = limit // 2
        after_limit = limit - before_limit
        before, start_pos, _ = await self._page(user_id, access.room, position - 1, None, True, before_limit, filt)
        after, end_pos, _ = await self._page(user_id, access.room, position, access.until, False, after_limit, filt)
        viewer = (user_id, requester.device_id)
        last = after[-1] if after else event
        state_ids = await self.state.get_state(last.metadata.state_after)
        state_events = await self.events.get_events(state_ids.values())
        state = [state_events[e] for e in state_ids.values() if e in state_events]
        state = filt.filter_events(state)
        if filt.lazy_load_members:
            senders = {ev.sender for ev in (*before, event, *after)}
            state = [ev for ev in state if ev.type != "m.room.member" or ev.state_key in senders]
        # one computation of the bundles for the whole answer
        bundles = await self.aggregations.bundles([*before, event, *after], user_id)
        return {
            "start": room_token(start_pos),
            "end": room_token(end_pos),
            "events_before": await self.serializer.serialize(before, viewer, bundles=bundles),
            "event": await self.serializer.serialize_one(event, viewer, bundles),
            "events_after": await self.serializer.serialize(after, viewer, bundles=bundles),
            "state": await self.serializer.serialize(state, viewer=viewer),
        }

    async def timestamp_to_event(self, requester: Requester, room_id: str, ts: int, direction: str) -> dict[str, Any]:
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        user_id = requester.user_id
        access = await self._readable(user_id, room_id)
        candidates = await self.store.events_near_timestamp(
            access.room.room_nid, ts, direction == "f", TIMESTAMP_CANDIDATES
        )
        if access.until is not None:
            candidates = [ev for ev in candidates if (ev.metadata.stream_ordering or 0) <= access.until]
        for ev in await self.visibility.filter_events_for_user(user_id, candidates):
            return {"event_id": ev.event_id, "origin_server_ts": ev.origin_server_ts}
        way = "forward" if direction == "f" else "backward"
        raise not_found(f"Unable to find event from {ts} in {way} direction")
