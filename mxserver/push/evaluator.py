"""Push-rule evaluation (client-server-api §Push Notifications, modules/push.md §Push Rules): pure, no I/O.

Two halves, so that sending into a room of a thousand local users stays cheap:

- :class:`CompiledRules` is one user's ruleset turned into matchers once (rebuilt only
  when the user's rules change);
- :class:`EventFacts` is what every recipient's rules ask of one event (property
  lookups, the room's member count, the sender's power, the notification levels),
  computed once per event. Conditions that do not depend on the recipient are
  remembered per event, so the second and later recipients mostly hit a dict.

:func:`evaluate` walks the compiled rules in the spec's order and answers the actions
of the first rule that matches (or None: no notification).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs

#: kinds in the order they are checked (§Push Rules)
KINDS = ("override", "content", "room", "sender", "underride")

#: §Historical Actions: "Clients and homeservers MUST ignore these actions"
HISTORICAL_ACTIONS = frozenset({"dont_notify", "coalesce"})

#: power_levels.yaml: ``notifications.room`` defaults to 50 (and so does any other key, as Synapse)
DEFAULT_NOTIFICATION_LEVEL = 50

#: appendices §Canonical JSON: the integers event_property_is/contains can compare
_MAX_SAFE_INT = 2**53 - 1

_MEMBER_COUNT = re.compile(r"(==|<=|>=|<|>)?([0-9]+)")

_WORD = "A-Za-z0-9_"


# -- property paths and globs ------------------------------------------------------------------


@lru_cache(maxsize=1024)
def parse_path(key: str) -> tuple[str, ...]:
    """A dot-separated property path (appendices §Dot-separated property paths) as its segments.

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other backslash is kept as it is.
    """
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if c == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    segments.append("".join(current))
    return tuple(segments)


_MISSING = object()


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value at ``key`` in ``event``, or :data:`_MISSING`."""
    value: Any = event
    for segment in parse_path(key):
        if not isinstance(value, Mapping) or segment not in value:
            return _MISSING
        value = value[segment]
    return value


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, word_boundary: bool) -> re.Pattern[str]:
    """A case-insensitive regex for a glob (appendices §Glob-style matching: ``*`` and ``?``).

    Whole-value by default; with ``word_boundary`` (``content.body``, §Conditions) any
    substring that starts and ends at a word boundary: the start or end of the value, or a
    character outside ``[A-Za-z0-9_]``.
    """
    body = "".join(".*?" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if word_boundary:
        return re.compile(f"(?<![{_WORD}]){body}(?![{_WORD}])", re.IGNORECASE | re.DOTALL)
    return re.compile(f"{body}", re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, word_boundary: bool) -> bool:
    regex = glob_regex(pattern, word_boundary)
    return (regex.search(value) if word_boundary else regex.fullmatch(value)) is not None


def _is_exact_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same_scalar(a: Any, b: Any) -> bool:
    """Exact equality without Python's ``True == 1`` (§event_property_is: "do not cast types")."""
    return type(a) is type(b) and a == b


def strip_historical(actions: Sequence[Any]) -> list[Any]:
    return [a for a in actions if not (isinstance(a, str) and a in HISTORICAL_ACTIONS)]


def notifies(actions: Sequence[Any] | None) -> bool:
    return bool(actions) and "notify" in actions  # type: ignore[operator]


def tweaks(actions: Sequence[Any] | None) -> dict[str, Any]:
    """The ``set_tweak`` actions as a dict; a highlight tweak without a value is true (§Actions)."""
    out: dict[str, Any] = {}
    for action in actions or ():
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            out[name] = action.get("value", True) if name == "highlight" else action.get("value")
    return out


def highlights(actions: Sequence[Any] | None) -> bool:
    return tweaks(actions).get("highlight") is True


# -- what every recipient asks of an event ----------------------------------------------------------


@attrs.define
class EventFacts:
    """One event and the room facts its evaluation needs, shared by every recipient."""

    #: the event as a client or federation sees it (``type``, ``content``, ``sender``, ``state_key``, ...)
    event: Mapping[str, Any]
    #: joined members of the room (room_member_count)
    member_count: int
    #: the sender's power level (sender_notification_permission; infinite for v12 creators)
    sender_power: float
    #: the power levels' ``notifications`` object
    notification_levels: Mapping[str, Any] = attrs.field(factory=dict)
    #: a recipient's display name in the room, for contains_display_name
    display_name: Callable[[str], str | None] = lambda user_id: None
    #: condition results that do not depend on the recipient, per condition
    _memo: dict[Any, bool] = attrs.field(factory=dict, init=False)

    @property
    def sender(self) -> Any:
        return self.event.get("sender")

    @property
    def room_id(self) -> Any:
        return self.event.get("room_id")

    def body(self) -> str | None:
        body = lookup(self.event, "content.body")
        return body if isinstance(body, str) else None

    def remembered(self, key: Any, compute: Callable[[], bool]) -> bool:
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = compute()
        return hit


# -- conditions ---------------------------------------------------------------------------------

#: a compiled condition: (facts, recipient user ID) -> matches
Condition = Callable[[EventFacts, str], bool]


def _never(facts: EventFacts, user_id: str) -> bool:
    return False


def _event_match(key: Any, pattern: Any) -> Condition:
    if not isinstance(key, str) or not isinstance(pattern, str):
        return _never
    word_boundary = key == "content.body"
    memo = ("event_match", key, pattern)

    def compute(facts: EventFacts) -> bool:
        value = lookup(facts.event, key)
        return isinstance(value, str) and glob_matches(pattern, value, word_boundary)

    return lambda facts, user_id: facts.remembered(memo, lambda: compute(facts))


def _event_property_is(key: Any, value: Any) -> Condition:
    if not isinstance(key, str) or not _is_exact_scalar(value):
        return _never
    memo = ("event_property_is", key, type(value).__name__, value)

    def compute(facts: EventFacts) -> bool:
        found = lookup(facts.event, key)
        return found is not _MISSING and _is_exact_scalar(found) and _same_scalar(found, value)

    return lambda facts, user_id: facts.remembered(memo, lambda: compute(facts))


def _event_property_contains(key: Any, value: Any) -> Condition:
    if not isinstance(key, str) or not _is_exact_scalar(value):
        return _never
    memo = ("event_property_contains", key, type(value).__name__, value)

    def compute(facts: EventFacts) -> bool:
        found = lookup(facts.event, key)
        return isinstance(found, list) and any(_is_exact_scalar(v) and _same_scalar(v, value) for v in found)

    return lambda facts, user_id: facts.remembered(memo, lambda: compute(facts))


def _contains_display_name(facts: EventFacts, user_id: str) -> bool:
    body = facts.body()
    if not body:
        return False
    name = facts.display_name(user_id)
    if not name:
        return False
    # Matched like a content.body glob, with the name taken literally.
    regex = _display_name_regex(name)
    return regex.search(body) is not None


@lru_cache(maxsize=4096)
def _display_name_regex(name: str) -> re.Pattern[str]:
    return re.compile(f"(?<![{_WORD}]){re.escape(name)}(?![{_WORD}])", re.IGNORECASE)


def _room_member_count(spec: Any) -> Condition:
    match = _MEMBER_COUNT.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        return _never
    op, number = match.group(1) or "==", int(match.group(2))
    compare: Callable[[int], bool] = {
        "==": lambda n: n == number,
        "<": lambda n: n < number,
        ">": lambda n: n > number,
        "<=": lambda n: n <= number,
        ">=": lambda n: n >= number,
    }[op]
    return lambda facts, user_id: compare(facts.member_count)


def _sender_notification_permission(key: Any) -> Condition:
    if not isinstance(key, str):
        return _never

    def check(facts: EventFacts, user_id: str) -> bool:
        required = facts.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
        if isinstance(required, bool) or not isinstance(required, int):
            required = DEFAULT_NOTIFICATION_LEVEL
        return facts.sender_power >= required

    return check


def compile_condition(condition: Any) -> Condition:
    """One condition (push_condition.yaml); unrecognised ones never match (§Conditions)."""
    if not isinstance(condition, Mapping):
        return _never
    kind = condition.get("kind")
    if kind == "event_match":
        return _event_match(condition.get("key"), condition.get("pattern"))
    if kind == "event_property_is":
        return _event_property_is(condition.get("key"), condition.get("value"))
    if kind == "event_property_contains":
        return _event_property_contains(condition.get("key"), condition.get("value"))
    if kind == "contains_display_name":
        return _contains_display_name
    if kind == "room_member_count":
        return _room_member_count(condition.get("is"))
    if kind == "sender_notification_permission":
        return _sender_notification_permission(condition.get("key"))
    return _never


# -- rules ----------------------------------------------------------------------------------------


@attrs.frozen
class CompiledRule:
    kind: str
    rule_id: str
    conditions: tuple[Condition, ...]
    actions: tuple[Any, ...]

    def matches(self, facts: EventFacts, user_id: str) -> bool:
        return all(condition(facts, user_id) for condition in self.conditions)


def compile_rule(kind: str, rule: Mapping[str, Any]) -> CompiledRule | None:
    """One enabled rule as matchers; None for a disabled rule (disabled rules never match)."""
    if not rule.get("enabled", True):
        return None
    rule_id = rule.get("rule_id")
    if not isinstance(rule_id, str):
        return None
    conditions: list[Condition]
    if kind in ("override", "underride"):
        conditions = [compile_condition(c) for c in rule.get("conditions") or ()]
    elif kind == "content":
        # A content rule's predefined condition: its pattern against content.body (§Push Rules).
        conditions = [_event_match("content.body", rule.get("pattern"))]
    elif kind == "room":
        conditions = [lambda facts, user_id: facts.room_id == rule_id]
    elif kind == "sender":
        conditions = [lambda facts, user_id: facts.sender == rule_id]
    else:
        return None
    actions = tuple(strip_historical(rule.get("actions") or ()))
    return CompiledRule(kind, rule_id, tuple(conditions), actions)


@attrs.frozen
class CompiledRules:
    """A user's whole ruleset (override, content, room, sender, underride), compiled."""

    rules: tuple[CompiledRule, ...]
    #: some rule has a contains_display_name condition (the evaluator then needs the user's name)
    needs_display_name: bool = False

    @classmethod
    def from_ruleset(cls, ruleset: Mapping[str, Sequence[Mapping[str, Any]]]) -> CompiledRules:
        """From the ``global`` ruleset as the push-rules API shows it (push_ruleset.yaml)."""
        compiled: list[CompiledRule] = []
        for kind in KINDS:
            for rule in ruleset.get(kind) or ():
                c = compile_rule(kind, rule)
                if c is not None:
                    compiled.append(c)
        needs_name = any(_contains_display_name in rule.conditions for rule in compiled)
        return cls(tuple(compiled), needs_name)

    def evaluate(self, facts: EventFacts, user_id: str) -> CompiledRule | None:
        """The first rule that matches the event for ``user_id``, or None."""
        for rule in self.rules:
            if rule.matches(facts, user_id):
                return rule
        return None


def evaluate(rules: CompiledRules, facts: EventFacts, user_id: str) -> list[Any] | None:
    """The actions for ``user_id`` (None when no rule matched: no notification).

    §Push Rules: "Homeservers MUST NOT notify the Push Gateway for events that the user
    has sent themselves": a user's own events match nothing.
    """
    if facts.sender == user_id:
        return None
    rule = rules.evaluate(facts, user_id)
    return None if rule is None else list(rule.actions)
