"""Client routes for room events: send, state, redact, event, members, messages, context.

Thin: parse and validate the request, authenticate, call one handler
(:class:`MessageHandler` to send, :class:`HistoryHandler` to read), render.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_str, json_body, query_int, query_str, route
from mxserver.errors import invalid_param, missing_param
from mxserver.ids import is_valid_event_id, is_valid_room_id
from mxserver.room_handlers.history import MEMBERSHIPS, HistoryHandler
from mxserver.room_handlers.messages import MessageHandler
from mxserver.sync.filtering import RoomEventFilter

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"

#: event types and state keys are at most 255 bytes in a PDU (server-server-api §Size limits)
_MAX_ID_BYTES = 255


def _paths(*suffixes: str) -> list[str]:
    return [prefix + suffix for suffix in suffixes for prefix in (_V3, _R0)]


def _fresh_txn_id() -> str:
    """A transaction ID for a request that has none: never equal to another request's."""
    return "legacy-" + secrets.token_urlsafe(12)


def _room_id(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise invalid_param("Invalid room ID")
    return room_id


def _event_id(event_id: str) -> str:
    if not is_valid_event_id(event_id):
        raise invalid_param("Invalid event ID")
    return event_id


def _bounded(value: str, what: str) -> str:
    if len(value.encode("utf-8")) > _MAX_ID_BYTES:
        raise invalid_param(f"{what} is too long")
    return value


def _filter(request: IRequest) -> RoomEventFilter:
    return RoomEventFilter.from_query(query_str(request, "filter"))


def _limit(request: IRequest, default: int = 10) -> int:
    return query_int(request, "limit", default, minimum=0)


def _enum(request: IRequest, name: str, allowed: frozenset[str] | tuple[str, ...], default: str | None = None) -> Any:
    value = query_str(request, name, default)
    if value is not None and value not in allowed:
        raise invalid_param(f"Query parameter '{name}' must be one of {', '.join(sorted(allowed))}")
    return value


class RoomEventsServlet:
    """Sending into rooms and reading them: events, state, members, /messages, /context."""

    def __init__(self, auth: Auth, messages: MessageHandler, history: HistoryHandler) -> None:
        self.auth = auth
        self.sender = messages
        self.reader = history

    # -- sending -------------------------------------------------------------------------------

    @route("PUT", *_paths("/rooms/{room_id}/send/{event_type}/{txn_id}"))
    async def send(self, request: IRequest, room_id: str, event_type: str, txn_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        content = json_body(request)
        event_id = await self.sender.send_event(
            requester, _room_id(room_id), _bounded(event_type, "Event type"), content, txn_id
        )
        return {"event_id": event_id}

    @route("POST", *_paths("/rooms/{room_id}/send/{event_type}"))
    async def send_without_txn(self, request: IRequest, room_id: str, event_type: str) -> JsonDict:
        """The r0-era POST form without a transaction ID, which Synapse still serves (SyTest's
        34room-messages uses it): every call sends a new event, so it gets a fresh transaction ID."""
        return await self.send(request, room_id, event_type, _fresh_txn_id())

    @route("PUT", *_paths("/rooms/{room_id}/state/{event_type}/{state_key}"))
    async def put_state(self, request: IRequest, room_id: str, event_type: str, state_key: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        content = json_body(request)
        event_id = await self.sender.send_state(
            requester, _room_id(room_id), _bounded(event_type, "Event type"), _bounded(state_key, "State key"), content
        )
        return {"event_id": event_id}

    @route("PUT", *_paths("/rooms/{room_id}/state/{event_type}/", "/rooms/{room_id}/state/{event_type}"))
    async def put_state_empty_key(self, request: IRequest, room_id: str, event_type: str) -> JsonDict:
        return await self.put_state(request, room_id, event_type, "")

    @route("PUT", *_paths("/rooms/{room_id}/redact/{event_id}/{txn_id}"))
    async def redact(self, request: IRequest, room_id: str, event_id: str, txn_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        reason = get_str(body, "reason", None)
        event_id = await self.sender.redact(requester, _room_id(room_id), _event_id(event_id), txn_id, reason)
        return {"event_id": event_id}

    @route("POST", *_paths("/rooms/{room_id}/redact/{event_id}"))
    async def redact_without_txn(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        """The r0-era POST form of redact without a transaction ID (as Synapse serves it)."""
        return await self.redact(request, room_id, event_id, _fresh_txn_id())

    # -- state ------------------------------------------------------------------------------------

    @route("GET", *_paths("/rooms/{room_id}/state"))
    async def get_state(self, request: IRequest, room_id: str) -> Any:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.reader.get_state(requester, _room_id(room_id))

    @route("GET", *_paths("/rooms/{room_id}/state/{event_type}/{state_key}"))
    async def get_state_event(self, request: IRequest, room_id: str, event_type: str, state_key: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        fmt = _enum(request, "format", ("content", "event"), "content")
        return await self.reader.get_state_content(
            requester, _room_id(room_id), event_type, state_key, as_event=fmt == "event"
        )

    @route("GET", *_paths("/rooms/{room_id}/state/{event_type}/", "/rooms/{room_id}/state/{event_type}"))
    async def get_state_event_empty_key(self, request: IRequest, room_id: str, event_type: str) -> JsonDict:
        return await self.get_state_event(request, room_id, event_type, "")

    # -- members and rooms -------------------------------------------------------------------------

    @route("GET", *_paths("/rooms/{room_id}/members"))
    async def members(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        at = query_str(request, "at")
        membership = _enum(request, "membership", MEMBERSHIPS)
        not_membership = _enum(request, "not_membership", MEMBERSHIPS)
        chunk = await self.reader.members(requester, _room_id(room_id), at, membership, not_membership)
        return {"chunk": chunk}

    @route("GET", *_paths("/rooms/{room_id}/joined_members"))
    async def joined_members(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"joined": await self.reader.joined_members(requester, _room_id(room_id))}

    @route("GET", *_paths("/joined_rooms"))
    async def joined_rooms(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"joined_rooms": await self.reader.joined_rooms(requester)}

    # -- events and history -------------------------------------------------------------------------

    @route("GET", *_paths("/rooms/{room_id}/event/{event_id}"))
    async def get_event(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.reader.get_event(requester, _room_id(room_id), _event_id(event_id))

    @route("GET", *_paths("/rooms/{room_id}/messages"))
    async def messages(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.reader.messages(
            requester,
            _room_id(room_id),
            from_token=query_str(request, "from"),
            to_token=query_str(request, "to"),
            direction=_enum(request, "dir", ("b", "f"), "f"),
            limit=_limit(request),
            filt=_filter(request),
            encoded=True,
        )

    @route("GET", *_paths("/rooms/{room_id}/context/{event_id}"))
    async def context(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.reader.context(
            requester, _room_id(room_id), _event_id(event_id), limit=_limit(request), filt=_filter(request)
        )

    @route("GET", "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event")
    async def timestamp_to_event(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        ts = query_int(request, "ts")
        if ts is None:
            raise missing_param("Missing query parameter 'ts'")
        direction = _enum(request, "dir", ("b", "f"))
        if direction is None:
            raise missing_param("Missing query parameter 'dir'")
        return await self.reader.timestamp_to_event(requester, _room_id(room_id), ts, direction)
