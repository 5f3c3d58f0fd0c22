"""Push-rule evaluation (modules/push.md §Push Rules): every condition kind with the spec's own
examples, property paths with escapes, rule kinds and order, disabled and unknown rules, and
each predefined rule against the events it is for."""

from __future__ import annotations

import random
from typing import Any

from twisted.trial import unittest

from mxserver.push.evaluator import (
    CompiledRules,
    EventFacts,
    compile_condition,
    evaluate,
    evaluate_many,
    glob_matches,
    highlights,
    needs_display_names,
    notifies,
    outcome_for_shape,
    parse_path,
    tweaks,
)
from mxserver.sync import push_rule_defaults as defaults

ME = "@me:example.org"
OTHER = "@other:example.org"
ROOM = "!room:example.org"


def facts(event: dict[str, Any], members: int = 5, power: int = 0, **kw: Any) -> EventFacts:
    event = {"room_id": ROOM, "sender": OTHER, **event}
    return EventFacts(event, members, power, **kw)


def matches(condition: dict[str, Any], event: dict[str, Any], user: str = ME, **kw: Any) -> bool:
    return compile_condition(condition)(facts(event, **kw), user)


def default_ruleset(user_id: str, own: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The ruleset as the push-rules API shows it: user rules before the defaults of their kind."""
    own = own or {}
    return {
        "override": [
            defaults.for_user(defaults.MASTER_RULE, user_id),
            *own.get("override", []),
            *(defaults.for_user(r, user_id) for r in defaults.DEFAULT_OVERRIDE_RULES),
        ],
        "content": [*own.get("content", []), *(defaults.for_user(r, user_id) for r in defaults.DEFAULT_RULES_BY_KIND["content"])],
        "room": own.get("room", []),
        "sender": own.get("sender", []),
        "underride": [*own.get("underride", []), *(defaults.for_user(r, user_id) for r in defaults.DEFAULT_UNDERRIDE_RULES)],
    }


def actions_for(event: dict[str, Any], own: dict[str, list[dict[str, Any]]] | None = None, **kw: Any) -> Any:
    rules = CompiledRules.from_ruleset(default_ruleset(ME, own))
    return evaluate(rules, facts(event, **kw), ME)


def message(body: str, **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "content": {"msgtype": "m.text", "body": body, **content}}


class PathAndGlobTests(unittest.SynchronousTestCase):
    def test_dot_separated_paths(self) -> None:
        # appendices §Dot-separated property paths
        self.assertEqual(parse_path("content.body"), ("content", "body"))
        self.assertEqual(parse_path("content.m\\.relates_to"), ("content", "m.relates_to"))
        self.assertEqual(parse_path("content.m\\\\foo"), ("content", "m\\foo"))
        self.assertEqual(parse_path("content.m\\xfoo"), ("content", "m\\xfoo"))  # other escapes left as-is
        self.assertEqual(parse_path("a..b"), ("a", "", "b"))

    def test_whole_value_globs(self) -> None:
        self.assertTrue(glob_matches("lunc?*", "Lunch plans", False))
        self.assertTrue(glob_matches("lunc?*", "LUNCH", False))
        self.assertFalse(glob_matches("lunc?*", " lunch", False))
        self.assertFalse(glob_matches("lunc?*", "lunc", False))
        self.assertTrue(glob_matches("a.b", "A.B", False))
        self.assertFalse(glob_matches("a.b", "axb", False))  # no regex leaks through
        self.assertTrue(glob_matches("*", "", False))

    def test_body_globs_match_at_word_boundaries(self) -> None:
        for body in ("An example event.", "exple", "An exciting triple-whammy"):
            self.assertTrue(glob_matches("ex*ple", body, True), body)
        self.assertFalse(glob_matches("ex*ple", "complex people", True))
        self.assertFalse(glob_matches("tea", "steam", True))
        self.assertTrue(glob_matches("tea", "time for TEA!", True))
        self.assertFalse(glob_matches("tea", "tea_time", True))  # _ is a word character


class ConditionTests(unittest.SynchronousTestCase):
    def test_event_match(self) -> None:
        topic = {"type": "m.room.topic", "state_key": "", "content": {"topic": "Lunch plans"}}
        self.assertTrue(matches({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}, topic))
        for value in (None, 5, ["Lunch"], {"x": 1}):
            event = {"type": "m.room.topic", "content": {"topic": value}}
            self.assertFalse(matches({"kind": "event_match", "key": "content.topic", "pattern": "*"}, event), value)
        self.assertFalse(matches({"kind": "event_match", "key": "content.missing", "pattern": "*"}, topic))
        body = message("An example event.")
        self.assertTrue(matches({"kind": "event_match", "key": "content.body", "pattern": "ex*ple"}, body))
        self.assertFalse(matches({"kind": "event_match", "key": "content.body"}, body))  # no pattern

    def test_event_property_is(self) -> None:
        create = {"type": "m.room.create", "state_key": "", "content": {"m.federate": True, "room_version": "1"}}
        cond = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
        self.assertTrue(matches(cond, create))
        for value in ("true", 1, None):
            self.assertFalse(matches(cond, {"type": "m.room.create", "content": {"m.federate": value}}), value)
        self.assertTrue(matches({"kind": "event_property_is", "key": "content.n", "value": None}, {"content": {"n": None}}))
        self.assertFalse(matches({"kind": "event_property_is", "key": "content.n", "value": None}, {"content": {}}))
        self.assertTrue(matches({"kind": "event_property_is", "key": "content.n", "value": 1}, {"content": {"n": 1}}))
        self.assertFalse(matches({"kind": "event_property_is", "key": "content.n", "value": 1}, {"content": {"n": True}}))
        self.assertFalse(matches({"kind": "event_property_is", "key": "content.n", "value": 1}, {"content": {"n": 1.0}}))
        # compound values are not supported: never match
        self.assertFalse(matches({"kind": "event_property_is", "key": "content", "value": {}}, {"content": {}}))

    def test_event_property_contains(self) -> None:
        alias = {
            "type": "m.room.canonical_alias",
            "state_key": "",
            "content": {"alias": "#somewhere:localhost", "alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]},
        }
        cond = {"kind": "event_property_contains", "key": "content.alt_aliases", "value": "#myroom:example.com"}
        self.assertTrue(matches(cond, alias))
        partial = {**cond, "value": ":example.com"}
        self.assertFalse(matches(partial, alias))
        self.assertFalse(matches({**cond, "key": "content.alias", "value": "#somewhere:localhost"}, alias))  # not an array
        self.assertFalse(matches({**cond, "value": 1}, {"content": {"alt_aliases": [True, [1], {"a": 1}]}}))
        self.assertTrue(matches({**cond, "value": 1}, {"content": {"alt_aliases": [True, 1]}}))

    def test_contains_display_name(self) -> None:
        names = {ME: "Dr. Who"}.get
        cond = {"kind": "contains_display_name"}
        self.assertTrue(matches(cond, message("hello dr. who!"), display_name=names))
        self.assertFalse(matches(cond, message("hello dr. whom"), display_name=names))
        self.assertFalse(matches(cond, message("hello"), display_name=names))
        self.assertFalse(matches(cond, message("Dr. Who"), user=OTHER, display_name=names))  # no name: no match
        self.assertFalse(matches(cond, {"type": "m.room.message", "content": {"body": 5}}, display_name=names))

    def test_room_member_count(self) -> None:
        for spec, count, expected in (
            ("2", 2, True),
            ("==2", 3, False),
            ("<3", 2, True),
            ("<3", 3, False),
            (">3", 4, True),
            (">=3", 3, True),
            ("<=3", 4, False),
            ("=2", 2, False),  # not a valid operator: never matches
            ("two", 2, False),
            (2, 2, False),
        ):
            self.assertEqual(matches({"kind": "room_member_count", "is": spec}, message("x"), members=count), expected, spec)

    def test_sender_notification_permission(self) -> None:
        cond = {"kind": "sender_notification_permission", "key": "room"}
        self.assertFalse(matches(cond, message("x"), power=49))
        self.assertTrue(matches(cond, message("x"), power=50))  # the default for notifications.room
        self.assertTrue(matches(cond, message("x"), power=10, notification_levels={"room": 10}))
        self.assertFalse(matches(cond, message("x"), power=10, notification_levels={"room": 20}))
        self.assertFalse(matches({"kind": "sender_notification_permission"}, message("x"), power=100))

    def test_unknown_conditions_never_match(self) -> None:
        for cond in ({"kind": "org.example.unknown"}, {}, "event_match", None):
            self.assertFalse(matches(cond, message("x")), cond)  # type: ignore[arg-type]


class RuleTests(unittest.SynchronousTestCase):
    def test_rule_kinds_in_order(self) -> None:
        own = {
            "content": [{"rule_id": "tea", "pattern": "tea", "enabled": True, "actions": ["notify", {"set_tweak": "sound", "value": "tea"}]}],
            "room": [{"rule_id": ROOM, "enabled": True, "actions": []}],
            "sender": [{"rule_id": OTHER, "enabled": True, "actions": ["notify", {"set_tweak": "sound", "value": "bell"}]}],
        }
        # content before room: the tea rule wins
        self.assertEqual(tweaks(actions_for(message("time for tea"), own)), {"sound": "tea"})
        # otherwise the room rule (silence) beats the sender rule
        self.assertEqual(actions_for(message("hello"), own), [])
        other_room = {**message("hello"), "room_id": "!elsewhere:example.org"}
        self.assertEqual(tweaks(actions_for(other_room, own)), {"sound": "bell"})
        # and a user's override beats everything but the master rule
        override = {"override": [{"rule_id": "all", "conditions": [], "enabled": True, "actions": ["dont_notify"]}]}
        self.assertEqual(actions_for(message("hello"), {**own, **override}), [])  # historical action stripped

    def test_disabled_rules_never_match(self) -> None:
        own = {"sender": [{"rule_id": OTHER, "enabled": False, "actions": []}]}
        self.assertTrue(notifies(actions_for(message("hello"), own)))

    def test_own_events_never_notify(self) -> None:
        rules = CompiledRules.from_ruleset(default_ruleset(ME))
        event = facts({**message(f"hi {ME}", **{"m.mentions": {"user_ids": [ME]}}), "sender": ME})
        self.assertIsNone(evaluate(rules, event, ME))

    def test_shared_facts_serve_many_recipients(self) -> None:
        # One EventFacts for every recipient: recipient-specific conditions still differ.
        users = [f"@u{i}:example.org" for i in range(50)]
        compiled = {u: CompiledRules.from_ruleset(default_ruleset(u)) for u in users}
        shared = facts(message("hi", **{"m.mentions": {"user_ids": [users[7]]}}), members=50)
        results = {u: evaluate(compiled[u], shared, u) for u in users}
        self.assertTrue(highlights(results[users[7]]))
        self.assertEqual([u for u in users if highlights(results[u])], [users[7]])
        self.assertTrue(all(notifies(results[u]) for u in users))


class SharedEvaluationTests(unittest.SynchronousTestCase):
    """evaluate_many walks what users of one rules shape share once per event: it must answer
    exactly what evaluating each user alone answers, whatever the users, rules and events."""

    USERS = [
        *(f"@u{i}:example.org" for i in range(30)),
        "@default:example.org",  # a localpart that is also a word of every rule's JSON
        "@room:example.org",
        "@m:example.org",
        "@Upper.Case:example.org",
        "@dots.and-dash=:example.org",
        "@idotless:example.org",  # "ı" in a body matches its "i" (glob matching ignores case)
        '@quo"te:example.org',  # historical grammar: JSON escapes it
        "@st*r:example.org",  # historical grammar: a glob character
    ]
    NAMES = {"@u3:example.org": "Alice", "@u4:example.org": "Ünïcode Ñame", "@u5:example.org": "u6", "@m:example.org": "M"}
    OWN: dict[str, dict[str, list[dict[str, Any]]]] = {
        "@u1:example.org": {"room": [{"rule_id": ROOM, "enabled": True, "actions": []}]},
        "@u2:example.org": {"content": [{"rule_id": "me", "pattern": "u2*", "enabled": True, "actions": ["notify"]}]},
        "@u8:example.org": {"content": [{"rule_id": "nul", "pattern": "\x00L", "enabled": True, "actions": ["notify"]}]},
        "@u9:example.org": {
            "override": [
                {
                    "rule_id": "own-state",
                    "enabled": True,
                    "conditions": [{"kind": "event_match", "key": "state_key", "pattern": "@u9:example.org"}],
                    "actions": ["notify", {"set_tweak": "sound", "value": "u9"}],
                }
            ]
        },
        "@u10:example.org": {"sender": [{"rule_id": OTHER, "enabled": True, "actions": []}]},
    }

    def _compiled(self) -> dict[str, CompiledRules]:
        return {u: CompiledRules.from_ruleset(default_ruleset(u, self.OWN.get(u)), u) for u in self.USERS}

    def test_users_on_default_rules_share_one_shape(self) -> None:
        compiled = self._compiled()
        shapes = {compiled[f"@u{i}:example.org"].shape for i in range(11, 30)}
        self.assertEqual(len(shapes), 1)
        self.assertIsNotNone(shapes.pop())
        self.assertIsNone(compiled['@quo"te:example.org'].shape)
        self.assertIsNone(compiled["@st*r:example.org"].shape)

    def test_same_answers_as_one_by_one(self) -> None:
        compiled = self._compiled()
        rng = random.Random(1913)
        words = ["hi", "Alice", "ALICE", "u6", "U2x", "u2", "default", "room", "M", "Ünïcode Ñame", "IDOTLESS", "ıdotless",
                 "upper.case", "DOTS.AND-DASH=", "@u7:example.org", "st*r", "st_r", "quo\"te", "\x00L", "@room"]
        kinds = ["m.room.message", "m.room.member", "m.room.name", "m.reaction", "m.call.invite"]
        template = CompiledRules.from_ruleset(default_ruleset("@template:example.org"), "@template:example.org")
        # The push reader's rules for users who never changed one: the template retargeted.
        retargeted = {u: template.retarget(u) for u in self.USERS if u not in self.OWN}
        self.assertIsNone(retargeted['@quo"te:example.org'])
        self.assertIsNone(retargeted["@st*r:example.org"])
        mixed = {u: retargeted.get(u) or compiled[u] for u in self.USERS}
        self.assertGreater(sum(1 for r in retargeted.values() if r is not None), 30)
        decisions = 0
        for _ in range(300):
            user = rng.choice(self.USERS)
            content: dict[str, Any] = {"body": " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))}
            if rng.random() < 0.7:
                content["msgtype"] = rng.choice(["m.text", "m.notice"])
            if rng.random() < 0.3:
                content["m.mentions"] = {"user_ids": rng.sample(self.USERS, rng.randint(0, 2)), "room": rng.random() < 0.3}
            if rng.random() < 0.2:
                content["membership"] = "invite"
            event: dict[str, Any] = {"type": rng.choice(kinds), "content": content, "sender": rng.choice([OTHER, user])}
            if rng.random() < 0.4:
                event["state_key"] = rng.choice([user, "", OTHER])
            members = rng.choice([2, 3, 40])
            power = rng.choice([0, 100])

            kw: dict[str, Any] = {"members": members, "power": power, "display_name": self.NAMES.get}
            alone = {u: evaluate(compiled[u], facts(event, **kw), u) for u in self.USERS}
            self.assertEqual(evaluate_many(compiled, facts(event, **kw), self.USERS), alone, event)
            self.assertEqual(evaluate_many(mixed, facts(event, **kw), self.USERS), alone, event)
            self.assertEqual({u: evaluate(mixed[u], facts(event, **kw), u) for u in self.USERS}, alone, event)
            # As the push reader does it: names read only for those needs_display_names names.
            lazy = facts(event, **{**kw, "display_name": lambda u: None})
            wanted = set(needs_display_names(compiled, lazy, self.USERS))
            lazy.display_name = {u: n for u, n in self.NAMES.items() if u in wanted}.get
            self.assertEqual(evaluate_many(compiled, lazy, self.USERS), alone, event)
            # An outcome the default rules decide alike is every default-rules user's answer.
            decided, actions = outcome_for_shape(template, facts(event, **kw))
            if decided:
                decisions += 1
                for u in self.USERS:
                    if u not in self.OWN and u != event["sender"]:
                        self.assertEqual(alone[u], actions, (u, event))
        self.assertGreater(decisions, 20)

    def test_names_are_asked_only_where_a_rule_may_use_them(self) -> None:
        users = [f"@u{i}:example.org" for i in range(11, 30)]
        named = "@named:example.org"
        name_rule = {"rule_id": "name", "enabled": True, "conditions": [{"kind": "contains_display_name"}], "actions": ["notify"]}
        compiled = {u: CompiledRules.from_ruleset(default_ruleset(u), u) for u in users}
        compiled[named] = CompiledRules.from_ruleset(default_ruleset(named, {"override": [name_rule]}), named)
        everyone = [*users, named]
        # The default rules never ask for a name; a user's own contains_display_name rule does.
        self.assertEqual(needs_display_names(compiled, facts(message("hello")), everyone), [named])
        result = evaluate_many(compiled, facts(message("hi Nemo"), display_name={named: "nemo"}.get), everyone)
        self.assertEqual(result[named], ["notify"])
        join = {"type": "m.room.member", "state_key": OTHER, "content": {"membership": "join"}}
        # .m.rule.member_event decides a join for everyone, and the invite rule (which names
        # the user) cannot match a join: nobody is walked on their own.
        self.assertEqual(list(evaluate_many(compiled, facts(join), users).values()), [[]] * len(users))
        invite = {**join, "state_key": users[0], "content": {"membership": "invite"}}
        self.assertTrue(notifies(evaluate_many(compiled, facts(invite), users)[users[0]]))
        self.assertFalse(any(notifies(evaluate_many(compiled, facts(invite), users)[u]) for u in users[1:]))


class PredefinedRuleTests(unittest.SynchronousTestCase):
    def test_master_rule_silences_everything_when_enabled(self) -> None:
        ruleset = default_ruleset(ME)
        ruleset["override"][0] = {**ruleset["override"][0], "enabled": True}
        rules = CompiledRules.from_ruleset(ruleset)
        self.assertEqual(evaluate(rules, facts(message("hi")), ME), [])

    def test_suppress_notices(self) -> None:
        self.assertEqual(actions_for(message("bot says", msgtype="m.notice")), [])

    def test_invite_for_me(self) -> None:
        invite = {"type": "m.room.member", "state_key": ME, "content": {"membership": "invite"}}
        self.assertEqual(actions_for(invite), ["notify", {"set_tweak": "sound", "value": "default"}])
        other_invite = {**invite, "state_key": "@else:example.org"}
        self.assertEqual(actions_for(other_invite), [])  # .m.rule.member_event

    def test_user_mention(self) -> None:
        actions = actions_for(message("hey", **{"m.mentions": {"user_ids": [ME]}}))
        self.assertTrue(notifies(actions) and highlights(actions))
        self.assertEqual(tweaks(actions), {"sound": "default", "highlight": True})
        # the body alone mentions only by the localpart (the server's own .m.rule.contains_user_name;
        # v1.17 removed the display-name and @room body rules)
        self.assertTrue(highlights(actions_for(message(f"hey {ME}"))))
        self.assertTrue(highlights(actions_for(message("ME: look"))))
        self.assertFalse(highlights(actions_for(message("meeting"))))
        self.assertFalse(highlights(actions_for(message("@room hello"), power=100)))

    def test_room_mention_needs_permission(self) -> None:
        event = message("@room hello", **{"m.mentions": {"room": True}})
        self.assertFalse(highlights(actions_for(event, power=0)))
        self.assertTrue(highlights(actions_for(event, power=50)))
        self.assertFalse(highlights(actions_for(message("x", **{"m.mentions": {"room": "true"}}), power=100)))

    def test_tombstone_reaction_acl_edits(self) -> None:
        tombstone = {"type": "m.room.tombstone", "state_key": "", "content": {"body": "moved", "replacement_room": "!n:x"}}
        self.assertTrue(highlights(actions_for(tombstone)))
        self.assertEqual(actions_for({**tombstone, "state_key": "x"}), None)  # not state: no rule
        self.assertEqual(actions_for({"type": "m.reaction", "content": {}}), [])
        self.assertEqual(actions_for({"type": "m.room.server_acl", "state_key": "", "content": {}}), [])
        edit = message("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
        self.assertEqual(actions_for(edit), [])

    def test_underrides(self) -> None:
        self.assertEqual(tweaks(actions_for({"type": "m.call.invite", "content": {}})), {"sound": "ring"})
        self.assertEqual(tweaks(actions_for(message("hi"), members=2)), {"sound": "default"})
        self.assertEqual(actions_for(message("hi"), members=3), ["notify"])
        encrypted = {"type": "m.room.encrypted", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        self.assertEqual(tweaks(actions_for(encrypted, members=2)), {"sound": "default"})
        self.assertEqual(actions_for(encrypted, members=3), ["notify"])
        self.assertIsNone(actions_for({"type": "org.example.custom", "content": {}}))
