"""Reporting content (client-server-api §Reporting content, report_content.yaml).

Users report an event, a room or a user to this server's administrators; the reports are
stored for them (the admin API lists them). An event may only be reported by a joined
member who can see it; a room or a user may be reported by anyone.
"""

from __future__ import annotations

from typing import Any, Protocol

from mxserver.accounts.auth import Requester
from mxserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from mxserver.events.model import Event
from mxserver.identifier_checks import check_room_id, check_user_id
from mxserver.ids import is_valid_event_id
from mxserver.rooms.visibility import RoomAccess
from mxserver.storage.reports import Report, ReportsStore

#: the longest reason kept (the request body is bounded anyway; this bounds the table)
MAX_REASON_LENGTH = 10_000

#: report_content.yaml v1.17 and before: ``score`` from -100 (most offensive) to 0 (inoffensive)
SCORE_RANGE = range(-100, 1)


class VisibleEvents(Protocol):
    async def visible_timeline_event(self, user_id: str, room_id: str, event_id: str) -> tuple[Event, RoomAccess]: ...


class KnownRooms(Protocol):
    async def get_room(self, room_id: str) -> Any: ...


class KnownUsers(Protocol):
    def get_user(self, user_id: str) -> Any: ...


class Clock(Protocol):
    def seconds(self) -> float: ...


class ReportsHandler:
    """Validates and stores reports."""

    def __init__(
        self,
        store: ReportsStore,
        visibility: VisibleEvents,
        rooms: KnownRooms,
        users: KnownUsers,
        server_name: str,
        clock: Clock,
    ) -> None:
        self._store = store
        self._visibility = visibility
        self._rooms = rooms
        self._users = users
        self._suffix = ":" + server_name
        self._clock = clock

    async def recent(self, limit: int, before_id: int | None = None) -> list[Report]:
        """Stored reports, newest first (for administrators)."""
        return await self._store.recent(limit, before_id)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def report_event(self, requester: Requester, room_id: str, event_id: str, body: dict[str, Any]) -> int:
        """The report's ID. "The caller must be joined to the room to report it" (v1.8), and
        may only report what they can see: M_NOT_FOUND otherwise, alike for every case, so
        that a report tells nothing about events the caller cannot see."""
        check_room_id(room_id)
        if not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        reason = _reason(body, required=False)
        score = body.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int) or score not in SCORE_RANGE):
            raise invalid_param("score must be an integer from -100 to 0")
        gone = not_found("The event was not found or you are not joined to the room.")
        try:
            _, access = await self._visibility.visible_timeline_event(requester.user_id, room_id, event_id)
        except MatrixError as e:
            if e.errcode == "M_NOT_FOUND":
                raise gone from None
            raise
        if access.membership != "join":
            raise gone
        return await self._store.add(
            "event", requester.user_id, self._now_ms(), room_id=room_id, event_id=event_id, reason=reason, score=score
        )

    async def report_room(self, requester: Requester, room_id: str, body: dict[str, Any]) -> int:
        """The caller need not be joined; the room must be known to this server."""
        check_room_id(room_id)
        reason = _reason(body, required=True)
        if await self._rooms.get_room(room_id) is None:
            raise not_found("The room was not found.")
        return await self._store.add("room", requester.user_id, self._now_ms(), room_id=room_id, reason=reason)

    async def report_user(self, requester: Requester, user_id: str, body: dict[str, Any]) -> int:
        """A local user must exist; a user of another server is taken as reported (this server
        cannot tell whether they exist)."""
        check_user_id(user_id)
        reason = _reason(body, required=True)
        if user_id.endswith(self._suffix) and await self._users.get_user(user_id) is None:
            raise not_found("The user was not found.")
        return await self._store.add("user", requester.user_id, self._now_ms(), target_user_id=user_id, reason=reason)


def _reason(body: dict[str, Any], required: bool) -> str | None:
    """The ``reason``: a string (room and user reports require it, blank allowed)."""
    reason = body.get("reason")
    if reason is None:
        if required:
            raise missing_param("Missing 'reason'")
        return None
    if not isinstance(reason, str):
        raise bad_json("'reason' must be a string")
    if len(reason) > MAX_REASON_LENGTH:
        raise invalid_param(f"'reason' is longer than {MAX_REASON_LENGTH} characters")
    return reason
