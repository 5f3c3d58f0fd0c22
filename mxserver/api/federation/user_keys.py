"""Federation E2EE endpoints: user devices, key queries and one-time key claims
(server-server-api §Device Management and §End-to-End Encryption; user_devices.yaml, user_keys.yaml).

Each request is authenticated (X-Matrix) and may only ask about users of this server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, route
from mxserver.e2ee.keys import parse_claim_query, parse_device_query
from mxserver.errors import invalid_param, missing_param
from mxserver.federation.auth import FederationAuth
from mxserver.ids import UserID

if TYPE_CHECKING:
    from mxserver.e2ee.device_lists import DeviceListHandler
    from mxserver.e2ee.keys import E2eKeysHandler

V1 = "/_matrix/federation/v1"


class UserKeysServlet:
    """Devices and keys of our users, for other servers."""

    def __init__(
        self, server_name: str, auth: FederationAuth, device_lists: DeviceListHandler, e2e_keys: E2eKeysHandler
    ) -> None:
        self.server_name = server_name
        self.auth = auth
        self.device_lists = device_lists
        self.e2e_keys = e2e_keys

    def _local_only(self, user_ids: Any) -> None:
        for user_id in user_ids:
            if UserID.parse(user_id).server_name != self.server_name:
                raise invalid_param(f"{user_id} is not a user of this server")

    @route("GET", f"{V1}/user/devices/{{user_id}}")
    async def user_devices(self, request: IRequest, user_id: str) -> JsonDict:
        await self.auth.authenticate_request(request, None)
        self._local_only([user_id])
        return await self.device_lists.user_devices(user_id)

    @route("POST", f"{V1}/user/keys/query")
    async def query(self, request: IRequest) -> JsonDict:
        body = json_body(request)
        await self.auth.authenticate_request(request, body)
        if "device_keys" not in body:
            raise missing_param("Missing 'device_keys'")
        device_query = parse_device_query(body["device_keys"])
        self._local_only(device_query)
        # requester None: another server asks, so no user-signing keys or signatures of its users.
        return await self.e2e_keys.query_local(device_query, None)

    @route("POST", f"{V1}/user/keys/claim")
    async def claim(self, request: IRequest) -> JsonDict:
        body = json_body(request)
        await self.auth.authenticate_request(request, body)
        if "one_time_keys" not in body:
            raise missing_param("Missing 'one_time_keys'")
        claim_query = parse_claim_query(body["one_time_keys"])
        self._local_only(claim_query)
        return {"one_time_keys": await self.e2e_keys.claim_local(claim_query)}
