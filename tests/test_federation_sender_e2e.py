"""The federation sender between two real servers over TLS on loopback."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from mxserver.federation.remote_rooms import q
from mxserver.homeserver import Homeserver
from tests.harness import C, TestServer, TestUser, TwoServerTestCase


class _Helpers(TwoServerTestCase):
    async def to_device_until(self, server: TestServer, user: TestUser, count: int, what: str) -> list[dict[str, Any]]:
        """The user's to-device messages, once ``count`` have come (long-polling /sync)."""
        inbox: list[dict[str, Any]] = []

        def arrived(sync: dict[str, Any]) -> list[dict[str, Any]] | None:
            inbox.extend(sync.get("to_device", {}).get("events", []))
            return inbox if len(inbox) >= count else None

        events: list[dict[str, Any]] | None = await server.sync_until(user, arrived, what)
        assert events is not None
        return events


class SenderEndToEndTests(_Helpers):
    async def test_to_device_reaches_the_other_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob", device_id="BOBDEV")
        messages = {bob.user_id: {"BOBDEV": {"secret": "s1"}}}
        code, body = await self.a.put(f"{C}/sendToDevice/m.test/t1", {"messages": messages}, alice)
        self.assertEqual(code, 200, body)
        events = await self.to_device_until(self.b, bob, 1, "to-device at B")
        self.assertEqual(events, [{"type": "m.test", "sender": alice.user_id, "content": {"secret": "s1"}}])

        # B can deliver the message before A has read B's answer: wait for A to record it.
        async def recorded() -> dict[str, Any] | None:
            status = {d["destination"]: d for d in self.a.hs.federation_sender.destinations_status()}
            entry = status.get(self.b.server_name)
            return entry if entry is not None and entry["last_success_ts"] is not None else None

        entry = await self.wait_until(recorded, "A's record of its transaction to B succeeding")
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

        events = await self.to_device_until(self.b, bob, 3, "three messages at B")
        self.assertEqual([e["content"]["n"] for e in events], [0, 1, 2])

        async def backing_off() -> dict[str, Any] | None:
            admin = self.a.hs.federation_sender.destinations_status()
            entry = {d["destination"]: d for d in admin}.get(dead)
            return entry if entry and entry["backing_off"] else None

        entry = await self.wait_until(backing_off, "backoff of the dead server")
        assert entry is not None
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

        await self.wait_until(arrived, "all messages at B, in order")

    async def test_typing_reaches_the_other_server(self) -> None:
        code, body = await self.a.put(
            f"{C}/rooms/{q(self.room)}/typing/{q(self.alice.user_id)}", {"typing": True, "timeout": 20000}, self.alice
        )
        self.assertEqual(code, 200, body)

        def typing_at_b(sync: dict[str, Any]) -> list[list[str]]:
            return [e["content"]["user_ids"] for e in self.ephemeral(sync, "m.typing")]

        # Each typing change at B is one m.typing in the next /sync: Alice typing, then nobody.
        def typing(sync: dict[str, Any]) -> str | None:
            return str(sync["next_batch"]) if self.alice.user_id in sum(typing_at_b(sync), []) else None

        since = await self.b.sync_until(self.bob, typing, "typing at B")
        code, body = await self.a.put(
            f"{C}/rooms/{q(self.room)}/typing/{q(self.alice.user_id)}", {"typing": False}, self.alice
        )
        self.assertEqual(code, 200, body)
        await self.b.sync_until(self.bob, lambda s: any(self.alice.user_id not in ids for ids in typing_at_b(s)), "typing stopped at B", since)

    async def test_read_receipt_reaches_the_other_server(self) -> None:
        event_id = await self.say(self.b, self.bob, "read me")

        async def at_a() -> bool:
            return "read me" in await self.bodies(self.a, self.alice)

        await self.wait_until(at_a, "message at A")
        code, body = await self.a.post(f"{C}/rooms/{q(self.room)}/receipt/m.read/{q(event_id)}", {}, self.alice)
        self.assertEqual(code, 200, body)

        def receipt_at_b(sync: dict[str, Any]) -> bool:
            for e in self.ephemeral(sync, "m.receipt"):
                if self.alice.user_id in e["content"].get(event_id, {}).get("m.read", {}):
                    return True
            return False

        await self.b.sync_until(self.bob, receipt_at_b, "receipt at B")

    async def test_kick_reaches_the_kicked_users_server(self) -> None:
        code, body = await self.b.post(
            f"{C}/rooms/{q(self.room)}/kick", {"user_id": self.alice.user_id, "reason": "out"}, self.bob
        )
        self.assertEqual(code, 200, body)

        async def kicked_at_a() -> bool:
            path = f"{C}/rooms/{q(self.room)}/state/m.room.member/{q(self.alice.user_id)}"
            code, body = await self.a.get(path, self.alice)
            return code == 200 and body.get("membership") == "leave" and body.get("reason") == "out"

        await self.wait_until(kicked_at_a, "the kick at A")

    async def test_catch_up_after_the_other_server_was_down(self) -> None:
        await self.say(self.a, self.alice, "before")

        async def before_at_b() -> bool:
            return "before" in await self.bodies(self.b, self.bob)

        await self.wait_until(before_at_b, "first message at B")
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

        await self.wait_until(a_backs_off, "A backing off from B")
        # Again, now that nothing is in flight: a transaction that was under way when B stopped
        # (so its connection was not idle, and not closed above) put its connection back in the
        # pool afterwards, and every retry then reached the stopped B, which answers 503 "Server
        # is starting" for ever (seen once in a fresh-clone run). A real stopped process takes
        # that connection with it.
        await self.a.hs.federation_client.pool.closeCachedConnections()
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

        await self.wait_until(all_at_b, "every message at B after the catch-up")

        async def caught_up() -> dict[str, Any] | None:
            # B may have everything (fetched the gap itself) a moment before A's loop sees no room behind.
            entry = {d["destination"]: d for d in sender.destinations_status()}[self.b.server_name]
            return entry if not entry["catching_up"] else None

        entry = await self.wait_until(caught_up, "A's catch-up of B finished")
        assert entry is not None
        self.assertFalse(entry["backing_off"])


class PresenceOnJoinTests(_Helpers):
    async def test_new_shared_room_exchanges_presence(self) -> None:
        """SyTest "New federated private chats get full presence information (SYN-115)": once
        Bob (of B) joins Alice's (of A) new room, each sees the other's presence in /sync,
        though neither changed it since."""
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        for server, user in ((self.a, alice), (self.b, bob)):
            code, body = await server.put(f"{C}/presence/{q(user.user_id)}/status", {"presence": "online"}, user)
            self.assertEqual(code, 200, body)
        room = await self.a.create_room(alice, {"preset": "private_chat"})
        code, body = await self.a.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice)
        self.assertEqual(code, 200, body)
        await self.b.join(bob, room)

        def sees(other: str) -> Any:
            def check(sync: dict[str, Any]) -> bool:
                return any(e["sender"] == other and e["content"]["presence"] == "online"
                           for e in sync.get("presence", {}).get("events", []))
            return check

        await self.a.sync_until(alice, sees(bob.user_id), "Bob's presence at A")
        await self.b.sync_until(bob, sees(alice.user_id), "Alice's presence at B")
