"""Event formats across mxserver and Synapse, both ways round.

Signatures and hashes are computed over canonical JSON and over the *redacted*
form of an event, so any difference between the two implementations in
canonical JSON (escapes, key order, numbers) or in a room version's redaction
algorithm makes one server drop the other's events. These tests send content
that stresses canonical JSON, state keys that need escaping in URLs, and
redacted history (message and state events) in each room version's format,
fetched by a server that joins later (backfill checks the redacted events'
signatures).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.interop import harness
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, User, quote

#: content canonical JSON must get right: key order by code point, escapes, big and negative
#: integers, nesting, non-BMP characters, and characters JSON encoders treat differently
TRICKY_CONTENT: dict[str, Any] = {
    "msgtype": "m.text",
    "body": "canonical \u00e9\u4e2d\U0001f600 \u2028\u2029 \x7f \t\n\"\\/ <>&'",
    "org.example.keys": {"b": 1, "a": 2, "A": 3, "\u00e9": 4, "\U0001f600": 5, "_": 6, "": 7, "aa": 8},
    "org.example.numbers": [0, -1, 9007199254740991, -9007199254740991, 10**15],
    "org.example.nested": {"list": [[], {}, [{"x": None, "t": True, "f": False}]], "empty": ""},
    "org.example.controls": "".join(chr(c) for c in range(1, 32)),
}


class _Formats(InteropTestCase):
    def test_canonical_json_content_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        for sender, receiver_sync in ((host_user, guest_sync), (guest_user, host_sync)):
            content = dict(TRICKY_CONTENT, body=TRICKY_CONTENT["body"] + " " + sender.user_id)
            path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
            event_id = sender.ok("PUT", path, content)["event_id"]

            def arrived(event_id: str = event_id, receiver_sync: Sync = receiver_sync) -> Any:
                return next((e for e in receiver_sync.timeline.get(room_id, []) if e.get("event_id") == event_id), None)

            ev = receiver_sync.wait(arrived, f"the tricky event {event_id}")
            self.assertEqual(ev["content"], content)

    def test_big_message_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        for sender, receiver_sync in ((host_user, guest_sync), (guest_user, host_sync)):
            body = (f"{sender.user_id} " + "\u00e9x\U0001f600 " * 4000)[:20000]
            sender.send(room_id, body)
            ev = receiver_sync.wait_for_body(room_id, body)
            self.assertEqual(len(ev["content"]["body"]), len(body))

    def test_state_keys_that_need_escaping(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        for key in ("slash/in key", "percent%2Fencoded", "question?hash#", "\u00e9\U0001f600", ""):
            event_id = host_user.send_state(room_id, "org.example.odd", {"key": key}, state_key=key)
            self._wait_for_event(guest_sync, room_id, event_id)
            got = guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/org.example.odd/{quote(key)}")
            self.assertEqual(got, {"key": key})

    @staticmethod
    def _wait_for_event(sync: Sync, room_id: str, event_id: str) -> None:
        sync.wait(lambda: any(e.get("event_id") == event_id for e in sync.timeline.get(room_id, [])), event_id)

    def test_redacted_history_in_each_room_version(self) -> None:
        for version in ("1", "3", "6", "10", "11", "12"):
            self._redacted_history(version)

    def _redacted_history(self, version: str) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="private_chat", room_version=version)
        levels = host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels")
        redacted: dict[str, dict[str, Any]] = {}
        # each pair: an event and what the room version's redaction algorithm keeps of its content
        message = host_user.send(room_id, f"secret v{version}")
        redacted[message] = {}
        topic = host_user.send_state(room_id, "m.room.topic", {"topic": f"topic v{version}"})
        redacted[topic] = {}
        rules = host_user.send_state(room_id, "m.room.join_rules", {"join_rule": "invite", "org.example": "x"})
        redacted[rules] = {"join_rule": "invite"}
        levels = dict(levels, invite=0, events_default=0, notifications={"room": 50})
        new_levels = host_user.send_state(room_id, "m.room.power_levels", levels)
        kept = {k: v for k, v in levels.items() if k in _POWER_LEVEL_KEYS}
        if version in ("11", "12"):
            kept["invite"] = 0  # v11 keeps "invite"
        redacted[new_levels] = kept
        # the power levels are redacted last, after a copy restores them (the room still works)
        for event_id in (message, topic, rules):
            self._redact(host_user, room_id, event_id)
        host_user.send_state(room_id, "m.room.power_levels", levels)
        self._redact(host_user, room_id, new_levels)
        for i in range(5):
            host_user.send(room_id, f"v{version} after {i}")

        self.invite_and_join(host_user, guest_user, room_id)
        events = {e["event_id"]: e for e in guest_user.all_messages_backwards(room_id)}
        for event_id, content in redacted.items():
            self.assertIn(event_id, events, f"v{version}: redacted {event_id} missing on the guest's server")
            self.assertEqual(events[event_id]["content"], content, f"v{version}: {events[event_id]}")
        self.assertEqual(
            harness.bodies(list(events.values()), f"v{version} after"), [f"v{version} after {i}" for i in range(5)]
        )

    @staticmethod
    def _redact(user: User, room_id: str, event_id: str) -> None:
        user.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/redact/{quote(event_id)}/{uuid.uuid4().hex}", {})


#: power-level keys every room version's redaction keeps
_POWER_LEVEL_KEYS = ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")


class MxserverHostsFormatTests(_Formats):
    host_kind = "mxserver"


class SynapseHostsFormatTests(_Formats):
    host_kind = "synapse"


del _Formats
