"""The server-default push rules (client-server-api §Push Rules, modules/push.md §Predefined Rules).

The rules the spec (v1.19) defines, in its order, plus one of the server's own.
v1.17 removed the legacy body-matching mention rules from the specified list
(MSC4210); §Predefined Rules still lets homeservers "specify server-default
rules", and mxserver keeps ``.m.rule.contains_user_name`` (a content rule on the
user's localpart, as Synapse still has it), so that a client that writes a
mention into the body without ``m.mentions`` still reaches the user; users can
disable it like any default. ``.m.rule.contains_display_name`` and
``.m.rule.roomnotif`` stay gone (display names and "@room" in bodies were the
false positives MSC4210 removed them for). ``[the user's Matrix ID]`` in a
definition is replaced by the owner's user ID, ``[the user's localpart]`` by the
localpart.
"""

from __future__ import annotations

from typing import Any

#: rule kinds in the order they are checked
KINDS = ("override", "content", "room", "sender", "underride")

USER_ID_PLACEHOLDER = "[the user's Matrix ID]"
LOCALPART_PLACEHOLDER = "[the user's localpart]"

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


#: §Default Override Rules. ``.m.rule.master`` always comes first, before the user's own
#: override rules; the others come after them.
MASTER_RULE = _rule(".m.rule.master", [], [], enabled=False)

DEFAULT_OVERRIDE_RULES: list[dict[str, Any]] = [
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(
        ".m.rule.invite_for_me",
        [
            _match("type", "m.room.member"),
            _match("content.membership", "invite"),
            _match("state_key", USER_ID_PLACEHOLDER),
        ],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID_PLACEHOLDER}],
        ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
    _rule(
        ".m.rule.suppress_edits",
        [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        [],
    ),
]

#: the server's own content rule (see the module docstring)
DEFAULT_CONTENT_RULE: dict[str, Any] = {
    "rule_id": ".m.rule.contains_user_name",
    "default": True,
    "enabled": True,
    "pattern": LOCALPART_PLACEHOLDER,
    "actions": ["notify", _SOUND_DEFAULT, _HIGHLIGHT],
}

#: §Default Underride Rules
DEFAULT_UNDERRIDE_RULES: list[dict[str, Any]] = [
    _rule(".m.rule.call", [_match("type", "m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(
        ".m.rule.encrypted_room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(
        ".m.rule.room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ["notify", _SOUND_DEFAULT],
    ),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]

#: kind -> the default rules of that kind (master included), for lookups by ID
DEFAULT_RULES_BY_KIND: dict[str, list[dict[str, Any]]] = {
    "override": [MASTER_RULE, *DEFAULT_OVERRIDE_RULES],
    "content": [DEFAULT_CONTENT_RULE],
    "room": [],
    "sender": [],
    "underride": DEFAULT_UNDERRIDE_RULES,
}


def default_rule(kind: str, rule_id: str, user_id: str) -> dict[str, Any] | None:
    """A fresh copy of one server-default rule for ``user_id``, or None."""
    for rule in DEFAULT_RULES_BY_KIND.get(kind, ()):
        if rule["rule_id"] == rule_id:
            return for_user(rule, user_id)
    return None


def for_user(rule: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A deep copy of ``rule`` with the user ID placeholder filled in."""
    out = _json_copy(rule)
    if out.get("pattern") == LOCALPART_PLACEHOLDER:
        out["pattern"] = user_id[1:].split(":", 1)[0]
    for condition in out.get("conditions", ()):
        for key in ("pattern", "value"):
            if condition.get(key) == USER_ID_PLACEHOLDER:
                condition[key] = user_id
    return out


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what rules are): several times faster than
    ``copy.deepcopy``, and every user's ruleset is built from these on their first event."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value
