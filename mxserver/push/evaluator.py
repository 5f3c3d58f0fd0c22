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

import json
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
    return _lookup_path(event, parse_path(key))


def _lookup_path(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for segment in path:
        # type() first: event JSON is plain dicts, and an ABC check costs a Python call
        if not (type(value) is dict or isinstance(value, Mapping)) or segment not in value:
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
    #: looked-up values, per key
    _values: dict[Any, Any] = attrs.field(factory=dict, init=False)

    @property
    def sender(self) -> Any:
        return self.event.get("sender")

    @property
    def room_id(self) -> Any:
        return self.event.get("room_id")

    def body(self) -> str | None:
        body = lookup(self.event, "content.body")
        return body if isinstance(body, str) else None

    def folded_text(self) -> str:
        """Every string in the event, case-folded as glob matching folds (``ı`` matches ``i``):
        no rule that names a user can match unless the user's name is in here."""
        text = self._values.get("folded_text")
        if text is None:
            parts: list[str] = []
            _strings(self.event, parts)
            text = self._values["folded_text"] = "\n".join(parts).casefold().replace("ı", "i")
        return text

    def scalars_in(self, key: str) -> frozenset[tuple[str, Any]]:
        """The exact scalars of the list at ``key``, tagged with their type (event_property_contains:
        each recipient's check is then one set lookup, not a scan of the list)."""
        memo_key = ("scalars_in", key)
        hit = self._values.get(memo_key)
        if hit is None:
            found = lookup(self.event, key)
            hit = self._values[memo_key] = (
                frozenset((type(v).__name__, v) for v in found if _is_exact_scalar(v))
                if isinstance(found, list)
                else frozenset()
            )
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
    regex = glob_regex(pattern, word_boundary)
    test = regex.search if word_boundary else regex.fullmatch
    path = parse_path(key)

    # Inlined (no helper calls on a hit): every recipient's rules ask, once per condition.
    def check(facts: EventFacts, user_id: str) -> bool:
        hit = facts._memo.get(memo)
        if hit is None:
            value = _lookup_path(facts.event, path)
            hit = facts._memo[memo] = isinstance(value, str) and test(value) is not None
        return hit

    return check


def _event_property_is(key: Any, value: Any) -> Condition:
    if not isinstance(key, str) or not _is_exact_scalar(value):
        return _never
    memo = ("event_property_is", key, type(value).__name__, value)
    path = parse_path(key)

    def check(facts: EventFacts, user_id: str) -> bool:
        hit = facts._memo.get(memo)
        if hit is None:
            found = _lookup_path(facts.event, path)
            hit = facts._memo[memo] = (
                found is not _MISSING and _is_exact_scalar(found) and _same_scalar(found, value)
            )
        return hit

    return check


def _event_property_contains(key: Any, value: Any) -> Condition:
    if not isinstance(key, str) or not _is_exact_scalar(value):
        return _never
    # Tagged with the type: "do not cast types" (True is not 1).
    wanted = (type(value).__name__, value)
    return lambda facts, user_id: wanted in facts.scalars_in(key)


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
    """One condition (push_condition.yaml); unrecognised ones never match (§Conditions).

    Compiled conditions are pure, so equal conditions share one: every user on the default
    rules compiles the same few dozen, and a room's new members are compiled on its hot path.
    """
    if not isinstance(condition, Mapping):
        return _never
    try:
        key = tuple(sorted((k, type(v).__name__, v) for k, v in condition.items()))
        hash(key)
    except TypeError:  # a list or object value: compiled each time (never_matches it anyway)
        return _compile_condition(condition)
    return _compiled_condition(key)


@lru_cache(maxsize=16384)
def _compiled_condition(key: tuple[tuple[str, str, Any], ...]) -> Condition:
    return _compile_condition({k: v for k, _, v in key})


def _compile_condition(condition: Mapping[str, Any]) -> Condition:
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


#: action lists by their canonical JSON: equal lists of every user's rules are one object, so
#: per-event work keyed by the list (is it a notification? a highlight?) is done once per event
#: for a whole room, not once per recipient
_SHARED_ACTIONS: dict[str, list[Any]] = {}
_SHARED_ACTIONS_MAX = 4096


def shared_actions(actions: Sequence[Any]) -> list[Any]:
    """The one shared list equal to ``actions`` (a new one once too many distinct lists exist)."""
    try:
        key = json.dumps(actions, sort_keys=True)
    except (TypeError, ValueError):
        return list(actions)
    found = _SHARED_ACTIONS.get(key)
    if found is None:
        found = list(actions)
        if len(_SHARED_ACTIONS) < _SHARED_ACTIONS_MAX:
            _SHARED_ACTIONS[key] = found
            # shared lists live as long as the process: their IDs name them for good
            _VERDICTS[id(found)] = (notifies(found), highlights(found), key)
    return found


#: a shared list's ID -> (notifies, highlights, canonical JSON)
_VERDICTS: dict[int, tuple[bool, bool, str]] = {}


def verdict(actions: list[Any]) -> tuple[bool, bool, str]:
    """Whether ``actions`` notify and highlight, and their canonical JSON (a key under which
    equal lists from different rules compare equal): looked up for a shared list."""
    found = _VERDICTS.get(id(actions))
    if found is not None and _SHARED_ACTIONS.get(found[2]) is actions:
        return found
    return notifies(actions), highlights(actions), json.dumps(actions, sort_keys=True)


@attrs.frozen
class CompiledRule:
    kind: str
    rule_id: str
    conditions: tuple[Condition, ...]
    actions: tuple[Any, ...]
    #: ``actions`` as the one list :func:`evaluate_many` hands every user this rule matched
    #: (shared: readers must not change it)
    shared_actions: list[Any] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "shared_actions", shared_actions(self.actions))

    def matches(self, facts: EventFacts, user_id: str) -> bool:
        for condition in self.conditions:  # a loop, not all(): this runs per recipient
            if not condition(facts, user_id):
                return False
        return True


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
    #: per rule: whether its definition names the user (ID, localpart) or asks for their display
    #: name; the other rules answer alike for every user of the same :attr:`shape`
    user_dependent: tuple[bool, ...] = ()
    #: equal for two users whose rulesets differ only where each names its own user (every
    #: user on server-default rules shares one); None: evaluate this user on their own
    shape: str | None = None
    #: the user's localpart, case-folded (with a shape: a rule naming the user can only match
    #: an event whose strings hold it)
    folded_localpart: str = ""
    #: per rule: its conditions that do not name the user (a user-dependent rule whose shared
    #: conditions fail for an event matches nobody of the shape: the invite rule for a join)
    shared_conditions: tuple[tuple[Condition, ...], ...] = ()
    #: per rule: for a rule that names the user, its kind and definition with the user's ID and
    #: localpart as markers (:meth:`retarget` fills in another user's); else None
    templates: tuple[tuple[str, Mapping[str, Any]] | None, ...] = ()

    @classmethod
    def from_ruleset(cls, ruleset: Mapping[str, Sequence[Mapping[str, Any]]], user_id: str | None = None) -> CompiledRules:
        """From the ``global`` ruleset as the push-rules API shows it (push_ruleset.yaml).

        With ``user_id``, also the rules' :attr:`shape` and :attr:`user_dependent` flags, so
        that :func:`evaluate_many` can evaluate what users share once per event.
        """
        compiled: list[CompiledRule] = []
        dependent: list[bool] = []
        shared_conditions: list[tuple[Condition, ...]] = []
        shape_parts: list[str] = []
        templates: list[tuple[str, Mapping[str, Any]] | None] = []
        localpart = _plain_localpart(user_id) if user_id else None
        for kind in KINDS:
            for rule in ruleset.get(kind) or ():
                c = compile_rule(kind, rule)
                if c is None:
                    continue
                compiled.append(c)
                if user_id and localpart:
                    normal, names_user, naming = _normalised(rule, user_id, localpart)
                    shape_parts.append(json.dumps([kind, normal], sort_keys=True))
                    dependent.append(names_user or _contains_display_name in c.conditions)
                    templates.append((kind, normal) if names_user else None)
                    shared_conditions.append(
                        tuple(
                            cond
                            for cond, names in zip(c.conditions, naming, strict=True)
                            if not names and cond is not _contains_display_name
                        )
                        if kind in ("override", "underride")
                        else ()
                    )
        needs_name = any(_contains_display_name in rule.conditions for rule in compiled)
        shape = "\n".join(shape_parts) if user_id and localpart else None
        return cls(
            tuple(compiled),
            needs_name,
            tuple(dependent),
            shape,
            (localpart or "").casefold(),
            tuple(shared_conditions),
            tuple(templates),
        )

    def retarget(self, user_id: str) -> CompiledRules | None:
        """These rules as another user of the same ruleset but for the values that name the user
        has them (a user who never changed a rule, from the server's defaults compiled once):
        only the rules that name the user are compiled again. None when the ID does not allow
        it (see :func:`_plain_localpart`) or these rules have no shape."""
        localpart = _plain_localpart(user_id)
        if self.shape is None or localpart is None:
            return None
        rules = list(self.rules)
        for i, template in enumerate(self.templates):
            if template is None:
                continue
            kind, normal = template
            rule = compile_rule(kind, _denormalised(normal, user_id, localpart))
            if rule is None:
                return None
            rules[i] = rule
        return attrs.evolve(self, rules=tuple(rules), folded_localpart=localpart.casefold())

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


def evaluate_many(
    compiled: Mapping[str, CompiledRules], facts: EventFacts, user_ids: Sequence[str]
) -> dict[str, list[Any] | None]:
    """:func:`evaluate` for every user in ``user_ids`` (see :func:`evaluate_groups`, which this
    reads back per user)."""
    out: dict[str, list[Any] | None] = dict.fromkeys(user_ids)
    for actions, users in evaluate_groups(compiled, facts, user_ids):
        for user_id in users:
            out[user_id] = actions
    return out


def evaluate_groups(
    compiled: Mapping[str, CompiledRules], facts: EventFacts, user_ids: Sequence[str]
) -> list[tuple[list[Any], list[str]]]:
    """The users of ``user_ids`` a rule matched, grouped by the actions they get: one entry per
    actions list (:attr:`CompiledRule.shared_actions`, shared: read it, do not change it), its
    users in the order given. Users no rule matched (and the sender) are in no group.

    For each :attr:`CompiledRules.shape`, the rules that do not name the user are walked once
    per event: the first that matches ends the walk, and only users the event may name (their
    localpart, or display name, among its strings) check the rules before it that do name them
    (mentions, their name in the body, invites to them). Everyone else of the shape gets the
    walk's answer without any rule checked for them: in a room of a thousand users on default
    rules, a message that names nobody costs a substring test each.
    """
    sender = facts.sender
    by_shape: dict[str, list[str]] = {}
    groups: dict[int, tuple[list[Any], list[str]]] = {}

    def add(actions: list[Any] | None, users: list[str]) -> None:
        if actions is None or not users:
            return
        entry = groups.get(id(actions))
        if entry is None:
            groups[id(actions)] = (actions, users)
        else:
            entry[1].extend(users)

    for user_id in user_ids:
        if user_id == sender:
            continue
        shape = compiled[user_id].shape
        if shape is None:
            add(evaluate(compiled[user_id], facts, user_id), [user_id])
        else:
            users = by_shape.get(shape)
            if users is None:
                by_shape[shape] = [user_id]
            else:
                users.append(user_id)
    for users in by_shape.values():
        first = compiled[users[0]]
        plan = _plan(first, facts, users[0])
        shared = None if plan.shared is None else first.rules[plan.shared].shared_actions
        if not plan.own:
            add(shared, users)
            continue
        text = facts.folded_text()
        if plan.needs_names:
            named = {u for u in users if _may_name(compiled[u], plan, facts, u)}
        else:
            named = {u for u in users if compiled[u].folded_localpart in text}
        if not named:
            add(shared, users)
            continue
        add(shared, [u for u in users if u not in named])
        for user_id in users:
            if user_id not in named:
                continue
            rules = compiled[user_id]
            found: int | None = plan.shared
            for i in plan.own:
                if rules.rules[i].matches(facts, user_id):
                    found = i
                    break
            add(None if found is None else rules.rules[found].shared_actions, [user_id])
    return list(groups.values())


def _normalised(rule: Mapping[str, Any], user_id: str, localpart: str) -> tuple[dict[str, Any], bool, list[bool]]:
    """``rule`` with the user's ID and localpart in its patterns and condition values replaced
    by markers, whether it had any (only there does naming the user change what matches: a
    rule that names the user can then only match an event whose strings hold the localpart),
    and for each of its conditions (override and underride rules) whether it names the user."""
    found = False

    def mark(value: Any) -> Any:
        nonlocal found
        if not isinstance(value, str):
            return value
        # NUL is the escape: a NUL of the value's own is doubled, "\x00U"/"\x00L" are markers,
        # so two values normalise alike only if they are alike but for naming their user.
        escaped = value.replace("\x00", "\x00\x00")
        if localpart in value:
            found = True
            return escaped.replace(user_id, "\x00U").replace(localpart, "\x00L")
        return escaped

    normal = dict(rule)
    if "pattern" in normal:
        normal["pattern"] = mark(normal["pattern"])
    conditions = normal.get("conditions")
    naming: list[bool] = []
    if isinstance(conditions, list):
        marked = []
        for c in conditions:
            before = found
            found = False
            marked.append(
                {k: mark(v) if k in ("pattern", "value") else v for k, v in c.items()} if isinstance(c, Mapping) else c
            )
            naming.append(found)
            found = found or before
        normal["conditions"] = marked
    return normal, found, naming


def _plain_localpart(user_id: str) -> str | None:
    """The localpart of ``user_id``, or None when shapes cannot be used for it: an ID JSON escapes
    (historical IDs may hold '"' or '\\') is not found in its rules' JSON, and one with glob
    characters may match text that does not hold it."""
    if json.dumps(user_id) != f'"{user_id}"' or "*" in user_id or "?" in user_id:
        return None
    return user_id[1:].split(":", 1)[0] or None


def _denormalised(normal: Mapping[str, Any], user_id: str, localpart: str) -> dict[str, Any]:
    """A rule :func:`_normalised` made, with ``user_id`` and ``localpart`` in place of its markers."""

    def fill(value: Any) -> Any:
        if not isinstance(value, str) or "\x00" not in value:
            return value
        out: list[str] = []
        i = 0
        while i < len(value):
            c = value[i]
            if c == "\x00" and i + 1 < len(value):
                marker = value[i + 1]
                out.append(user_id if marker == "U" else localpart if marker == "L" else marker)
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)

    rule = dict(normal)
    if "pattern" in rule:
        rule["pattern"] = fill(rule["pattern"])
    conditions = rule.get("conditions")
    if isinstance(conditions, list):
        rule["conditions"] = [
            {k: fill(v) if k in ("pattern", "value") else v for k, v in c.items()} if isinstance(c, Mapping) else c
            for c in conditions
        ]
    return rule


def _may_name(rules: CompiledRules, plan: _Plan, facts: EventFacts, user_id: str) -> bool:
    """Whether a rule that names ``user_id`` could match: only if the event's strings hold the
    user's localpart (every ID holds it) or, for display-name rules, their display name."""
    text = facts.folded_text()
    if rules.folded_localpart and rules.folded_localpart in text:
        return True
    if plan.needs_names:
        name = facts.display_name(user_id)
        if name and (not name.isascii() or name.casefold() in text):
            return True
    return False


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif type(value) is dict or isinstance(value, Mapping):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


@attrs.frozen
class _Plan:
    """One shape's walk of one event: what its users share, and what each must check."""

    #: the user-dependent rules to check per user, in order (those whose shared conditions hold)
    own: tuple[int, ...]
    #: the first user-independent rule that matches (None: no such rule)
    shared: int | None
    #: some rule in ``own`` asks for the user's display name
    needs_names: bool


def _plan(rules: CompiledRules, facts: EventFacts, user_id: str) -> _Plan:
    """The plan of ``rules``' shape for the event (made once per shape and event)."""
    key = ("plan", rules.shape)
    plan = facts._values.get(key)
    if plan is not None:
        return plan  # type: ignore[no-any-return]
    own: list[int] = []
    shared: int | None = None
    for i, rule in enumerate(rules.rules):
        if rules.user_dependent[i]:
            # Conditions that do not name the user answer alike for the whole shape: when one
            # fails the rule matches none of them (a join is nobody's invite).
            if all(cond(facts, user_id) for cond in rules.shared_conditions[i]):
                own.append(i)
        elif rule.matches(facts, user_id):
            shared = i
            break
    needs_names = any(_contains_display_name in rules.rules[i].conditions for i in own)
    plan = facts._values[key] = _Plan(tuple(own), shared, needs_names)
    return plan


def outcome_for_shape(rules: CompiledRules, facts: EventFacts) -> tuple[bool, list[Any] | None]:
    """Whether every user of ``rules``' shape gets one answer for the event without a rule that
    names them taking part, and that answer: then ``(True, actions or None)``, else
    ``(False, None)``. (A join: ``.m.rule.member_event`` decides, the invite rule cannot match.)

    The answer holds for every user whose ruleset is these rules but for the values that
    name them, whatever their ID: the conditions that decide it name nobody.
    """
    if rules.shape is None:
        return False, None
    plan = _plan(rules, facts, _SHAPE_PROBE)
    if plan.own:
        return False, None
    return True, None if plan.shared is None else rules.rules[plan.shared].shared_actions


#: the recipient :func:`outcome_for_shape` walks the shared rules as (they do not read it)
_SHAPE_PROBE = "@\x00shape-probe:\x00"


def needs_display_names(compiled: Mapping[str, CompiledRules], facts: EventFacts, user_ids: Sequence[str]) -> list[str]:
    """Those of ``user_ids`` whose evaluation may ask for their display name (read them, and
    only them, into :attr:`EventFacts.display_name` before :func:`evaluate_many`)."""
    out: list[str] = []
    plans: dict[str, bool] = {}
    for user_id in user_ids:
        rules = compiled[user_id]
        if not rules.needs_display_name or user_id == facts.sender:
            continue
        shape = rules.shape
        if shape is None:
            out.append(user_id)
            continue
        wants = plans.get(shape)
        if wants is None:
            wants = plans[shape] = _plan(rules, facts, user_id).needs_names
        if wants:
            out.append(user_id)
    return out
