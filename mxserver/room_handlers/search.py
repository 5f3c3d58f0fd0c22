"""Server-side search: the ``room_events`` category of POST /search.

client-server-api §Server Side Search (search.yaml). The user searches "all
rooms that the user has been in, including those that they have left" (not
forgotten ones), and only sees what they may see: a former member nothing
after they left, and every result and context event passes the history
visibility rules (:mod:`mxserver.rooms.visibility`), as /messages does. An
event whose erased sender's content would be shown redacted is no result (its
text matched, but the user may not see that text).

The search term is read as plain words (:func:`mxserver.events.search.search_words`):
an event matches when, for every word, its text has a word starting with it.
``highlights`` are the words of the results that matched, as they are written.
Messages of users the searcher ignores are neither results nor context (their
state events are: modules/ignore_users.md). ``count`` is the number of matches
in the user's rooms (up to when they left) less those the page found hidden
from them: exact when one page holds every match, an upper bound otherwise (the
spec allows an estimate; an exact count would check every match's visibility).

Pages: ``next_batch`` is a cursor in the query's order (rank then stream
position, or stream position alone for ``recent``), so paging never repeats
or skips an event while the index is unchanged. Ranks (SQLite's BM25) depend
on what else is indexed, so events arriving between pages of a ``rank``
search may move the boundary a little; ``recent`` paging is exact. A group's
``next_batch`` is the same cursor narrowed to the group (a room or a sender);
a narrowed request's top-level ``next_batch`` stays narrowed.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeGuard

import attrs

from mxserver.accounts.auth import Requester
from mxserver.errors import invalid_param
from mxserver.events.model import Event
from mxserver.events.search import SEARCH_KEYS, highlights, search_words, searchable_text
from mxserver.room_handlers.aggregations import Aggregations
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.room_handlers.history import page_visible
from mxserver.rooms.api import ReaderRooms
from mxserver.rooms.visibility import HistoryVisibility
from mxserver.storage.events import EventStore
from mxserver.storage.history import HistoryStore
from mxserver.storage.search import SearchCursor, SearchHit, SearchQuery, SearchRoom, SearchStore
from mxserver.storage.state import StateKey, StateStore
from mxserver.sync.filtering import RoomEventFilter
from mxserver.sync.tokens import room_token

ORDERS = ("rank", "recent")
GROUP_KEYS = ("room_id", "sender")
#: results per page when the filter sets no ``limit`` (Synapse's default), and the most we return
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
#: search.yaml: before_limit and after_limit default to 5; we serve at most MAX_CONTEXT each
DEFAULT_CONTEXT = 5
MAX_CONTEXT = 100
#: a search term of more words than this is refused (each word is an index lookup)
MAX_WORDS = 64
#: a page reads at most this many batches of matches to fill up what visibility thinned out
MAX_PAGE_QUERIES = 3
#: matches read per batch: a page's worth at least twice over (some may be hidden), bounded
MIN_FETCH = 20
MAX_FETCH = 400


class IgnoredUsers(Protocol):
    """Whom a user ignores (modules/ignore_users.md)."""

    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


@attrs.frozen
class EventContextRequest:
    """search.yaml ``event_context``."""

    before_limit: int = DEFAULT_CONTEXT
    after_limit: int = DEFAULT_CONTEXT
    include_profile: bool = False


@attrs.frozen
class RoomEventsCriteria:
    """search.yaml ``search_categories.room_events``, validated."""

    search_term: str
    keys: tuple[str, ...] = SEARCH_KEYS
    filter: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    order_by: str = "rank"
    event_context: EventContextRequest | None = None
    include_state: bool = False
    group_by: tuple[str, ...] = ()


@attrs.frozen
class BatchToken:
    """What a ``next_batch`` stands for: a cursor in one order, maybe narrowed to a group."""

    order: str
    cursor: SearchCursor
    room_id: str | None = None
    sender: str | None = None

    def encode(self) -> str:
        value: dict[str, Any] = {"o": self.order, "p": self.cursor.stream}
        if self.cursor.score is not None:
            value["s"] = self.cursor.score
        if self.room_id is not None:
            value["r"] = self.room_id
        if self.sender is not None:
            value["u"] = self.sender
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, token: str) -> BatchToken:
        """The token of a ``next_batch`` this server handed out; M_INVALID_PARAM otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            value = json.loads(raw)
        except (ValueError, binascii.Error):
            raise invalid_param("Invalid next_batch") from None
        if not isinstance(value, dict):
            raise invalid_param("Invalid next_batch")
        order, stream, score = value.get("o"), value.get("p"), value.get("s")
        room_id, sender = value.get("r"), value.get("u")
        if (
            not isinstance(order, str)
            or order not in ORDERS
            or not _is_int(stream)
            or not (score is None if order == "recent" else _is_number(score))
            or not (room_id is None or isinstance(room_id, str))
            or not (sender is None or isinstance(sender, str))
        ):
            raise invalid_param("Invalid next_batch")
        return cls(order, SearchCursor(stream, None if score is None else float(score)), room_id, sender)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


@attrs.frozen
class _Page:
    hits: list[SearchHit]
    count: int
    #: the last match looked at, where the next page starts
    cursor: SearchCursor | None
    more: bool


class SearchHandler:
    """POST /search."""

    def __init__(
        self,
        store: SearchStore,
        indexed: Callable[[], Awaitable[None]],
        history: HistoryStore,
        events: EventStore,
        state: StateStore,
        rooms: ReaderRooms,
        visibility: HistoryVisibility,
        serializer: EventSerializer,
        ignored: IgnoredUsers,
        aggregations: Aggregations,
    ) -> None:
        self.store = store
        #: waits until the index holds every event published so far
        self.indexed = indexed
        self.history = history
        self.events = events
        self.state = state
        self.rooms = rooms
        self.visibility = visibility
        self.serializer = serializer
        self.ignored = ignored
        self.aggregations = aggregations

    async def search(
        self, requester: Requester, room_events: RoomEventsCriteria | None, next_batch: str | None
    ) -> dict[str, Any]:
        """The response of POST /search: the ``room_events`` category when it was asked for
        (the only category search.yaml defines)."""
        token = BatchToken.decode(next_batch) if next_batch is not None else None
        categories: dict[str, Any] = {}
        if room_events is not None:
            categories["room_events"] = await self._room_events(requester, room_events, token)
        return {"search_categories": categories}

    async def _room_events(
        self, requester: Requester, criteria: RoomEventsCriteria, token: BatchToken | None
    ) -> dict[str, Any]:
        if token is not None and token.order != criteria.order_by:
            raise invalid_param("next_batch belongs to a search in another order")
        words = tuple(dict.fromkeys(search_words(criteria.search_term)))
        if len(words) > MAX_WORDS:
            raise invalid_param(f"search_term has more than {MAX_WORDS} words")
        user_id = requester.user_id
        filt = criteria.filter
        # what the user sent (or saw arrive) before searching is in the index
        await self.indexed()
        rooms = [r for r in await self.store.rooms_for_user(user_id) if filt.room_allowed(r.room_id)]
        if token is not None and token.room_id is not None:
            rooms = [r for r in rooms if r.room_id == token.room_id]
        if filt.allows_nothing:
            rooms = []
        ignored = await self.ignored.ignored_users(user_id)
        query = SearchQuery(
            words=words,
            keys=criteria.keys,
            rooms=tuple(rooms),
            conditions=filt.sql_conditions(),
            sender=token.sender if token is not None else None,
            ignored=ignored,
            by_rank=criteria.order_by == "rank",
        )
        limit = min(filt.limit or DEFAULT_LIMIT, MAX_LIMIT)
        page = await self._page(user_id, query, token.cursor if token is not None else None, limit, filt)

        viewer = (user_id, requester.device_id)
        events = [hit.event for hit in page.hits]
        # Bundled aggregations on the results as on /messages (§Aggregations of child events):
        # one computation for the page.
        bundles = await self.aggregations.bundles(events, user_id)
        serialized = await self.serializer.serialize(events, viewer=viewer, bundles=bundles)
        rooms_by_id = {r.room_id: r for r in rooms}
        results = []
        for hit, formatted in zip(page.hits, serialized, strict=True):
            result: dict[str, Any] = {"rank": hit.score, "result": formatted}
            if criteria.event_context is not None:
                room = rooms_by_id[hit.event.room_id]
                result["context"] = await self._context(
                    user_id, room, hit.event, criteria.event_context, viewer, ignored
                )
            results.append(result)

        out: dict[str, Any] = {"results": results, "count": page.count, "highlights": _highlights(events, words)}
        if criteria.include_state:
            out["state"] = {
                room_id: await self._room_state(rooms_by_id[room_id], viewer)
                for room_id in dict.fromkeys(ev.room_id for ev in events)
            }
        # a narrowed request stays narrowed: its pages continue within the same group
        scope = {"room_id": token.room_id, "sender": token.sender} if token is not None else {}
        if criteria.group_by:
            out["groups"] = {
                key: _groups(key, events, page, criteria.order_by, scope) for key in criteria.group_by
            }
        if page.more and page.cursor is not None:
            out["next_batch"] = BatchToken(criteria.order_by, page.cursor, **scope).encode()
        return out

    async def _page(
        self, user_id: str, query: SearchQuery, after: SearchCursor | None, limit: int, filt: RoomEventFilter
    ) -> _Page:
        """Up to ``limit`` matches the user may see, after ``after``; reads more batches of
        matches (at most :data:`MAX_PAGE_QUERIES`) while visibility leaves the page short."""
        hits: list[SearchHit] = []
        count = hidden = 0
        cursor = after
        fetch = min(max(2 * limit, MIN_FETCH), MAX_FETCH)
        for i in range(MAX_PAGE_QUERIES):
            batch, total = await self.store.search(query, cursor, fetch, with_count=i == 0)
            if total is not None:
                count = total
            shown = await self._shown(user_id, [hit.event for hit in batch], filt)
            for j, hit in enumerate(batch):
                cursor = hit.cursor
                if hit.event.event_id not in shown:
                    hidden += 1
                    continue
                hits.append(hit)
                if len(hits) == limit:
                    more = j + 1 < len(batch) or len(batch) == fetch
                    return _Page(hits, max(count - hidden, len(hits)), cursor, more)
            if len(batch) < fetch:
                return _Page(hits, max(count - hidden, len(hits)), cursor, False)
        return _Page(hits, max(count - hidden, len(hits)), cursor, True)

    async def _shown(self, user_id: str, events: list[Event], filt: RoomEventFilter) -> set[str]:
        """The IDs of the events that are results for the user: they pass the filter exactly
        (wildcard types, ``contains_url``) and the user may see them as they are."""
        candidates = filt.filter_events(events)
        visible = await self.visibility.filter_events_for_user(user_id, candidates)
        by_id = {ev.event_id: ev for ev in candidates}
        # an erased sender's event comes back redacted (a new Event): its text is not the user's to see
        return {ev.event_id for ev in visible if ev is by_id[ev.event_id]}

    async def _context(
        self,
        user_id: str,
        room: SearchRoom,
        event: Event,
        request: EventContextRequest,
        viewer: tuple[str, str | None],
        ignored: frozenset[str],
    ) -> dict[str, Any]:
        """search.yaml ``context``: the events the user may see around a result, as /context
        pages them (events_before nearest first), with ``start``/``end`` room tokens."""
        position = event.metadata.stream_ordering
        assert position is not None

        async def keep(batch: list[Event]) -> list[Event]:
            shown = [ev for ev in batch if ev.sender not in ignored or ev.state_key is not None]
            return await self.visibility.filter_events_for_user(user_id, shown)

        async def fetch_before(pos: int, n: int) -> list[Event]:
            return await self.history.page(room.room_nid, pos, None, True, n)

        async def fetch_after(pos: int, n: int) -> list[Event]:
            return await self.history.page(room.room_nid, pos, room.until, False, n)

        before: list[Event] = []
        after: list[Event] = []
        start, end = position - 1, position
        if request.before_limit:
            before, start, _ = await page_visible(fetch_before, keep, position - 1, None, True, request.before_limit)
        if request.after_limit:
            # a former member sees nothing after they left
            after, end, _ = await page_visible(fetch_after, keep, position, room.until, False, request.after_limit)
        bundles = await self.aggregations.bundles([*before, *after], user_id)
        context: dict[str, Any] = {
            "start": room_token(start),
            "end": room_token(end),
            "events_before": await self.serializer.serialize(before, viewer=viewer, bundles=bundles),
            "events_after": await self.serializer.serialize(after, viewer=viewer, bundles=bundles),
        }
        if request.include_profile:
            last = after[-1] if after else event
            context["profile_info"] = await self._profiles([*before, event, *after], last)
        return context

    async def _profiles(self, events: Sequence[Event], last: Event) -> dict[str, dict[str, str]]:
        """search.yaml ``profile_info``: the senders' display names and avatars as the room's
        member events had them after the last event of the context ("historic profile information")."""
        senders = dict.fromkeys(ev.sender for ev in events)
        state = await self.state.get_state(last.metadata.state_after)
        member_ids = {s: state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state}
        members = await self.events.get_events(member_ids.values())
        profiles: dict[str, dict[str, str]] = {}
        for sender, event_id in member_ids.items():
            member = members.get(event_id)
            if member is None:
                continue
            # redaction keeps only the membership of a member event
            content = member.content if not member.metadata.redacted_by else {}
            profiles[sender] = {k: v for k in ("displayname", "avatar_url") if isinstance(v := content.get(k), str)}
        return profiles

    async def _room_state(self, room: SearchRoom, viewer: tuple[str, str | None]) -> list[dict[str, Any]]:
        """search.yaml ``state``: the room's current state for a member; for a former member,
        the state when they left (they see nothing after it, as GET /state answers them)."""
        ids: dict[StateKey, str]
        if room.until is None:
            ids = await self.rooms.current_state_ids(room.room_id)
        else:
            member = await self.events.get_event(room.member_event_id)
            ids = dict(await self.state.get_state(member.metadata.state_after)) if member is not None else {}
        found = await self.events.get_events(ids.values())
        return await self.serializer.serialize([found[e] for e in ids.values() if e in found], viewer=viewer)


def _highlights(events: Sequence[Event], words: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for ev in events:
        found = searchable_text(ev.type, ev.content)
        if found is not None:
            out.update(dict.fromkeys(highlights(found[1], words)))
    return list(out)


def _groups(key: str, events: Sequence[Event], page: _Page, order: str, scope: dict[str, str | None]) -> dict[str, Any]:
    """search.yaml ``groups.<key>``: the page's results by room or sender, ``order`` numbering
    the groups as they first appear, and a ``next_batch`` narrowed to each group while the
    search has more."""
    groups: dict[str, dict[str, Any]] = {}
    for ev in events:
        value = ev.room_id if key == "room_id" else ev.sender
        if value not in groups:
            groups[value] = {"results": [], "order": len(groups) + 1}
        groups[value]["results"].append(ev.event_id)
    if page.more and page.cursor is not None:
        for value, group in groups.items():
            narrowed = {**scope, key: value}
            group["next_batch"] = BatchToken(order, page.cursor, **narrowed).encode()
    return groups
