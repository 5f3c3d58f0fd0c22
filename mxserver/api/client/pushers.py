"""Pusher routes (pusher.yaml) and ``GET /notifications`` (notifications.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, query_int, query_str, route
from mxserver.push.notification_list import NotificationList
from mxserver.push.pushers import PushersHandler


def _paths(suffix: str) -> list[str]:
    return ["/_matrix/client/v3" + suffix, "/_matrix/client/r0" + suffix]


class PushersServlet:
    def __init__(self, auth: Auth, pushers: PushersHandler, notifications: NotificationList) -> None:
        self.auth = auth
        self.pushers = pushers
        self.notification_list = notifications

    @route("GET", *_paths("/pushers"))
    async def get_pushers(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"pushers": await self.pushers.get_pushers(requester.user_id)}

    @route("POST", *_paths("/pushers/set"))
    async def set_pusher(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        await self.pushers.set_pusher(requester, json_body(request))
        return {}

    @route("GET", *_paths("/notifications"))
    async def notifications(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.notification_list.notifications(
            requester.user_id,
            requester.device_id,
            query_str(request, "from"),
            query_int(request, "limit", None, minimum=0),
            query_str(request, "only"),
        )
