"""Filters: the upload/download API, validation, and the Filter model /sync and /messages use."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mxserver.errors import MatrixError
from mxserver.events.model import Event
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.sync.filtering import (
    DEFAULT_TIMELINE_LIMIT,
    MAX_LIMIT,
    Filter,
    RoomEventFilter,
    load_filter,
    split_dotted_path,
)
from tests.harness import C, HomeserverTestCase

SPEC_EXAMPLE = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {
            "limit": 10,
            "types": ["m.room.message"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
        "ephemeral": {
            "types": ["m.receipt", "m.typing"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}

#: (filter JSON, expected errcode): each must be refused with a 400
INVALID_FILTERS: list[tuple[Any, str]] = [
    ({"room": {"timeline": {"limit": 0}}}, "M_INVALID_PARAM"),
    ({"room": {"timeline": {"limit": -5}}}, "M_INVALID_PARAM"),
    ({"room": {"timeline": {"limit": "10"}}}, "M_BAD_JSON"),
    ({"room": {"timeline": {"limit": 1.5}}}, "M_BAD_JSON"),
    ({"room": {"timeline": {"limit": True}}}, "M_BAD_JSON"),
    ({"presence": {"types": "m.presence"}}, "M_BAD_JSON"),
    ({"presence": {"types": [1]}}, "M_BAD_JSON"),
    ({"account_data": {"not_types": [None]}}, "M_BAD_JSON"),
    ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM"),
    ({"room": {"rooms": ["not-a-room"]}}, "M_INVALID_PARAM"),
    ({"room": {"not_rooms": "!a:b"}}, "M_BAD_JSON"),
    ({"room": {"state": {"rooms": ["#alias:b"]}}}, "M_INVALID_PARAM"),
    ({"room": []}, "M_BAD_JSON"),
    ({"room": {"timeline": "all"}}, "M_BAD_JSON"),
    ({"room": {"include_leave": "yes"}}, "M_BAD_JSON"),
    ({"room": {"state": {"lazy_load_members": 1}}}, "M_BAD_JSON"),
    ({"room": {"timeline": {"contains_url": "true"}}}, "M_BAD_JSON"),
    ({"event_format": "xml"}, "M_INVALID_PARAM"),
    ({"event_format": 1}, "M_BAD_JSON"),
    ({"event_fields": "content.body"}, "M_BAD_JSON"),
    ({"presence": 5}, "M_BAD_JSON"),
]


class FilterApiTests(HomeserverTestCase):
    async def test_upload_and_download(self) -> None:
        alice = await self.register("alice")
        code, body = await self.post(f"{C}/user/{alice.user_id}/filter", SPEC_EXAMPLE, alice)
        self.assertEqual(code, 200, body)
        filter_id = body["filter_id"]
        self.assertIsInstance(filter_id, str)
        self.assertFalse(filter_id.startswith("{"))
        self.assertEqual(await self.get(f"{C}/user/{alice.user_id}/filter/{filter_id}", alice), (200, SPEC_EXAMPLE))

    async def test_ids(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        path = f"{C}/user/{alice.user_id}/filter"
        first = (await self.post(path, {"room": {"timeline": {"limit": 5}}}, alice))[1]["filter_id"]
        # An identical upload (key order does not matter) reuses the ID.
        same = (await self.post(path, {"room": {"timeline": {"limit": 5}}}, alice))[1]["filter_id"]
        self.assertEqual(first, same)
        other = (await self.post(path, {"room": {"timeline": {"limit": 6}}}, alice))[1]["filter_id"]
        self.assertNotEqual(first, other)
        # Filter IDs are per user: bob's first filter may have the same ID but is bob's.
        bobs = (await self.post(f"{C}/user/{bob.user_id}/filter", {"presence": {"limit": 1}}, bob))[1]["filter_id"]
        self.assertEqual(
            await self.get(f"{C}/user/{bob.user_id}/filter/{bobs}", bob), (200, {"presence": {"limit": 1}})
        )
        self.assertEqual(
            await self.get(f"{C}/user/{alice.user_id}/filter/{first}", alice),
            (200, {"room": {"timeline": {"limit": 5}}}),
        )

    async def test_unknown_filter(self) -> None:
        alice = await self.register("alice")
        for filter_id in ("0", "12345", "abc", "-1", "99999999999999999999999", "%7B%7D"):
            self.assertMatrixError(
                await self.get(f"{C}/user/{alice.user_id}/filter/{filter_id}", alice), 404, "M_NOT_FOUND"
            )

    async def test_other_users_filters_are_forbidden(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        filter_id = (await self.post(f"{C}/user/{bob.user_id}/filter", {}, bob))[1]["filter_id"]
        self.assertMatrixError(await self.get(f"{C}/user/{bob.user_id}/filter/{filter_id}", alice), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/user/{bob.user_id}/filter", {}, alice), 403, "M_FORBIDDEN")
        # And alice does not find bob's filter under her own ID either.
        self.assertMatrixError(
            await self.get(f"{C}/user/{alice.user_id}/filter/{filter_id}", alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.post(f"{C}/user/{alice.user_id}/filter", {}, None), 401, "M_MISSING_TOKEN")

    async def test_invalid_filters(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/user/{alice.user_id}/filter"
        for body, errcode in INVALID_FILTERS:
            self.assertMatrixError(await self.post(path, body, alice), 400, errcode)
        self.assertMatrixError(await self.request("POST", path, raw=b"{nope", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, ["room"], alice), 400, "M_BAD_JSON")
        # Nothing was stored: the first valid upload gets the first ID.
        code, body = await self.post(path, {}, alice)
        self.assertEqual((code, body), (200, {"filter_id": "0"}))

    async def test_unknown_keys_are_ignored(self) -> None:
        alice = await self.register("alice")
        body = {"org.example.future": [1], "room": {"timeline": {"limit": 3, "x": "y"}, "z": 1}}
        code, resp = await self.post(f"{C}/user/{alice.user_id}/filter", body, alice)
        self.assertEqual(code, 200)
        self.assertEqual(await self.get(f"{C}/user/{alice.user_id}/filter/{resp['filter_id']}", alice), (200, body))

    async def test_load_filter(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        body = {"room": {"timeline": {"limit": 3}}}
        filter_id = (await self.post(f"{C}/user/{alice.user_id}/filter", body, alice))[1]["filter_id"]
        loaded = await load_filter(self.hs.filters, alice.user_id, filter_id)
        self.assertEqual(loaded.timeline.limit, 3)
        self.assertIs(await load_filter(self.hs.filters, alice.user_id, filter_id), loaded)  # cached
        inline = await load_filter(self.hs.filters, alice.user_id, '{"room": {"timeline": {"limit": 4}}}')
        self.assertEqual(inline.timeline.limit, 4)
        self.assertEqual((await load_filter(self.hs.filters, alice.user_id, None)).timeline.limit, DEFAULT_TIMELINE_LIMIT)
        for bad, errcode in [
            ("777", "M_NOT_FOUND"),
            ("nope", "M_NOT_FOUND"),
            ("{not json", "M_BAD_JSON"),
            ('{"room": {"timeline": {"limit": 0}}}', "M_INVALID_PARAM"),
        ]:
            with self.assertRaises(MatrixError) as cm:
                await load_filter(self.hs.filters, alice.user_id, bad)
            self.assertEqual(cm.exception.errcode, errcode, bad)
        # A filter ID belongs to its user.
        with self.assertRaises(MatrixError) as cm:
            await load_filter(self.hs.filters, bob.user_id, filter_id)
        self.assertEqual(cm.exception.errcode, "M_NOT_FOUND")


def _event(event_type: str, sender: str = "@alice:test", content: Any = None, room_id: str = "!r:test") -> Event:
    pdu = {
        "type": event_type,
        "sender": sender,
        "room_id": room_id,
        "content": content if content is not None else {},
        "origin_server_ts": 0,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    return Event(pdu, KNOWN_ROOM_VERSIONS["10"])


class FilterModelTests(unittest.TestCase):
    def test_defaults(self) -> None:
        f = Filter()
        self.assertEqual(f.timeline.limit, DEFAULT_TIMELINE_LIMIT)
        self.assertIsNone(f.state.limit)
        self.assertTrue(f.room_allowed("!any:x"))
        self.assertTrue(f.timeline.matches(_event("m.room.message")))
        self.assertFalse(f.include_leave)
        self.assertFalse(f.lazy_load_members)
        self.assertEqual(f.event_format, "client")
        self.assertEqual(f.apply_event_fields({"type": "x", "content": {"a": 1}}), {"type": "x", "content": {"a": 1}})

    def test_every_invalid_filter_raises(self) -> None:
        for body, errcode in INVALID_FILTERS:
            with self.assertRaises(MatrixError) as cm:
                Filter(body)
            self.assertEqual((cm.exception.code, cm.exception.errcode), (400, errcode), body)

    def test_null_is_absent(self) -> None:
        f = Filter({"room": {"timeline": {"limit": None, "types": None}}, "presence": None})
        self.assertEqual(f.timeline.limit, DEFAULT_TIMELINE_LIMIT)
        self.assertTrue(f.timeline.matches({"type": "anything"}))

    def test_limit_is_capped(self) -> None:
        self.assertEqual(Filter({"room": {"timeline": {"limit": 10**9}}}).timeline.limit, MAX_LIMIT)
        self.assertEqual(Filter({"room": {"timeline": {"limit": 1}}}).timeline.limit, 1)

    def test_types_and_wildcards(self) -> None:
        f = RoomEventFilter({"types": ["m.room.*", "org.example"], "not_types": ["m.room.member"]})
        self.assertTrue(f.matches(_event("m.room.message")))
        self.assertTrue(f.matches({"type": "m.room.topic"}))
        self.assertTrue(f.matches({"type": "org.example"}))
        # not_types wins over types.
        self.assertFalse(f.matches(_event("m.room.member")))
        self.assertFalse(f.matches({"type": "org.example.more"}))
        self.assertFalse(f.matches({"type": "m.roomy"}))
        # "*" matches any sequence, anywhere, including none; other glob characters are literal.
        g = RoomEventFilter({"types": ["a*c", "x?z"]})
        self.assertTrue(g.matches_type("ac"))
        self.assertTrue(g.matches_type("abbbc"))
        self.assertTrue(g.matches_type("x?z"))
        self.assertFalse(g.matches_type("xyz"))
        self.assertFalse(g.matches_type("abd"))
        # An empty include list includes nothing.
        empty = RoomEventFilter({"types": []})
        self.assertFalse(empty.matches({"type": "m.room.message"}))
        self.assertTrue(empty.allows_nothing)
        self.assertTrue(RoomEventFilter({"not_types": ["*"]}).filter_events([{"type": "a"}]) == [])

    def test_senders(self) -> None:
        f = RoomEventFilter({"senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"]})
        self.assertTrue(f.matches({"type": "t", "sender": "@a:x"}))
        self.assertFalse(f.matches({"type": "t", "sender": "@b:x"}))
        self.assertFalse(f.matches(_event("t", sender="@c:x")))
        # Data without a sender (account data) is not excluded by sender lists.
        self.assertTrue(f.matches({"type": "t"}))

    def test_rooms(self) -> None:
        f = Filter({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"], "timeline": {"rooms": ["!a:x"]}}})
        self.assertTrue(f.room_allowed("!a:x"))
        self.assertFalse(f.room_allowed("!b:x"))
        self.assertFalse(f.room_allowed("!c:x"))
        self.assertTrue(f.timeline.matches(_event("m.room.message", room_id="!a:x")))
        self.assertFalse(f.timeline.matches(_event("m.room.message", room_id="!c:x")))
        # Client-format events carry no room_id: the caller names the room.
        self.assertTrue(f.timeline.matches({"type": "m.room.message"}))
        self.assertFalse(f.timeline.matches({"type": "m.room.message"}, room_id="!c:x"))
        self.assertEqual(f.timeline.filter_events([{"type": "m"}], room_id="!a:x"), [{"type": "m"}])
        self.assertTrue(Filter({"room": {"rooms": []}}).room_allowed("!a:x") is False)

    def test_contains_url(self) -> None:
        with_url = _event("m.room.message", content={"url": "mxc://x/y", "body": "f"})
        without = _event("m.room.message", content={"body": "t"})
        self.assertEqual(RoomEventFilter({"contains_url": True}).filter_events([with_url, without]), [with_url])
        self.assertEqual(RoomEventFilter({"contains_url": False}).filter_events([with_url, without]), [without])
        self.assertEqual(RoomEventFilter({}).filter_events([with_url, without]), [with_url, without])

    def test_sections(self) -> None:
        f = Filter(SPEC_EXAMPLE)
        self.assertTrue(f.ephemeral.matches_type("m.typing"))
        self.assertFalse(f.ephemeral.matches_type("m.presence"))
        self.assertTrue(f.presence.matches({"type": "m.presence", "sender": "@bob:example.com"}))
        self.assertFalse(f.presence.matches({"type": "m.presence", "sender": "@alice:example.com"}))
        self.assertTrue(f.account_data.matches("m.direct"))
        self.assertFalse(Filter({"account_data": {"not_types": ["m.*"]}}).account_data.matches("m.direct"))
        self.assertTrue(Filter({"room": {"account_data": {"types": ["m.tag"]}}}).room_account_data.matches("m.tag"))
        self.assertEqual(f.state.filter_events([{"type": "m.room.name"}, {"type": "org.x"}]), [{"type": "m.room.name"}])
        self.assertFalse(f.timeline.matches({"type": "m.room.message", "sender": "@spam:example.com"}))

    def test_lazy_loading_flags(self) -> None:
        self.assertTrue(Filter({"room": {"state": {"lazy_load_members": True}}}).lazy_load_members)
        self.assertTrue(Filter({"room": {"timeline": {"lazy_load_members": True}}}).lazy_load_members)
        # include_redundant_members does not apply without lazy_load_members.
        self.assertFalse(Filter({"room": {"state": {"include_redundant_members": True}}}).include_redundant_members)
        both = Filter({"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}})
        self.assertTrue(both.include_redundant_members)
        self.assertTrue(Filter({"room": {"include_leave": True}}).include_leave)
        self.assertTrue(
            Filter({"room": {"timeline": {"unread_thread_notifications": True}}}).unread_thread_notifications
        )
        self.assertTrue(RoomEventFilter.from_json({"lazy_load_members": True}).lazy_load_members)

    def test_dotted_paths(self) -> None:
        self.assertEqual(split_dotted_path("content.body"), ["content", "body"])
        self.assertEqual(split_dotted_path("content.m\\.relates_to"), ["content", "m.relates_to"])
        self.assertEqual(split_dotted_path("content.m\\\\foo"), ["content", "m\\foo"])
        # Other escapes are left as-is (appendices §Dot-separated property paths).
        self.assertEqual(split_dotted_path("content.\\x"), ["content", "\\x"])
        self.assertEqual(split_dotted_path("type"), ["type"])

    def test_event_fields(self) -> None:
        event = {
            "type": "m.room.message",
            "sender": "@a:x",
            "event_id": "$e",
            "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread"}},
            "unsigned": {"age": 5},
        }
        f = Filter(
            {"event_fields": ["type", "content.body", "content.m\\.relates_to.rel_type", "nope.deeper", "sender.x"]}
        )
        self.assertEqual(
            f.apply_event_fields(event),
            {"type": "m.room.message", "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}}},
        )
        # The input is not modified, and a whole object may be asked for next to one of its parts.
        g = Filter({"event_fields": ["content.body", "content"]})
        self.assertEqual(g.apply_event_fields(event)["content"], event["content"])
        out = Filter({"event_fields": ["content"]}).apply_event_fields(event)
        out["content"]["body"] = "changed"
        self.assertEqual(event["content"]["body"], "hi")
        # An empty list asks for nothing useful; "a server may include more fields than were requested".
        self.assertEqual(Filter({"event_fields": []}).apply_event_fields(event), event)
