"""Send-to-device route (to_device.yaml)."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, route


class ToDeviceServlet:
    def __init__(self, hs: Any) -> None:
        self.auth = hs.auth
        self.to_device = hs.to_device

    @route(
        "PUT",
        "/_matrix/client/v3/sendToDevice/{event_type}/{txn_id}",
        "/_matrix/client/r0/sendToDevice/{event_type}/{txn_id}",
    )
    async def send(self, request: IRequest, event_type: str, txn_id: str) -> JsonDict:
        # guest_access.md lists sendToDevice among the endpoints guests may use.
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        await self.to_device.send(requester.user_id, requester.device_id, event_type, txn_id, body)
        return {}
