"""Device management routes (device_management.yaml)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.devices import MAX_DEVICE_ID_LENGTH, MAX_DISPLAY_NAME_LENGTH, DeviceHandler
from mxserver.api.client.uia import uia_request
from mxserver.api.http import JsonDict, get_str, get_str_list, json_body, route
from mxserver.errors import invalid_param


def device_id_param(body: JsonDict) -> str | None:
    """The optional ``device_id`` of /login and /register."""
    device_id = get_str(body, "device_id", None, max_length=MAX_DEVICE_ID_LENGTH)
    if device_id == "":
        raise invalid_param("'device_id' must not be empty")
    return device_id


def display_name_param(body: JsonDict, key: str) -> str | None:
    return get_str(body, key, None, max_length=MAX_DISPLAY_NAME_LENGTH)


class DevicesServlet:
    """Listing, renaming and deleting the requester's devices."""

    def __init__(self, auth: Auth, devices: DeviceHandler) -> None:
        self.auth = auth
        self.devices = devices

    @route("GET", "/_matrix/client/v3/devices")
    async def list_devices(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return {"devices": await self.devices.list_devices(requester)}

    @route("GET", "/_matrix/client/v3/devices/{device_id}")
    async def get_device(self, request: IRequest, device_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return await self.devices.get_device(requester, device_id)

    @route("PUT", "/_matrix/client/v3/devices/{device_id}")
    async def update_device(self, request: IRequest, device_id: str) -> JsonDict | tuple[int, JsonDict]:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        display_name = display_name_param(body, "display_name")
        if requester.app_service is not None:
            # MSC4190: 201 for a device the application service just created
            created = await self.devices.put_appservice_device(requester, device_id, display_name)
            return (201, {}) if created else {}
        await self.devices.update_device(requester, device_id, display_name)
        return {}

    @route("DELETE", "/_matrix/client/v3/devices/{device_id}")
    async def delete_device(self, request: IRequest, device_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        # Clients often send no body at all on the first (flow-discovering) attempt.
        body = json_body(request, allow_empty=True)
        await self.devices.delete_devices(requester, [device_id], uia_request(request, body))
        return {}

    @route("POST", "/_matrix/client/v3/delete_devices")
    async def delete_devices(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        device_ids = get_str_list(body, "devices")
        await self.devices.delete_devices(requester, device_ids, uia_request(request, body))
        return {}
