"""Matrix identifiers: parsing and the grammar of appendices §Identifier Grammar."""

from __future__ import annotations

import ipaddress
import re

import attrs

from mxserver.errors import MatrixError, invalid_param

# appendices §Server Name: hostname | IPv4 | "[" IPv6 "]", optional ":" port.
# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, which let "name\n" through.
_DNS_NAME = re.compile(r"^[A-Za-z0-9.\-]{1,255}\Z")
_PORT = re.compile(r"^[0-9]{1,5}\Z")

# appendices §User Identifiers: the localparts new accounts may use.
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+\Z")
# Historical user IDs may use any printable ASCII except ':' (appendices, historical note).
_HISTORICAL_LOCALPART = re.compile(r"^[\x21-\x39\x3b-\x7e]+\Z")

MAX_ID_LENGTH = 255


def split_host_port(server_name: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 literals in brackets); raises ValueError on bad syntax."""
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            raise ValueError("unterminated IPv6 literal")
        host, rest = server_name[: end + 1], server_name[end + 1 :]
        ipaddress.IPv6Address(host[1:-1])
    else:
        host, sep, rest = server_name.partition(":")
        rest = sep + rest
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not _PORT.match(rest[1:]):
            raise ValueError("bad port")
        port = int(rest[1:])
        if not 0 < port < 65536:
            raise ValueError("port out of range")
    return host, port


def is_valid_server_name(server_name: str) -> bool:
    try:
        host, _ = split_host_port(server_name)
    except ValueError:
        return False
    if host.startswith("["):
        return True
    return bool(host) and bool(_DNS_NAME.match(host))


def is_valid_localpart(localpart: str) -> bool:
    """Whether new accounts may use ``localpart`` (the strict grammar)."""
    return bool(_LOCALPART.match(localpart))


@attrs.frozen
class UserID:
    """``@localpart:server_name``."""

    localpart: str
    server_name: str

    @classmethod
    def parse(cls, s: str) -> UserID:
        if not isinstance(s, str) or len(s.encode()) > MAX_ID_LENGTH or not s.startswith("@") or ":" not in s:
            raise invalid_param(f"Invalid user ID: {s!r}")
        localpart, _, server = s[1:].partition(":")
        if not localpart or not _HISTORICAL_LOCALPART.match(localpart) or not is_valid_server_name(server):
            raise invalid_param(f"Invalid user ID: {s!r}")
        return cls(localpart, server)

    @classmethod
    def is_valid(cls, s: object) -> bool:
        try:
            cls.parse(s)  # type: ignore[arg-type]
        except MatrixError:
            return False
        return True

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.server_name}"


def server_of(identifier: str) -> str:
    """The server part of a user ID, alias, or old-style room/event ID."""
    return identifier.split(":", 1)[1]


def is_valid_room_id(s: object) -> bool:
    # appendices §Room IDs: "!" + opaque_id [":" server_name]; v12 rooms have no server part.
    return isinstance(s, str) and s.startswith("!") and 1 < len(s.encode()) <= MAX_ID_LENGTH


def is_valid_event_id(s: object) -> bool:
    return isinstance(s, str) and s.startswith("$") and 1 < len(s.encode()) <= MAX_ID_LENGTH


def is_valid_room_alias(s: object) -> bool:
    if not isinstance(s, str) or not s.startswith("#") or ":" not in s or len(s.encode()) > MAX_ID_LENGTH:
        return False
    local, _, server = s[1:].partition(":")
    return bool(local) and is_valid_server_name(server)
