"""Client routes for event relationships: GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].

Thin: parse and validate the query, authenticate, call :class:`RelationsHandler`, render.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, query_bool, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_event_id, is_valid_room_id
from mxserver.room_handlers.relations import DEFAULT_LIMIT, RelationsHandler

_PREFIX = "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}"


class RelationsServlet:
    """relations.yaml: the child events of a parent event."""

    def __init__(self, auth: Auth, relations: RelationsHandler) -> None:
        self.auth = auth
        self.relations = relations

    @route("GET", _PREFIX, _PREFIX + "/{rel_type}", _PREFIX + "/{rel_type}/{event_type}")
    async def get_relations(
        self, request: IRequest, room_id: str, event_id: str, rel_type: str | None = None, event_type: str | None = None
    ) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        if not is_valid_room_id(room_id):
            raise invalid_param("Invalid room ID")
        if not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        direction = query_str(request, "dir", "b")
        if direction not in ("b", "f"):
            raise invalid_param("Query parameter 'dir' must be one of b, f")
        recurse = query_bool(request, "recurse") if query_str(request, "recurse") is not None else None
        return await self.relations.relations(
            requester,
            room_id,
            event_id,
            rel_type=rel_type,
            event_type=event_type,
            from_token=query_str(request, "from"),
            to_token=query_str(request, "to"),
            direction=direction,
            limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=0),
            recurse=recurse,
        )
