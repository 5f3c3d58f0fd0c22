"""Tests for mxserver.rooms.auth: create, auth-event and membership rules."""

from __future__ import annotations

import base64
from typing import Any

from canonicaljson import encode_canonical_json
from nacl.signing import SigningKey
from twisted.trial import unittest

from mxserver.events.model import Event, EventMetadata
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.rooms.auth import AuthError, auth_types_for_event, check_auth_rules, is_valid_user_id
from tests.harness.auth_room import ALICE, ALL_VERSIONS, BOB, CAROL, DAVE, EVE, Room, basic_room, pl_content

V = KNOWN_ROOM_VERSIONS


class AuthTestCase(unittest.SynchronousTestCase):
    def assertAllowed(self, room: Room, ev: Event, **kw: Any) -> None:
        try:
            room.check(ev, **kw)
        except AuthError as e:
            self.fail(f"v{room.n}: {ev!r} unexpectedly rejected: {e}")

    def assertRejected(self, room: Room, ev: Event, reason: str | None = None, **kw: Any) -> AuthError:
        try:
            room.check(ev, **kw)
        except AuthError as e:
            if reason is not None:
                self.assertIn(reason, e.reason, f"v{room.n}")
            return e
        self.fail(f"v{room.n}: {ev!r} unexpectedly allowed")


class CreateEventTests(AuthTestCase):
    def test_valid_create_all_versions(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            self.assertAllowed(room, room.create)

    def test_create_with_prev_events_rejected(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            content = dict(room.create.content)
            ev = room.make("m.room.create", ALICE, content, "", prev=["$other"])
            self.assertRejected(room, ev, "prev_events")

    def test_room_id_domain_must_match_sender_v1_to_v11(self) -> None:
        for n in range(1, 12):
            room = Room(n)
            ev = room.make("m.room.create", BOB, dict(room.create.content, creator=BOB), "", prev=[])
            self.assertRejected(room, ev, "room_id")

    def test_v12_create_must_not_have_room_id(self) -> None:
        room = Room(12)
        ev = room.make("m.room.create", ALICE, {"room_version": "12"}, "", prev=[], extra={"room_id": "!x"})
        self.assertRejected(room, ev, "room_id")

    def test_unknown_room_version_rejected(self) -> None:
        for n in (1, 6, 11, 12):
            room = Room(n)
            ev = room.make("m.room.create", ALICE, dict(room.create.content, room_version="999"), "", prev=[])
            self.assertRejected(room, ev, "unknown room version")
            ev = room.make("m.room.create", ALICE, dict(room.create.content, room_version=5), "", prev=[])
            self.assertRejected(room, ev, "unknown room version")

    def test_creator_field_required_until_v10(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            content = {k: v for k, v in room.create.content.items() if k != "creator"}
            ev = room.make("m.room.create", ALICE, content, "", prev=[])
            if n <= 10:
                self.assertRejected(room, ev, "creator")
            else:
                self.assertAllowed(room, ev)

    def test_v12_additional_creators_validation(self) -> None:
        room = Room(12)
        for good in ([], [BOB], [BOB, CAROL], ["@historical\u00e9:x.test"]):
            ev = room.make("m.room.create", ALICE, {"additional_creators": good}, "", prev=[])
            self.assertAllowed(room, ev)
        for bad in ("@bob:b.test", [1], ["bob"], ["@bob"], ["@bob:"], [None], {"@bob:b.test": 1}, ["@a:b c"]):
            ev = room.make("m.room.create", ALICE, {"additional_creators": bad}, "", prev=[])
            self.assertRejected(room, ev, "additional_creators")

    def test_additional_creators_ignored_before_v12(self) -> None:
        room = Room(11)
        ev = room.make("m.room.create", ALICE, {"additional_creators": "junk"}, "", prev=[])
        self.assertAllowed(room, ev)


class AuthEventsTests(AuthTestCase):
    def test_duplicate_entries_rejected(self) -> None:
        for n in (1, 6, 11, 12):
            room = basic_room(n)
            room.set_member(BOB, BOB, "join")
            old_bob = room.state[("m.room.member", BOB)]
            room.set_member(BOB, BOB, "join", displayname="Bob")
            new_bob = room.state[("m.room.member", BOB)]
            msg = room.make("m.room.message", BOB, {"body": "hi"})
            auth = list(room.auth_events_of(msg).values()) + [old_bob]
            ev = room.make("m.room.message", BOB, {"body": "hi"}, auth=auth)
            kw: dict[str, Any] = {"create_event": room.create} if room.rv.hydra else {}
            # as an iterable the duplicate (type, state_key) is seen directly
            with self.assertRaises(AuthError) as cm:
                check_auth_rules(ev, auth, **kw)
            self.assertIn("duplicate", cm.exception.reason)
            # as a mapping one of the two is necessarily missing
            self.assertRejected(room, ev, "do not match")
            self.assertIn(new_bob, auth)

    def test_same_event_cited_twice_rejected(self) -> None:
        room = basic_room(10)
        room.set_member(BOB, BOB, "join")
        msg = room.make("m.room.message", BOB, {"body": "hi"})
        auth = list(room.auth_events_of(msg).values())
        ev = room.make("m.room.message", BOB, {"body": "hi"}, auth=auth + auth[:1])
        self.assertRejected(room, ev, "twice")

    def test_entries_not_matching_selection_rejected(self) -> None:
        for n in (2, 5, 9, 12):
            room = basic_room(n)
            room.set_member(BOB, BOB, "join")
            msg = room.make("m.room.message", BOB, {"body": "hi"})
            # join rules are only selected for join/invite/knock memberships
            auth = list(room.auth_events_of(msg).values()) + [room.state[("m.room.join_rules", "")]]
            ev = room.make("m.room.message", BOB, {"body": "hi"}, auth=auth)
            self.assertRejected(room, ev, "may cite")
            # another user's membership
            auth = list(room.auth_events_of(msg).values()) + [room.state[("m.room.member", ALICE)]]
            ev = room.make("m.room.message", BOB, {"body": "hi"}, auth=auth)
            self.assertRejected(room, ev, "may cite")

    def test_v12_create_must_not_be_selected(self) -> None:
        room = basic_room(12)
        msg = room.make("m.room.message", ALICE, {"body": "hi"})
        ev = room.make(
            "m.room.message", ALICE, {"body": "hi"}, auth=list(room.auth_events_of(msg).values()) + [room.create]
        )
        self.assertRejected(room, ev, "may cite")

    def test_rejected_auth_event_rejected(self) -> None:
        for n in (1, 8, 12):
            room = basic_room(n)
            room.set_member(BOB, BOB, "join")
            bad_pl = room.make("m.room.power_levels", ALICE, pl_content(room), "")
            bad_pl.metadata.rejected_reason = "test"
            room.apply(bad_pl)
            ev = room.make("m.room.message", BOB, {"body": "hi"})
            self.assertRejected(room, ev, "was rejected")

    def test_auth_event_from_other_room_rejected(self) -> None:
        for n in (3, 11, 12):
            room = basic_room(n)
            # alice's membership event, as if it were from another room
            pdu = room.state[("m.room.member", ALICE)].get_pdu_json()
            pdu["room_id"] = "!elsewhere:a.test"
            foreign = Event(pdu, room.rv, event_id="$foreign:a.test")
            room.by_id[foreign.event_id] = foreign
            room.state[("m.room.member", ALICE)] = foreign
            ev = room.make("m.room.message", ALICE, {"body": "hi"})
            self.assertRejected(room, ev, "another room")

    def test_missing_create_rejected(self) -> None:
        for n in (1, 6, 11):
            room = basic_room(n)
            msg = room.make("m.room.message", ALICE, {"body": "hi"})
            auth = [e for e in room.auth_events_of(msg).values() if e.type != "m.room.create"]
            ev = room.make("m.room.message", ALICE, {"body": "hi"}, auth=auth)
            self.assertRejected(room, ev, "m.room.create")

    def test_auth_events_given_must_be_the_cited_ones(self) -> None:
        room = basic_room(9)
        ev = room.make("m.room.message", ALICE, {"body": "hi"})
        auth = room.auth_events_of(ev)
        del auth[("m.room.power_levels", "")]
        with self.assertRaises(AuthError) as cm:
            check_auth_rules(ev, auth)
        self.assertIn("missing", cm.exception.reason)

    def test_v12_room_id_must_derive_from_create(self) -> None:
        room = basic_room(12)
        ev = room.make("m.room.message", ALICE, {"body": "hi"})
        self.assertAllowed(room, ev)
        other = Room(12, room_hash="otherhash")
        self.assertRejected(room, ev, "derived", create_event=other.create)
        with self.assertRaises(AuthError):
            check_auth_rules(ev, room.auth_events_of(ev))  # no create event at all
        rejected_create = Event(
            room.create.get_pdu_json(),
            room.rv,
            event_id=room.create.event_id,
            metadata=EventMetadata(rejected_reason="bad"),
        )
        self.assertRejected(room, ev, "accepted", create_event=rejected_create)

    def test_state_map_mode(self) -> None:
        """Checking against a state map (state before / current state)."""
        for n in (1, 7, 11, 12):
            room = basic_room(n)
            room.set_member(BOB, BOB, "join")
            msg = room.make("m.room.message", BOB, {"body": "hi"})
            # passes against its own auth events...
            self.assertAllowed(room, msg)
            room.set_member(ALICE, BOB, "ban")
            # ...but soft-fails against the current state (which includes the create event)
            with self.assertRaises(AuthError):
                check_auth_rules(msg, room.state, check_auth_event_selection=False)
            # before the ban it passes against a full state map with extra entries
            room2 = basic_room(n)
            room2.set_member(BOB, BOB, "join")
            room2.set_member(CAROL, CAROL, "join")
            msg2 = room2.make("m.room.message", BOB, {"body": "hi"})
            check_auth_rules(msg2, room2.state, check_auth_event_selection=False)


class FederateTests(AuthTestCase):
    def test_m_federate_false(self) -> None:
        for n in (1, 6, 10, 11, 12):
            room = Room(n, create_content={"m.federate": False})
            room.set_member(ALICE, ALICE, "join")
            room.set_join_rule(ALICE, "public")
            self.assertRejected(room, room.member(BOB, BOB, "join"), "federated")
            self.assertAllowed(room, room.member(EVE, EVE, "join"))  # same server as the creator

    def test_m_federate_true(self) -> None:
        room = Room(11, create_content={"m.federate": True})
        room.set_member(ALICE, ALICE, "join")
        room.set_join_rule(ALICE, "public")
        self.assertAllowed(room, room.member(BOB, BOB, "join"))


class JoinTests(AuthTestCase):
    def test_creator_join(self) -> None:
        for n in ALL_VERSIONS:
            room = Room(n)
            self.assertAllowed(room, room.member(ALICE, ALICE, "join"))
            self.assertRejected(room, room.member(BOB, BOB, "join"))

    def test_creator_join_must_follow_create_directly(self) -> None:
        for n in (1, 11, 12):
            room = Room(n)
            room.set_member(ALICE, ALICE, "join")
            ev = room.make("m.room.member", ALICE, {"membership": "join"}, ALICE, prev=[room.last[0]])
            # no longer the only-create case; alice is joined and join rule defaults to invite
            self.assertAllowed(room, ev)
            room.set_member(ALICE, ALICE, "leave")
            self.assertRejected(room, room.member(ALICE, ALICE, "join"), "invite")

    def test_v12_additional_creator_is_not_the_first_joiner(self) -> None:
        room = Room(12, create_content={"additional_creators": [BOB]})
        self.assertRejected(room, room.member(BOB, BOB, "join"))
        self.assertAllowed(room, room.member(ALICE, ALICE, "join"))

    def test_public_room(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public")
            self.assertAllowed(room, room.member(BOB, BOB, "join"))
            self.assertRejected(room, room.member(BOB, CAROL, "join"), "behalf")

    def test_invite_room(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "invite")
            self.assertRejected(room, room.member(BOB, BOB, "join"), "invite")
            room.set_member(ALICE, BOB, "invite")
            self.assertAllowed(room, room.member(BOB, BOB, "join"))

    def test_no_join_rules_is_invite_only(self) -> None:
        room = basic_room(11, join_rule=None)
        self.assertRejected(room, room.member(BOB, BOB, "join"))
        room.set_member(ALICE, BOB, "invite")
        self.assertAllowed(room, room.member(BOB, BOB, "join"))

    def test_private_and_unknown_join_rules(self) -> None:
        for rule in ("private", "bogus"):
            room = basic_room(11, rule)
            room.set_member(ALICE, BOB, "invite")
            self.assertRejected(room, room.member(BOB, BOB, "join"), "join rule")

    def test_banned_user_cannot_join(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public")
            room.set_member(BOB, BOB, "join")
            room.set_member(ALICE, BOB, "ban")
            self.assertRejected(room, room.member(BOB, BOB, "join"), "banned")

    def test_knock_join_rule(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "knock")
            # knock rooms behave like invite rooms for joins (v7+), and like an
            # unknown rule before that
            self.assertRejected(room, room.member(BOB, BOB, "join"))
            room.set_member(ALICE, BOB, "invite")
            if n >= 7:
                self.assertAllowed(room, room.member(BOB, BOB, "join"))
            else:
                self.assertRejected(room, room.member(BOB, BOB, "join"))

    def _restricted_join(self, room: Room, via: str, signed_by: list[str]) -> Event:
        sigs = {d: {"ed25519:k": "sig"} for d in signed_by}
        return room.make(
            "m.room.member", BOB, {"membership": "join", "join_authorised_via_users_server": via}, BOB, signatures=sigs
        )

    def test_restricted(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "restricted")
            ev = self._restricted_join(room, ALICE, ["b.test", "a.test"])
            if n < 8:
                self.assertRejected(room, ev, "join rule")
                continue
            self.assertAllowed(room, ev)
            # the authorising server's signature is required
            self.assertRejected(room, self._restricted_join(room, ALICE, ["b.test"]), "signed")
            # no authoriser at all
            self.assertRejected(room, room.member(BOB, BOB, "join"), "join_authorised_via_users_server")

    def test_restricted_authoriser_must_be_joined_and_able_to_invite(self) -> None:
        for n in (8, 9, 10, 11, 12):
            room = basic_room(n, "restricted", invite=50)
            # DAVE is not a member at all
            self.assertRejected(room, self._restricted_join(room, DAVE, ["b.test", "d.test"]), "joined")
            # EVE is joined but has power 0 < invite 50
            room.set_join_rule(ALICE, "public")
            room.set_member(EVE, EVE, "join")
            room.set_join_rule(ALICE, "restricted")
            self.assertRejected(room, self._restricted_join(room, EVE, ["b.test", "a.test"]), "invite")
            # give EVE power: now fine
            room.set_pl(ALICE, pl_content(room, {EVE: 50}, invite=50))
            self.assertAllowed(room, self._restricted_join(room, EVE, ["b.test", "a.test"]))

    def test_restricted_invited_user_needs_no_authoriser(self) -> None:
        for n in (8, 10, 12):
            room = basic_room(n, "restricted")
            room.set_member(ALICE, BOB, "invite")
            self.assertAllowed(room, room.member(BOB, BOB, "join"))

    def test_join_authorised_signature_checked_on_any_membership_v8(self) -> None:
        room = basic_room(8, "public")
        room.set_member(BOB, BOB, "join")
        ev = room.make("m.room.member", BOB, {"membership": "leave", "join_authorised_via_users_server": ALICE}, BOB)
        self.assertRejected(room, ev, "signed")
        room7 = basic_room(7, "public")
        room7.set_member(BOB, BOB, "join")
        ev = room7.make("m.room.member", BOB, {"membership": "leave", "join_authorised_via_users_server": ALICE}, BOB)
        self.assertAllowed(room7, ev)  # meaningless before v8

    def test_knock_restricted(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "knock_restricted")
            join = self._restricted_join(room, ALICE, ["b.test", "a.test"])
            knock = room.member(BOB, BOB, "knock")
            if n < 10:
                self.assertRejected(room, join)
                self.assertRejected(room, knock)
            else:
                self.assertAllowed(room, join)
                self.assertAllowed(room, knock)
                self.assertRejected(room, room.member(BOB, BOB, "join"))


class KnockTests(AuthTestCase):
    def test_knock_v6_rejected_v7_allowed(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "knock")
            ev = room.member(BOB, BOB, "knock")
            if n < 7:
                self.assertRejected(room, ev, "unknown membership")
            else:
                self.assertAllowed(room, ev)

    def test_knock_rules(self) -> None:
        for n in (7, 10, 12):
            room = basic_room(n, "invite")
            self.assertRejected(room, room.member(BOB, BOB, "knock"), "knocking")
            room.set_join_rule(ALICE, "knock")
            self.assertRejected(room, room.member(BOB, CAROL, "knock"), "behalf")
            room.set_member(BOB, BOB, "knock")
            # retracting a knock
            self.assertAllowed(room, room.member(BOB, BOB, "leave"))
            # accepting it (invite), then knocking while invited/joined/banned is refused
            room.set_member(ALICE, BOB, "invite")
            self.assertRejected(room, room.member(BOB, BOB, "knock"), "invite")
            room.set_member(BOB, BOB, "join")
            self.assertRejected(room, room.member(BOB, BOB, "knock"), "join")
            room.set_member(ALICE, BOB, "ban")
            self.assertRejected(room, room.member(BOB, BOB, "knock"), "ban")

    def test_knock_denied_by_kick(self) -> None:
        room = basic_room(7, "knock")
        room.set_member(BOB, BOB, "knock")
        self.assertAllowed(room, room.member(ALICE, BOB, "leave"))


class InviteTests(AuthTestCase):
    def test_invite_requires_membership_and_power(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public", invite=50)
            # a non-member cannot invite
            self.assertRejected(room, room.member(BOB, CAROL, "invite"), "not in the room")
            room.set_member(BOB, BOB, "join")
            # bob (0) below invite level 50
            self.assertRejected(room, room.member(BOB, CAROL, "invite"), "invite level")
            self.assertAllowed(room, room.member(ALICE, CAROL, "invite"))

    def test_default_invite_level_is_zero(self) -> None:
        room = basic_room(11, "invite")
        room.set_member(ALICE, BOB, "invite")
        room.set_member(BOB, BOB, "join")
        self.assertAllowed(room, room.member(BOB, CAROL, "invite"))

    def test_cannot_invite_joined_or_banned(self) -> None:
        for n in (1, 6, 12):
            room = basic_room(n, "public")
            room.set_member(BOB, BOB, "join")
            self.assertRejected(room, room.member(ALICE, BOB, "invite"), "join")
            room.set_member(ALICE, BOB, "ban")
            self.assertRejected(room, room.member(ALICE, BOB, "invite"), "ban")


class LeaveKickBanTests(AuthTestCase):
    def setup_room(self, n: int, **levels: Any) -> Room:
        room = basic_room(n, "public", users={BOB: 50, CAROL: 10}, **levels)
        for u in (BOB, CAROL, DAVE):
            room.set_member(u, u, "join")
        return room

    def test_leave(self) -> None:
        for n in ALL_VERSIONS:
            room = self.setup_room(n)
            self.assertAllowed(room, room.member(DAVE, DAVE, "leave"))
            # not in the room: cannot leave
            self.assertRejected(room, room.member(EVE, EVE, "leave"))
            # rejecting an invite
            room.set_member(ALICE, EVE, "invite")
            self.assertAllowed(room, room.member(EVE, EVE, "leave"))

    def test_kick(self) -> None:
        for n in ALL_VERSIONS:
            room = self.setup_room(n)
            self.assertAllowed(room, room.member(BOB, CAROL, "leave"))  # 50 >= kick 50, 10 < 50
            self.assertRejected(room, room.member(CAROL, DAVE, "leave"), "kick")  # 10 < kick 50
            self.assertRejected(room, room.member(BOB, ALICE, "leave"), "kick")  # target higher
            self.assertRejected(room, room.member(EVE, CAROL, "leave"), "not in the room")

    def test_kick_equal_level_rejected(self) -> None:
        for n in (1, 10, 12):
            room = basic_room(n, "public", users={BOB: 50, CAROL: 50})
            room.set_member(BOB, BOB, "join")
            room.set_member(CAROL, CAROL, "join")
            self.assertRejected(room, room.member(BOB, CAROL, "leave"))
            self.assertRejected(room, room.member(BOB, CAROL, "ban"))

    def test_ban(self) -> None:
        for n in ALL_VERSIONS:
            room = self.setup_room(n, ban=60)
            self.assertRejected(room, room.member(BOB, CAROL, "ban"), "ban")  # 50 < ban 60
            self.assertAllowed(room, room.member(ALICE, CAROL, "ban"))
            # banning someone not in the room works too
            self.assertAllowed(room, room.member(ALICE, "@zed:z.test", "ban"))
            self.assertRejected(room, room.member(EVE, CAROL, "ban"), "not in the room")

    def test_unban_needs_ban_and_kick_levels(self) -> None:
        for n in ALL_VERSIONS:
            room = self.setup_room(n, ban=60, kick=40)
            room.set_member(ALICE, DAVE, "ban")
            self.assertRejected(room, room.member(BOB, DAVE, "leave"), "ban level")  # bob 50 < ban 60
            room.set_pl(ALICE, pl_content(room, {BOB: 50, CAROL: 10}, ban=40, kick=60))
            self.assertRejected(room, room.member(BOB, DAVE, "leave"), "kick")  # bob 50 < kick 60
            room.set_pl(ALICE, pl_content(room, {BOB: 50, CAROL: 10}, ban=40, kick=40))
            self.assertAllowed(room, room.member(BOB, DAVE, "leave"))
            # a banned user cannot unban themselves
            self.assertRejected(room, room.member(DAVE, DAVE, "leave"))

    def test_unknown_membership(self) -> None:
        room = self.setup_room(11)
        self.assertRejected(room, room.member(BOB, BOB, "dance"), "unknown membership")
        ev = room.make("m.room.member", BOB, {}, BOB)
        self.assertRejected(room, ev, "no membership")


class ThirdPartyInviteTests(AuthTestCase):
    def setUp(self) -> None:
        self.key = SigningKey.generate()
        self.pub = base64.b64encode(bytes(self.key.verify_key)).decode().rstrip("=")

    def signed(self, mxid: str, token: str, key: SigningKey | None = None) -> dict[str, Any]:
        body = {"mxid": mxid, "token": token, "sender": ALICE}
        sig = (key or self.key).sign(encode_canonical_json(body)).signature
        return dict(body, signatures={"id.test": {"ed25519:0": base64.b64encode(sig).decode().rstrip("=")}})

    def room(self, n: int, key_field: str = "public_key") -> Room:
        room = basic_room(n, "invite", invite=50)
        room.set_member(ALICE, BOB, "invite")
        room.set_member(BOB, BOB, "join")
        if key_field == "public_key":
            content: dict[str, Any] = {
                "display_name": "c...",
                "key_validity_url": "https://id.test/v",
                "public_key": self.pub,
            }
        else:
            content = {
                "display_name": "c...",
                "key_validity_url": "https://id.test/v",
                "public_key": "AAAA",
                "public_keys": [{"public_key": self.pub.replace("+", "-").replace("/", "_")}],
            }
        room.send("m.room.third_party_invite", ALICE, content, "tok")
        return room

    def invite(self, room: Room, sender: str, signed: dict[str, Any], target: str = CAROL) -> Event:
        return room.make(
            "m.room.member",
            sender,
            {"membership": "invite", "third_party_invite": {"display_name": "c...", "signed": signed}},
            target,
        )

    def test_valid_third_party_invite(self) -> None:
        for n in (1, 6, 11, 12):
            for field in ("public_key", "public_keys"):
                room = self.room(n, field)
                ev = self.invite(room, ALICE, self.signed(CAROL, "tok"))
                self.assertIn(("m.room.third_party_invite", "tok"), room.auth_events_of(ev))
                self.assertAllowed(room, ev)

    def test_third_party_invite_failures(self) -> None:
        room = self.room(10)
        self.assertRejected(
            room, self.invite(room, ALICE, self.signed(CAROL, "tok", SigningKey.generate())), "signature"
        )
        self.assertRejected(room, self.invite(room, ALICE, self.signed(DAVE, "tok")), "mxid")
        self.assertRejected(room, self.invite(room, ALICE, self.signed(CAROL, "other")), "no m.room.third_party")
        self.assertRejected(room, self.invite(room, BOB, self.signed(CAROL, "tok")), "did not send")
        self.assertRejected(room, self.invite(room, ALICE, {"mxid": CAROL}), "mxid or token")
        ev = room.make("m.room.member", ALICE, {"membership": "invite", "third_party_invite": {}}, CAROL)
        self.assertRejected(room, ev, "signed")
        tampered = dict(self.signed(CAROL, "tok"), extra="x")
        self.assertRejected(room, self.invite(room, ALICE, tampered), "signature")

    def test_third_party_invite_banned_target(self) -> None:
        room = self.room(11)
        room.set_member(ALICE, CAROL, "ban")
        self.assertRejected(room, self.invite(room, ALICE, self.signed(CAROL, "tok")), "banned")

    def test_sending_third_party_invite_event_needs_invite_level(self) -> None:
        room = self.room(9)
        ev = room.make("m.room.third_party_invite", BOB, {"display_name": "x", "public_key": self.pub}, "tok2")
        self.assertRejected(room, ev, "invite level")


class AliasesTests(AuthTestCase):
    def test_aliases_special_case_v1_to_v5(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "invite")
            # bob is not in the room and has no power
            ev = room.make("m.room.aliases", BOB, {"aliases": ["#x:b.test"]}, "b.test")
            if n <= 5:
                self.assertAllowed(room, ev)
                bad = room.make("m.room.aliases", BOB, {"aliases": ["#x:a.test"]}, "a.test")
                self.assertRejected(room, bad, "state_key")
                no_key = room.make("m.room.aliases", BOB, {"aliases": []})
                self.assertRejected(room, no_key, "state_key")
            else:
                self.assertRejected(room, ev, "not in the room")

    def test_aliases_v6_normal_state_event(self) -> None:
        room = basic_room(6, "public")
        room.set_member(BOB, BOB, "join")
        self.assertRejected(room, room.make("m.room.aliases", BOB, {"aliases": []}, "b.test"), "power level")
        self.assertAllowed(room, room.make("m.room.aliases", ALICE, {"aliases": []}, "b.test"))


class OtherEventsTests(AuthTestCase):
    def test_sender_must_be_joined(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "invite")
            self.assertRejected(room, room.make("m.room.message", BOB, {"body": "x"}), "not in the room")
            room.set_member(ALICE, BOB, "invite")
            self.assertRejected(room, room.make("m.room.message", BOB, {"body": "x"}), "not in the room")
            room.set_member(BOB, BOB, "join")
            self.assertAllowed(room, room.make("m.room.message", BOB, {"body": "x"}))

    def test_required_power_level(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public", events={"m.room.name": 20, "org.custom": 30}, events_default=10)
            room.set_member(BOB, BOB, "join")
            self.assertRejected(room, room.make("m.room.message", BOB, {"body": "x"}), "power level")
            room.set_pl(
                ALICE, pl_content(room, {BOB: 25}, events={"m.room.name": 20, "org.custom": 30}, events_default=10)
            )
            self.assertAllowed(room, room.make("m.room.message", BOB, {"body": "x"}))
            self.assertAllowed(room, room.make("m.room.name", BOB, {"name": "n"}, ""))
            self.assertRejected(room, room.make("org.custom", BOB, {}), "power level")
            self.assertRejected(room, room.make("m.room.topic", BOB, {"topic": "t"}, ""), "power level")  # state 50

    def test_state_key_starting_with_at(self) -> None:
        for n in ALL_VERSIONS:
            room = basic_room(n, "public", state_default=0)
            room.set_member(BOB, BOB, "join")
            self.assertAllowed(room, room.make("org.state", BOB, {}, BOB))
            self.assertAllowed(room, room.make("org.state", BOB, {}, "bob"))
            self.assertRejected(room, room.make("org.state", BOB, {}, CAROL), "'@'")
            self.assertRejected(room, room.make("org.state", ALICE, {}, BOB), "'@'")

    def test_redaction_v1_v2(self) -> None:
        for n in (1, 2):
            room = basic_room(n, "public")
            room.set_member(BOB, BOB, "join")
            room.set_member(CAROL, CAROL, "join")
            own = room.send("m.room.message", BOB, {"body": "x"})
            other = room.send("m.room.message", CAROL, {"body": "x"})
            self.assertEqual(own.event_id.split(":")[1], "b.test")
            red_own = room.make("m.room.redaction", BOB, {}, extra={"redacts": own.event_id})
            self.assertAllowed(room, red_own)
            red_other = room.make("m.room.redaction", BOB, {}, extra={"redacts": other.event_id})
            self.assertRejected(room, red_other, "redact")
            self.assertRejected(room, room.make("m.room.redaction", BOB, {}), "redact")
            # alice has the redact level
            self.assertAllowed(room, room.make("m.room.redaction", ALICE, {}, extra={"redacts": other.event_id}))

    def test_redaction_v3_plus_not_checked_against_redact_level(self) -> None:
        for n in range(3, 13):
            room = basic_room(n, "public")
            room.set_member(BOB, BOB, "join")
            room.set_member(CAROL, CAROL, "join")
            other = room.send("m.room.message", CAROL, {"body": "x"})
            if room.rv.implicit_room_creator:
                ev = room.make("m.room.redaction", BOB, {"redacts": other.event_id})
            else:
                ev = room.make("m.room.redaction", BOB, {}, extra={"redacts": other.event_id})
            self.assertAllowed(room, ev)
            room.set_pl(ALICE, pl_content(room, events={"m.room.redaction": 10}))
            self.assertRejected(room, room.make("m.room.redaction", BOB, {"redacts": other.event_id}), "power level")


class SelectionTests(unittest.SynchronousTestCase):
    def test_create(self) -> None:
        for n in ALL_VERSIONS:
            self.assertEqual(auth_types_for_event(V[str(n)], "m.room.create", ALICE, "", {}), set())

    def test_message(self) -> None:
        base = {("m.room.power_levels", ""), ("m.room.member", BOB)}
        self.assertEqual(auth_types_for_event(V["11"], "m.room.message", BOB, None, {}), base | {("m.room.create", "")})
        self.assertEqual(auth_types_for_event(V["12"], "m.room.message", BOB, None, {}), base)

    def test_member(self) -> None:
        got = auth_types_for_event(V["6"], "m.room.member", ALICE, BOB, {"membership": "ban"})
        self.assertEqual(
            got, {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", ALICE), ("m.room.member", BOB)}
        )
        for m in ("join", "invite", "knock"):
            self.assertIn(
                ("m.room.join_rules", ""), auth_types_for_event(V["7"], "m.room.member", BOB, BOB, {"membership": m})
            )
        self.assertNotIn(
            ("m.room.join_rules", ""), auth_types_for_event(V["7"], "m.room.member", BOB, BOB, {"membership": "leave"})
        )

    def test_join_authorised_via(self) -> None:
        content = {"membership": "join", "join_authorised_via_users_server": CAROL}
        self.assertIn(("m.room.member", CAROL), auth_types_for_event(V["8"], "m.room.member", BOB, BOB, content))
        self.assertNotIn(("m.room.member", CAROL), auth_types_for_event(V["7"], "m.room.member", BOB, BOB, content))
        leave = dict(content, membership="leave")
        self.assertNotIn(("m.room.member", CAROL), auth_types_for_event(V["8"], "m.room.member", BOB, BOB, leave))

    def test_third_party_token(self) -> None:
        content = {"membership": "invite", "third_party_invite": {"signed": {"token": "abc", "mxid": BOB}}}
        got = auth_types_for_event(V["12"], "m.room.member", ALICE, BOB, content)
        self.assertIn(("m.room.third_party_invite", "abc"), got)
        bad = {"membership": "invite", "third_party_invite": "junk"}
        self.assertNotIn(
            ("m.room.third_party_invite", "abc"), auth_types_for_event(V["12"], "m.room.member", ALICE, BOB, bad)
        )


class UserIdTests(unittest.SynchronousTestCase):
    def test_user_ids(self) -> None:
        for good in ("@a:b", "@a.b_c=d-e/f+g:example.org:8448", "@x:[::1]", "@x:1.2.3.4", "@\u00e9:x.org", "@:x.org"):
            self.assertTrue(is_valid_user_id(good), good)
        for bad in ("a:b", "@ab", "@a:", "@a:b c", "@a\x00:b", "@a:b:123456", 5, None, "@" + "a" * 255 + ":b"):
            self.assertFalse(is_valid_user_id(bad), bad)
