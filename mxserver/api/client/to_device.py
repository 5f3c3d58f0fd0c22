"""Send-to-device route (to_device.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.sync.to_device import ToDeviceHandler


class ToDeviceServlet:
    """PUT /sendToDevice/{eventType}/{txnId}."""

    def __init__(self, auth: Auth, to_device: ToDeviceHandler) -> None:
        self.auth = auth
        self.to_device = to_device

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
