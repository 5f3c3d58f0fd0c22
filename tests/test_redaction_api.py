"""Redacting over HTTP: PUT /redact, m.room.redaction via /send, and how redacted events read back."""

from __future__ import annotations

from tests.harness import C, HomeserverTestCase, q


class RedactionApiTests(HomeserverTestCase):
    async def _redact(self, user, room: str, event_id: str, txn: str, body: dict | None = None) -> tuple[int, dict]:
        return await self.put(
            f"{C}/rooms/{q(room)}/redact/{q(event_id)}/{q(txn)}", body if body is not None else {}, user
        )

    async def test_redact_own_message(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        target = await self.send_message(alice, room, "oops", extra_key="secret")
        code, body = await self._redact(alice, room, target, "r1", {"reason": "typo"})
        self.assertEqual(code, 200, body)
        redaction_id = body["event_id"]
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(target)}", alice)
        self.assertEqual(code, 200)
        self.assertEqual(ev["content"], {})
        because = ev["unsigned"]["redacted_because"]
        self.assertEqual((because["event_id"], because["content"]["reason"]), (redaction_id, "typo"))
        self.assertEqual(ev["unsigned"]["redacted_by"], redaction_id)  # as Synapse gives it too
        # /messages shows the pruned event and the redaction itself
        code, page = await self.messages(alice, room, dir="b", limit=2)
        self.assertEqual([e["event_id"] for e in page["chunk"]], [redaction_id, target])
        self.assertEqual(page["chunk"][1]["content"], {})
        self.assertEqual(page["chunk"][1]["unsigned"]["redacted_because"]["event_id"], redaction_id)
        self.assertEqual(page["chunk"][1]["unsigned"]["redacted_by"], redaction_id)
        self.assertEqual(page["chunk"][0]["redacts"], target)
        # idempotent per txn
        self.assertEqual(
            (await self._redact(alice, room, target, "r1", {"reason": "typo"}))[1]["event_id"], redaction_id
        )

    async def test_redact_after_cache_eviction(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        target = await self.send_message(alice, room, "oops")
        await self.restart()  # nothing cached: the target is read from the database
        code, body = await self._redact(alice, room, target, "r")
        self.assertEqual(code, 200, body)
        await self.restart()
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(target)}", alice)
        self.assertEqual((ev["content"], ev["unsigned"]["redacted_because"]["event_id"]), ({}, body["event_id"]))

    async def test_redact_needs_power_for_others_events(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        mine = await self.send_message(alice, room, "alice's")
        bobs = await self.send_message(bob, room, "bob's")
        self.assertMatrixError(await self._redact(bob, room, mine, "x"), 403, "M_FORBIDDEN")
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/m.room.redaction/y", {"redacts": mine}, bob), 403, "M_FORBIDDEN"
        )
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(mine)}", bob)
        self.assertEqual(ev["content"]["body"], "alice's")
        # the room admin may redact anyone's event
        self.assertEqual((await self._redact(alice, room, bobs, "z"))[0], 200)
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(bobs)}", bob)
        self.assertEqual(ev["content"], {})

    async def test_redact_errors(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        other = await self.create_room(alice, preset="public_chat")
        elsewhere = await self.send_message(alice, other, "other room")
        target = await self.send_message(alice, room, "x")
        self.assertMatrixError(await self._redact(alice, room, "$unknown", "a"), 404, "M_NOT_FOUND")
        # an event of another room: 400, as Synapse answers (SyTest 10redactions)
        self.assertMatrixError(await self._redact(alice, room, elsewhere, "b"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self._redact(alice, room, "not-an-id", "c"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self._redact(alice, room, target, "d", {"reason": 5}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self._redact(bob, room, target, "e"), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self._redact(alice, "!nope:test", target, "f"), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/m.room.redaction/g", {}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.put(f"{C}/rooms/{q(room)}/send/m.room.redaction/h", {"redacts": 1}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.request("PUT", f"{C}/rooms/{q(room)}/redact/{q(target)}/i", raw=b"[", token=alice),
            400,
            "M_NOT_JSON",
        )
        code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(target)}", alice)
        self.assertEqual(ev["content"]["body"], "x")
        # an empty body is fine (reason is optional)
        code, body = await self.request("PUT", f"{C}/rooms/{q(room)}/redact/{q(target)}/j", raw=b"", token=alice)
        self.assertEqual(code, 200, body)

    async def test_redaction_via_send_every_version(self) -> None:
        alice = await self.register("alice")
        for version in ("1", "3", "11", "12"):
            room = await self.create_room(alice, preset="public_chat", room_version=version)
            target = await self.send_message(alice, room, "bye")
            code, body = await self.put(
                f"{C}/rooms/{q(room)}/send/m.room.redaction/red{version}", {"redacts": target, "reason": "r"}, alice
            )
            self.assertEqual(code, 200, body)
            pdu = (await self.hs.event_store.get_event(body["event_id"])).get_pdu_json()
            if version in ("11", "12"):
                self.assertEqual(pdu["content"]["redacts"], target)
                self.assertNotIn("redacts", pdu)
            else:
                # room_send.yaml: before v11 "redacts" moves to the top level
                self.assertEqual(pdu["redacts"], target)
                self.assertNotIn("redacts", pdu["content"])
            code, ev = await self.get(f"{C}/rooms/{q(room)}/event/{q(target)}", alice)
            self.assertEqual(ev["content"], {}, version)
            self.assertEqual(ev["unsigned"]["redacted_because"]["event_id"], body["event_id"])

    async def test_escaped_event_ids(self) -> None:
        """v3 event IDs are standard base64 ('/' and '+'); v1 IDs have ':'."""
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat", room_version="3")
        target = None
        for i in range(200):
            event_id = await self.send_message(alice, room, f"m{i}")
            if "/" in event_id:
                target = event_id
                break
        self.assertIsNotNone(target, "no event ID with '/' in 200 tries")
        self.assertEqual((await self.get(f"{C}/rooms/{q(room)}/event/{q(target)}", alice))[0], 200)
        self.assertEqual((await self._redact(alice, room, target, "slash"))[0], 200)
        code, ev = await self.get(f"{C}/rooms/{q(room)}/context/{q(target)}?limit=2", alice)
        self.assertEqual((code, ev["event"]["event_id"], ev["event"]["content"]), (200, target, {}))
        room1 = await self.create_room(alice, preset="public_chat", room_version="1")
        v1 = await self.send_message(alice, room1, "v1")
        self.assertIn(":", v1)
        self.assertEqual((await self._redact(alice, room1, v1, "colon"))[0], 200)
        self.assertEqual((await self.get(f"{C}/rooms/{q(room1)}/event/{q(v1)}", alice))[1]["content"], {})

    async def test_redacted_state_event(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        name_id = await self.set_state(alice, room, "m.room.name", {"name": "Rude"})
        self.assertEqual((await self._redact(alice, room, name_id, "n"))[0], 200)
        self.assertEqual(await self.get(f"{C}/rooms/{q(room)}/state/m.room.name/", alice), (200, {}))
