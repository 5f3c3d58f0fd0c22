"""Tests for m.room.power_levels auth and the helpers in mxserver.rooms.power_levels."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.rooms.power_levels import (
    CREATOR_POWER_LEVEL,
    can_act_on_user,
    can_send_event,
    default_power_levels_content,
    get_named_level,
    get_notification_level,
    get_required_level_for_event,
    get_room_creators,
    get_user_power_level,
    parse_power_level,
    redaction_may_be_applied,
    user_has_named_level,
)
from tests.harness.auth_room import ALICE, ALL_VERSIONS, BOB, CAROL, DAVE, Room, basic_room, pl_content
from tests.test_auth_rules import AuthTestCase

V = KNOWN_ROOM_VERSIONS
levels = st.integers(min_value=-100, max_value=200)


class PowerLevelsChangeTests(AuthTestCase):
    def room(self, n: int, **levels: Any) -> Room:
        room = basic_room(n, "public", users={BOB: 50, CAROL: 50, DAVE: 10}, **levels)
        for u in (BOB, CAROL, DAVE):
            room.set_member(u, u, "join")
        return room

    def pl(self, room: Room, users: dict[str, Any], **levels: Any) -> Any:
        return room.make("m.room.power_levels", BOB, pl_content(room, users, **levels), "")

    def test_first_power_levels_event(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            room.set_member(ALICE, ALICE, "join")
            # anything goes for the first one (as long as it is well-formed)
            content = pl_content(room, {BOB: 1000}, ban=5000)
            self.assertAllowed(room, room.make("m.room.power_levels", ALICE, content, ""))

    def test_needs_required_level(self) -> None:
        for n in ALL_VERSIONS:
            room = self.room(n)  # m.room.power_levels needs state_default 50 here; DAVE has 10
            ev = room.make("m.room.power_levels", DAVE, pl_content(room, {BOB: 50, CAROL: 50, DAVE: 10}), "")
            self.assertRejected(room, ev, "power level")

    def test_users_changes(self) -> None:
        for n in ALL_VERSIONS:
            room = self.room(n)
            base = {BOB: 50, CAROL: 50, DAVE: 10}
            # raising yourself above your own level
            self.assertRejected(room, self.pl(room, dict(base, **{BOB: 51})), "above your own")
            # raising someone else to your own level is fine
            self.assertAllowed(room, self.pl(room, dict(base, **{DAVE: 50})))
            # but not above it
            self.assertRejected(room, self.pl(room, dict(base, **{DAVE: 51})), "above your own")
            # changing someone at your level, or removing them
            self.assertRejected(room, self.pl(room, dict(base, **{CAROL: 10})), "not below you")
            self.assertRejected(room, self.pl(room, {BOB: 50, DAVE: 10}), "not below you")
            # demoting someone below you, or yourself
            self.assertAllowed(room, self.pl(room, dict(base, **{DAVE: 0})))
            self.assertAllowed(room, self.pl(room, dict(base, **{BOB: 20})))
            # adding a new user at your level
            self.assertAllowed(room, self.pl(room, dict(base, **{"@new:x.test": 50})))

    def test_top_level_changes(self) -> None:
        for n in ALL_VERSIONS:
            room = self.room(n, kick=70)
            base = {BOB: 50, CAROL: 50, DAVE: 10}
            self.assertRejected(room, self.pl(room, base, kick=40), "kick")  # current 70 > 50
            self.assertRejected(room, self.pl(room, base), "kick")  # removing kick=70
            self.assertAllowed(room, self.pl(room, base, kick=70, ban=50))  # ban: 50 (default) -> 50
            self.assertRejected(room, self.pl(room, base, kick=70, ban=60), "ban")
            self.assertAllowed(room, self.pl(room, base, kick=70, ban=20, invite=50))

    def test_events_changes(self) -> None:
        for n in ALL_VERSIONS:
            room = self.room(n, events={"m.room.name": 60, "m.room.topic": 40})
            base = {BOB: 50, CAROL: 50, DAVE: 10}
            self.assertRejected(room, self.pl(room, base, events={"m.room.name": 50, "m.room.topic": 40}), "events")
            self.assertRejected(room, self.pl(room, base, events={"m.room.topic": 40}), "events")  # removal
            self.assertRejected(room, self.pl(room, base, events={"m.room.name": 60, "m.room.topic": 51}), "events")
            self.assertAllowed(room, self.pl(room, base, events={"m.room.name": 60, "m.room.topic": 50, "x": 1}))

    def test_notifications_checked_from_v6(self) -> None:
        for n in ALL_VERSIONS:
            room = self.room(n, notifications={"room": 80})
            base = {BOB: 50, CAROL: 50, DAVE: 10}
            lower = self.pl(room, base, notifications={"room": 20})
            raise_ = self.pl(room, base, notifications={"room": 80, "other": 90})
            if n >= 6:
                self.assertRejected(room, lower, "notifications")
                self.assertRejected(room, raise_, "notifications")
            else:
                self.assertAllowed(room, lower)
                self.assertAllowed(room, raise_)

    def test_string_levels_v1_to_v9(self) -> None:
        for n in range(1, 10):
            room = basic_room(n, "public", users={BOB: "50"}, kick=" +060 ")
            room.set_member(BOB, BOB, "join")
            room.set_member(DAVE, DAVE, "join")
            self.assertEqual(get_user_power_level(BOB, room.state, room.rv), 50)
            self.assertAllowed(room, room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: "40"}), ""))
            # the kick level " +060 " is 60, so bob (50) cannot kick dave
            self.assertRejected(room, room.member(BOB, DAVE, "leave"), "kick")
            bad = room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: "4x"}), "")
            self.assertRejected(room, bad, "integer")
            # "50" vs 50 is not a change: bob may re-spell levels above his own
            room.set_pl(ALICE, pl_content(room, {BOB: 50}, ban="60", kick=60))
            respelled = room.make("m.room.power_levels", BOB, pl_content(room, {BOB: 50}, ban=60, kick="060"), "")
            self.assertAllowed(room, respelled)
            changed = room.make("m.room.power_levels", BOB, pl_content(room, {BOB: 50}, ban=61, kick=60), "")
            self.assertRejected(room, changed, "ban")

    def test_string_levels_rejected_from_v10(self) -> None:
        for n in (10, 11, 12):
            room = Room(n)
            room.set_member(ALICE, ALICE, "join")
            for content in (
                pl_content(room, {BOB: "40"}),
                pl_content(room, ban="50"),
                pl_content(room, events={"x": "5"}),
                pl_content(room, notifications={"room": "5"}),
                pl_content(room, notifications="x"),
                pl_content(room, events=["x"]),
            ):
                ev = room.make("m.room.power_levels", ALICE, content, "")
                self.assertRejected(room, ev, "integer")
            self.assertAllowed(room, room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: 40}), ""))
        # the same string-valued content is fine in v9
        room = Room(9)
        room.set_member(ALICE, ALICE, "join")
        self.assertAllowed(room, room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: "40"}, ban="5"), ""))

    def test_booleans_are_not_levels(self) -> None:
        for n in (3, 10):
            room = basic_room(n)
            ev = room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: True}), "")
            self.assertRejected(room, ev, "integer")

    def test_float_levels(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public")
            ev = room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: 50.57}), "")
            if n <= 5:
                self.assertAllowed(room, ev)
                room.apply(ev)
                self.assertEqual(get_user_power_level(BOB, room.state, room.rv), 50)
                for bad in (math.inf, -math.inf, math.nan):
                    self.assertRejected(
                        room, room.make("m.room.power_levels", ALICE, pl_content(room, {BOB: bad}), ""), "non-finite"
                    )
                    self.assertRejected(
                        room, room.make("m.room.power_levels", ALICE, pl_content(room, ban=bad), ""), "non-finite"
                    )
            else:
                self.assertRejected(room, ev, "integer")

    def test_users_keys_must_be_user_ids(self) -> None:
        for n in (1, 9, 10, 12):
            room = basic_room(n)
            for bad_users in ({"bob": 10}, {"@bob": 10}, ["@bob:b.test"]):
                content = {"users": bad_users}
                self.assertRejected(room, room.make("m.room.power_levels", ALICE, content, ""))

    def test_v12_creators_not_in_users(self) -> None:
        room = Room(12, create_content={"additional_creators": [BOB]})
        room.set_member(ALICE, ALICE, "join")
        self.assertRejected(room, room.make("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, ""), "creators")
        self.assertRejected(room, room.make("m.room.power_levels", ALICE, {"users": {BOB: 100}}, ""), "creators")
        self.assertAllowed(room, room.make("m.room.power_levels", ALICE, {"users": {CAROL: 100}}, ""))
        # v11: the creator may (and normally does) appear
        room11 = Room(11)
        room11.set_member(ALICE, ALICE, "join")
        self.assertAllowed(room11, room11.make("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, ""))

    def test_v12_creators_have_infinite_power(self) -> None:
        room = Room(12, create_content={"additional_creators": [BOB]})
        room.set_member(ALICE, ALICE, "join")
        room.set_join_rule(ALICE, "public")
        room.set_member(BOB, BOB, "join")
        room.set_member(CAROL, CAROL, "join")
        big = 2**53 - 1
        room.set_pl(
            ALICE,
            {"users": {CAROL: big}, "state_default": big, "kick": big, "ban": big, "events": {"m.room.tombstone": big}},
        )
        self.assertEqual(get_user_power_level(BOB, room.state, room.rv), CREATOR_POWER_LEVEL)
        # the additional creator out-ranks anybody
        self.assertAllowed(room, room.member(BOB, CAROL, "ban"))
        self.assertAllowed(room, room.member(BOB, CAROL, "leave"))
        self.assertAllowed(room, room.make("m.room.tombstone", BOB, {"body": "x"}, ""))
        # and nobody can touch the creators
        self.assertRejected(room, room.member(CAROL, BOB, "ban"))
        self.assertRejected(room, room.member(CAROL, ALICE, "leave"))
        # creators can change any level, including demoting the top user
        self.assertAllowed(room, room.make("m.room.power_levels", BOB, {"users": {CAROL: 0}}, ""))
        # carol, at 2**53-1, cannot list a creator or raise anyone above herself
        self.assertRejected(
            room, room.make("m.room.power_levels", CAROL, {"users": {CAROL: big, BOB: 1}}, ""), "creators"
        )

    def test_v11_creator_has_no_special_power(self) -> None:
        room = basic_room(11, "public", users={BOB: 100})
        room.set_member(BOB, BOB, "join")
        # alice (creator, 100) and bob (100) are equals
        self.assertRejected(room, room.member(BOB, ALICE, "ban"))
        self.assertRejected(room, room.member(ALICE, BOB, "ban"))


class PowerLevelPropertyTests(AuthTestCase):
    @settings(max_examples=60, deadline=None)
    @given(sender=levels, target=levels, ban=levels, n=st.sampled_from([1, 3, 6, 8, 10, 11, 12]))
    def test_ban_iff_levels_allow(self, sender: int, target: int, ban: int, n: int) -> None:
        room = basic_room(n, "public", users={BOB: sender, CAROL: target}, ban=ban)
        room.set_member(BOB, BOB, "join")
        self.assertEqual(room.allowed(room.member(BOB, CAROL, "ban")), sender >= ban and target < sender)

    @settings(max_examples=60, deadline=None)
    @given(sender=levels, target=levels, kick=levels, n=st.sampled_from([2, 5, 7, 9, 12]))
    def test_kick_iff_levels_allow(self, sender: int, target: int, kick: int, n: int) -> None:
        room = basic_room(n, "public", users={BOB: sender, CAROL: target}, kick=kick)
        room.set_member(BOB, BOB, "join")
        room.set_member(CAROL, CAROL, "join")
        self.assertEqual(room.allowed(room.member(BOB, CAROL, "leave")), sender >= kick and target < sender)
        self.assertEqual(can_act_on_user(BOB, CAROL, "kick", room.state, room.rv), sender >= kick and target < sender)

    @settings(max_examples=60, deadline=None)
    @given(sender=st.integers(50, 150), old=levels, new=levels, n=st.sampled_from([1, 6, 10, 12]))
    def test_changing_another_users_level(self, sender: int, old: int, new: int, n: int) -> None:
        room = basic_room(n, "public", users={BOB: sender, CAROL: old})
        room.set_member(BOB, BOB, "join")
        ev = room.make("m.room.power_levels", BOB, pl_content(room, {BOB: sender, CAROL: new}), "")
        expected = old == new or (old < sender and new <= sender)
        self.assertEqual(room.allowed(ev), expected)

    @settings(max_examples=60, deadline=None)
    @given(
        value=st.integers(-(2**53) + 1, 2**53 - 1),
        zeros=st.integers(0, 3),
        sign=st.sampled_from(["", "+"]),
        ws=st.sampled_from(["", " ", "\t", "  \n"]),
    )
    def test_stringy_parse(self, value: int, zeros: int, sign: str, ws: str) -> None:
        digits = "0" * zeros + str(abs(value))
        text = ws + ("-" if value < 0 else sign) + digits + ws
        for n in range(1, 10):
            self.assertEqual(parse_power_level(text, V[str(n)]), value)
        for n in (10, 11, 12):
            self.assertIsNone(parse_power_level(text, V[str(n)]))
        self.assertEqual(parse_power_level(value, V["12"]), value)

    def test_stringy_parse_rejects_non_integers(self) -> None:
        for bad in ("1_000", "1.5", "", "+-1", "0x10", "\u0661", "50a", "1e3", " ", "Infinity"):
            self.assertIsNone(parse_power_level(bad, V["1"]), bad)
        self.assertIsNone(parse_power_level(True, V["1"]))
        self.assertIsNone(parse_power_level(None, V["1"]))
        self.assertEqual(parse_power_level(-7.9, V["5"]), -7)
        self.assertIsNone(parse_power_level(7.5, V["6"]))
        self.assertIsNone(parse_power_level("5", None))


class HelperTests(unittest.SynchronousTestCase):
    def test_creators(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n, create_content={"additional_creators": [BOB]})
            expected = {ALICE, BOB} if n >= 12 else {ALICE}
            self.assertEqual(get_room_creators(room.create), expected)
        room = Room(10, create_content={"creator": CAROL})
        self.assertEqual(get_room_creators(room.create), {CAROL})
        room = Room(11, create_content={"creator": CAROL})
        self.assertEqual(get_room_creators(room.create), {ALICE})

    def test_levels_without_power_levels_event(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            room.set_member(ALICE, ALICE, "join")
            expected = CREATOR_POWER_LEVEL if n >= 12 else 100
            self.assertEqual(get_user_power_level(ALICE, room.state, room.rv), expected)
            self.assertEqual(get_user_power_level(BOB, room.state, room.rv), 0)
            # without the create event in the map (v12 auth events), pass it explicitly
            state = {k: v for k, v in room.state.items() if k[0] != "m.room.create"}
            self.assertEqual(get_user_power_level(ALICE, state, room.rv, create_event=room.create), expected)
            self.assertTrue(user_has_named_level(ALICE, "ban", room.state))
            self.assertFalse(user_has_named_level(BOB, "ban", room.state))
            self.assertTrue(user_has_named_level(BOB, "invite", room.state))
            self.assertTrue(can_send_event(ALICE, "m.room.name", True, room.state))
            self.assertFalse(can_send_event(BOB, "m.room.name", True, room.state))
            self.assertTrue(can_send_event(BOB, "m.room.message", False, room.state))

    def test_users_default(self) -> None:
        room = basic_room(11, users_default=7)
        self.assertEqual(get_user_power_level(BOB, room.state, room.rv), 7)
        self.assertEqual(get_user_power_level(ALICE, room.state, room.rv), 100)

    def test_named_levels(self) -> None:
        defaults = {
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
        }
        for name, default in defaults.items():
            self.assertEqual(get_named_level(None, name), default)
            self.assertEqual(get_named_level({}, name), default)
            self.assertEqual(get_named_level({name: 3}, name), 3)
            self.assertEqual(get_named_level({name: "3"}, name, V["9"]), 3)
            self.assertEqual(get_named_level({name: "3"}, name, V["10"]), default)
        self.assertRaises(ValueError, get_named_level, {}, "bogus")

    def test_required_level(self) -> None:
        content = {"events": {"m.room.name": 20}, "state_default": 40, "events_default": 5}
        self.assertEqual(get_required_level_for_event("m.room.name", True, content), 20)
        self.assertEqual(get_required_level_for_event("m.room.topic", True, content), 40)
        self.assertEqual(get_required_level_for_event("m.room.message", False, content), 5)
        self.assertEqual(get_required_level_for_event("m.room.topic", True, None), 50)
        self.assertEqual(get_required_level_for_event("m.room.message", False, None), 0)

    def test_notification_level(self) -> None:
        self.assertEqual(get_notification_level(None), 50)
        self.assertEqual(get_notification_level({"notifications": {"room": 10}}), 10)
        self.assertEqual(get_notification_level({"notifications": {"room": "10"}}, "room", V["4"]), 10)

    def test_default_content_passes_auth(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n, create_content={"additional_creators": [BOB]} if n >= 12 else None)
            room.set_member(ALICE, ALICE, "join")
            content = default_power_levels_content(
                room.rv, ALICE, additional_creators=[BOB] if n >= 12 else [], extra_admins=[BOB, CAROL]
            )
            room.set_pl(ALICE, content)
            if n >= 12:
                self.assertNotIn(ALICE, content["users"])
                self.assertNotIn(BOB, content["users"])
                self.assertGreater(content["events"]["m.room.tombstone"], content["state_default"])
            else:
                self.assertEqual(content["users"][ALICE], 100)
            self.assertEqual(content["users"][CAROL], 100)

    def test_redaction_may_be_applied(self) -> None:
        room = basic_room(11, "public")
        for u in (BOB, CAROL, "@bob2:b.test"):
            room.set_member(u, u, "join")
        msg = room.send("m.room.message", CAROL, {"body": "x"})
        own_server = room.send("m.room.message", "@bob2:b.test", {"body": "x"})
        red = room.make("m.room.redaction", BOB, {"redacts": msg.event_id})
        self.assertFalse(redaction_may_be_applied(red, msg, room.state))
        self.assertTrue(redaction_may_be_applied(red, own_server, room.state))
        red_admin = room.make("m.room.redaction", ALICE, {"redacts": msg.event_id})
        self.assertTrue(redaction_may_be_applied(red_admin, msg, room.state))
