"""The federation sender between two real servers over TLS on loopback."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.two_servers import CLIENT, TestServer, TwoServerTestCase
from tests.utils import TestUser


async def sleep(seconds: float) -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


class SenderEndToEndTests(TwoServerTestCase):
    async def eventually(self, fn: Any, what: str, timeout: float = 20.0) -> Any:
        deadline = reactor.seconds() + timeout
        while True:
            result = await fn()
            if result:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"timed out waiting for {what}")
            await sleep(0.1)

    async def to_device_inbox(self, server: TestServer, user: TestUser) -> list[dict[str, Any]]:
        sync = await server.sync(user)
        return list(sync.get("to_device", {}).get("events", []))

    async def test_to_device_reaches_the_other_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob", device_id="BOBDEV")
        messages = {bob.user_id: {"BOBDEV": {"secret": "s1"}}}
        code, body = await self.a.put(f"{CLIENT}/sendToDevice/m.test/t1", {"messages": messages}, alice)
        self.assertEqual(code, 200, body)
        events = await self.eventually(lambda: self.to_device_inbox(self.b, bob), "to-device at B")
        self.assertEqual(events, [{"type": "m.test", "sender": alice.user_id, "content": {"secret": "s1"}}])
        status = {d["destination"]: d for d in self.a.hs.federation_sender.destinations_status()}
        entry = status[self.b.server_name]
        self.assertIsNotNone(entry["last_success_ts"])
        self.assertFalse(entry["backing_off"])

    async def test_dead_server_backs_off_without_delaying_the_live_one(self) -> None:
        from tests.federation_helpers import free_port

        dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
        alice = await self.a.register("alice")
        bob = await self.b.register("bob", device_id="BOBDEV")
        for i in range(3):
            messages = {f"@ghost:{dead}": {"D": {"n": i}}, bob.user_id: {"BOBDEV": {"n": i}}}
            code, body = await self.a.put(f"{CLIENT}/sendToDevice/m.test/t{i}", {"messages": messages}, alice)
            self.assertEqual(code, 200, body)

        async def all_three() -> list[dict[str, Any]] | None:
            events = await self.to_device_inbox(self.b, bob)
            return events if len(events) == 3 else None

        events = await self.eventually(all_three, "three messages at B")
        self.assertEqual([e["content"]["n"] for e in events], [0, 1, 2])

        async def backing_off() -> dict[str, Any] | None:
            admin = self.a.hs.federation_sender.destinations_status()
            entry = {d["destination"]: d for d in admin}.get(dead)
            return entry if entry and entry["backing_off"] else None

        entry = await self.eventually(backing_off, "backoff of the dead server")
        self.assertGreater(entry["next_retry_ts"], self.now_ms())
        self.assertIsNone(entry["last_success_ts"])
        # What the failed transaction held is kept for its retry, nothing more piles up in memory.
        self.assertLessEqual(entry["pending_edus"], 3)
