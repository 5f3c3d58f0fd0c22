"""Dehydrated devices (MSC3814): create, fetch, receive to-device messages, replace, delete."""

from __future__ import annotations

from typing import Any

from tests.harness import TestUser
from tests.test_keys import C, FakeDevice, KeysTestCase

DD = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"


class DehydratedDeviceTests(KeysTestCase):
    def dehydrated(self, user: TestUser, device_id: str) -> FakeDevice:
        return FakeDevice(TestUser(user.user_id, user.access_token, device_id, user.password))

    def body(self, device: FakeDevice, **extra: Any) -> dict[str, Any]:
        return {
            "device_id": device.device_id,
            "device_data": {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "encrypted"},
            "initial_device_display_name": "Dehydrated",
            "device_keys": device.device_keys(),
            **extra,
        }

    async def test_lifecycle(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        self.assertMatrixError(await self.get(DD, alice.user), 404, "M_NOT_FOUND")
        dd = self.dehydrated(alice.user, "DEHYDRATED1")
        otks = dd.one_time_keys(2)
        self.assertEqual(
            await self.put(DD, self.body(dd, one_time_keys=otks), alice.user), (200, {"device_id": "DEHYDRATED1"})
        )
        code, body = await self.get(DD, alice.user)
        self.assertEqual(
            (code, body["device_id"], body["device_data"]["device_pickle"]), (200, "DEHYDRATED1", "encrypted")
        )

        # Others see its keys and can claim its one-time keys.
        devices = (await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id]
        self.assertEqual(set(devices), {alice.device_id, "DEHYDRATED1"})
        claimed = await self.claim(bob.user, {alice.user_id: {"DEHYDRATED1": "signed_curve25519"}})
        self.assertEqual(len(claimed["one_time_keys"][alice.user_id]["DEHYDRATED1"]), 1)

        # To-device messages wait for it; the events endpoint pages and acknowledges them.
        for i in range(2):
            code, _ = await self.put(
                f"{C}/sendToDevice/m.room.encrypted/t{i}",
                {"messages": {alice.user_id: {"DEHYDRATED1": {"n": i}}}},
                bob.user,
            )
            self.assertEqual(code, 200)
        code, body = await self.post(f"{DD}/DEHYDRATED1/events", {}, alice.user)
        self.assertEqual(code, 200, body)
        self.assertEqual([e["content"]["n"] for e in body["events"]], [0, 1])
        self.assertEqual(body["events"][0]["sender"], bob.user_id)
        code, body = await self.post(f"{DD}/DEHYDRATED1/events", {"next_batch": body["next_batch"]}, alice.user)
        self.assertEqual((code, body["events"]), (200, []))
        self.assertMatrixError(await self.post(f"{DD}/OTHER/events", {}, alice.user), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.post(f"{DD}/DEHYDRATED1/events", {"next_batch": "x"}, alice.user), 400, "M_INVALID_PARAM"
        )

        # A new dehydrated device replaces the old one, keys and all.
        dd2 = self.dehydrated(alice.user, "DEHYDRATED2")
        self.assertEqual((await self.put(DD, self.body(dd2), alice.user))[0], 200)
        devices = (await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id]
        self.assertEqual(set(devices), {alice.device_id, "DEHYDRATED2"})

        self.assertEqual(await self.delete(DD, None, alice.user), (200, {"device_id": "DEHYDRATED2"}))
        self.assertMatrixError(await self.get(DD, alice.user), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(DD, None, alice.user), 404, "M_NOT_FOUND")
        devices = (await self.query(bob.user, {alice.user_id: []}))["device_keys"][alice.user_id]
        self.assertEqual(set(devices), {alice.device_id})

    async def test_bad_input_leaves_nothing(self) -> None:
        alice = await self.new_device("alice")
        dd = self.dehydrated(alice.user, "DD1")
        wrong = self.dehydrated(alice.user, "OTHER")
        for body in (
            {**self.body(dd), "device_data": "x"},
            {**self.body(dd), "device_data": {}},
            {k: v for k, v in self.body(dd).items() if k != "device_keys"},
            {k: v for k, v in self.body(dd).items() if k != "device_id"},
            {**self.body(dd), "device_keys": wrong.device_keys()},
            {**self.body(dd), "one_time_keys": {"bad": "x"}},
        ):
            code, resp = await self.put(DD, body, alice.user)
            self.assertEqual(code, 400, (body, resp))
            self.assertMatrixError(await self.get(DD, alice.user), 404, "M_NOT_FOUND")
        code, body = await self.get(f"{C}/devices", alice.user)
        self.assertEqual([d["device_id"] for d in body["devices"]], [alice.device_id])
        # An ordinary device's ID cannot be taken.
        taken = self.dehydrated(alice.user, alice.device_id)
        self.assertMatrixError(await self.put(DD, self.body(taken), alice.user), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(DD), 401, "M_MISSING_TOKEN")
