"""/sync device_lists (changed/left across key uploads, joins, leaves, device deletion), /keys/changes,
and the one-time key counts in /sync."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.harness import C, until_waiting
from tests.test_account import password_auth
from tests.test_keys import FakeDevice, KeysTestCase


class DeviceListSyncTests(KeysTestCase):
    async def sync(self, device: FakeDevice, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
        path = f"{C}/sync?timeout={timeout}" + (f"&since={since}" if since else "")
        code, body = await self.get(path, device.user)
        self.assertEqual(code, 200, body)
        return body

    async def room_with(self, creator: FakeDevice, *others: FakeDevice) -> str:
        code, body = await self.post(f"{C}/createRoom", {"preset": "public_chat"}, creator.user)
        self.assertEqual(code, 200, body)
        room_id = body["room_id"]
        for other in others:
            code, body = await self.post(f"{C}/join/{room_id}", {}, other.user)
            self.assertEqual(code, 200, body)
        return room_id

    async def test_key_upload_shows_in_changed_for_room_members_only(self) -> None:
        alice = await self.new_device("alice", upload=False)
        bob = await self.new_device("bob")
        carol = await self.new_device("carol")
        await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        carol_since = (await self.sync(carol))["next_batch"]
        await self.upload(alice, device_keys=alice.device_keys())
        body = await self.sync(bob, since)
        self.assertEqual(body["device_lists"]["changed"], [alice.user_id])
        self.assertEqual(body["device_lists"]["left"], [])
        # Carol shares no room with Alice.
        self.assertEqual((await self.sync(carol, carol_since))["device_lists"]["changed"], [])
        # The next sync has nothing more.
        again = await self.sync(bob, body["next_batch"])
        self.assertEqual(again["device_lists"], {"changed": [], "left": []})
        # One-time keys alone are not a device-list change.
        await self.upload(alice, one_time_keys=alice.one_time_keys(1))
        self.assertEqual((await self.sync(bob, again["next_batch"]))["device_lists"]["changed"], [])

    async def test_long_poll_wakes_on_key_change(self) -> None:
        alice = await self.new_device("alice", upload=False)
        bob = await self.new_device("bob")
        await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        pending = ensureDeferred(self.sync(bob, since, timeout=10_000))
        await until_waiting(self.hs, 1)  # the sync is parked on the notifier
        self.assertFalse(pending.called)
        await self.upload(alice, device_keys=alice.device_keys())
        body = await pending
        self.assertEqual(body["device_lists"]["changed"], [alice.user_id])

    async def test_join_and_leave(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        carol = await self.new_device("carol")
        room = await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        # Carol joins a room Bob is in: she is new to Bob, and Bob is new to her.
        carol_since = (await self.sync(carol))["next_batch"]
        code, _ = await self.post(f"{C}/join/{room}", {}, carol.user)
        self.assertEqual(code, 200)
        body = await self.sync(bob, since)
        self.assertIn(carol.user_id, body["device_lists"]["changed"])
        carol_body = await self.sync(carol, carol_since)
        self.assertEqual(set(carol_body["device_lists"]["changed"]) - {carol.user_id}, {alice.user_id, bob.user_id})
        # Carol leaves: Bob no longer shares a room with her.
        since = body["next_batch"]
        code, _ = await self.post(f"{C}/rooms/{room}/leave", {}, carol.user)
        self.assertEqual(code, 200)
        body = await self.sync(bob, since)
        self.assertEqual(body["device_lists"]["left"], [carol.user_id])
        # Bob leaves too: he shares nothing with Alice any more.
        since = body["next_batch"]
        await self.post(f"{C}/rooms/{room}/leave", {}, bob.user)
        body = await self.sync(bob, since)
        self.assertEqual(body["device_lists"]["left"], [alice.user_id])

    async def test_leaving_one_of_two_shared_rooms_is_not_left(self) -> None:
        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        room1 = await self.room_with(alice, bob)
        await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        await self.post(f"{C}/rooms/{room1}/leave", {}, alice.user)
        self.assertEqual((await self.sync(bob, since))["device_lists"]["left"], [])

    async def test_device_deletion_is_a_change(self) -> None:
        alice = await self.new_device("alice", "A1")
        bob = await self.new_device("bob")
        await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        code, resp = await self.request("DELETE", f"{C}/devices/A1", {}, token=alice.user)
        code, resp = await self.request(
            "DELETE", f"{C}/devices/A1", {"auth": password_auth(alice.user, resp["session"])}, token=alice.user
        )
        self.assertEqual(code, 200, resp)
        body = await self.sync(bob, since)
        self.assertEqual(body["device_lists"]["changed"], [alice.user_id])

    async def test_keys_changes(self) -> None:
        alice = await self.new_device("alice", upload=False)
        bob = await self.new_device("bob")
        await self.room_with(alice, bob)
        start = (await self.sync(bob))["next_batch"]
        await self.upload(alice, device_keys=alice.device_keys())
        end = (await self.sync(bob))["next_batch"]
        code, body = await self.get(f"{C}/keys/changes?from={start}&to={end}", bob.user)
        self.assertEqual((code, body), (200, {"changed": [alice.user_id], "left": []}))
        code, body = await self.get(f"{C}/keys/changes?from={end}&to={end}", bob.user)
        self.assertEqual(body, {"changed": [], "left": []})
        self.assertMatrixError(await self.get(f"{C}/keys/changes?from={start}", bob.user), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.get(f"{C}/keys/changes?from=bad&to={end}", bob.user), 400, "M_INVALID_PARAM")

    async def test_one_time_key_counts_in_sync(self) -> None:
        alice = await self.new_device("alice")
        initial = await self.sync(alice)
        self.assertEqual(initial["device_one_time_keys_count"], {"signed_curve25519": 0})
        self.assertEqual(initial["device_unused_fallback_key_types"], [])
        await self.upload(alice, one_time_keys=alice.one_time_keys(4), fallback_keys=alice.fallback_keys())
        body = await self.sync(alice, initial["next_batch"])
        self.assertEqual(body["device_one_time_keys_count"], {"signed_curve25519": 4})
        self.assertEqual(body["device_unused_fallback_key_types"], ["signed_curve25519"])

    async def test_cross_signing_upload_is_a_change(self) -> None:
        from tests.test_keys_cross_signing import CrossSigningKeys

        alice = await self.new_device("alice")
        bob = await self.new_device("bob")
        await self.room_with(alice, bob)
        since = (await self.sync(bob))["next_batch"]
        code, body = await self.post(
            f"{C}/keys/device_signing/upload", CrossSigningKeys(alice.user_id).upload_body(), alice.user
        )
        self.assertEqual(code, 200, body)
        self.assertEqual((await self.sync(bob, since))["device_lists"]["changed"], [alice.user_id])
