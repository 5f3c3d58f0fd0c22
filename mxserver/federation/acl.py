"""Server ACLs: may a server take part in a room (``m.room.server_acl``)?

The rules, in order (m.room.server_acl.yaml; server-server-api §Server Access
Control Lists): no ACL allows; an IP-literal name is denied when
``allow_ip_literals`` is false; a match in ``deny`` denies; a match in
``allow`` allows; anything else is denied. Patterns are case-insensitive
globs (appendices §Glob-style matching: ``*`` any run, ``?`` one character)
matched against the server name without its port.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from mxserver.federation.ip_filter import parse_ip


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the glob ``pattern`` (case-insensitive)."""
    return _glob(pattern).fullmatch(value) is not None


def _host_of(server_name: str) -> str:
    # "The suspect server's port number must not be considered."
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end > 0 else server_name
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def _patterns(content: Mapping[str, Any], key: str) -> list[str]:
    value = content.get(key)
    if not isinstance(value, list):
        return []
    return [p for p in value if isinstance(p, str)]


def server_matches_acl(server_name: str, acl_content: Mapping[str, Any] | None) -> bool:
    """True if the ACL (the content of ``m.room.server_acl``; None if the room has none) allows ``server_name``."""
    if acl_content is None:
        return True
    host = _host_of(server_name)
    allow_ip_literals = acl_content.get("allow_ip_literals", True)
    if allow_ip_literals is False and parse_ip(host) is not None:
        return False
    if any(glob_matches(p, host) for p in _patterns(acl_content, "deny")):
        return False
    return any(glob_matches(p, host) for p in _patterns(acl_content, "allow"))
