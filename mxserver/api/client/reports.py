"""Reporting content: POST /rooms/{roomId}/report/{eventId}, /rooms/{roomId}/report and
/users/{userId}/report (client-server-api §Reporting content, report_content.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.api.ratelimit import RateLimiter
from mxserver.room_handlers.reports import ReportsHandler


class ReportsServlet:
    """Thin: authenticate, rate limit per user (``rate_limits.report``), hand to the handler."""

    def __init__(self, auth: Auth, reports: ReportsHandler, ratelimit: RateLimiter) -> None:
        self.auth = auth
        self.reports = reports
        self.ratelimit = ratelimit

    @route("POST", "/_matrix/client/v3/rooms/{room_id}/report/{event_id}")
    async def report_event(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        self.ratelimit.check(f"report:{requester.user_id}")
        await self.reports.report_event(requester, room_id, event_id, body)
        return {}

    @route("POST", "/_matrix/client/v3/rooms/{room_id}/report")
    async def report_room(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        self.ratelimit.check(f"report:{requester.user_id}")
        await self.reports.report_room(requester, room_id, body)
        return {}

    @route("POST", "/_matrix/client/v3/users/{user_id}/report")
    async def report_user(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        self.ratelimit.check(f"report:{requester.user_id}")
        await self.reports.report_user(requester, user_id, body)
        return {}
