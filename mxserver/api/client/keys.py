"""End-to-end encryption key routes (keys.yaml, cross_signing.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, json_body, query_str, route
from mxserver.e2ee.cross_signing import CrossSigningHandler
from mxserver.e2ee.dehydrated import DehydratedDeviceHandler
from mxserver.e2ee.device_lists import DeviceListHandler
from mxserver.e2ee.keys import E2eKeysHandler, parse_claim_query, parse_device_query, parse_timeout
from mxserver.errors import missing_param
from mxserver.sync.tokens import StreamToken


class KeysServlet:
    """/keys/upload, /keys/query, /keys/claim, /keys/changes and the cross-signing uploads."""

    def __init__(
        self,
        auth: Auth,
        e2e_keys: E2eKeysHandler,
        device_lists: DeviceListHandler,
        cross_signing: CrossSigningHandler,
    ) -> None:
        self.auth = auth
        self.e2e_keys = e2e_keys
        self.device_lists = device_lists
        self.cross_signing = cross_signing

    @route("POST", "/_matrix/client/v3/keys/upload", "/_matrix/client/v3/keys/upload/{device_id}")
    async def upload(self, request: IRequest, device_id: str | None = None) -> JsonDict:
        # The {device_id} form is r0's; the device is always the access token's.
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.e2e_keys.upload(requester, json_body(request))

    @route("POST", "/_matrix/client/v3/keys/query")
    async def query(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        if "device_keys" not in body:
            raise missing_param("Missing 'device_keys'")
        device_query = parse_device_query(body["device_keys"])
        return await self.e2e_keys.query(requester.user_id, device_query, parse_timeout(body))

    @route("POST", "/_matrix/client/v3/keys/claim")
    async def claim(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        if "one_time_keys" not in body:
            raise missing_param("Missing 'one_time_keys'")
        return await self.e2e_keys.claim(parse_claim_query(body["one_time_keys"]), parse_timeout(body))

    @route("GET", "/_matrix/client/v3/keys/changes")
    async def changes(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        raw_from, raw_to = query_str(request, "from"), query_str(request, "to")
        if raw_from is None:
            raise missing_param("Missing 'from' query parameter")
        if raw_to is None:
            raise missing_param("Missing 'to' query parameter")
        return await self.device_lists.keys_changes(
            requester.user_id, StreamToken.parse(raw_from), StreamToken.parse(raw_to)
        )

    # The unstable paths are where cross-signing lived before v1.1 (MSC1756); Synapse still
    # serves them and SyTest (08-cross-signing.pl) uses them.
    @route("POST", "/_matrix/client/v3/keys/device_signing/upload", "/_matrix/client/unstable/keys/device_signing/upload")
    async def device_signing_upload(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.cross_signing.upload_keys(requester, body, uia_request(request, body))
        return {}

    @route("POST", "/_matrix/client/v3/keys/signatures/upload", "/_matrix/client/unstable/keys/signatures/upload")
    async def signatures_upload(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.cross_signing.upload_signatures(requester, json_body(request))


DEHYDRATED = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"


class DehydratedDeviceServlet:
    """MSC3814 dehydrated devices (see :mod:`mxserver.e2ee.dehydrated`)."""

    def __init__(self, auth: Auth, dehydrated_devices: DehydratedDeviceHandler) -> None:
        self.auth = auth
        self.dehydrated_devices = dehydrated_devices

    @route("PUT", DEHYDRATED)
    async def put(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.dehydrated_devices.put(requester, json_body(request))

    @route("GET", DEHYDRATED)
    async def get(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.dehydrated_devices.get(requester)

    @route("DELETE", DEHYDRATED)
    async def delete(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.dehydrated_devices.delete(requester)

    @route("POST", DEHYDRATED + "/{device_id}/events")
    async def events(self, request: IRequest, device_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        return await self.dehydrated_devices.events(requester, device_id, body)
