"""Federation read routes: events, state, backfill, missing events, auth chains, timestamps
(events.yaml, backfill.yaml, event_auth.yaml). Each authenticates its caller with X-Matrix
and calls one method of the FederationEventsHandler, which does the access checks."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, query_int, query_str, route
from mxserver.errors import bad_json, invalid_param, missing_param
from mxserver.federation.auth import FederationAuth
from mxserver.federation.events_api import FederationEventsHandler
from mxserver.ids import is_valid_event_id, is_valid_room_id


def _room_id(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"Invalid room ID {room_id!r}")
    return room_id


def _event_id(event_id: Any, what: str = "event ID") -> str:
    if not is_valid_event_id(event_id):
        raise invalid_param(f"Invalid {what} {event_id!r}")
    return str(event_id)


def _required_event_id(request: IRequest) -> str:
    event_id = query_str(request, "event_id")
    if event_id is None:
        raise missing_param("Missing query parameter 'event_id'")
    return _event_id(event_id)


def _event_id_list(body: JsonDict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{key}' must be a list of event IDs")
    if len(value) > 100:
        raise bad_json(f"'{key}' may hold at most 100 event IDs")
    return [_event_id(v) for v in value]


def _int(body: JsonDict, key: str, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_json(f"'{key}' must be an integer")
    return value


class FederationEventsServlet:
    """The federation read routes."""

    def __init__(self, auth: FederationAuth, events: FederationEventsHandler) -> None:
        self.auth = auth
        self.events = events

    async def _origin(self, request: IRequest, content: Any = None) -> str:
        return str(await self.auth.authenticate_request(request, content))

    @route("GET", "/_matrix/federation/v1/event/{event_id}")
    async def get_event(self, request: IRequest, event_id: str) -> JsonDict:
        origin = await self._origin(request)
        return await self.events.get_event(origin, _event_id(event_id))

    @route("GET", "/_matrix/federation/v1/state/{room_id}")
    async def get_state(self, request: IRequest, room_id: str) -> JsonDict:
        origin = await self._origin(request)
        return await self.events.state(origin, _room_id(room_id), _required_event_id(request))

    @route("GET", "/_matrix/federation/v1/state_ids/{room_id}")
    async def get_state_ids(self, request: IRequest, room_id: str) -> JsonDict:
        origin = await self._origin(request)
        return await self.events.state_ids(origin, _room_id(room_id), _required_event_id(request))

    @route("GET", "/_matrix/federation/v1/event_auth/{room_id}/{event_id}")
    async def get_event_auth(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        origin = await self._origin(request)
        return await self.events.event_auth(origin, _room_id(room_id), _event_id(event_id))

    @route("GET", "/_matrix/federation/v1/backfill/{room_id}")
    async def backfill(self, request: IRequest, room_id: str) -> JsonDict:
        origin = await self._origin(request)
        raw = (request.args or {}).get(b"v") or []
        try:
            starts = [v.decode("utf-8") for v in raw]
        except UnicodeDecodeError:
            raise invalid_param("Query parameter 'v' is not valid UTF-8") from None
        if not starts:
            raise missing_param("Missing query parameter 'v'")
        if len(starts) > 100:
            raise invalid_param("At most 100 'v' event IDs")
        limit = query_int(request, "limit", None, minimum=0)
        if limit is None:
            raise missing_param("Missing query parameter 'limit'")
        return await self.events.backfill(origin, _room_id(room_id), [_event_id(v) for v in starts], limit)

    @route("POST", "/_matrix/federation/v1/get_missing_events/{room_id}")
    async def get_missing_events(self, request: IRequest, room_id: str) -> JsonDict:
        body = json_body(request)
        origin = await self._origin(request, body)
        # An empty or absent latest_events asks for nothing: answered with no events (after
        # the room's ACL check), as Synapse does -- SyTest's "Banned servers cannot get
        # missing events" first asks with {} and expects a 200 while the server is allowed.
        latest = _event_id_list(body, "latest_events")
        return await self.events.get_missing_events(
            origin,
            _room_id(room_id),
            _event_id_list(body, "earliest_events"),
            latest,
            _int(body, "limit", 10),
            _int(body, "min_depth", 0),
        )

    @route("GET", "/_matrix/federation/v1/timestamp_to_event/{room_id}")
    async def timestamp_to_event(self, request: IRequest, room_id: str) -> JsonDict:
        origin = await self._origin(request)
        ts = query_int(request, "ts", None, minimum=0)
        if ts is None:
            raise missing_param("Missing query parameter 'ts'")
        direction = query_str(request, "dir")
        if direction is None:
            raise missing_param("Missing query parameter 'dir'")
        if direction not in ("f", "b"):
            raise invalid_param("Query parameter 'dir' must be 'f' or 'b'")
        return await self.events.timestamp_to_event(origin, _room_id(room_id), ts, direction)
