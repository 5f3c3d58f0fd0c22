"""Reading event relationships: GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].

client-server-api §Relationships API (relations.yaml). The user must be able
to see the parent (as GET /event: otherwise 404 M_NOT_FOUND); the children
are the timeline events that name it in ``m.relates_to``, filtered for the
user exactly as /messages filters its pages, serialised as /messages
serialises them. Redacted children are left out: "when a child event is
redacted then the relationship is broken" (§Aggregations of child events).

Tokens are room-stream tokens (``s<position>``, as /messages ``start``/``end``
and a /sync ``next_batch``), standing between events: paging backwards from
``sN`` returns children at or before ``N``, forwards children after ``N``.
"""

from __future__ import annotations

from typing import Any

from mxserver.accounts.auth import Requester
from mxserver.errors import invalid_param
from mxserver.events.model import Event
from mxserver.room_handlers.aggregations import Aggregations
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.room_handlers.history import page_visible
from mxserver.rooms.api import ReaderRooms
from mxserver.rooms.visibility import HistoryVisibility
from mxserver.storage.events import EventStore
from mxserver.storage.relations import RelationFilter, RelationsStore
from mxserver.sync.tokens import parse_room_token, room_token

#: relations.yaml leaves the default and the maximum of `limit` to the server (Synapse's: 5, 1000)
DEFAULT_LIMIT = 5
MAX_LIMIT = 1000
#: relations.yaml `recurse`: "Homeservers SHOULD traverse at least 3 levels of relationships"
RECURSION_DEPTH = 3
#: a page queries at most this many batches to fill up what the visibility filter thinned out


class RelationsHandler:
    """The child events of a parent event, a page at a time."""

    def __init__(
        self,
        room_server: ReaderRooms,
        events: EventStore,
        store: RelationsStore,
        visibility: HistoryVisibility,
        serializer: EventSerializer,
        aggregations: Aggregations,
    ) -> None:
        self.room_server = room_server
        self.events = events
        self.store = store
        self.visibility = visibility
        self.serializer = serializer
        self.aggregations = aggregations

    async def relations(
        self,
        requester: Requester,
        room_id: str,
        parent_id: str,
        rel_type: str | None = None,
        event_type: str | None = None,
        from_token: str | None = None,
        to_token: str | None = None,
        direction: str = "b",
        limit: int = DEFAULT_LIMIT,
        recurse: bool | None = None,
    ) -> dict[str, Any]:
        """The response of /relations: ``chunk``, and ``next_batch``, ``prev_batch`` and
        ``recursion_depth`` when they apply. ``recurse`` None: the client did not send it."""
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        if limit < 0:
            raise invalid_param("'limit' must not be negative")
        backwards = direction == "b"
        from_pos = parse_room_token(from_token, "from") if from_token is not None else None
        to_pos = parse_room_token(to_token, "to") if to_token is not None else None
        user_id = requester.user_id
        _, access = await self.visibility.visible_timeline_event(user_id, room_id, parent_id)
        if from_pos is None:
            # relations.yaml: without 'from', "results start at the most recent topological
            # event" (b); forwards, at the start of the room's history, as /messages does.
            from_pos = self.room_server.current_position if backwards else self.events.min_stream - 1
        start = from_pos
        if access.until is not None:
            # a former member sees nothing after they left (§Room History Visibility)
            if backwards:
                from_pos = min(from_pos, access.until)
            else:
                to_pos = access.until if to_pos is None else min(to_pos, access.until)
        depth = RECURSION_DEPTH if recurse else 1
        filt = RelationFilter(rel_type=rel_type, event_type=event_type, depth=depth)
        chunk, pos, more = await self._page(
            user_id, access.room.room_nid, parent_id, filt, from_pos, to_pos, backwards, min(limit, MAX_LIMIT)
        )
        # §Aggregations of child events: the children carry their own bundles
        bundles = await self.aggregations.bundles(chunk, user_id)
        out: dict[str, Any] = {
            "chunk": await self.serializer.serialize(chunk, (user_id, requester.device_id), bundles=bundles),
        }
        if more:
            out["next_batch"] = room_token(pos)
        if from_token is not None:
            # relations.yaml: no prev_batch means "this is the first batch/page"
            out["prev_batch"] = room_token(start)
        if recurse is not None:
            # relations.yaml: present exactly when the client sent `recurse`
            out["recursion_depth"] = depth if recurse else 0
        return out

    async def _page(
        self,
        user_id: str,
        room_nid: int,
        parent_id: str,
        filt: RelationFilter,
        from_pos: int,
        to_pos: int | None,
        backwards: bool,
        limit: int,
    ) -> tuple[list[Event], int, bool]:
        """``(children the user may see, position after the last one scanned, whether more may follow)``."""

        async def fetch(pos: int, n: int) -> list[Event]:
            return await self.store.children(room_nid, parent_id, filt, pos, to_pos, backwards, n)

        async def keep(batch: list[Event]) -> list[Event]:
            return await self.visibility.filter_events_for_user(user_id, batch)

        return await page_visible(fetch, keep, from_pos, to_pos, backwards, limit)
