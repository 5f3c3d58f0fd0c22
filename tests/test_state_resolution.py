"""Tests for state resolution (mxserver.rooms.state_resolution).

The rooms are hand-built DAGs: :class:`Room` builds events with explicit IDs,
picks each event's auth events from the state it is sent in (server-server-api
§Auth events selection), checks it against them with the real auth rules, and
returns the :class:`Fork` after it. Two forks' states are then resolved.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.rooms.auth import AuthError, auth_types_for_event, check_auth_rules
from mxserver.rooms.state_resolution import StateKey, resolve_state, resolve_state_sync

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"

PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")
CREATE: StateKey = ("m.room.create", "")


def member(user: str) -> StateKey:
    return ("m.room.member", user)


@attrs.frozen
class Fork:
    """The room as seen after ``tip``: its state (key -> event ID)."""

    state: Mapping[StateKey, str]
    tip: str
    depth: int


class Room:
    """Builds a room's events; every event is checked by the real auth rules
    against the state it is sent in (unless ``check=False``)."""

    def __init__(self, version: str = "11", creator: str = ALICE) -> None:
        rv = get_room_version(version)
        assert rv is not None
        self.rv: RoomVersion = rv
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.ts = 1000
        self.room_id = "!create" if rv.hydra else "!room:a.test"
        content: dict[str, Any] = {"room_version": version}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        self.create_fork = self.send(None, "$create", "m.room.create", creator, content, "")

    @property
    def create_event(self) -> Event:
        return self.events["$create"]

    def send(
        self,
        at: Fork | None,
        event_id: str,
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        ts: int | None = None,
        prev: Iterable[Fork] | None = None,
        check: bool = True,
    ) -> Fork:
        state = dict(at.state) if at is not None else {}
        keys = auth_types_for_event(self.rv, type, sender, state_key, content)
        auth = sorted(state[k] for k in keys if k in state)
        prevs = list(prev) if prev is not None else ([at] if at is not None else [])
        depth = max((f.depth for f in prevs), default=0) + 1
        if ts is None:
            self.ts += 1
            ts = self.ts
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "depth": depth,
            "origin_server_ts": ts,
            "prev_events": [f.tip for f in prevs],
            "auth_events": auth,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if type == "m.room.create" and self.rv.hydra:
            del pdu["room_id"]
        if self.rv.event_id_in_pdu:
            pdu["event_id"] = event_id
        ev = Event(pdu, self.rv, event_id=event_id)
        assert event_id not in self.events, event_id
        self.events[event_id] = ev
        if check:
            check_auth_rules(
                ev,
                {self.events[a].state_tuple(): self.events[a] for a in auth},
                create_event=self.events["$create"] if self.rv.hydra else None,
            )
        if state_key is not None:
            state[(type, state_key)] = event_id
        return Fork(state, event_id, depth)

    # -- common moves -------------------------------------------------------------
    def join(self, at: Fork, event_id: str, user: str, **kw: Any) -> Fork:
        return self.send(at, event_id, "m.room.member", user, {"membership": "join"}, user, **kw)

    def membership(self, at: Fork, event_id: str, sender: str, target: str, membership: str, **kw: Any) -> Fork:
        return self.send(at, event_id, "m.room.member", sender, {"membership": membership}, target, **kw)

    def power_levels(self, at: Fork, event_id: str, sender: str, users: dict[str, int], **kw: Any) -> Fork:
        if self.rv.hydra:
            users = {u: lvl for u, lvl in users.items() if u != self.creator}
        content = {
            "users": users,
            "users_default": 0,
            "events": {"m.room.power_levels": 50, "m.room.topic": 50, "m.room.join_rules": 50},
            "state_default": 50,
            "events_default": 0,
            "ban": 50,
            "kick": 50,
            "invite": 0,
            "redact": 50,
        }
        return self.send(at, event_id, "m.room.power_levels", sender, content, "", **kw)

    def topic(self, at: Fork, event_id: str, sender: str, topic: str, **kw: Any) -> Fork:
        return self.send(at, event_id, "m.room.topic", sender, {"topic": topic}, "", **kw)

    def join_rule(self, at: Fork, event_id: str, sender: str, rule: str, **kw: Any) -> Fork:
        return self.send(at, event_id, "m.room.join_rules", sender, {"join_rule": rule}, "", **kw)

    def message(self, at: Fork, event_id: str, sender: str, **kw: Any) -> Fork:
        return self.send(at, event_id, "m.room.message", sender, {"body": "hi"}, **kw)

    def base(self, admins: dict[str, int] | None = None) -> Fork:
        """create; Alice joins; power levels (Alice 100, Bob 50); public; Bob and
        Carol join."""
        f = self.join(self.create_fork, "$alice", ALICE)
        f = self.power_levels(f, "$pl0", ALICE, admins or {ALICE: 100, BOB: 50})
        f = self.join_rule(f, "$jr0", ALICE, "public")
        f = self.join(f, "$bob", BOB)
        return self.join(f, "$carol", CAROL)

    # -- resolving -----------------------------------------------------------------
    def resolve(self, *forks: Fork | Mapping[StateKey, str], **kw: Any) -> dict[StateKey, str]:
        states = [f.state if isinstance(f, Fork) else f for f in forks]
        return resolve_state_sync(self.rv, states, self.events, **kw)


V2_VERSIONS = ("2", "3", "6", "10", "11")
ALL = ("1",) + V2_VERSIONS + ("12",)


class BasicTests(unittest.SynchronousTestCase):
    def test_no_state_sets(self) -> None:
        self.assertEqual(resolve_state_sync(get_room_version("11"), [], {}), {})

    def test_single_and_identical_state_sets(self) -> None:
        for version in ALL:
            room = Room(version)
            f = room.base()
            self.assertEqual(room.resolve(f), dict(f.state))
            self.assertEqual(room.resolve(f, f, f), dict(f.state))

    def test_unconflicted_state_passes_through(self) -> None:
        """Keys every state set agrees on come out unchanged (step 5), even
        an entry the conflicted events would not have allowed and even one
        whose event is unknown."""
        for version in ALL:
            room = Room(version)
            f = room.base()
            f = room.topic(f, "$t0", BOB, "old")
            a = room.topic(f, "$ta", ALICE, "from a")
            b = room.topic(f, "$tb", BOB, "from b")
            extra = {("m.room.name", ""): "$unknown-name-event"}
            sa = {**a.state, **extra}
            sb = {**b.state, **extra}
            resolved = room.resolve(sa, sb)
            for key, value in sa.items():
                if sb.get(key) == value:
                    self.assertEqual(resolved[key], value, (version, key))
            self.assertEqual(resolved[("m.room.name", "")], "$unknown-name-event")
            self.assertIn(resolved[TOPIC], ("$ta", "$tb"))


class RaceTests(unittest.SynchronousTestCase):
    def test_ban_racing_join(self) -> None:
        """Alice bans Dave while Dave joins: the ban wins everywhere (v2: it is
        a power event, replayed first, and the join then fails auth)."""
        for version in ALL:
            room = Room(version)
            f = room.base()
            a = room.membership(f, "$ban", ALICE, DAVE, "ban")
            b = room.join(f, "$dave", DAVE)
            b = room.topic(b, "$noise", BOB, "noise")
            for order in ((a, b), (b, a)):
                resolved = room.resolve(*order)
                self.assertEqual(resolved[member(DAVE)], "$ban", version)
                self.assertEqual(resolved[TOPIC], "$noise", version)

    def test_two_power_level_changes_racing(self) -> None:
        """Alice (100) demotes Bob while Bob (50) promotes Carol: Alice's
        change sorts first (greater power), Bob's then fails auth -- even
        though Bob's has the earlier origin_server_ts."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            a = room.power_levels(f, "$pl_alice", ALICE, {ALICE: 100, BOB: 0}, ts=5000)
            b = room.power_levels(f, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CAROL: 50}, ts=4000)
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[PL], "$pl_alice", version)

    def test_power_level_race_v1_takes_first_then_stops(self) -> None:
        """v1: the shallower PL event is taken unconditionally, then the next
        one only if it is allowed in R."""
        room = Room("1")
        f = room.base()
        # Bob's change is shallower (depth) so it is taken first; Alice's is
        # then allowed on top of it.
        b = room.power_levels(f, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CAROL: 50})
        a = room.message(f, "$m1", ALICE)
        a = room.power_levels(a, "$pl_alice", ALICE, {ALICE: 100, BOB: 0})
        self.assertEqual(room.resolve(a, b)[PL], "$pl_alice")
        # The other way round: Alice's first, Bob (now 0) cannot follow.
        room = Room("1")
        f = room.base()
        a = room.power_levels(f, "$pl_alice", ALICE, {ALICE: 100, BOB: 0})
        b = room.message(f, "$m1", BOB)
        b = room.power_levels(b, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CAROL: 50})
        self.assertEqual(room.resolve(a, b)[PL], "$pl_alice")

    def test_join_rule_change_racing_join(self) -> None:
        """Alice makes the room invite-only while Dave joins: the join rules
        are a power event, so Dave's join is replayed after them and fails."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            a = room.join_rule(f, "$jr_invite", ALICE, "invite", ts=9000)
            b = room.join(f, "$dave", DAVE, ts=10)
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[JR], "$jr_invite", version)
            self.assertNotIn(member(DAVE), resolved, version)

    def test_event_failing_auth_is_dropped(self) -> None:
        """Alice raises the topic level while Bob (50) changes the topic: Bob's
        topic fails the iterative auth checks and the old topic stays."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            f = room.topic(f, "$t0", ALICE, "old")
            a = room.send(
                f,
                "$pl_strict",
                "m.room.power_levels",
                ALICE,
                {"users": {ALICE: 100, BOB: 50} if not room.rv.hydra else {BOB: 50}, "events": {"m.room.topic": 100}},
                "",
            )
            b = room.topic(f, "$t_bob", BOB, "new", ts=999_999)
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[PL], "$pl_strict", version)
            self.assertEqual(resolved[TOPIC], "$t0", version)

    def test_kicked_users_state_is_dropped(self) -> None:
        """Carol is kicked on one side and sets the topic on the other: the
        kick is replayed first and her topic then fails auth."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.join(room.create_fork, "$alice", ALICE)
            users = {} if room.rv.hydra else {ALICE: 100}
            f = room.send(f, "$pl0", "m.room.power_levels", ALICE, {"users": users, "events": {"m.room.topic": 0}}, "")
            f = room.join_rule(f, "$jr0", ALICE, "public")
            f = room.join(f, "$carol", CAROL)
            a = room.membership(f, "$kick", ALICE, CAROL, "leave")
            b = room.topic(f, "$t_carol", CAROL, "mine", ts=1)
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[member(CAROL)], "$kick", version)
            self.assertNotIn(TOPIC, resolved, version)


class MainlineTests(unittest.SynchronousTestCase):
    def test_topic_conflict_resolved_by_mainline(self) -> None:
        """A topic sent under a later power levels event sorts after one sent
        under an earlier one, whatever the timestamps say."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            a = room.power_levels(f, "$pl1", ALICE, {ALICE: 100, BOB: 50, CAROL: 10})
            a = room.topic(a, "$topic_a", BOB, "a", ts=100)  # cites $pl1
            b = room.topic(f, "$topic_b", BOB, "b", ts=200)  # cites $pl0
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[PL], "$pl1", version)
            self.assertEqual(resolved[TOPIC], "$topic_a", version)

    def test_same_mainline_position_falls_back_to_timestamp_then_id(self) -> None:
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            a = room.topic(f, "$topic_a", BOB, "a", ts=300)
            b = room.topic(f, "$topic_b", ALICE, "b", ts=200)
            self.assertEqual(room.resolve(a, b)[TOPIC], "$topic_a", version)
            room = Room(version)
            f = room.base()
            a = room.topic(f, "$topic_a", BOB, "a", ts=200)
            b = room.topic(f, "$topic_b", ALICE, "b", ts=200)
            self.assertEqual(room.resolve(a, b)[TOPIC], "$topic_b", version)

    def _checked_order(self, room: Room, *forks: Fork) -> list[str]:
        order: list[str] = []

        def recording_checker(event: Event, auth_events: Mapping[StateKey, Event]) -> None:
            order.append(event.event_id)
            check_auth_rules(
                event,
                auth_events,
                check_auth_event_selection=False,
                create_event=room.create_event if room.rv.hydra else None,
            )

        room.resolve(*forks, auth_checker=recording_checker)
        return order

    def test_power_events_sort_by_sender_power_first(self) -> None:
        """Among power events with no auth relation, the more powerful
        sender's comes first, whatever the timestamps."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            a = room.power_levels(f, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CAROL: 10}, ts=1)
            b = room.join_rule(f, "$jr_alice", ALICE, "invite", ts=2)
            order = self._checked_order(room, a, b)
            self.assertLess(order.index("$jr_alice"), order.index("$pl_bob"), version)

    def test_reverse_topological_order_respects_auth_chain(self) -> None:
        """Bob (50) promotes Carol, then Alice (100) bans Dave citing Bob's
        power levels: the ban must come after Bob's event although Alice has
        more power (Kahn's algorithm only offers events whose auth events are
        placed)."""
        for version in V2_VERSIONS + ("12",):
            room = Room(version)
            f = room.base()
            f = room.join(f, "$dave", DAVE)
            a = room.power_levels(f, "$pl_bob", BOB, {ALICE: 100, BOB: 50, CAROL: 50}, ts=9000)
            a = room.membership(a, "$ban", ALICE, DAVE, "ban", ts=1)
            b = room.topic(f, "$topic", BOB, "b")
            order = self._checked_order(room, a, b)
            self.assertLess(order.index("$pl_bob"), order.index("$ban"), version)
            resolved = room.resolve(a, b)
            self.assertEqual(resolved[PL], "$pl_bob", version)
            self.assertEqual(resolved[member(DAVE)], "$ban", version)

    def test_topological_order_follows_paths_outside_the_set(self) -> None:
        """$pl0 and $pl2 are sorted, $pl1 between them is not in the full
        conflicted set (v11): $pl2 must still come after $pl0, although
        its sender is as powerful and its clock is earlier."""
        room = Room("11")
        f = room.base({ALICE: 100})
        f = room.power_levels(f, "$pl1", ALICE, {ALICE: 100, BOB: 100})
        f = room.power_levels(f, "$pl2", BOB, {ALICE: 100, BOB: 100, CAROL: 50}, ts=1)
        f = room.topic(f, "$topic", CAROL, "carol's")
        outdated = {**f.state, PL: "$pl0"}
        order = self._checked_order(room, f, outdated)
        self.assertNotIn("$pl1", order)
        self.assertLess(order.index("$pl0"), order.index("$pl2"))


class VersionDifferenceTests(unittest.SynchronousTestCase):
    def test_soft_failure_example(self) -> None:
        """server-server-api.md §Soft failure: B bans X, C is X's topic change
        evading the ban, D merges both. "In the original version of the
        algorithm C would be in the resolved state, whereas in latter versions
        the algorithm tries to prioritise the ban over the topic change.\""""
        for version in ALL:
            room = Room(version)
            f = room.base()
            f = room.power_levels(f, "$pl1", ALICE, {ALICE: 100, BOB: 50, DAVE: 50})
            f = room.join(f, "$x", DAVE)  # X
            b = room.membership(f, "$B", ALICE, DAVE, "ban")
            c = room.topic(f, "$C", DAVE, "evading the ban")
            resolved = room.resolve(b, c)
            self.assertEqual(resolved[member(DAVE)], "$B", version)
            if version == "1":
                self.assertEqual(resolved.get(TOPIC), "$C")
            else:
                self.assertNotIn(TOPIC, resolved, version)

    def test_v1_highest_depth_wins_v2_mainline_and_timestamp(self) -> None:
        """Non-auth conflicts: v1 takes the deepest event; v2 orders both
        by mainline position then origin_server_ts and the last one wins."""
        results = {}
        for version in ("1", "11", "12"):
            room = Room(version)
            f = room.base()
            a = room.message(f, "$m1", BOB)
            a = room.message(a, "$m2", BOB)
            a = room.topic(a, "$deep", BOB, "deep", ts=100)
            b = room.topic(f, "$late", BOB, "late", ts=200)
            results[version] = room.resolve(a, b)[TOPIC]
        self.assertEqual(results, {"1": "$deep", "11": "$late", "12": "$late"})

    def test_v1_key_in_one_state_only_is_not_a_conflict(self) -> None:
        room = Room("1")
        f = room.base()
        a = room.topic(f, "$ta", BOB, "a")
        b = room.membership(f, "$ban_bob", ALICE, BOB, "ban")
        resolved = room.resolve(a, b)
        self.assertEqual(resolved[TOPIC], "$ta")
        self.assertEqual(resolved[member(BOB)], "$ban_bob")
        room = Room("11")
        f = room.base()
        a = room.topic(f, "$ta", BOB, "a")
        b = room.membership(f, "$ban_bob", ALICE, BOB, "ban")
        resolved = room.resolve(a, b)
        self.assertNotIn(TOPIC, resolved)
        self.assertEqual(resolved[member(BOB)], "$ban_bob")

    def _problem_a(self, version: str) -> dict[StateKey, str]:
        """MSC4297 problem A: both sides agree Alice left; one side carries an
        outdated join rules event. v2 replays both join rules on top of the
        unconflicted state, where Alice is not joined, so both fail."""
        room = Room(version)
        f = room.base({ALICE: 100, BOB: 100})
        f = room.join_rule(f, "$jr1", ALICE, "invite")
        f = room.membership(f, "$alice_leaves", ALICE, ALICE, "leave")
        outdated = {**f.state, JR: "$jr0"}
        return room.resolve(f, outdated)

    def test_v12_starts_iterative_auth_checks_from_empty_state(self) -> None:
        self.assertNotIn(JR, self._problem_a("11"))
        self.assertEqual(self._problem_a("12")[JR], "$jr1")

    def _problem_b(self, version: str) -> dict[StateKey, str]:
        """MSC4297 problem B: Alice promotes Bob ($pl1), Bob promotes Carol
        ($pl2), Carol changes the topic; one side's state still names $pl0.
        $pl1 is in both sides' auth chains, so it is not in the auth
        difference: v2 replays $pl0 then $pl2, and $pl2 fails without $pl1."""
        room = Room(version)
        f = room.base({ALICE: 100})
        f = room.power_levels(f, "$pl1", ALICE, {ALICE: 100, BOB: 50})
        f = room.power_levels(f, "$pl2", BOB, {ALICE: 100, BOB: 50, CAROL: 50})
        f = room.topic(f, "$topic", CAROL, "carol's")
        outdated = {**f.state, PL: "$pl0"}
        return room.resolve(f, outdated)

    def test_v12_replays_the_conflicted_state_subgraph(self) -> None:
        self.assertEqual(self._problem_b("11")[PL], "$pl0")
        self.assertEqual(self._problem_b("12")[PL], "$pl2")

    def test_v12_mainline_is_based_on_the_partially_resolved_state(self) -> None:
        """v12 step 3 orders by the mainline of the power levels event in the
        partially resolved state of step 2, which started empty: an
        unconflicted power levels event outside the full conflicted set is
        not there, every mainline position is ∞ and timestamps decide."""
        results = {}
        for version in ("11", "12"):
            room = Room(version)
            f = room.base()
            a = room.topic(f, "$topic_a", BOB, "a", ts=200)  # cites $pl0
            b = room.power_levels(f, "$pl1", ALICE, {ALICE: 100, BOB: 50, CAROL: 10})
            b = room.topic(b, "$topic_b", BOB, "b", ts=100)  # cites $pl1
            # Side A then learns $pl1 and cites it in later state.
            a = attrs.evolve(a, state={**a.state, PL: "$pl1"})
            a = room.join(a, "$dave", DAVE)  # cites $pl1
            b = room.membership(b, "$carol_leaves", CAROL, CAROL, "leave")  # cites $pl1
            results[version] = room.resolve(a, b)
        self.assertEqual(results["11"][PL], "$pl1")
        self.assertEqual(results["12"][PL], "$pl1")
        self.assertEqual(results["11"][TOPIC], "$topic_b")  # mainline: $pl1 is later than $pl0
        self.assertEqual(results["12"][TOPIC], "$topic_a")  # no mainline: later timestamp

    def test_v12_creators_sort_first(self) -> None:
        """v12: creators have infinite power, so their power events sort
        before anybody's; in v11 equal powers fall back to timestamps."""
        results = {}
        for version in ("11", "12"):
            room = Room(version)
            f = room.base({ALICE: 100, BOB: 100})
            # Alice (creator) and Bob both change the join rules.
            a = room.join_rule(f, "$jr_alice", ALICE, "invite", ts=5000)
            b = room.join_rule(f, "$jr_bob", BOB, "public", ts=4000)
            results[version] = room.resolve(a, b)[JR]
        # v11: equal power: Bob's earlier one first, Alice's applied last.
        # v12: Alice first (infinite power), then Bob's overrides.
        self.assertEqual(results, {"11": "$jr_alice", "12": "$jr_bob"})


class AuthCheckerInjectionTests(unittest.SynchronousTestCase):
    def test_custom_checker_sees_state_and_can_deny(self) -> None:
        room = Room("11")
        f = room.base()
        a = room.topic(f, "$ta", BOB, "a", ts=1)
        b = room.topic(f, "$tb", ALICE, "b", ts=2)
        seen: list[tuple[str, set[StateKey]]] = []

        def checker(event: Event, auth_events: Mapping[StateKey, Event]) -> None:
            seen.append((event.event_id, set(auth_events)))
            if event.sender == ALICE:
                raise AuthError("no alice")

        resolved = room.resolve(a, b, auth_checker=checker)
        self.assertEqual(resolved[TOPIC], "$ta")
        self.assertEqual(dict(seen)["$tb"], {CREATE, PL, member(ALICE)})


class AsyncWrapperTests(unittest.SynchronousTestCase):
    class Source:
        def __init__(self, events: Mapping[str, Event]) -> None:
            self.events = events
            self.calls: list[str] = []

        async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
            self.calls.append("get_events")
            return {e: self.events[e] for e in event_ids if e in self.events}

        async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
            self.calls.append("get_auth_chain_ids")
            seen: set[str] = set()
            stack = [a for e in event_ids if e in self.events for a in self.events[e].auth_event_ids]
            while stack:
                e = stack.pop()
                if e not in seen:
                    seen.add(e)
                    stack.extend(self.events[e].auth_event_ids)
            return seen

    def _resolve_async(self, room: Room, *forks: Fork) -> tuple[dict[StateKey, str], list[str]]:
        source = self.Source(room.events)
        d = Deferred.fromCoroutine(resolve_state(room.rv, [f.state for f in forks], source))
        return self.successResultOf(d), source.calls

    def test_matches_sync_core_with_batched_fetches(self) -> None:
        for version in ALL:
            room = Room(version)
            f = room.base()
            a = room.membership(f, "$ban", ALICE, BOB, "ban")
            b = room.topic(f, "$t", BOB, "x")
            resolved, calls = self._resolve_async(room, a, b)
            self.assertEqual(resolved, room.resolve(a, b))
            expected = ["get_events"] if version == "1" else ["get_auth_chain_ids", "get_events"]
            self.assertEqual(calls, expected)

    def test_no_fetch_without_conflict(self) -> None:
        room = Room("11")
        f = room.base()
        resolved, calls = self._resolve_async(room, f, f)
        self.assertEqual(resolved, dict(f.state))
        self.assertEqual(calls, [])


# -- property tests ---------------------------------------------------------------------------

USERS = (ALICE, BOB, CAROL, DAVE)


def _random_room(version: str, seed: int, n_forks: int, steps: int) -> tuple[Room, list[Fork]]:
    """A room whose forks each take ``steps`` random actions (only those the
    auth rules allow against the fork's own state are kept)."""
    rng = random.Random(seed)
    room = Room(version)
    base = room.base({ALICE: 100, BOB: 50})
    forks = [base] * n_forks
    counter = 0
    for _ in range(steps):
        i = rng.randrange(n_forks)
        f = forks[i]
        sender = rng.choice(USERS)
        target = rng.choice(USERS)
        action = rng.choice(["topic", "join", "leave", "ban", "pl", "jr", "merge"])
        counter += 1
        event_id = f"$r{counter}"
        ts = rng.choice([5000, 5001, 5002]) + counter % 3
        try:
            if action == "topic":
                f = room.topic(f, event_id, sender, f"t{counter}", ts=ts)
            elif action == "join":
                f = room.join(f, event_id, sender, ts=ts)
            elif action == "leave":
                f = room.membership(f, event_id, sender, target, "leave", ts=ts)
            elif action == "ban":
                f = room.membership(f, event_id, sender, target, "ban", ts=ts)
            elif action == "pl":
                levels = {u: rng.choice([0, 50, 100]) for u in USERS if rng.random() < 0.5}
                f = room.power_levels(f, event_id, sender, levels, ts=ts)
            elif action == "jr":
                f = room.join_rule(f, event_id, sender, rng.choice(["public", "invite"]), ts=ts)
            else:
                other = forks[rng.randrange(n_forks)]
                merged = resolve_state_sync(room.rv, [f.state, other.state], room.events)
                f = Fork(merged, f.tip, max(f.depth, other.depth))
        except AuthError:
            room.events.pop(event_id, None)
            continue
        forks[i] = f
    return room, forks


def _naive_v2(room: Room, state_sets: list[Mapping[StateKey, str]], v21: bool) -> dict[StateKey, str]:
    """A deliberately direct transcription of v2-state-res.md / v12.md, with
    no memoisation or graph tricks, to check the real implementation against."""
    events = room.events

    def chain(e: str) -> set[str]:
        seen: set[str] = set()
        todo = list(events[e].auth_event_ids)
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(events[x].auth_event_ids)
        return seen

    keys = set().union(*state_sets)
    unconflicted = {}
    conflicted: set[str] = set()
    for k in keys:
        values = [s.get(k) for s in state_sets]
        if None not in values and len(set(values)) == 1:
            unconflicted[k] = values[0]
        else:
            conflicted.update(v for v in values if v is not None)
    full_chains = [set().union(*(chain(e) for e in s.values())) for s in state_sets]
    full = conflicted | (set().union(*full_chains) - set.intersection(*full_chains))
    if v21:
        full |= {n for n in events if any(n in chain(c) for c in conflicted) and chain(n) & conflicted}

    def is_power(e: Event) -> bool:
        if e.type in ("m.room.power_levels", "m.room.join_rules"):
            return True
        return e.type == "m.room.member" and e.content.get("membership") in ("leave", "ban") and e.sender != e.state_key

    def power(e: Event) -> float:
        from mxserver.rooms.power_levels import get_user_power_level

        auth = {events[a].state_tuple(): events[a] for a in e.auth_event_ids}
        create = room.create_event
        return get_user_power_level(e.sender, {**auth, CREATE: create}, room.rv, create_event=create)

    power_events = {e for e in full if is_power(events[e])}
    x_set = power_events | {a for p in power_events for a in chain(p) if a in full}
    remaining = set(x_set)
    sorted_power = []
    while remaining:
        available = [x for x in remaining if not (chain(x) & remaining)]
        best = min(available, key=lambda x: (-power(events[x]), events[x].origin_server_ts, x))
        sorted_power.append(best)
        remaining.remove(best)

    def iterate(order: list[str], state: dict[StateKey, str]) -> dict[StateKey, str]:
        state = dict(state)
        for e in order:
            ev = events[e]
            own = {events[a].state_tuple(): events[a] for a in ev.auth_event_ids if not events[a].rejected}
            auth = {}
            for k in auth_types_for_event(room.rv, ev.type, ev.sender, ev.state_key, ev.content):
                if k in state:
                    auth[k] = events[state[k]]
                elif k in own:
                    auth[k] = own[k]
            try:
                check_auth_rules(
                    ev,
                    auth,
                    check_auth_event_selection=False,
                    create_event=room.create_event if room.rv.hydra else None,
                )
            except AuthError:
                continue
            state[ev.state_tuple()] = e
        return state

    partial = iterate(sorted_power, {} if v21 else unconflicted)

    def pl_of(e: str) -> str | None:
        for a in events[e].auth_event_ids:
            if events[a].type == "m.room.power_levels":
                return a
        return None

    mainline = []
    p = partial.get(PL)
    while p is not None:
        mainline.append(p)
        p = pl_of(p)

    def position(e: str) -> float:
        p = pl_of(e)
        while p is not None:
            if p in mainline:
                return mainline.index(p)
            p = pl_of(p)
        return float("inf")

    rest = sorted(
        (e for e in full if e not in x_set),
        key=lambda e: (-position(e), events[e].origin_server_ts, e),
    )
    resolved = iterate(rest, partial)
    resolved.update(unconflicted)
    return resolved


class PropertyTests(unittest.SynchronousTestCase):
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        version=st.sampled_from(["2", "10", "11", "12"]),
        seed=st.integers(0, 2**32),
        n_forks=st.integers(2, 3),
        steps=st.integers(1, 30),
    )
    def test_matches_naive_transcription(self, version: str, seed: int, n_forks: int, steps: int) -> None:
        room, forks = _random_room(version, seed, n_forks, steps)
        states = [f.state for f in forks]
        self.assertEqual(resolve_state_sync(room.rv, states, room.events), _naive_v2(room, states, room.rv.hydra))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        version=st.sampled_from(["1", "2", "11", "12"]),
        seed=st.integers(0, 2**32),
        n_forks=st.integers(2, 3),
        steps=st.integers(1, 30),
        perm_seed=st.integers(0, 2**32),
    )
    def test_independent_of_input_order(
        self, version: str, seed: int, n_forks: int, steps: int, perm_seed: int
    ) -> None:
        room, forks = _random_room(version, seed, n_forks, steps)
        states = [f.state for f in forks]
        expected = resolve_state_sync(room.rv, states, room.events)
        rng = random.Random(perm_seed)
        shuffled_states = list(states)
        rng.shuffle(shuffled_states)
        items = list(room.events.items())
        rng.shuffle(items)
        shuffled_events = dict(items)
        self.assertEqual(resolve_state_sync(room.rv, shuffled_states, shuffled_events), expected)
        # Duplicated state sets change nothing either.
        self.assertEqual(resolve_state_sync(room.rv, shuffled_states + [states[0]], shuffled_events), expected)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        version=st.sampled_from(["2", "11", "12"]),
        seed=st.integers(0, 2**32),
        steps=st.integers(1, 14),
    )
    def test_unconflicted_state_is_kept(self, version: str, seed: int, steps: int) -> None:
        room, forks = _random_room(version, seed, 2, steps)
        a, b = forks[0].state, forks[1].state
        resolved = resolve_state_sync(room.rv, [a, b], room.events)
        for key, value in a.items():
            if b.get(key) == value:
                self.assertEqual(resolved[key], value)
        # Every resolved value is an input's value for that key or, having
        # been replayed from the auth difference, an event of that key in the
        # inputs' auth chains.
        chains: set[str] = set()
        stack = [x for e in (*a.values(), *b.values()) for x in room.events[e].auth_event_ids]
        while stack:
            e = stack.pop()
            if e not in chains:
                chains.add(e)
                stack.extend(room.events[e].auth_event_ids)
        for key, value in resolved.items():
            if value not in (a.get(key), b.get(key)):
                self.assertIn(value, chains)
                self.assertEqual(room.events[value].state_tuple(), key)
