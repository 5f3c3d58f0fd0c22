"""Dehydrated devices (MSC3814, unstable prefix ``org.matrix.msc3814.v1``).

``hs.dehydrated_devices``. A user may park one device on the server: a
device without access tokens whose keys are published like any other's, so
others can start Olm sessions with it and send it to-device messages while
none of the user's clients is online. A new client later fetches the
device's (client-encrypted) pickle with GET, downloads the messages queued
for it with POST .../events, and replaces it with a fresh dehydrated device.
"""

from __future__ import annotations

from typing import Any

import attrs

from mxserver.accounts.devices import MAX_DEVICE_ID_LENGTH, MAX_DISPLAY_NAME_LENGTH
from mxserver.api.http import get_dict, get_str
from mxserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from mxserver.storage.e2ee_dehydrated import DehydratedDeviceStore, DeviceIdTaken

JsonDict = dict[str, Any]


@attrs.frozen
class _DeviceRequester:
    """Who uploads the dehydrated device's keys: the user, as that device."""

    user_id: str
    device_id: str


class DehydratedDeviceHandler:
    def __init__(self, hs: Any, store: DehydratedDeviceStore) -> None:
        self.hs = hs
        self.store = store

    async def put(self, requester: Any, body: JsonDict) -> JsonDict:
        user_id = requester.user_id
        device_id = get_str(body, "device_id", max_length=MAX_DEVICE_ID_LENGTH)
        if not device_id:
            raise invalid_param("'device_id' must not be empty")
        device_data = get_dict(body, "device_data")
        if not isinstance(device_data.get("algorithm"), str):
            raise bad_json("'device_data.algorithm' must be a string")
        display_name = get_str(body, "initial_device_display_name", None, max_length=MAX_DISPLAY_NAME_LENGTH)
        if body.get("device_keys") is None:
            raise missing_param("Missing 'device_keys'")
        keys_body = {k: body[k] for k in ("device_keys", "one_time_keys", "fallback_keys") if k in body}

        # The previous dehydrated device goes, with its keys and queued messages.
        old = await self.store.get(user_id)
        if old is not None:
            await self.store.delete(user_id)
            await self.hs.devices.remove_devices(user_id, [old[0]])
        now_ms = int(self.hs.clock.seconds() * 1000)
        try:
            await self.store.create(user_id, device_id, display_name, device_data, now_ms)
        except DeviceIdTaken:
            raise invalid_param(f"{device_id} is already one of your devices") from None
        try:
            await self.hs.e2e_keys.upload(_DeviceRequester(user_id, device_id), keys_body)
        except MatrixError:
            # Bad keys: no half-made device stays behind.
            await self.store.delete(user_id)
            await self.hs.devices.remove_devices(user_id, [device_id])
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
        await self.hs.devices.remove_devices(requester.user_id, [device_id])
        return {"device_id": device_id}

    async def events(self, requester: Any, device_id: str, body: JsonDict) -> JsonDict:
        """The to-device messages queued for the dehydrated device, in batches.

        ``next_batch`` from the previous answer acknowledges (deletes) what it covered.
        """
        found = await self.store.get(requester.user_id)
        if found is None or found[0] != device_id:
            raise not_found("No such dehydrated device")
        raw = get_str(body, "next_batch", None)
        if raw is None:
            since = 0
        elif raw.isdigit() and len(raw) < 19:
            since = int(raw)
        else:
            raise invalid_param("Unknown 'next_batch'")
        to_device = self.hs.to_device
        if since:
            await to_device.ack_to_device(requester.user_id, device_id, since)
        messages, position = await to_device.get_to_device_for_sync(requester.user_id, device_id, since)
        return {"events": messages, "next_batch": str(position)}
