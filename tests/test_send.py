"""PUT /rooms/{roomId}/send/{eventType}/{txnId}: sending, idempotency, auth and bad input."""

from __future__ import annotations

from twisted.internet import defer

from tests.harness import C, HomeserverTestCase, q


class SendTests(HomeserverTestCase):
    async def test_send_and_read_back(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        code, body = await self.put(
            f"{C}/rooms/{q(room)}/send/m.room.message/txn1", {"msgtype": "m.text", "body": "hi"}, alice
        )
        self.assertEqual(code, 200, body)
        event_id = body["event_id"]
        self.assertTrue(event_id.startswith("$"))
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", alice)
        self.assertEqual(code, 200, ev)
        self.assertEqual(ev["content"], {"msgtype": "m.text", "body": "hi"})
        self.assertEqual(ev["sender"], alice.user_id)
        self.assertEqual(ev["room_id"], room)
        self.assertEqual(ev["unsigned"].get("transaction_id"), "txn1")

    async def test_transaction_id_after_a_restart(self) -> None:
        # client-server-api §Transaction identifiers: the sending device sees its transaction ID,
        # also once the event is read back from the database (no event cache after a restart).
        alice = await self.register("alice")
        code, login = await self.post(
            f"{C}/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password},
        )
        self.assertEqual(code, 200, login)
        room = await self.create_room(alice, preset="public_chat")
        sent = {}
        for txn in ("t1", "t2"):
            code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/{txn}", {"body": txn}, alice)
            self.assertEqual(code, 200, body)
            sent[body["event_id"]] = txn
        # the same ID on another endpoint (stored scoped): the client still sees its own ID
        code, body = await self.put(f"{C}/rooms/{q(room)}/state/m.room.topic/", {"topic": "x"}, alice)
        code, body = await self.put(f"{C}/rooms/{q(room)}/redact/{q(next(iter(sent)))}/t2", {}, alice)
        self.assertEqual(code, 200, body)
        sent[body["event_id"]] = "t2"
        await self.restart()

        async def txn_ids(token: str) -> dict[str, str | None]:
            code, sync = await self.get(f"{C}/sync", token)
            self.assertEqual(code, 200, sync)
            timeline = sync["rooms"]["join"][room]["timeline"]["events"]
            return {e["event_id"]: e.get("unsigned", {}).get("transaction_id") for e in timeline if e["event_id"] in sent}

        self.assertEqual(await txn_ids(alice.access_token), sent)
        self.assertEqual(await txn_ids(login["access_token"]), dict.fromkeys(sent))

    async def test_txn_idempotent_over_http(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        path = f"{C}/rooms/{q(room)}/send/m.room.message/same"
        first = await self.put(path, {"body": "once"}, alice)
        second = await self.put(path, {"body": "once"}, alice)
        self.assertEqual(first[0], 200)
        self.assertEqual(first, second)
        # concurrent retransmissions also get one event
        results = await defer.gatherResults(
            [
                defer.ensureDeferred(self.put(f"{C}/rooms/{q(room)}/send/m.room.message/conc", {"body": "c"}, alice))
                for _ in range(5)
            ]
        )
        self.assertEqual(len({r[1]["event_id"] for r in results}), 1)
        self.assertEqual(await self.visible_bodies(alice, room), ["once", "c"])

    async def test_txn_scoped_to_device_and_path(self) -> None:
        alice = await self.register("alice")
        code, login = await self.post(
            f"{C}/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": alice.password,
            },
        )
        self.assertEqual(code, 200, login)
        other_device = login["access_token"]
        room = await self.create_room(alice, preset="public_chat")
        room2 = await self.create_room(alice, preset="public_chat")
        a = (await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/1", {"body": "a"}, alice))[1]["event_id"]
        b = (await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/1", {"body": "b"}, other_device))[1]["event_id"]
        self.assertNotEqual(a, b)
        # the same txn ID in another room, or for another event type, is another request
        c = (await self.put(f"{C}/rooms/{q(room2)}/send/m.room.message/1", {"body": "c"}, alice))[1]["event_id"]
        d = (await self.put(f"{C}/rooms/{q(room)}/send/m.custom/1", {"body": "d"}, alice))[1]["event_id"]
        self.assertEqual(len({a, b, c, d}), 4)
        # and each of them is idempotent
        self.assertEqual(
            (await self.put(f"{C}/rooms/{q(room2)}/send/m.room.message/1", {"body": "c"}, alice))[1]["event_id"], c
        )
        self.assertEqual(
            (await self.put(f"{C}/rooms/{q(room)}/send/m.custom/1", {"body": "d"}, alice))[1]["event_id"], d
        )
        code, ev = await self.get(f"{C}/rooms/{q(room2)}/event/{q(c)}", alice)
        self.assertEqual(ev["room_id"], room2)
        self.assertEqual(ev["unsigned"].get("transaction_id"), "1")

    async def test_any_event_type_and_escaping(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        etype = "com.example/odd type"
        code, body = await self.put(f"{C}/rooms/{q(room)}/send/{q(etype)}/{q('t/1 x')}", {"x": 1}, alice)
        self.assertEqual(code, 200, body)
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(body['event_id'])}", alice)
        self.assertEqual(ev["type"], etype)
        self.assertEqual(ev["unsigned"]["transaction_id"], "t/1 x")

    async def test_every_room_version(self) -> None:
        alice = await self.register("alice")
        for version in ("1", "3", "11", "12"):
            room = await self.create_room(alice, preset="public_chat", room_version=version)
            event_id = await self.send_message(alice, room, f"v{version}")
            if version == "1":
                self.assertIn(":", event_id)
            code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", alice)
            self.assertEqual((code, ev["content"]["body"]), (200, f"v{version}"))

    async def test_r0_prefix(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        code, body = await self.put(
            f"/_matrix/client/r0/rooms/{q(room)}/send/m.room.message/r0", {"body": "old"}, alice
        )
        self.assertEqual(code, 200, body)

    async def test_not_member_forbidden(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/x", {"body": "no"}, bob), 403, "M_FORBIDDEN"
        )

    async def test_power_level_enforced(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/m.room.power_levels/x", {"users": {bob.user_id: 100}}, bob),
            403,
            "M_FORBIDDEN",
        )

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        path = f"{C}/rooms/{q(room)}/send/m.room.message"
        self.assertMatrixError(await self.put(f"{path}/a", None, None), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.request("PUT", f"{path}/b", raw=b"not json", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(f"{path}/c", [1, 2], alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(f"{path}/d", "str", alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.request("PUT", f"{path}/e", raw=b"", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(
            await self.put(f"{C}/rooms/notaroom/send/m.room.message/f", {}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q('!nope:test')}/send/m.room.message/g", {}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/{'x' * 300}/h", {}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.put(f"{path}/{'t' * 300}", {}, alice), 400, "M_INVALID_PARAM")
        # an event over 64 KiB
        self.assertMatrixError(await self.put(f"{path}/i", {"body": "x" * 70000}, alice), 413, "M_TOO_LARGE")
        # a body over the request limit
        self.assertMatrixError(await self.put(f"{path}/j", {"body": "x" * 2_000_000}, alice), 413, "M_TOO_LARGE")
        # nothing was half-written, and the server keeps serving
        self.assertEqual(await self.visible_bodies(alice, room), [])
        await self.send_message(alice, room, "still fine")
        self.assertEqual(await self.visible_bodies(alice, room), ["still fine"])


class SendRateLimitTests(HomeserverTestCase):
    # Only sending is limited tightly here; sign-up and log-in stay out of the way.
    config_overrides = {
        "rate_limits": {
            "enabled": True,
            "message": {"per_second": 0.001, "burst": 2},
            "login": {"per_second": 1000, "burst": 1000},
            "register": {"per_second": 1000, "burst": 1000},
        }
    }

    async def test_ratelimited(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        codes = [
            (await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/rl{i}", {"body": "x"}, alice))[0]
            for i in range(4)
        ]
        self.assertEqual(codes[:2], [200, 200])
        self.assertEqual(codes[2:], [429, 429])
