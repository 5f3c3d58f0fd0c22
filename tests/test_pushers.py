"""Pushers (client-server-api §Pushers, pusher.yaml), delivery to a push gateway
(push-gateway-api §POST /_matrix/push/v1/notify) and GET /notifications (notifications.yaml).

The push gateway is a real HTTP server on loopback (``push.allow_http_gateways`` and a
whitelisted 127.0.0.0/8, as an operator testing locally would set them). It records every
request and answers what the test scripts: 200 ``{}``, a rejection, or 500 while "down".
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web import resource, server

from tests.harness import C, HomeserverTestCase, TestUser, q

NOTIFY = "/_matrix/push/v1/notify"
WAIT_S = 15.0


class Gateway(resource.Resource):
    """A push gateway: records notifications; ``answer`` decides the reply."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        #: the client port of each request (one port: one connection, kept open between them)
        self.client_ports: list[int] = []
        self.answer: tuple[int, Any] = (200, {})
        self._waiters: list[Deferred[None]] = []

    def render_POST(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        self.received.append(body["notification"])
        self.client_ports.append(request.getClientAddress().port)
        code, answer = self.answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            reactor.callLater(0, lambda d=d: d.called or d.callback(None))
        return json.dumps(answer).encode()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` requests arrived (fails after WAIT_S)."""
        deadline = reactor.seconds() + WAIT_S
        while len(self.received) < count:
            if reactor.seconds() > deadline:
                raise AssertionError(f"expected {count} push requests, got {self.received}")
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            timer = reactor.callLater(0.5, lambda d=d: d.called or d.callback(None))
            await d
            if timer.active():
                timer.cancel()
        return self.received

    def messages(self) -> list[dict[str, Any]]:
        return [n for n in self.received if n.get("type") == "m.room.message" or "event_id" in n and "type" not in n]


async def until(check: Any, what: str) -> None:
    """Poll ``check()`` (a delivery outcome lands a moment after the gateway saw the request)."""
    deadline = reactor.seconds() + WAIT_S
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        d: Deferred[None] = Deferred()
        reactor.callLater(0.02, d.callback, None)
        await d


class PusherTestCase(HomeserverTestCase):
    config_overrides = {
        "push": {"allow_http_gateways": True},
        "federation": {"ip_range_whitelist": ["127.0.0.0/8"]},
    }

    async def _set_up(self) -> None:
        await super()._set_up()
        self.gateway = Gateway()
        port = reactor.listenTCP(0, server.Site(self.gateway), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}{NOTIFY}"
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.shared_room(self.alice, self.bob)

    def pusher_body(self, pushkey: str = "key1", **data: Any) -> dict[str, Any]:
        return {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": pushkey,
            "app_display_name": "Example",
            "device_display_name": "Alice's phone",
            "profile_tag": "tag",
            "lang": "en",
            "data": {"url": self.url, **data},
        }

    async def set_pusher(self, user: TestUser, body: dict[str, Any]) -> None:
        code, resp = await self.post(f"{C}/pushers/set", body, user)
        self.assertEqual(code, 200, resp)

    async def pushers(self, user: TestUser) -> list[dict[str, Any]]:
        code, body = await self.get(f"{C}/pushers", user)
        self.assertEqual(code, 200, body)
        return list(body["pushers"])


class PusherApiTests(PusherTestCase):
    async def test_set_list_replace_and_delete(self) -> None:
        await self.set_pusher(self.alice, self.pusher_body(extra="x"))
        [pusher] = await self.pushers(self.alice)
        self.assertEqual(pusher["pushkey"], "key1")
        self.assertEqual(pusher["data"], {"url": self.url, "extra": "x"})
        self.assertEqual(pusher["profile_tag"], "tag")
        # the same app_id and pushkey replaces it
        await self.set_pusher(self.alice, {**self.pusher_body(), "lang": "fr"})
        [pusher] = await self.pushers(self.alice)
        self.assertEqual(pusher["lang"], "fr")
        self.assertEqual(await self.pushers(self.bob), [])
        # without append, bob taking the same pushkey removes alice's
        await self.set_pusher(self.bob, self.pusher_body())
        self.assertEqual(await self.pushers(self.alice), [])
        # kind null deletes
        await self.set_pusher(self.bob, {"kind": None, "app_id": "org.example.app", "pushkey": "key1"})
        self.assertEqual(await self.pushers(self.bob), [])

    async def test_bad_input(self) -> None:
        good = self.pusher_body()
        cases: list[tuple[dict[str, Any], str]] = [
            ({**good, "kind": "carrier-pigeon"}, "M_INVALID_PARAM"),
            ({**good, "kind": "email"}, "M_INVALID_PARAM"),
            ({**good, "kind": 3}, "M_BAD_JSON"),
            ({k: v for k, v in good.items() if k != "kind"}, "M_MISSING_PARAM"),
            ({k: v for k, v in good.items() if k != "app_id"}, "M_MISSING_PARAM"),
            ({**good, "pushkey": "k" * 600}, "M_INVALID_PARAM"),
            ({**good, "data": "nope"}, "M_BAD_JSON"),
            ({**good, "data": {}}, "M_MISSING_PARAM"),
            ({**good, "data": {"url": "ftp://gw.example/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": "https://gw.example/notify"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": "https://gw.example:99999/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": 7}}, "M_INVALID_PARAM"),
            # a private address outside the whitelist (federation.ip_range_blacklist)
            ({**good, "data": {"url": "https://10.1.2.3/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
            ({**good, "data": {"url": "https://[::1]/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
            ({**good, "append": "yes"}, "M_BAD_JSON"),
        ]
        for body, errcode in cases:
            self.assertMatrixError(await self.post(f"{C}/pushers/set", body, self.alice), 400, errcode)
        self.assertMatrixError(await self.post(f"{C}/pushers/set", [1], self.alice), 400, "M_BAD_JSON")
        self.assertEqual(await self.pushers(self.alice), [])
        code, _ = await self.get(f"{C}/pushers")
        self.assertEqual(code, 401)

    async def test_logout_removes_the_devices_pushers(self) -> None:
        code, login = await self.post(
            f"{C}/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"},
        )
        self.assertEqual(code, 200, login)
        other = login["access_token"]
        code, resp = await self.post(f"{C}/pushers/set", self.pusher_body("other"), other)
        self.assertEqual(code, 200, resp)
        await self.set_pusher(self.alice, self.pusher_body("mine"))
        code, resp = await self.post(f"{C}/logout", {}, other)
        self.assertEqual(code, 200, resp)
        self.assertEqual([p["pushkey"] for p in await self.pushers(self.alice)], ["mine"])
        self.assertEqual(len(self.hs.pusher_pool.pushers_of(self.alice.user_id)), 1)


class PusherHttpOnlyTests(PusherTestCase):
    config_overrides = {"federation": {"ip_range_whitelist": ["127.0.0.0/8"]}}

    async def test_http_needs_the_config_key(self) -> None:
        result = await self.post(f"{C}/pushers/set", self.pusher_body(), self.alice)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        self.assertIn("allow_http_gateways", result[1]["error"])


class DeliveryTests(PusherTestCase):
    async def test_badge_counts_only_rooms_the_user_is_in(self) -> None:
        """``counts.unread`` (push-gateway-api) is the unread notifications of the rooms the
        user is in: a room they left stops counting, its unread messages with it."""
        await self.set_pusher(self.alice, self.pusher_body())
        await self.send_message(self.bob, self.room, "one")
        await self.gateway.wait_for(1)  # counted before "two" exists
        other = await self.create_room(self.bob, preset="public_chat")
        await self.join(self.alice, other)
        await self.join(await self.register("carol"), other)
        # a mention: alice's result differs from carol's, so it is a row of her own
        code, body = await self.post(
            f"{C}/rooms/{q(other)}/send/m.room.message",
            {"msgtype": "m.text", "body": "two", "m.mentions": {"user_ids": [self.alice.user_id]}},
            self.bob,
        )
        self.assertEqual(code, 200, body)
        received = await self.gateway.wait_for(2)
        self.assertEqual([n["counts"] for n in self.gateway.messages()], [{"unread": 1}, {"unread": 2}], received)
        await self.leave(self.alice, other)
        await self.send_message(self.bob, self.room, "three")
        await self.gateway.wait_for(3)
        self.assertEqual(self.gateway.messages()[-1]["counts"], {"unread": 2})

    async def test_message_is_pushed_with_every_field(self) -> None:
        await self.set_state(self.alice, self.room, "m.room.name", {"name": "Kitchen"})
        await self.set_pusher(self.alice, self.pusher_body(extra="x"))
        event_id = await self.send_message(self.bob, self.room, "dinner?")
        [note] = await self.gateway.wait_for(1)
        self.assertEqual(note["event_id"], event_id)
        self.assertEqual(note["room_id"], self.room)
        self.assertEqual(note["type"], "m.room.message")
        self.assertEqual(note["sender"], self.bob.user_id)
        self.assertEqual(note["content"], {"msgtype": "m.text", "body": "dinner?"})
        self.assertEqual(note["room_name"], "Kitchen")
        self.assertEqual(note["counts"], {"unread": 1})
        self.assertEqual(note["prio"], "high")  # a message with sound (.m.rule.room_one_to_one)
        [device] = note["devices"]
        self.assertEqual(device["app_id"], "org.example.app")
        self.assertEqual(device["pushkey"], "key1")
        self.assertEqual(device["data"], {"extra": "x"})  # url is not passed on
        self.assertEqual(device["tweaks"], {"sound": "default"})
        self.assertIsInstance(device["pushkey_ts"], int)
        # a read receipt sends a badge update
        code, body = await self.post(f"{C}/rooms/{q(self.room)}/receipt/m.read/{q(event_id)}", {}, self.alice)
        self.assertEqual(code, 200, body)
        received = await self.gateway.wait_for(2)
        self.assertEqual(received[1]["counts"], {"unread": 0})
        self.assertNotIn("event_id", received[1])
        # Both went over one connection: no new handshake per notification.
        self.assertEqual(len(set(self.gateway.client_ports)), 1, self.gateway.client_ports)

    async def test_event_id_only(self) -> None:
        await self.set_pusher(self.alice, self.pusher_body(format="event_id_only"))
        event_id = await self.send_message(self.bob, self.room, "secret")
        [note] = await self.gateway.wait_for(1)
        self.assertEqual(note["event_id"], event_id)
        self.assertEqual(note["room_id"], self.room)
        self.assertNotIn("content", note)
        self.assertNotIn("sender", note)
        self.assertEqual(note["devices"][0]["data"], {"format": "event_id_only"})

    async def test_rejected_pushkey_removes_the_pusher(self) -> None:
        await self.set_pusher(self.alice, self.pusher_body("key1"))
        self.gateway.answer = (200, {"rejected": ["key1"]})
        await self.send_message(self.bob, self.room, "one")
        await self.gateway.wait_for(1)

        async def gone() -> bool:
            return not await self.pushers(self.alice)

        await until(gone, "the rejected pusher to go")
        self.gateway.answer = (200, {})
        await self.send_message(self.bob, self.room, "two")
        await self.send_message(self.alice, self.room, "to wait on")  # nothing for alice
        self.assertEqual(len(self.gateway.received), 1)

    async def test_backoff_then_delivery_when_the_gateway_is_back(self) -> None:
        await self.set_pusher(self.alice, self.pusher_body())
        self.gateway.answer = (500, {})
        event_id = await self.send_message(self.bob, self.room, "are you there?")
        await self.gateway.wait_for(1)
        [pusher] = self.hs.pusher_pool.pushers_of(self.alice.user_id)

        async def backing_off() -> bool:
            return pusher.retry_interval > 0

        await until(backing_off, "the backoff")
        self.gateway.answer = (200, {})
        received = await self.gateway.wait_for(2)  # after the backoff (about a second)
        self.assertEqual([n["event_id"] for n in received], [event_id, event_id])

        async def recovered() -> bool:
            return pusher.retry_interval == 0

        await until(recovered, "the backoff to end")

    async def test_delivery_after_a_restart(self) -> None:
        await self.set_pusher(self.alice, self.pusher_body())
        self.gateway.answer = (500, {})
        event_id = await self.send_message(self.bob, self.room, "kept")
        await self.gateway.wait_for(1)
        [failing] = self.hs.pusher_pool.pushers_of(self.alice.user_id)

        async def backing_off() -> bool:
            return failing.retry_interval > 0

        # The failure is recorded (the pusher backs off): the gateway's next answer is the
        # retry's, whichever server makes it.
        await until(backing_off, "the pusher's backoff")
        # the position persisted before the failed delivery: the delivery after the restart
        # moves it past this (read now, as the move may land before the test looks again)
        assert failing.row is not None
        before = failing.row.last_stream_ordering
        self.gateway.answer = (200, {})
        await self.restart()
        received = await self.gateway.wait_for(2)
        self.assertEqual(received[-1]["event_id"], event_id)
        # delivered once: the position is persisted, nothing is sent again after another restart
        [pusher] = self.hs.pusher_pool.pushers_of(self.alice.user_id)

        async def moved() -> bool:
            return pusher.row is not None and pusher.row.last_stream_ordering > before

        await until(moved, "the delivered position")
        await self.restart()
        await self.send_message(self.bob, self.room, "next")
        received = await self.gateway.wait_for(3)
        self.assertEqual(received[2]["content"]["body"], "next")


class NotificationsApiTests(PusherTestCase):
    async def test_paging_and_highlights(self) -> None:
        ids = []
        for i in range(5):
            mentions = {"m.mentions": {"user_ids": [self.alice.user_id]}} if i % 2 == 0 else {}
            ids.append(await self.send_message(self.bob, self.room, f"m{i}", **mentions))
        await self.sync(self.alice)  # /sync waits for push evaluation
        code, page = await self.get(f"{C}/notifications?limit=2", self.alice)
        self.assertEqual(code, 200, page)
        self.assertEqual([n["event"]["event_id"] for n in page["notifications"]], [ids[4], ids[3]])
        first = page["notifications"][0]
        self.assertEqual(first["room_id"], self.room)
        self.assertFalse(first["read"])
        self.assertIn("profile_tag", first)
        self.assertIsInstance(first["ts"], int)
        self.assertIn("notify", first["actions"])
        code, page2 = await self.get(f"{C}/notifications?limit=2&from={page['next_token']}", self.alice)
        self.assertEqual([n["event"]["event_id"] for n in page2["notifications"]], [ids[2], ids[1]])
        code, rest = await self.get(f"{C}/notifications?limit=10&from={page2['next_token']}", self.alice)
        self.assertEqual([n["event"]["event_id"] for n in rest["notifications"]], [ids[0]])
        self.assertNotIn("next_token", rest)
        code, high = await self.get(f"{C}/notifications?only=highlight", self.alice)
        self.assertEqual([n["event"]["event_id"] for n in high["notifications"]], [ids[4], ids[2], ids[0]])
        # a read receipt marks them read
        await self.post(f"{C}/rooms/{q(self.room)}/receipt/m.read/{q(ids[2])}", {}, self.alice)
        code, page = await self.get(f"{C}/notifications", self.alice)
        self.assertEqual([n["read"] for n in page["notifications"]], [False, False, True, True, True])
        self.assertMatrixError(await self.get(f"{C}/notifications?from=abc", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/notifications?limit=x", self.alice), 400, "M_INVALID_PARAM")
