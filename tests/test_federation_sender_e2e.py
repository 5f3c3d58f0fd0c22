"""The federation sender between two real servers over TLS on loopback."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from mxserver.federation.remote_rooms import q
from mxserver.homeserver import Homeserver
from tests.harness import C, TestServer, TestUser, TwoServerTestCase


async def sleep(seconds: float) -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


class _Helpers(TwoServerTestCase):
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


class SenderEndToEndTests(_Helpers):
    async def test_to_device_reaches_the_other_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob", device_id="BOBDEV")
        messages = {bob.user_id: {"BOBDEV": {"secret": "s1"}}}
        code, body = await self.a.put(f"{C}/sendToDevice/m.test/t1", {"messages": messages}, alice)
        self.assertEqual(code, 200, body)
        events = await self.eventually(lambda: self.to_device_inbox(self.b, bob), "to-device at B")
        self.assertEqual(events, [{"type": "m.test", "sender": alice.user_id, "content": {"secret": "s1"}}])
        status = {d["destination"]: d for d in self.a.hs.federation_sender.destinations_status()}
        entry = status[self.b.server_name]
        self.assertIsNotNone(entry["last_success_ts"])
        self.assertFalse(entry["backing_off"])

    async def test_dead_server_backs_off_without_delaying_the_live_one(self) -> None:
        from tests.harness import free_port

        dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
        alice = await self.a.register("alice")
        bob = await self.b.register("bob", device_id="BOBDEV")
        for i in range(3):
            messages = {f"@ghost:{dead}": {"D": {"n": i}}, bob.user_id: {"BOBDEV": {"n": i}}}
            code, body = await self.a.put(f"{C}/sendToDevice/m.test/t{i}", {"messages": messages}, alice)
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


class RoomTrafficTests(_Helpers):
    """Bob (B) creates a public room, Alice (A) joins it through B."""

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")
        self.room = await self.b.create_room(self.bob, {"preset": "public_chat"})
        code, body = await self.a.post(f"{C}/join/{q(self.room)}?server_name={q(self.b.server_name)}", {}, self.alice)
        self.assertEqual(code, 200, body)

    async def say(self, server: TestServer, user: TestUser, text: str) -> str:
        code, body = await server.put(
            f"{C}/rooms/{q(self.room)}/send/m.room.message/{text}", {"msgtype": "m.text", "body": text}, user
        )
        self.assertEqual(code, 200, body)
        return str(body["event_id"])

    async def bodies(self, server: TestServer, user: TestUser) -> list[str]:
        code, body = await server.get(f"{C}/rooms/{q(self.room)}/messages?dir=b&limit=100", user)
        if code != 200:
            return []
        return [e["content"].get("body") for e in reversed(body["chunk"]) if e["type"] == "m.room.message"]

    def ephemeral(self, sync: dict[str, Any], event_type: str) -> list[dict[str, Any]]:
        room = sync.get("rooms", {}).get("join", {}).get(self.room, {})
        return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]

    async def test_messages_in_order(self) -> None:
        texts = [f"m{i}" for i in range(8)]
        for text in texts:
            await self.say(self.a, self.alice, text)

        async def arrived() -> bool:
            return (await self.bodies(self.b, self.bob)) == texts

        await self.eventually(arrived, "all messages at B, in order")

    async def test_typing_reaches_the_other_server(self) -> None:
        code, body = await self.a.put(
            f"{C}/rooms/{q(self.room)}/typing/{q(self.alice.user_id)}", {"typing": True, "timeout": 20000}, self.alice
        )
        self.assertEqual(code, 200, body)

        async def typing_at_b() -> list[dict[str, Any]]:
            events = self.ephemeral(await self.b.sync(self.bob), "m.typing")
            return [e for e in events if self.alice.user_id in e["content"]["user_ids"]]

        await self.eventually(typing_at_b, "typing at B")
        code, body = await self.a.put(
            f"{C}/rooms/{q(self.room)}/typing/{q(self.alice.user_id)}", {"typing": False}, self.alice
        )
        self.assertEqual(code, 200, body)

        async def stopped_at_b() -> bool:
            return not await typing_at_b()

        await self.eventually(stopped_at_b, "typing stopped at B")

    async def test_read_receipt_reaches_the_other_server(self) -> None:
        event_id = await self.say(self.b, self.bob, "read me")

        async def at_a() -> bool:
            return "read me" in await self.bodies(self.a, self.alice)

        await self.eventually(at_a, "message at A")
        code, body = await self.a.post(f"{C}/rooms/{q(self.room)}/receipt/m.read/{q(event_id)}", {}, self.alice)
        self.assertEqual(code, 200, body)

        async def receipt_at_b() -> bool:
            for e in self.ephemeral(await self.b.sync(self.bob), "m.receipt"):
                if self.alice.user_id in e["content"].get(event_id, {}).get("m.read", {}):
                    return True
            return False

        await self.eventually(receipt_at_b, "receipt at B")

    async def test_kick_reaches_the_kicked_users_server(self) -> None:
        code, body = await self.b.post(
            f"{C}/rooms/{q(self.room)}/kick", {"user_id": self.alice.user_id, "reason": "out"}, self.bob
        )
        self.assertEqual(code, 200, body)

        async def kicked_at_a() -> bool:
            path = f"{C}/rooms/{q(self.room)}/state/m.room.member/{q(self.alice.user_id)}"
            code, body = await self.a.get(path, self.alice)
            return code == 200 and body.get("membership") == "leave" and body.get("reason") == "out"

        await self.eventually(kicked_at_a, "the kick at A")

    async def test_catch_up_after_the_other_server_was_down(self) -> None:
        await self.say(self.a, self.alice, "before")

        async def before_at_b() -> bool:
            return "before" in await self.bodies(self.b, self.bob)

        await self.eventually(before_at_b, "first message at B")
        config = self.b.hs.config
        await self.b.hs.stopService()
        # A stopped process takes its connections with it; in one test process they linger.
        await self.a.hs.federation_client.pool.closeCachedConnections()
        for i in range(4):
            await self.say(self.a, self.alice, f"while down {i}")
        sender = self.a.hs.federation_sender

        async def a_backs_off() -> bool:
            entry = {d["destination"]: d for d in sender.destinations_status()}.get(self.b.server_name)
            return bool(entry and entry["backing_off"])

        await self.eventually(a_backs_off, "A backing off from B")
        hs = Homeserver(config, reactor)
        hs.startService()
        self.addCleanup(hs.stopService)
        await hs.when_ready()
        self.b.hs = hs
        self.b.base_url = f"http://127.0.0.1:{hs.listening_ports[0].getHost().port}"
        # B talks to A again (Bob speaks): A stops backing off, sends the room's latest event,
        # and B fetches the ones before it from A (get_missing_events).
        await self.say(self.b, self.bob, "back")
        want = {"before", "back"} | {f"while down {i}" for i in range(4)}

        async def all_at_b() -> bool:
            return set(await self.bodies(self.b, self.bob)) == want

        await self.eventually(all_at_b, "every message at B after the catch-up")
        entry = {d["destination"]: d for d in sender.destinations_status()}[self.b.server_name]
        self.assertFalse(entry["backing_off"])
        self.assertFalse(entry["catching_up"])
