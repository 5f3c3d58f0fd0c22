"""Push rules: the per-user ruleset (server defaults + the user's rules) and its API.

modules/push.md §Push Rules and pushrules.yaml. Server-default rules (IDs
starting with ".") exist for every user; users may enable/disable them and
change their actions, but not delete, replace or anchor rules to them. User
rules are ordered within their kind by ``before``/``after``. Every change is
a new position on the ``account_data`` stream, so ``/sync`` sends the whole
``m.push_rules`` account data event again.

Evaluating rules against events (notification counts, pushers) is not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from mxserver.errors import MatrixError, bad_json, invalid_param, not_found
from mxserver.storage.push_rules import DefaultOverride, PushRulesStore, RuleNotFound, StoredRule
from mxserver.streams import AccountDataChange, Stream
from mxserver.sync import push_rule_defaults as defaults
from mxserver.sync.push_rule_defaults import KINDS

#: rule IDs are path segments and primary-key columns: keep them bounded
MAX_RULE_ID_BYTES = 255

#: modules/push.md §Historical Actions: "Clients and homeservers MUST ignore these actions, for
#: instance, by stripping them". They are accepted and kept as given (Synapse does, and SyTest's
#: 05_set_actions.pl reads ``["dont_notify"]`` back); whatever evaluates rules must skip them.
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})
_KNOWN_STRING_ACTIONS = frozenset({"notify"}) | HISTORICAL_ACTIONS

#: the only push ruleset scope (pushrules.yaml: "Currently the only push ruleset defined is `global`")
SCOPES = frozenset({"global"})

#: push_condition.yaml ``is``: a decimal integer, optionally prefixed by ==, <, >, >= or <=
_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?[0-9]+")

#: canonical JSON integers (appendices §Canonical JSON)
_MAX_SAFE_INT = 2**53 - 1


def rule_not_found() -> MatrixError:
    return not_found("The push rule was not found.")


class PushRulesHandler:
    """Read and change a user's push rules."""

    def __init__(self, store: PushRulesStore, changes: Stream[AccountDataChange]) -> None:
        self._store = store
        self._changes = changes
        self._listeners: list[Callable[[str], None]] = []

    # -- reading ---------------------------------------------------------------------

    async def get_ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The ``global`` ruleset (push_ruleset.yaml): every kind, most important rule first."""
        rules, overrides = await self._store.get_rules(user_id)
        return _ruleset(user_id, rules, overrides)

    async def get_rulesets(self, user_ids: Sequence[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """:meth:`get_ruleset` of many users, read in one transaction (push evaluation)."""
        stored = await self._store.get_rules_for_users(user_ids)
        return {user_id: _ruleset(user_id, rules, overrides) for user_id, (rules, overrides) in stored.items()}

    async def users_with_own_rules(self, user_ids: Sequence[str]) -> set[str]:
        """Those of ``user_ids`` whose ruleset may differ from :meth:`default_ruleset`."""
        return await self._store.users_with_changes(user_ids)

    @staticmethod
    def default_ruleset(user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The ruleset of a user who never changed a rule: the server's defaults."""
        return _ruleset(user_id, [], {})

    async def push_rules_content(self, user_id: str) -> dict[str, Any]:
        """The content of the user's ``m.push_rules`` account data event."""
        return {"global": await self.get_ruleset(user_id)}

    async def changed_between(self, user_id: str, from_pos: int, to_pos: int) -> bool:
        return await self._store.changed_between(user_id, from_pos, to_pos)

    async def get_kind(self, user_id: str, kind: str) -> list[dict[str, Any]]:
        """One kind's rules as in the ruleset, most important first."""
        check_kind(kind)
        return (await self.get_ruleset(user_id))[kind]

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> dict[str, Any]:
        """One rule as in the ruleset; M_NOT_FOUND if there is none."""
        check_kind(kind)
        for rule in (await self.get_ruleset(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise rule_not_found()

    # -- changing --------------------------------------------------------------------

    async def put_rule(
        self, user_id: str, kind: str, rule_id: str, body: dict[str, Any], before: str | None, after: str | None
    ) -> None:
        """Create or update a user rule from a PUT body (pushrules.yaml setPushRule)."""
        check_kind(kind)
        check_new_rule_id(rule_id)
        for name, anchor in (("before", before), ("after", after)):
            if anchor is not None and anchor.startswith("."):
                # "It is not possible to add a rule relative to a predefined server rule."
                raise invalid_param(f"'{name}' may not name a server-default rule")
        actions = parse_actions(body.get("actions"))
        conditions: list[dict[str, Any]] | None = None
        pattern: str | None = None
        if kind in ("override", "underride"):
            conditions = parse_conditions(body.get("conditions", []))
        elif kind == "content":
            pattern = body.get("pattern")
            if not isinstance(pattern, str):
                raise bad_json("A content rule needs a 'pattern' string")
        try:
            position = await self._store.put_rule(user_id, kind, rule_id, conditions, pattern, actions, before, after)
        except RuleNotFound as e:
            # pushrules.yaml's example answer for an unknown anchor
            raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {e.rule_id}") from None
        self._changed(user_id, position)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        check_kind(kind)
        if rule_id.startswith("."):
            if defaults.default_rule(kind, rule_id, user_id) is None:
                raise rule_not_found()
            raise invalid_param("Server-default push rules cannot be deleted")
        position = await self._store.delete_rule(user_id, kind, rule_id)
        if position is None:
            raise rule_not_found()
        self._changed(user_id, position)

    async def get_enabled(self, user_id: str, kind: str, rule_id: str) -> bool:
        return bool((await self.get_rule(user_id, kind, rule_id))["enabled"])

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
        await self._set_field(user_id, kind, rule_id, "enabled", enabled)

    async def get_actions(self, user_id: str, kind: str, rule_id: str) -> list[Any]:
        return list((await self.get_rule(user_id, kind, rule_id))["actions"])

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        await self._set_field(user_id, kind, rule_id, "actions", parse_actions(actions))

    async def _set_field(self, user_id: str, kind: str, rule_id: str, field: str, value: Any) -> None:
        check_kind(kind)
        if rule_id.startswith("."):
            if defaults.default_rule(kind, rule_id, user_id) is None:
                raise rule_not_found()
            position: int | None = await self._store.set_default_field(user_id, rule_id, field, value)
        else:
            position = await self._store.set_rule_field(user_id, kind, rule_id, field, value)
        if position is None:
            raise rule_not_found()
        self._changed(user_id, position)

    def forget_user(self, user_id: str) -> None:
        """Another process (the cluster's writer) may have changed the user's rules."""
        self._store.note_changed(user_id)

    def on_changed(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(user_id)`` after each change to a user's rules (compiled-rule caches)."""
        self._listeners.append(listener)

    def _changed(self, user_id: str, position: int) -> None:
        for listener in self._listeners:
            listener(user_id)
        # The store already advanced the stream (after commit); the account_data
        # stream's change wakes the user's /sync (and reaches a cluster's workers).
        self._changes.publish(AccountDataChange(user_id))


# -- rendering -------------------------------------------------------------------------


def _ruleset(
    user_id: str, rules: list[StoredRule], overrides: dict[str, DefaultOverride]
) -> dict[str, list[dict[str, Any]]]:
    """The user's stored rules merged with the server defaults, each kind most important first."""
    own: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for rule in rules:
        if rule.kind in own:
            own[rule.kind].append(_user_rule_json(rule))

    def with_overrides(rule: dict[str, Any]) -> dict[str, Any]:
        return _apply_override(defaults.for_user(rule, user_id), overrides.get(rule["rule_id"]))

    # §Predefined Rules: defaults rank below the user's rules, except .m.rule.master which
    # always ranks first.
    return {
        "override": [
            with_overrides(defaults.MASTER_RULE),
            *own["override"],
            *(with_overrides(r) for r in defaults.DEFAULT_OVERRIDE_RULES),
        ],
        "content": [*own["content"], *(with_overrides(r) for r in defaults.DEFAULT_RULES_BY_KIND["content"])],
        "room": own["room"],
        "sender": own["sender"],
        "underride": [*own["underride"], *(with_overrides(r) for r in defaults.DEFAULT_UNDERRIDE_RULES)],
    }


def _user_rule_json(rule: StoredRule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule_id": rule.rule_id, "default": False, "enabled": rule.enabled, "actions": rule.actions}
    if rule.kind in ("override", "underride"):
        out["conditions"] = rule.conditions or []
    elif rule.kind == "content":
        out["pattern"] = rule.pattern
    return out


def _apply_override(rule: dict[str, Any], override: DefaultOverride | None) -> dict[str, Any]:
    if override is not None:
        if override.enabled is not None:
            rule["enabled"] = override.enabled
        if override.actions is not None:
            rule["actions"] = override.actions
    return rule


# -- validation ------------------------------------------------------------------------


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise invalid_param(f"Unknown push rule scope {scope!r}: the only scope is 'global'")


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise invalid_param(f"Unknown push rule kind {kind!r}")


def check_new_rule_id(rule_id: str) -> None:
    """pushrules.yaml: IDs starting with "." are the server's; "/" and "\\" are not allowed.

    §Push Rules says a room rule's ``rule_id`` "is always the ID of the room that it affects"
    and a sender rule's "the Matrix user ID" of the sender, but asks no server to reject other
    IDs (only the leading "." is "MUST be rejected", and slashes "not allowed"). Such a rule
    simply never matches.
    Synapse accepts any ID, and SyTest's 02add_rules.pl names room rules by alias
    (``#spam:example.com``), so neither kind's ID is checked further.
    """
    if not rule_id:
        raise invalid_param("The rule ID must not be empty")
    if rule_id.startswith("."):
        raise invalid_param("Rule IDs starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("Rule IDs may not contain '/' or '\\'")
    if len(rule_id.encode("utf-8")) > MAX_RULE_ID_BYTES:
        raise invalid_param("The rule ID is too long")


def parse_actions(actions: Any) -> list[Any]:
    """Validated actions, as given (historical ``dont_notify``/``coalesce`` included)."""
    if not isinstance(actions, list):
        raise bad_json("'actions' must be an array")
    out: list[Any] = []
    for action in actions:
        if isinstance(action, str):
            if action not in _KNOWN_STRING_ACTIONS:
                raise invalid_param(f"Unrecognised push rule action {action!r}")
            out.append(action)
        elif isinstance(action, dict):
            # §Actions: the only action with parameters is set_tweak ({"set_tweak": name, "value": ...}).
            if not isinstance(action.get("set_tweak"), str):
                raise invalid_param("An action object must be a set_tweak with a string tweak name")
            out.append(action)
        else:
            raise bad_json("Each action must be a string or an object")
    return out


def parse_conditions(conditions: Any) -> list[dict[str, Any]]:
    """Validated conditions (push_condition.yaml); unknown kinds are kept and never match."""
    if not isinstance(conditions, list):
        raise bad_json("'conditions' must be an array")
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise bad_json("Each condition must be an object with a string 'kind'")
        kind = condition["kind"]
        if kind in ("event_match", "event_property_is", "event_property_contains", "sender_notification_permission"):
            if not isinstance(condition.get("key"), str):
                raise bad_json(f"A {kind} condition needs a string 'key'")
        if kind == "event_match" and not isinstance(condition.get("pattern"), str):
            raise bad_json("An event_match condition needs a string 'pattern'")
        if kind in ("event_property_is", "event_property_contains"):
            if "value" not in condition or not _is_scalar(condition["value"]):
                raise bad_json(f"A {kind} condition needs a string, integer, boolean or null 'value'")
        if kind == "room_member_count":
            is_ = condition.get("is")
            if not isinstance(is_, str) or not _MEMBER_COUNT.fullmatch(is_):
                raise bad_json('A room_member_count condition needs \'is\' like "2", "<=10" or ">1"')
    return conditions


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
