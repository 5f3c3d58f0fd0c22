"""Checking the room IDs, user IDs and room aliases clients send (appendices §Identifier Grammar).

Each ``check_*`` returns its argument or raises 400 ``M_INVALID_PARAM``; none
of them lets a malformed identifier (lone surrogates from JSON ``\\ud800``
escapes, NUL, over 255 bytes) reach the room server or the database.
"""

from __future__ import annotations

import re
from typing import Any

from mxserver.errors import invalid_param
from mxserver.ids import MAX_ID_LENGTH, is_valid_server_name
from mxserver.rooms.auth import is_valid_user_id

#: profile keys the spec names (profile.yaml)
PROFILE_KEYS = frozenset({"displayname", "avatar_url", "m.tz"})
# appendices §Common Namespaced Identifier Grammar, with a namespace (at least one dot), as
# profile.yaml's keyName asks; at most 255 characters
_CUSTOM_PROFILE_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,254}")


def is_profile_key(key: str) -> bool:
    """Whether ``key`` may name a profile field: one the spec names or a namespaced custom key."""
    return key in PROFILE_KEYS or (_CUSTOM_PROFILE_KEY.fullmatch(key) is not None and "." in key)


def _utf8_length(s: str) -> int | None:
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates
        return None


def is_room_alias(s: Any) -> bool:
    """appendices §Room Aliases: ``#localpart:server``; any code point but ``:``/NUL in the localpart."""
    if not isinstance(s, str) or not s.startswith("#"):
        return False
    n = _utf8_length(s)
    if n is None or n > MAX_ID_LENGTH:
        return False
    local, sep, server = s[1:].partition(":")
    return bool(sep) and bool(local) and "\x00" not in local and is_valid_server_name(server)


def is_room_id(s: Any) -> bool:
    """appendices §Room IDs: ``!opaque_id`` with an optional ``:server`` (v1-v11)."""
    if not isinstance(s, str) or not s.startswith("!") or len(s) < 2 or "\x00" in s:
        return False
    n = _utf8_length(s)
    if n is None or n > MAX_ID_LENGTH:
        return False
    local, sep, server = s[1:].partition(":")
    if not local:
        return False
    return not sep or is_valid_server_name(server)


def check_room_alias(s: Any) -> str:
    if not is_room_alias(s):
        raise invalid_param(f"Invalid room alias: {_show(s)}")
    return s


def check_room_id(s: Any) -> str:
    if not is_room_id(s):
        raise invalid_param(f"Invalid room ID: {_show(s)}")
    return s


def check_user_id(s: Any) -> str:
    if not is_valid_user_id(s) or "\x00" in s or s.startswith("@:"):
        raise invalid_param(f"Invalid user ID: {_show(s)}")
    return s


def server_of_alias(alias: str) -> str:
    return alias[1:].split(":", 1)[1]


def server_of_user(user_id: str) -> str:
    # "" for a string without one: a member event received over federation may carry any
    # state key (the auth rules only ask for one), and no caller should fail on it
    return user_id[1:].partition(":")[2]


def server_of_room_id(room_id: str) -> str | None:
    """The server part of a v1-v11 room ID; None for v12 room IDs (which have none)."""
    _, sep, server = room_id[1:].partition(":")
    return server if sep else None


def _show(s: Any) -> str:
    if isinstance(s, str):
        return repr(s.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:100])
    return type(s).__name__
