"""Dehydrated devices (MSC3814, unstable prefix ``org.matrix.msc3814.v1``).

The Homeserver's ``dehydrated_devices``. A user may park one device on the server: a
device without access tokens whose keys are published like any other's, so
others can start Olm sessions with it and send it to-device messages while
none of the user's clients is online. A new client later fetches the
device's (client-encrypted) pickle with GET, downloads the messages queued
for it with POST .../events, and replaces it with a fresh dehydrated device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.devices import MAX_DEVICE_ID_LENGTH, MAX_DISPLAY_NAME_LENGTH
from mxserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from mxserver.storage.e2ee_dehydrated import DehydratedDeviceStore, DeviceIdTaken

if TYPE_CHECKING:
    from mxserver.accounts.devices import DeviceHandler
    from mxserver.e2ee.keys import E2eKeysHandler
    from mxserver.sync.to_device import ToDeviceHandler

JsonDict = dict[str, Any]


def _field(body: JsonDict, key: str, kind: type, what: str, required: bool, max_length: int | None = None) -> Any:
    """``body[key]`` checked to be a ``kind``; absent (or null, when optional) gives None.

    The same answers as the request-body helpers of the HTTP layer, which handlers do not import.
    """
    if key not in body or (body[key] is None and not required):
        if required:
            raise missing_param(f"Missing '{key}'")
        return None
    value = body[key]
    if not isinstance(value, kind):
        raise bad_json(f"'{key}' must be {what}")
    if max_length is not None and isinstance(value, str) and len(value) > max_length:
        raise bad_json(f"'{key}' is too long")
    return value


@attrs.frozen
class _DeviceRequester:
    """Who uploads the dehydrated device's keys: the user, as that device."""

    user_id: str
    device_id: str


class DehydratedDeviceHandler:
    """PUT/GET/DELETE the dehydrated device, and the to-device messages queued for it."""

    def __init__(
        self,
        store: DehydratedDeviceStore,
        devices: DeviceHandler,
        e2e_keys: E2eKeysHandler,
        to_device: ToDeviceHandler,
        clock: IReactorTime,
    ) -> None:
        self.store = store
        self._devices = devices
        self._e2e_keys = e2e_keys
        self._to_device = to_device
        self._clock = clock

    async def put(self, requester: Any, body: JsonDict) -> JsonDict:
        user_id = requester.user_id
        device_id = _field(body, "device_id", str, "a string", True, MAX_DEVICE_ID_LENGTH)
        if not device_id:
            raise invalid_param("'device_id' must not be empty")
        device_data = _field(body, "device_data", dict, "an object", True)
        if not isinstance(device_data.get("algorithm"), str):
            raise bad_json("'device_data.algorithm' must be a string")
        display_name = _field(body, "initial_device_display_name", str, "a string", False, MAX_DISPLAY_NAME_LENGTH)
        if body.get("device_keys") is None:
            raise missing_param("Missing 'device_keys'")
        keys_body: JsonDict = {k: body[k] for k in ("device_keys", "one_time_keys", "fallback_keys") if k in body}

        # The previous dehydrated device goes, with its keys and queued messages.
        old = await self.store.get(user_id)
        if old is not None:
            await self.store.delete(user_id)
            await self._devices.remove_devices(user_id, [old[0]])
        now_ms = int(self._clock.seconds() * 1000)
        try:
            await self.store.create(user_id, device_id, display_name, device_data, now_ms)
        except DeviceIdTaken:
            raise invalid_param(f"{device_id} is already one of your devices") from None
        try:
            await self._e2e_keys.upload(_DeviceRequester(user_id, device_id), keys_body)
        except MatrixError:
            # Bad keys: no half-made device stays behind.
            await self.store.delete(user_id)
            await self._devices.remove_devices(user_id, [device_id])
            raise
        return {"device_id": device_id}

    async def get(self, requester: Any) -> JsonDict:
        found = await self.store.get(requester.user_id)
        if found is None:
            raise not_found("No dehydrated device")
        return {"device_id": found[0], "device_data": found[1]}

    async def delete(self, requester: Any) -> JsonDict:
        device_id = await self.store.delete(requester.user_id)
        if device_id is None:
            raise not_found("No dehydrated device")
        await self._devices.remove_devices(requester.user_id, [device_id])
        return {"device_id": device_id}

    async def events(self, requester: Any, device_id: str, body: JsonDict) -> JsonDict:
        """The to-device messages queued for the dehydrated device, in batches.

        ``next_batch`` from the previous answer acknowledges (deletes) what it covered.
        """
        found = await self.store.get(requester.user_id)
        if found is None or found[0] != device_id:
            raise not_found("No such dehydrated device")
        raw = _field(body, "next_batch", str, "a string", False)
        if raw is None:
            since = 0
        elif raw.isdigit() and len(raw) < 19:
            since = int(raw)
        else:
            raise invalid_param("Unknown 'next_batch'")
        to_device = self._to_device
        if since:
            await to_device.ack_to_device(requester.user_id, device_id, since)
        messages, position = await to_device.get_to_device_for_sync(requester.user_id, device_id, since)
        return {"events": messages, "next_batch": str(position)}
