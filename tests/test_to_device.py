"""Send-to-device messaging: sending, idempotency, sync delivery and acknowledgement, device removal."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from mxserver.homeserver import Homeserver
from tests.harness import C, TestUser
from tests.test_account import UIAMixin


class ToDeviceTests(UIAMixin):
    async def send(
        self, sender: TestUser, messages: Any, txn_id: str = "t1", event_type: str = "m.test"
    ) -> tuple[int, Any]:
        return await self.put(f"{C}/sendToDevice/{event_type}/{txn_id}", {"messages": messages}, sender)

    async def login_device(self, user: TestUser, device_id: str) -> TestUser:
        code, body = await self.login(user.user_id, user.password, device_id=device_id)
        self.assertEqual(code, 200, body)
        return TestUser(body["user_id"], body["access_token"], body["device_id"], user.password)

    async def inbox(self, user: TestUser, device_id: str | None = None, since: int = 0, limit: int = 100) -> Any:
        return await self.hs.to_device.get_to_device_for_sync(user.user_id, device_id or user.device_id, since, limit)

    async def test_send_and_deliver(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="BOBPHONE")
        start = self.hs.to_device.current_position
        self.assertEqual(await self.send(alice, {bob.user_id: {"BOBPHONE": {"secret": "s3"}}}), (200, {}))
        position = self.hs.to_device.current_position
        self.assertEqual(position, start + 1)
        self.assertEqual(self.hs.notifier.current_token().to_device, position)
        messages, next_pos = await self.inbox(bob)
        self.assertEqual(messages, [{"type": "m.test", "sender": alice.user_id, "content": {"secret": "s3"}}])
        self.assertEqual(next_pos, position)
        # Not acknowledged yet: a repeated sync from the same point sees it again.
        self.assertEqual((await self.inbox(bob))[0], messages)
        # Nothing after it.
        self.assertEqual(await self.inbox(bob, since=next_pos), ([], position))
        # Alice's own device got nothing.
        self.assertEqual((await self.inbox(alice))[0], [])

    async def test_ack_deletes(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        await self.send(alice, {bob.user_id: {"B1": {"n": 1}}}, "t1")
        first = self.hs.to_device.current_position
        await self.send(alice, {bob.user_id: {"B1": {"n": 2}}}, "t2")
        # The client's next since shows it received the first one: it is deleted, the second stays.
        await self.hs.to_device.ack_to_device(bob.user_id, "B1", first)
        messages, _ = await self.inbox(bob, since=0)
        self.assertEqual([m["content"]["n"] for m in messages], [2])
        await self.hs.to_device.ack_to_device(bob.user_id, "B1", self.hs.to_device.current_position)
        self.assertEqual((await self.inbox(bob, since=0))[0], [])
        # A token from the future does not delete messages sent later.
        await self.hs.to_device.ack_to_device(bob.user_id, "B1", 10**9)
        await self.send(alice, {bob.user_id: {"B1": {"n": 3}}}, "t3")
        self.assertEqual([m["content"]["n"] for m in (await self.inbox(bob, since=first + 1))[0]], [3])

    async def test_wildcard_and_unknown_devices(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        await self.login_device(bob, "B2")
        await self.send(alice, {bob.user_id: {"*": {"all": True}}}, "t1")
        for device in ("B1", "B2"):
            messages, _ = await self.inbox(bob, device)
            self.assertEqual([m["content"] for m in messages], [{"all": True}], device)
        # Devices that do not exist get nothing (and nothing is kept for them).
        await self.send(alice, {bob.user_id: {"GHOST": {"x": 1}, "B2": {"x": 2}}}, "t2")
        self.assertEqual((await self.inbox(bob, "GHOST"))[0], [])
        self.assertEqual([m["content"] for m in (await self.inbox(bob, "B2"))[0]], [{"all": True}, {"x": 2}])

    async def test_idempotent_per_device_and_path(self) -> None:
        alice = await self.register("alice", device_id="A1")
        bob = await self.register("bob", device_id="B1")
        msg = {bob.user_id: {"B1": {"n": 1}}}
        self.assertEqual(await self.send(alice, msg, "same"), (200, {}))
        position = self.hs.to_device.current_position
        # A retransmission answers the same and delivers nothing twice, even with another body.
        self.assertEqual(await self.send(alice, msg, "same"), (200, {}))
        self.assertEqual(await self.send(alice, {bob.user_id: {"B1": {"n": 99}}}, "same"), (200, {}))
        self.assertEqual(self.hs.to_device.current_position, position)
        self.assertEqual(len((await self.inbox(bob))[0]), 1)
        # Another txn ID, another event type (another path), or another device of the sender is new.
        await self.send(alice, msg, "other")
        await self.send(alice, msg, "same", event_type="m.other")
        second = await self.login_device(alice, "A2")
        await self.send(second, msg, "same")
        self.assertEqual(len((await self.inbox(bob))[0]), 4)

    async def test_limit_and_paging(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        for i in range(5):
            await self.send(alice, {bob.user_id: {"B1": {"n": i}}}, f"t{i}")
        since = 0
        seen: list[int] = []
        for _ in range(3):
            messages, since = await self.inbox(bob, since=since, limit=2)
            seen += [m["content"]["n"] for m in messages]
        # send_to_device.md: "in order of arrival".
        self.assertEqual(seen, [0, 1, 2, 3, 4])
        self.assertEqual(since, self.hs.to_device.current_position)
        self.assertEqual(await self.inbox(bob, since=since, limit=2), ([], since))
        self.assertEqual(await self.inbox(bob, since=0, limit=0), ([], 0))
        self.assertEqual(await self.hs.to_device.get_to_device_for_sync(bob.user_id, None, 0), ([], since))

    async def test_to_pos_bounds_the_batch(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        await self.send(alice, {bob.user_id: {"B1": {"n": 1}}}, "t1")
        upper = self.hs.to_device.current_position
        await self.send(alice, {bob.user_id: {"B1": {"n": 2}}}, "t2")
        messages, next_pos = await self.hs.to_device.get_to_device_for_sync(bob.user_id, "B1", 0, to_pos=upper)
        self.assertEqual(([m["content"]["n"] for m in messages], next_pos), ([1], upper))

    async def test_wakes_the_targets_sync(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        carol = await self.register("carol")
        waiting_bob = ensureDeferred(self.hs.notifier.wait(bob.user_id, [], 30_000))
        waiting_carol = ensureDeferred(self.hs.notifier.wait(carol.user_id, [], 30_000))
        await self.send(alice, {bob.user_id: {"B1": {}}})
        self.assertTrue(waiting_bob.called)
        self.assertFalse(waiting_carol.called)
        await self.send(alice, {carol.user_id: {"*": {}}}, "t2")
        self.assertTrue(waiting_carol.called)

    async def test_remote_users_are_skipped(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        code, _ = await self.send(alice, {"@someone:remote.example": {"D": {"x": 1}}, bob.user_id: {"B1": {"y": 2}}})
        self.assertEqual(code, 200)
        self.assertEqual([m["content"] for m in (await self.inbox(bob))[0]], [{"y": 2}])

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        path = f"{C}/sendToDevice/m.test"
        self.assertMatrixError(await self.put(f"{path}/t", {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(f"{path}/t", {"messages": []}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(f"{path}/t", {"messages": {bob.user_id: "x"}}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{path}/t", {"messages": {bob.user_id: {"B1": "text"}}}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.put(f"{path}/t", {"messages": {"bob": {"B1": {}}}}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.put(f"{path}/t", {"messages": {bob.user_id: {"": {}}}}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.request("PUT", f"{path}/t", raw=b"[", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(f"{path}/t", [1], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{C}/sendToDevice/{'x' * 256}/t", {"messages": {}}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.put(f"{path}/{'t' * 256}", {"messages": {}}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{path}/t", {"messages": {}}, None), 401, "M_MISSING_TOKEN")
        # A refused request neither delivered anything nor used up its transaction ID.
        self.assertEqual((await self.inbox(bob))[0], [])
        self.assertEqual(await self.put(f"{path}/t", {"messages": {bob.user_id: {"B1": {"ok": 1}}}}, alice), (200, {}))
        self.assertEqual([m["content"] for m in (await self.inbox(bob))[0]], [{"ok": 1}])
        # An empty messages object is fine.
        self.assertEqual(await self.put(f"{path}/t2", {"messages": {}}, alice), (200, {}))

    async def test_deleting_a_device_drops_its_queue(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        await self.login_device(bob, "B2")
        await self.send(alice, {bob.user_id: {"*": {"n": 1}}}, "t1")
        code, body = await self.with_password_uia("DELETE", f"{C}/devices/B2", {}, bob)
        self.assertEqual(code, 200, body)
        # Bob logs in again with the old device ID: the old queue did not survive.
        await self.login_device(bob, "B2")
        self.assertEqual((await self.inbox(bob, "B2"))[0], [])
        self.assertEqual(len((await self.inbox(bob, "B1"))[0]), 1)

    async def test_logout_everywhere_drops_queues(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        await self.send(alice, {bob.user_id: {"B1": {"n": 1}}}, "t1")
        self.assertEqual((await self.post(f"{C}/logout/all", {}, bob))[0], 200)
        await self.login_device(bob, "B1")
        self.assertEqual((await self.inbox(bob, "B1"))[0], [])

    async def test_position_persists_across_restart(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="B1")
        for i in range(3):
            await self.send(alice, {bob.user_id: {"B1": {"n": i}}}, f"t{i}")
        last = self.hs.to_device.current_position
        await self.send(alice, {bob.user_id: {"B1": {"n": 9}}}, "t1")  # a retry: no new position
        self.assertEqual(self.hs.to_device.current_position, last)
        # Deliver and delete everything: the position must not go back with the rows.
        await self.hs.to_device.ack_to_device(bob.user_id, "B1", last)
        await self.hs.stopService()
        self.hs = Homeserver(self.config)
        self.hs.startService()
        self.addCleanup(self.hs.stopService)
        await self.hs.when_ready()
        self.base_url = f"http://127.0.0.1:{self.hs.listening_ports[0].getHost().port}"
        self.assertEqual(self.hs.to_device.current_position, last)
        self.assertEqual(self.hs.notifier.current_token().to_device, last)
        # Transaction IDs survive the restart too.
        await self.send(alice, {bob.user_id: {"B1": {"n": 9}}}, "t1")
        self.assertEqual(self.hs.to_device.current_position, last)
        await self.send(alice, {bob.user_id: {"B1": {"n": 10}}}, "t10")
        self.assertEqual(self.hs.to_device.current_position, last + 1)
        expected = [{"type": "m.test", "sender": alice.user_id, "content": {"n": 10}}]
        self.assertEqual(await self.inbox(bob, since=last), (expected, last + 1))
