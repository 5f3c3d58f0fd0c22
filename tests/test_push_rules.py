"""Push rules API: server-default rules, user rules and their order, enabled/actions, validation."""

from __future__ import annotations

from typing import Any

from tests.harness import C, HomeserverTestCase, TestUser

RULES = f"{C}/pushrules/global"

DEFAULT_OVERRIDE_IDS = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
DEFAULT_UNDERRIDE_IDS = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


class PushRulesTests(HomeserverTestCase):
    async def ruleset(self, user: TestUser) -> dict[str, Any]:
        code, body = await self.get(f"{RULES}/", user)
        self.assertEqual(code, 200, body)
        return body

    async def ids(self, user: TestUser, kind: str) -> list[str]:
        """The rule IDs of ``kind`` in order (for content: the user's own, without the server's
        default .m.rule.contains_user_name)."""
        rules = (await self.ruleset(user))[kind]
        return [r["rule_id"] for r in rules if kind != "content" or not r["default"]]

    async def own(self, user: TestUser, kind: str) -> list[dict[str, Any]]:
        return [r for r in (await self.ruleset(user))[kind] if not r["default"]]

    # -- defaults ---------------------------------------------------------------------------

    async def test_default_rules(self) -> None:
        alice = await self.register("alice")
        code, body = await self.get(f"{C}/pushrules/", alice)
        self.assertEqual(code, 200)
        ruleset = body["global"]
        self.assertEqual(ruleset, await self.ruleset(alice))
        self.assertEqual(set(ruleset), {"override", "content", "room", "sender", "underride"})
        self.assertEqual([r["rule_id"] for r in ruleset["override"]], DEFAULT_OVERRIDE_IDS)
        self.assertEqual([r["rule_id"] for r in ruleset["underride"]], DEFAULT_UNDERRIDE_IDS)
        # v1.17 removed the legacy body-matching rules from the spec's list; the server keeps its
        # own .m.rule.contains_user_name on the localpart (push_rule_defaults says why).
        self.assertEqual(
            ruleset["content"],
            [
                {
                    "rule_id": ".m.rule.contains_user_name",
                    "default": True,
                    "enabled": True,
                    "pattern": "alice",
                    "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
                }
            ],
        )
        self.assertEqual((ruleset["room"], ruleset["sender"]), ([], []))
        for rule in ruleset["override"] + ruleset["underride"]:
            self.assertTrue(rule["default"], rule)
            self.assertEqual(rule["enabled"], rule["rule_id"] != ".m.rule.master", rule)
            self.assertIsInstance(rule["actions"], list)
            self.assertIsInstance(rule["conditions"], list)
        by_id = {r["rule_id"]: r for r in ruleset["override"] + ruleset["underride"]}
        self.assertEqual(
            by_id[".m.rule.master"],
            {"rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": []},
        )
        # The user's own ID is filled in.
        self.assertIn(
            {"key": "state_key", "kind": "event_match", "pattern": alice.user_id},
            by_id[".m.rule.invite_for_me"]["conditions"],
        )
        self.assertEqual(
            by_id[".m.rule.is_user_mention"]["conditions"],
            [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": alice.user_id}],
        )
        self.assertEqual(
            by_id[".m.rule.is_user_mention"]["actions"],
            ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
        )
        self.assertEqual(by_id[".m.rule.call"]["actions"], ["notify", {"set_tweak": "sound", "value": "ring"}])
        self.assertEqual(
            by_id[".m.rule.tombstone"]["conditions"],
            [
                {"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
                {"kind": "event_match", "key": "state_key", "pattern": ""},
            ],
        )
        bob = await self.register("bob")
        bobs = {r["rule_id"]: r for r in (await self.ruleset(bob))["override"]}
        self.assertEqual(bobs[".m.rule.invite_for_me"]["conditions"][2]["pattern"], bob.user_id)

    async def test_get_single_rule(self) -> None:
        alice = await self.register("alice")
        code, rule = await self.get(f"{RULES}/override/.m.rule.suppress_notices", alice)
        self.assertEqual(code, 200)
        self.assertEqual(rule["conditions"], [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}])
        self.assertMatrixError(await self.get(f"{RULES}/override/nope", alice), 404, "M_NOT_FOUND")
        # A rule exists only in its own kind.
        self.assertMatrixError(await self.get(f"{RULES}/underride/.m.rule.master", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{RULES}/bogus/x", alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{RULES}/", None), 401, "M_MISSING_TOKEN")
        # Under r0 too (older clients).
        full = await self.ruleset(alice)
        self.assertEqual(await self.get("/_matrix/client/r0/pushrules/", alice), (200, {"global": full}))
        self.assertEqual(await self.get("/_matrix/client/r0/pushrules/global/", alice), (200, full))

    # -- user rules -------------------------------------------------------------------------

    async def test_add_content_rule(self) -> None:
        alice = await self.register("alice")
        body = {"pattern": "cake*lie", "actions": ["notify"]}
        self.assertEqual(await self.put(f"{RULES}/content/nocake", body, alice), (200, {}))
        expected = {
            "rule_id": "nocake",
            "default": False,
            "enabled": True,
            "pattern": "cake*lie",
            "actions": ["notify"],
        }
        self.assertEqual(await self.get(f"{RULES}/content/nocake", alice), (200, expected))
        self.assertEqual(await self.own(alice, "content"), [expected])

    async def test_add_override_room_sender_underride(self) -> None:
        alice = await self.register("alice")
        cond = [
            {"kind": "event_match", "key": "content.body", "pattern": "beer"},
            {"kind": "room_member_count", "is": "<=10"},
        ]
        actions = ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}]
        self.assertEqual(
            await self.put(f"{RULES}/override/beer", {"conditions": cond, "actions": actions}, alice), (200, {})
        )
        # User override rules rank after .m.rule.master and before the other defaults.
        self.assertEqual(
            (await self.ids(alice, "override"))[:3], [".m.rule.master", "beer", ".m.rule.suppress_notices"]
        )
        code, rule = await self.get(f"{RULES}/override/beer", alice)
        self.assertEqual(
            rule, {"rule_id": "beer", "default": False, "enabled": True, "conditions": cond, "actions": actions}
        )
        # A rule without conditions always matches: it is stored as an empty list.
        await self.put(f"{RULES}/underride/catchall", {"actions": ["notify"]}, alice)
        self.assertEqual((await self.get(f"{RULES}/underride/catchall", alice))[1]["conditions"], [])
        self.assertEqual((await self.ids(alice, "underride"))[0], "catchall")
        room = "!dj234r78wl45Gh4D:matrix.org"
        self.assertEqual(await self.put(f"{RULES}/room/{room}", {"actions": []}, alice), (200, {}))
        self.assertEqual(
            await self.get(f"{RULES}/room/{room}", alice),
            (200, {"rule_id": room, "default": False, "enabled": True, "actions": []}),
        )
        self.assertEqual(await self.put(f"{RULES}/sender/@spambot:matrix.org", {"actions": []}, alice), (200, {}))
        self.assertEqual(await self.ids(alice, "sender"), ["@spambot:matrix.org"])
        # Other users do not see them.
        bob = await self.register("bob")
        self.assertEqual((await self.ruleset(bob))["room"], [])
        self.assertMatrixError(await self.get(f"{RULES}/override/beer", bob), 404, "M_NOT_FOUND")

    async def test_ordering_with_before_and_after(self) -> None:
        alice = await self.register("alice")

        async def put(rule_id: str, query: str = "", pattern: str = "p") -> tuple[int, Any]:
            return await self.put(
                f"{RULES}/content/{rule_id}{query}", {"pattern": pattern, "actions": ["notify"]}, alice
            )

        await put("a")
        # Without before/after a new rule is the most important of its kind.
        await put("b")
        self.assertEqual(await self.ids(alice, "content"), ["b", "a"])
        self.assertEqual((await put("c", "?before=a"))[0], 200)
        self.assertEqual(await self.ids(alice, "content"), ["b", "c", "a"])
        await put("d", "?after=b")
        self.assertEqual(await self.ids(alice, "content"), ["b", "d", "c", "a"])
        await put("e", "?after=a")
        self.assertEqual(await self.ids(alice, "content"), ["b", "d", "c", "a", "e"])
        # pushrules.yaml: with both, "before" decides.
        await put("f", "?after=e&before=b")
        self.assertEqual(await self.ids(alice, "content"), ["f", "b", "d", "c", "a", "e"])
        # Updating without before/after keeps the place (and the new parameters).
        await put("c", pattern="new")
        self.assertEqual(await self.ids(alice, "content"), ["f", "b", "d", "c", "a", "e"])
        self.assertEqual((await self.get(f"{RULES}/content/c", alice))[1]["pattern"], "new")
        # ... with them, it moves.
        await put("c", "?after=e")
        self.assertEqual(await self.ids(alice, "content"), ["f", "b", "d", "a", "e", "c"])
        await put("c", "?before=f")
        self.assertEqual(await self.ids(alice, "content"), ["c", "f", "b", "d", "a", "e"])
        # Ordering is per kind: other kinds are unaffected.
        await self.put(f"{RULES}/override/o1", {"actions": []}, alice)
        self.assertEqual(await self.ids(alice, "content"), ["c", "f", "b", "d", "a", "e"])

    async def test_bad_anchors(self) -> None:
        alice = await self.register("alice")
        body = {"pattern": "x", "actions": ["notify"]}
        await self.put(f"{RULES}/content/a", body, alice)
        await self.put(f"{RULES}/override/o", {"actions": []}, alice)
        self.assertMatrixError(await self.put(f"{RULES}/content/b?before=zzz", body, alice), 400, "M_UNKNOWN")
        self.assertMatrixError(await self.put(f"{RULES}/content/b?after=zzz", body, alice), 400, "M_UNKNOWN")
        # An anchor must be of the same kind.
        self.assertMatrixError(await self.put(f"{RULES}/content/b?after=o", body, alice), 400, "M_UNKNOWN")
        # A rule cannot be placed relative to itself.
        self.assertMatrixError(await self.put(f"{RULES}/content/a?before=a", body, alice), 400, "M_UNKNOWN")
        # "It is not possible to add a rule relative to a predefined server rule."
        self.assertMatrixError(
            await self.put(f"{RULES}/override/x?before=.m.rule.master", {"actions": []}, alice), 400, "M_INVALID_PARAM"
        )
        # Nothing was written.
        self.assertEqual(await self.ids(alice, "content"), ["a"])
        self.assertMatrixError(await self.get(f"{RULES}/content/b", alice), 404, "M_NOT_FOUND")

    async def test_rule_id_rules(self) -> None:
        alice = await self.register("alice")
        body = {"actions": ["notify"]}
        # Rule IDs starting with "." are reserved for server-default rules.
        for rule_id in (".mine", ".m.rule.master", ".m.rule.message"):
            for kind in ("override", "underride"):
                self.assertMatrixError(await self.put(f"{RULES}/{kind}/{rule_id}", body, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.put(f"{RULES}/content/.x", {"pattern": "p", **body}, alice), 400, "M_INVALID_PARAM"
        )
        # "Slashes ("/") and backslashes ("\\") are also not allowed."
        self.assertMatrixError(await self.put(f"{RULES}/override/a%2Fb", body, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{RULES}/override/a%5Cb", body, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{RULES}/override/{'x' * 256}", body, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{RULES}/bogus/x", body, alice), 400, "M_INVALID_PARAM")
        self.assertEqual(await self.ids(alice, "override"), DEFAULT_OVERRIDE_IDS)

    async def test_room_and_sender_rule_ids_are_not_checked(self) -> None:
        """The spec asks no server to reject a room rule not named by room ID (Synapse accepts one).

        SyTest's 02add_rules.pl names room rules by alias; such a rule is kept, ordered and
        deleted like any other (it just never matches an event, whose room_id is never an alias).
        """
        alice = await self.register("alice")
        body = {"actions": ["notify"]}
        for rule_id in ("#a:example.com", "#b:example.com"):
            self.assertEqual(await self.put(f"{RULES}/room/%23{rule_id[1:]}", body, alice), (200, {}))
        self.assertEqual(
            await self.put(f"{RULES}/room/%23c:example.com?after=%23b:example.com", body, alice), (200, {})
        )
        self.assertEqual(await self.ids(alice, "room"), ["#b:example.com", "#c:example.com", "#a:example.com"])
        self.assertEqual(
            await self.get(f"{RULES}/room/%23a:example.com", alice),
            (200, {"rule_id": "#a:example.com", "default": False, "enabled": True, "actions": ["notify"]}),
        )
        self.assertEqual(await self.put(f"{RULES}/room/%23a:example.com/enabled", {"enabled": False}, alice), (200, {}))
        self.assertEqual(await self.get(f"{RULES}/room/%23a:example.com/enabled", alice), (200, {"enabled": False}))
        self.assertEqual(await self.delete(f"{RULES}/room/%23b:example.com", None, alice), (200, {}))
        self.assertEqual(await self.ids(alice, "room"), ["#c:example.com", "#a:example.com"])
        self.assertEqual(await self.put(f"{RULES}/sender/notauser", body, alice), (200, {}))
        self.assertEqual(await self.ids(alice, "sender"), ["notauser"])
        # The spec's own limits still hold for these kinds.
        self.assertMatrixError(
            await self.put(f"{RULES}/room/%23fo%5Co:example.com", body, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.put(f"{RULES}/sender/.x", body, alice), 400, "M_INVALID_PARAM")

    async def test_bad_bodies(self) -> None:
        alice = await self.register("alice")
        path = f"{RULES}/override/r"
        bad: list[tuple[Any, str]] = [
            ({}, "M_MISSING_PARAM"),
            ({"actions": "notify"}, "M_BAD_JSON"),
            ({"actions": [1]}, "M_BAD_JSON"),
            ({"actions": ["explode"]}, "M_INVALID_PARAM"),
            ({"actions": [{"value": 1}]}, "M_INVALID_PARAM"),
            ({"actions": [], "conditions": {}}, "M_BAD_JSON"),
            ({"actions": [], "conditions": ["x"]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"key": "type"}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "event_match", "pattern": "x"}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "event_property_is", "key": "k"}]}, "M_BAD_JSON"),
            (
                {"actions": [], "conditions": [{"kind": "event_property_is", "key": "k", "value": {"a": 1}}]},
                "M_BAD_JSON",
            ),
            (
                {"actions": [], "conditions": [{"kind": "event_property_contains", "key": "k", "value": 1.5}]},
                "M_BAD_JSON",
            ),
            ({"actions": [], "conditions": [{"kind": "event_property_is", "key": "k", "value": 2**53}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "room_member_count", "is": "two"}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "room_member_count", "is": 2}]}, "M_BAD_JSON"),
            ({"actions": [], "conditions": [{"kind": "sender_notification_permission"}]}, "M_BAD_JSON"),
        ]
        for body, errcode in bad:
            self.assertMatrixError(await self.put(path, body, alice), 400, errcode)
        self.assertMatrixError(await self.request("PUT", path, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.put(path, [], alice), 400, "M_BAD_JSON")
        # Content rules need a pattern.
        self.assertMatrixError(await self.put(f"{RULES}/content/c", {"actions": []}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{RULES}/content/c", {"actions": [], "pattern": 5}, alice), 400, "M_BAD_JSON"
        )
        self.assertEqual(await self.ids(alice, "override"), DEFAULT_OVERRIDE_IDS)
        # Valid edge cases: unknown condition kinds are kept (they never match), scalars of every allowed type.
        good = [
            {"kind": "org.example.future"},
            {"kind": "event_property_is", "key": "k", "value": None},
            {"kind": "event_property_is", "key": "k", "value": False},
            {"kind": "event_property_contains", "key": "k", "value": -(2**53) + 1},
            {"kind": "room_member_count", "is": ">=3"},
            {"kind": "contains_display_name"},
            {"kind": "sender_notification_permission", "key": "room"},
        ]
        self.assertEqual(await self.put(path, {"actions": ["notify"], "conditions": good}, alice), (200, {}))
        self.assertEqual((await self.get(path, alice))[1]["conditions"], good)

    async def test_historical_actions_are_kept(self) -> None:
        """§Historical Actions: servers ignore dont_notify/coalesce when evaluating; the API keeps them.

        Stripping is only the spec's example of ignoring; Synapse stores them as given and SyTest's
        05_set_actions.pl reads ["dont_notify"] back.
        """
        alice = await self.register("alice")
        actions = ["dont_notify", "coalesce"]
        self.assertEqual(await self.put(f"{RULES}/override/quiet", {"actions": actions}, alice), (200, {}))
        self.assertEqual(await self.get(f"{RULES}/override/quiet/actions", alice), (200, {"actions": actions}))
        self.assertEqual(
            await self.put(f"{RULES}/override/quiet/actions", {"actions": ["dont_notify"]}, alice), (200, {})
        )
        self.assertEqual(
            await self.get(f"{RULES}/override/quiet", alice),
            (
                200,
                {"rule_id": "quiet", "default": False, "enabled": True, "conditions": [], "actions": ["dont_notify"]},
            ),
        )
        # Every server-default rule's actions can be set to them too.
        ruleset = await self.ruleset(alice)
        for kind, rules in ruleset.items():
            for rule in rules:
                path = f"{RULES}/{kind}/{rule['rule_id']}/actions"
                self.assertEqual(await self.put(path, {"actions": ["dont_notify"]}, alice), (200, {}), path)
                self.assertEqual(await self.get(path, alice), (200, {"actions": ["dont_notify"]}), path)

    async def test_delete(self) -> None:
        alice = await self.register("alice")
        await self.put(f"{RULES}/underride/u1", {"actions": ["notify"]}, alice)
        await self.put(f"{RULES}/underride/u2", {"actions": ["notify"]}, alice)
        self.assertEqual(await self.delete(f"{RULES}/underride/u1", None, alice), (200, {}))
        self.assertEqual(await self.ids(alice, "underride"), ["u2", *DEFAULT_UNDERRIDE_IDS])
        self.assertMatrixError(await self.delete(f"{RULES}/underride/u1", None, alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{RULES}/override/u2", None, alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.delete(f"{RULES}/underride/.m.rule.nonexistent", None, alice), 404, "M_NOT_FOUND"
        )
        # Server-default rules cannot be deleted (disable them instead).
        self.assertMatrixError(
            await self.delete(f"{RULES}/underride/.m.rule.message", None, alice), 400, "M_INVALID_PARAM"
        )
        self.assertEqual(await self.ids(alice, "underride"), ["u2", *DEFAULT_UNDERRIDE_IDS])
        # Re-creating a deleted rule makes a new, enabled rule.
        await self.put(f"{RULES}/underride/u2/enabled", {"enabled": False}, alice)
        await self.delete(f"{RULES}/underride/u2", None, alice)
        await self.put(f"{RULES}/underride/u2", {"actions": []}, alice)
        self.assertEqual(await self.get(f"{RULES}/underride/u2/enabled", alice), (200, {"enabled": True}))

    # -- enabled and actions ----------------------------------------------------------------

    async def test_enabled(self) -> None:
        alice = await self.register("alice")
        await self.put(f"{RULES}/sender/@x:y", {"actions": []}, alice)
        self.assertEqual(await self.get(f"{RULES}/sender/@x:y/enabled", alice), (200, {"enabled": True}))
        self.assertEqual(await self.put(f"{RULES}/sender/@x:y/enabled", {"enabled": False}, alice), (200, {}))
        self.assertEqual(await self.get(f"{RULES}/sender/@x:y/enabled", alice), (200, {"enabled": False}))
        # An update of the rule keeps it disabled.
        await self.put(f"{RULES}/sender/@x:y", {"actions": ["notify"]}, alice)
        self.assertEqual(await self.get(f"{RULES}/sender/@x:y/enabled", alice), (200, {"enabled": False}))
        # Server-default rules can be switched, per user.
        self.assertEqual(await self.get(f"{RULES}/override/.m.rule.master/enabled", alice), (200, {"enabled": False}))
        self.assertEqual(
            await self.put(f"{RULES}/override/.m.rule.master/enabled", {"enabled": True}, alice), (200, {})
        )
        self.assertEqual(await self.get(f"{RULES}/override/.m.rule.master/enabled", alice), (200, {"enabled": True}))
        await self.put(f"{RULES}/underride/.m.rule.message/enabled", {"enabled": False}, alice)
        rules = {r["rule_id"]: r for r in (await self.ruleset(alice))["underride"]}
        self.assertFalse(rules[".m.rule.message"]["enabled"])
        self.assertTrue(rules[".m.rule.message"]["default"])
        bob = await self.register("bob")
        self.assertEqual(await self.get(f"{RULES}/override/.m.rule.master/enabled", bob), (200, {"enabled": False}))
        # Bad input.
        self.assertMatrixError(
            await self.put(f"{RULES}/override/.m.rule.master/enabled", {}, alice), 400, "M_MISSING_PARAM"
        )
        self.assertMatrixError(
            await self.put(f"{RULES}/override/.m.rule.master/enabled", {"enabled": "no"}, alice), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.put(f"{RULES}/override/nope/enabled", {"enabled": True}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(
            await self.put(f"{RULES}/override/.m.rule.nope/enabled", {"enabled": True}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.get(f"{RULES}/override/nope/enabled", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.put(f"{RULES}/bogus/x/enabled", {"enabled": True}, alice), 400, "M_INVALID_PARAM"
        )

    async def test_actions(self) -> None:
        alice = await self.register("alice")
        await self.put(f"{RULES}/room/!r:test", {"actions": ["notify"]}, alice)
        new = ["notify", {"set_tweak": "highlight"}]
        self.assertEqual(await self.put(f"{RULES}/room/!r:test/actions", {"actions": new}, alice), (200, {}))
        self.assertEqual(await self.get(f"{RULES}/room/!r:test/actions", alice), (200, {"actions": new}))
        # "This can be used to change the actions of builtin rules."
        path = f"{RULES}/underride/.m.rule.message/actions"
        self.assertEqual(await self.get(path, alice), (200, {"actions": ["notify"]}))
        self.assertEqual(await self.put(path, {"actions": []}, alice), (200, {}))
        self.assertEqual(await self.get(path, alice), (200, {"actions": []}))
        message = (await self.get(f"{RULES}/underride/.m.rule.message", alice))[1]
        self.assertEqual((message["actions"], message["default"], message["enabled"]), ([], True, True))
        # Enabling and changing actions of a default rule combine.
        await self.put(f"{RULES}/underride/.m.rule.message/enabled", {"enabled": False}, alice)
        self.assertEqual(await self.get(path, alice), (200, {"actions": []}))
        bob = await self.register("bob")
        self.assertEqual(await self.get(path, bob), (200, {"actions": ["notify"]}))
        # Bad input.
        self.assertMatrixError(await self.put(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(path, {"actions": "notify"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"actions": ["explode"]}, alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.put(f"{RULES}/room/!nope:test/actions", {"actions": []}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.get(f"{RULES}/room/!nope:test/actions", alice), 404, "M_NOT_FOUND")
        self.assertEqual(await self.get(path, alice), (200, {"actions": []}))

    # -- paths between the spec's endpoints ------------------------------------------------

    async def test_kind_listing(self) -> None:
        """GET /pushrules/global/{kind}/ lists that kind's rules as an array, as Synapse does (not in the spec)."""
        alice = await self.register("alice")
        await self.put(f"{RULES}/sender/@a:x", {"actions": ["notify"]}, alice)
        await self.put(f"{RULES}/sender/@b:x", {"actions": []}, alice)
        ruleset = await self.ruleset(alice)
        for kind in ("override", "content", "room", "sender", "underride"):
            self.assertEqual(await self.get(f"{RULES}/{kind}/", alice), (200, ruleset[kind]), kind)
        self.assertEqual([r["rule_id"] for r in ruleset["sender"]], ["@b:x", "@a:x"])
        self.assertEqual(await self.get("/_matrix/client/r0/pushrules/global/sender/", alice), (200, ruleset["sender"]))
        self.assertMatrixError(await self.get(f"{RULES}/sender/", None), 401, "M_MISSING_TOKEN")

    async def test_malformed_paths(self) -> None:
        """What SyTest's 80torture.pl expects of paths that are not spec endpoints (Synapse's answers).

        Never 200 nor 500: ``/pushrules`` without its slash is no endpoint (404 M_UNRECOGNIZED);
        every other shape under it is a bad or missing scope, kind, rule ID or attribute (400).
        """
        alice = await self.register("alice")
        enabled = {"enabled": True}
        base = f"{C}/pushrules"
        self.assertMatrixError(await self.get(base, alice), 404, "M_UNRECOGNIZED")
        gets = {
            f"{base}/global": "M_INVALID_PARAM",  # the ruleset lives at /pushrules/global/
            f"{base}/global/room": "M_INVALID_PARAM",  # and a kind's rules at /pushrules/global/room/
            f"{base}/not_a_scope/": "M_INVALID_PARAM",
            f"{base}/not_a_scope/room/": "M_INVALID_PARAM",
            f"{base}/not_a_scope/override/.m.rule.master": "M_INVALID_PARAM",
            f"{base}/global/not_a_kind/": "M_INVALID_PARAM",
            f"{base}/global/override/.m.rule.master/not_an_attr": "M_INVALID_PARAM",
        }
        for path, errcode in gets.items():
            self.assertMatrixError(await self.get(path, alice), 400, errcode)
        rule = {"actions": ["notify"]}
        puts: list[tuple[str, Any, str]] = [
            (f"{base}/", rule, "M_MISSING_PARAM"),
            (f"{base}/not_a_scope/room/%23spam:example.com", rule, "M_INVALID_PARAM"),
            (f"{base}/global", rule, "M_MISSING_PARAM"),
            (f"{base}/global/", rule, "M_MISSING_PARAM"),
            (f"{base}/global/room", rule, "M_MISSING_PARAM"),
            (f"{base}/global/room/", rule, "M_MISSING_PARAM"),
            (f"{base}/global/not_a_kind/", rule, "M_INVALID_PARAM"),
            (f"{base}/not_a_scope/", rule, "M_INVALID_PARAM"),
            (f"{base}/global/override/.m.rule.master/not_an_attr", enabled, "M_INVALID_PARAM"),
            (f"{base}/not_a_scope/override/.m.rule.master/enabled", enabled, "M_INVALID_PARAM"),
        ]
        for path, body, errcode in puts:
            self.assertMatrixError(await self.put(path, body, alice), 400, errcode)
        for path in (f"{base}/", f"{base}/global/room/", f"{base}/not_a_scope/room/%23a:b"):
            code, body = await self.delete(path, None, alice)
            self.assertEqual(code, 400, (path, body))
        # Attributes have no DELETE; nothing above changed the rules.
        self.assertMatrixError(
            await self.delete(f"{base}/global/override/.m.rule.master/enabled", None, alice), 405, "M_UNRECOGNIZED"
        )
        self.assertEqual(await self.get(f"{RULES}/override/.m.rule.master/enabled", alice), (200, {"enabled": False}))
        self.assertEqual(await self.ids(alice, "room"), [])
        # Each still asks for a token first.
        self.assertMatrixError(await self.put(f"{base}/global/room/", rule, None), 401, "M_MISSING_TOKEN")

    async def test_changes_reach_sync_as_account_data(self) -> None:
        alice = await self.register("alice")
        ad = self.hs.account_data
        start = ad.current_position
        await self.put(f"{RULES}/content/cake", {"pattern": "cake", "actions": ["notify"]}, alice)
        after_put = ad.current_position
        self.assertGreater(after_put, start)
        glob, _ = await ad.get_account_data_for_sync(alice.user_id, start, after_put)
        self.assertEqual(glob, [{"type": "m.push_rules", "content": {"global": await self.ruleset(alice)}}])
        # Failed changes take no position.
        await self.put(f"{RULES}/content/.bad", {"pattern": "x", "actions": []}, alice)
        await self.delete(f"{RULES}/content/nope", None, alice)
        await self.put(f"{RULES}/content/nope/enabled", {"enabled": False}, alice)
        self.assertEqual(ad.current_position, after_put)
        # Deleting, enabling and actions each count.
        for method, path, body in [
            ("PUT", f"{RULES}/content/cake/enabled", {"enabled": False}),
            ("PUT", f"{RULES}/content/cake/actions", {"actions": []}),
            ("DELETE", f"{RULES}/content/cake", None),
        ]:
            before = ad.current_position
            code, _ = await self.request(method, path, body, token=alice)
            self.assertEqual(code, 200)
            glob, _ = await ad.get_account_data_for_sync(alice.user_id, before, ad.current_position)
            self.assertEqual([e["type"] for e in glob], ["m.push_rules"], path)
        self.assertEqual(await self.own(alice, "content"), [])
