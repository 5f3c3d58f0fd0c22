"""The threads of a room: GET /_matrix/client/v1/rooms/{roomId}/threads (threads_list.yaml).

client-server-api §Querying threads in a room. Thread roots come from the
``threads`` table, latest activity first (the position of each thread's latest
reply), filtered for the user exactly as /messages filters its pages (history
visibility of the root), each with its bundled aggregations. ``include=participated``
keeps the threads whose root or an unredacted reply the user sent (threading.md
§Server-side aggregation of m.thread relationships).

Tokens are room-stream tokens (``s<position>``, as /messages and a /sync
``next_batch``): a page from ``sN`` lists threads whose latest reply is at or
before ``N``.
"""

from __future__ import annotations

from typing import Any, Protocol

from mxserver.accounts.auth import Requester
from mxserver.errors import MatrixError, forbidden, invalid_param
from mxserver.events.model import Event
from mxserver.events.redaction import redact_event
from mxserver.room_handlers.aggregations import Aggregations
from mxserver.room_handlers.event_serializer import EventSerializer
from mxserver.room_handlers.history import page_visible
from mxserver.rooms.api import ReaderRooms
from mxserver.rooms.visibility import HistoryVisibility, RoomAccess
from mxserver.storage.threads import ThreadsStore
from mxserver.sync.tokens import parse_room_token, room_token

#: threads_list.yaml: "Servers should apply a default value, and impose a maximum value"
DEFAULT_LIMIT = 5
MAX_LIMIT = 100
INCLUDE = ("all", "participated")


class IgnoredUsers(Protocol):
    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


class ThreadsHandler:
    """Pages of a room's thread roots."""

    def __init__(
        self,
        room_server: ReaderRooms,
        store: ThreadsStore,
        visibility: HistoryVisibility,
        serializer: EventSerializer,
        aggregations: Aggregations,
        ignored: IgnoredUsers,
    ) -> None:
        self.room_server = room_server
        self.store = store
        self.visibility = visibility
        self.serializer = serializer
        self.aggregations = aggregations
        self.ignored = ignored

    async def threads(
        self,
        requester: Requester,
        room_id: str,
        include: str = "all",
        from_token: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        """The response of /threads: ``chunk`` and, when more may follow, ``next_batch``."""
        if include not in INCLUDE:
            raise invalid_param("'include' must be 'all' or 'participated'")
        if limit < 1:
            # threads_list.yaml: "Must be an integer greater than zero"
            raise invalid_param("'limit' must be greater than zero")
        from_pos = parse_room_token(from_token, "from") if from_token is not None else None
        user_id = requester.user_id
        access = await self._access(user_id, room_id)
        if from_pos is None:
            # "starts paginating from the most recent event"
            from_pos = self.room_server.current_position
        participant = user_id if include == "participated" else None
        room_nid = access.room.room_nid

        async def fetch(pos: int, n: int) -> list[tuple[Event, int]]:
            return await self.store.roots(room_nid, pos, n, participant)

        async def keep(batch: list[tuple[Event, int]]) -> list[tuple[Event, int]]:
            visible = await self.visibility.filter_events_for_user(user_id, [root for root, _ in batch])
            seen = {ev.event_id: ev for ev in visible}
            return [(seen[root.event_id], at) for root, at in batch if root.event_id in seen]

        found, pos, more = await page_visible(
            fetch, keep, from_pos, None, True, min(limit, MAX_LIMIT), position=lambda item: item[1]
        )
        ignored = await self.ignored.ignored_users(user_id)
        # threads_list.yaml: a root sent by an ignored user "is returned redacted"
        roots = [redact_event(root) if root.sender in ignored else root for root, _ in found]
        bundles = await self.aggregations.bundles(roots, user_id)
        out: dict[str, Any] = {
            "chunk": await self.serializer.serialize(roots, (user_id, requester.device_id), bundles=bundles)
        }
        if more:
            out["next_batch"] = room_token(pos)
        return out

    async def _access(self, user_id: str, room_id: str) -> RoomAccess:
        try:
            access = await self.visibility.room_access(user_id, room_id)
        except MatrixError as e:
            if e.code != 404:
                raise
            access = None
        if access is None or not access.can_read:
            # threads_list.yaml: 403 when "the user cannot view or peek on the room", or it does not exist
            raise forbidden("You are not allowed to view this room")
        return access
