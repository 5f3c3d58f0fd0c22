"""Client route for server-side search: POST /_matrix/client/v3/search (search.yaml).

Thin: authenticate, parse and validate the body into :class:`RoomEventsCriteria`,
call :class:`SearchHandler`, render. A key of the wrong JSON type is
M_BAD_JSON, a missing required one M_MISSING_PARAM, a value outside what
search.yaml allows M_INVALID_PARAM (all 400).
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_bool, get_dict, get_int, get_list, get_str, json_body, query_str, route
from mxserver.errors import bad_json, invalid_param
from mxserver.events.search import SEARCH_KEYS
from mxserver.room_handlers.search import (
    DEFAULT_CONTEXT,
    GROUP_KEYS,
    MAX_CONTEXT,
    ORDERS,
    EventContextRequest,
    RoomEventsCriteria,
    SearchHandler,
)
from mxserver.sync.filtering import RoomEventFilter


class SearchServlet:
    """search.yaml: full-text search of the rooms a user is or was in."""

    def __init__(self, auth: Auth, search: SearchHandler) -> None:
        self.auth = auth
        self.search = search

    @route("POST", "/_matrix/client/v3/search")
    async def post_search(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        categories = get_dict(body, "search_categories")
        room_events = get_dict(categories, "room_events", None)
        criteria = parse_room_events(room_events) if room_events is not None else None
        return await self.search.search(requester, criteria, query_str(request, "next_batch"))


def parse_room_events(body: dict[str, Any]) -> RoomEventsCriteria:
    """``search_categories.room_events`` of a request body, validated."""
    search_term = get_str(body, "search_term")
    keys = get_list(body, "keys", None)
    if keys is None:
        keys = list(SEARCH_KEYS)
    for key in keys:
        if not isinstance(key, str):
            raise bad_json("'keys' must be an array of strings")
        if key not in SEARCH_KEYS:
            raise invalid_param(f"'keys' may only hold {', '.join(SEARCH_KEYS)}: not {key!r}")
    filter_json = get_dict(body, "filter", None)
    order_by = get_str(body, "order_by", "rank")
    if order_by not in ORDERS:
        raise invalid_param(f"'order_by' must be one of {', '.join(ORDERS)}")
    return RoomEventsCriteria(
        search_term=search_term,
        keys=tuple(dict.fromkeys(keys)),
        filter=RoomEventFilter.from_json(filter_json) if filter_json is not None else RoomEventFilter(),
        order_by=order_by,
        event_context=_event_context(get_dict(body, "event_context", None)),
        include_state=get_bool(body, "include_state", False),
        group_by=_group_by(get_dict(body, "groupings", None)),
    )


def _event_context(body: dict[str, Any] | None) -> EventContextRequest | None:
    if body is None:
        return None
    limits = []
    for name in ("before_limit", "after_limit"):
        value = get_int(body, name, DEFAULT_CONTEXT)
        if value < 0:
            raise invalid_param(f"'{name}' must not be negative")
        limits.append(min(value, MAX_CONTEXT))
    return EventContextRequest(limits[0], limits[1], get_bool(body, "include_profile", False))


def _group_by(groupings: dict[str, Any] | None) -> tuple[str, ...]:
    if groupings is None:
        return ()
    keys: list[str] = []
    for group in get_list(groupings, "group_by", []):
        if not isinstance(group, dict):
            raise bad_json("'group_by' must be an array of objects")
        key = get_str(group, "key")
        if key not in GROUP_KEYS:
            raise invalid_param(f"group_by 'key' must be one of {', '.join(GROUP_KEYS)}")
        keys.append(key)
    return tuple(dict.fromkeys(keys))
