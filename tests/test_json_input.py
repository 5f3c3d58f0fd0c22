"""Malformed JSON bodies get a Matrix error, never a 500 (and good JSON still works)."""

from __future__ import annotations

import json

from twisted.trial import unittest

from mxserver.crypto.canonical import MAX_JSON_DEPTH, JSONDecodeError, decode_json
from tests.harness import C, HomeserverTestCase, q


class DecodeJsonTests(unittest.SynchronousTestCase):
    def test_nesting_limit(self) -> None:
        ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
        self.assertIsInstance(decode_json(ok), list)
        too_deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
        self.assertRaises(JSONDecodeError, decode_json, too_deep)
        objects = '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)
        self.assertRaises(JSONDecodeError, decode_json, objects)
        # far beyond Python's recursion limit: still a JSONDecodeError, not a RecursionError
        self.assertRaises(JSONDecodeError, decode_json, "[" * 50_000 + "]" * 50_000)

    def test_lone_surrogates(self) -> None:
        for text in ('{"name": "\\ud800"}', '{"\\udc00": 1}', '[["x", "a\\uDFFFb"]]', '"\\ud83d"'):
            self.assertRaises(JSONDecodeError, decode_json, text)
        # a proper pair is one character
        self.assertEqual(decode_json('{"name": "\\ud83d\\ude00"}'), {"name": "\U0001f600"})
        self.assertEqual(decode_json('{"e": "\\u00e9"}'), {"e": "é"})

    def test_not_json(self) -> None:
        for text in (b"NaN", b'{"a": Infinity}', b"\xff\xfe", b'{"a": 1', b""):
            self.assertRaises(JSONDecodeError, decode_json, text)
        self.assertEqual(decode_json(b'{"n": 1e3, "f": 1.5}'), {"n": 1000, "f": 1.5})


class JsonBodyTests(HomeserverTestCase):
    async def test_deep_nesting_is_refused_cleanly(self) -> None:
        alice = await self.register("alice")
        deep = b"[" * 50_000 + b"]" * 50_000
        result = await self.request("POST", f"{C}/createRoom", token=alice, raw=deep)
        self.assertMatrixError(result, 400, "M_NOT_JSON")
        nested = json.dumps({"name": "x", "creation_content": {"k": json.loads("[" * 200 + "]" * 200)}}).encode()
        result = await self.request("POST", f"{C}/createRoom", token=alice, raw=nested)
        self.assertMatrixError(result, 400, "M_NOT_JSON")
        # the server keeps serving
        room = await self.create_room(alice, name="fine")
        self.assertEqual(await self.room_state(room, "m.room.name"), {"name": "fine"})

    async def test_lone_surrogate_is_refused_cleanly(self) -> None:
        alice = await self.register("alice")
        result = await self.request("POST", f"{C}/createRoom", token=alice, raw=b'{"name": "\\ud800"}')
        self.assertMatrixError(result, 400, "M_NOT_JSON")
        room = await self.create_room(alice, preset="public_chat")
        path = f"{C}/rooms/{q(room)}/send/m.room.message/t1"
        result = await self.request("PUT", path, token=alice, raw=b'{"msgtype": "m.text", "body": "a\\udfffb"}')
        self.assertMatrixError(result, 400, "M_NOT_JSON")
        # an escaped pair is a real character, stored and served as such
        code, body = await self.request(
            "PUT", f"{path}2", token=alice, raw=b'{"msgtype": "m.text", "body": "\\ud83d\\ude00"}'
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.visible_bodies(alice, room), ["\U0001f600"])

    async def test_filter_parameter(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        deep = q("[" * 1000 + "]" * 1000)  # (a URL line must stay under 16 KiB)
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/messages?dir=b&filter={deep}", alice), 400, "M_BAD_JSON")
        # /sync takes inline JSON only as an object (anything else is a filter ID)
        deep_object = q('{"a":' * 500 + "1" + "}" * 500)
        self.assertMatrixError(await self.get(f"{C}/sync?filter={deep_object}", alice), 400, "M_BAD_JSON")
        surrogate = q('{"room": {"timeline": {"types": ["\\ud800"]}}}')
        code, body = await self.get(f"{C}/sync?filter={surrogate}", alice)
        self.assertEqual((code, body.get("errcode")), (400, "M_BAD_JSON"), body)
