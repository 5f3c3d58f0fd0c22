"""GET /messages, /context and /timestamp_to_event over HTTP."""

from __future__ import annotations

import json

from tests.harness import C, HomeserverTestCase, q


def ids_of(page: dict) -> list[str]:
    return [e["event_id"] for e in page["chunk"]]


class MessagesTests(HomeserverTestCase):
    async def _room_with(self, n: int) -> tuple:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        code, page = await self.messages(alice, room, dir="b", limit=1000)
        self.initial = len(page["chunk"])  # the room-creation events
        ids = [await self.send_message(alice, room, f"m{i}") for i in range(n)]
        return alice, room, ids

    async def test_page_back_and_forth_without_gaps(self) -> None:
        alice, room, ids = await self._room_with(200)
        # backwards from the end, 7 at a time
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            params = {"dir": "b", "limit": 7}
            if token:
                params["from"] = token
            code, page = await self.messages(alice, room, **params)
            self.assertEqual(code, 200, page)
            self.assertLessEqual(len(page["chunk"]), 7)
            if token:
                self.assertEqual(page["start"], token)
            seen += [e["event_id"] for e in page["chunk"]]
            pages += 1
            token = page.get("end")
            if token is None:
                break
        msgs = [e for e in seen if e in set(ids)]
        self.assertEqual(msgs, list(reversed(ids)))
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(len(seen), 200 + self.initial)
        # forwards from the start, 13 at a time
        fwd: list[str] = []
        token = None
        while True:
            params = {"dir": "f", "limit": 13}
            if token:
                params["from"] = token
            code, page = await self.messages(alice, room, **params)
            fwd += [e["event_id"] for e in page["chunk"]]
            token = page.get("end")
            if token is None:
                break
        self.assertEqual(fwd, list(reversed(seen)))
        # back and forth from the middle: b then f from the end token returns the same events
        code, page = await self.messages(alice, room, dir="b", limit=20)
        code, back = await self.messages(alice, room, **{"dir": "b", "limit": 10, "from": page["end"]})
        code, forth = await self.messages(alice, room, **{"dir": "f", "limit": 10, "from": back["end"]})
        self.assertEqual(
            [e["event_id"] for e in forth["chunk"]], list(reversed([e["event_id"] for e in back["chunk"]]))
        )

    async def test_defaults_limits_and_to(self) -> None:
        alice, room, ids = await self._room_with(30)
        code, page = await self.messages(alice, room, dir="b")
        self.assertEqual(len(page["chunk"]), 10)
        self.assertEqual([e["event_id"] for e in page["chunk"]], list(reversed(ids[-10:])))
        code, page = await self.messages(alice, room, dir="b", limit=5000)
        self.assertEqual(len(page["chunk"]), 30 + self.initial)
        self.assertNotIn("end", page)
        # 'to': stop at a token
        code, first = await self.messages(alice, room, dir="b", limit=5)
        code, same = await self.messages(alice, room, dir="b", limit=100, to=first["end"])
        self.assertEqual(ids_of(same), ids_of(first))
        self.assertNotIn("end", same)
        code, older = await self.messages(alice, room, **{"dir": "b", "limit": 100, "from": first["end"]})
        self.assertEqual(len(older["chunk"]), 25 + self.initial)
        code, mid = await self.messages(alice, room, dir="f", limit=100, to=first["end"])
        self.assertEqual(ids_of(mid), list(reversed(ids_of(older))))
        self.assertNotIn("end", mid)
        code, empty = await self.messages(
            alice, room, **{"dir": "b", "limit": 100, "from": first["end"], "to": first["end"]}
        )
        self.assertEqual((empty["chunk"], "end" in empty), ([], False))
        # no 'dir': forwards (as Synapse does); a sync-style token is accepted
        code, page = await self.messages(alice, room, limit=3)
        self.assertEqual([e["type"] for e in page["chunk"]][0], "m.room.create")
        code, page = await self.messages(alice, room, **{"dir": "b", "limit": 1, "from": first["start"] + "_4_5_6"})
        self.assertEqual(page["chunk"][0]["event_id"], ids[-1])
        # limit=0
        code, page = await self.messages(alice, room, dir="b", limit=0)
        self.assertEqual((code, page["chunk"]), (200, []))

    async def test_bad_params(self) -> None:
        alice, room, ids = await self._room_with(1)
        bob = await self.register("bob")
        for params in (
            {"dir": "x"},
            {"dir": "b", "limit": -1},
            {"dir": "b", "limit": "ten"},
            {"dir": "b", "from": "garbage"},
            {"dir": "b", "to": "s12x"},
        ):
            self.assertMatrixError(await self.messages(alice, room, **params), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.messages(alice, room, dir="b", filter="{not json"), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.messages(alice, room, dir="b", filter="[1]"), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.messages(alice, room, dir="b", filter={"types": "m.room.message"}), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.messages(alice, room, dir="b", filter={"contains_url": "yes"}), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.messages(bob, room, dir="b"), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.messages(alice, "!unknown:test", dir="b"), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.messages(alice, "nope", dir="b"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/messages"), 401, "M_MISSING_TOKEN")

    async def test_filters(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)
        await self.send_message(alice, room, "a1")
        await self.send_message(bob, room, "b1")
        await self.send_message(alice, room, "img", url="mxc://test/img")
        await self.send_message(bob, room, "custom", event_type="com.example.x")
        await self.send_message(bob, room, "custom2", event_type="com_example_x")

        async def bodies(filt: dict) -> list[str]:
            code, page = await self.messages(alice, room, dir="f", limit=100, filter=filt)
            self.assertEqual(code, 200, page)
            return [e["content"].get("body") for e in page["chunk"] if "body" in e["content"]]

        self.assertEqual(await bodies({"types": ["m.room.message"]}), ["a1", "b1", "img"])
        self.assertEqual(await bodies({"types": ["com.example.*"]}), ["custom"])
        self.assertEqual(await bodies({"types": ["com_*"]}), ["custom2"])
        self.assertEqual(await bodies({"types": ["*"], "not_types": ["m.room.*", "com.*"]}), ["custom2"])
        self.assertEqual(await bodies({"senders": [bob.user_id]}), ["b1", "custom", "custom2"])
        self.assertEqual(await bodies({"not_senders": [bob.user_id]}), ["a1", "img"])
        self.assertEqual(await bodies({"senders": [bob.user_id], "not_senders": [bob.user_id]}), [])
        self.assertEqual(await bodies({"contains_url": True}), ["img"])
        self.assertEqual(await bodies({"contains_url": False, "types": ["m.room.message"]}), ["a1", "b1"])
        self.assertEqual(await bodies({"types": []}), [])
        # a filter that thins pages still pages through everything
        code, page = await self.messages(alice, room, dir="b", limit=1, filter={"contains_url": True})
        self.assertEqual([e["content"]["body"] for e in page["chunk"]], ["img"])

    async def test_lazy_load_members(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        carol = await self.register("carol")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_membership(bob, room, bob, "join", displayname="Bob")
        await self.join(carol, room)
        await self.send_message(bob, room, "hi")
        code, page = await self.messages(alice, room, dir="b", limit=1, filter={"lazy_load_members": True})
        self.assertEqual(code, 200)
        self.assertEqual([(e["type"], e["state_key"]) for e in page["state"]], [("m.room.member", bob.user_id)])
        self.assertEqual(page["state"][0]["content"]["displayname"], "Bob")
        code, page = await self.messages(alice, room, dir="b", limit=1)
        self.assertNotIn("state", page)


class ContextTests(HomeserverTestCase):
    async def test_context(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        await self.set_state(alice, room, "m.room.name", {"name": "Ctx"})
        ids = [await self.send_message(alice, room, f"m{i}") for i in range(20)]
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(ids[10])}?limit=4", alice)
        self.assertEqual(code, 200, ctx)
        self.assertEqual(ctx["event"]["event_id"], ids[10])
        self.assertEqual([e["event_id"] for e in ctx["events_before"]], [ids[9], ids[8]])
        self.assertEqual([e["event_id"] for e in ctx["events_after"]], [ids[11], ids[12]])
        state = {(e["type"], e["state_key"]) for e in ctx["state"]}
        self.assertIn(("m.room.name", ""), state)
        self.assertIn(("m.room.member", alice.user_id), state)
        # the tokens continue with /messages without gaps or overlaps
        code, back = await self.messages(alice, room, **{"dir": "b", "limit": 2, "from": ctx["start"]})
        self.assertEqual([e["event_id"] for e in back["chunk"]], [ids[7], ids[6]])
        code, fwd = await self.messages(alice, room, **{"dir": "f", "limit": 2, "from": ctx["end"]})
        self.assertEqual([e["event_id"] for e in fwd["chunk"]], [ids[13], ids[14]])
        # default limit 10, filter applies to the surroundings and state, not the event
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(ids[10])}", alice)
        self.assertEqual((len(ctx["events_before"]), len(ctx["events_after"])), (5, 5))
        filt = q(json.dumps({"types": ["m.room.name"], "lazy_load_members": True}))
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(ids[10])}?filter={filt}", alice)
        self.assertEqual(code, 200, ctx)
        self.assertEqual(ctx["event"]["event_id"], ids[10])
        self.assertEqual([e["type"] for e in ctx["events_before"]], ["m.room.name"])
        self.assertEqual(ctx["events_after"], [])
        self.assertEqual([e["type"] for e in ctx["state"]], ["m.room.name"])
        code, ctx = await self.get(f"{C}/rooms/{q(room)}/context/{q(ids[10])}?limit=0", alice)
        self.assertEqual((ctx["events_before"], ctx["events_after"], ctx["event"]["event_id"]), ([], [], ids[10]))

    async def test_context_errors(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        other = await self.create_room(alice, preset="public_chat")
        here = await self.send_message(alice, room, "x")
        there = await self.send_message(alice, other, "y")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/context/{q('$nope')}", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/context/{q(there)}", alice), 404, "M_NOT_FOUND")
        # a user never in a room that is not world readable may not read it (403, as /messages)
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/context/{q(here)}", bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/context/bad", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.get(f"{C}/rooms/{q(room)}/context/{q(here)}?limit=x", alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.get(f"{C}/rooms/{q(room)}/context/{q(here)}?filter=%7B", alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/event/{q('$nope')}", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/event/{q(there)}", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/event/{q(here)}", bob), 404, "M_NOT_FOUND")


class TimestampToEventTests(HomeserverTestCase):
    async def test_timestamp_to_event(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        ids = [await self.send_message(alice, room, f"m{i}") for i in range(3)]
        events = [await self.hs.event_store.get_event(e) for e in ids]
        ts = [e.origin_server_ts for e in events]
        path = f"/_matrix/client/v1/rooms/{q(room)}/timestamp_to_event"
        code, body = await self.get(f"{path}?ts={ts[2] + 1000}&dir=b", alice)
        self.assertEqual((code, body), (200, {"event_id": ids[2], "origin_server_ts": ts[2]}))
        code, body = await self.get(f"{path}?ts={ts[0]}&dir=f", alice)
        self.assertEqual(code, 200)
        self.assertEqual(body["origin_server_ts"], ts[0])
        self.assertMatrixError(await self.get(f"{path}?ts={ts[2] + 100000}&dir=f", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{path}?ts=0&dir=b", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{path}?ts=1&dir=x", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{path}?ts=abc&dir=f", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{path}?dir=f", alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.get(f"{path}?ts=1", alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.get(f"{path}?ts=1&dir=f", bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(
            await self.get(f"/_matrix/client/v1/rooms/{q('!x:test')}/timestamp_to_event?ts=1&dir=f", alice),
            404,
            "M_NOT_FOUND",
        )
