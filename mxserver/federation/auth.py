"""Inbound request authentication: the X-Matrix ``Authorization`` scheme.

server-server-api §Request Authentication: the sending server signs
``{method, uri, origin, destination, content}`` and puts the signature in
``Authorization: X-Matrix origin=...,destination=...,key=...,sig=...``. A
federation route calls :meth:`FederationAuth.authenticate_request` first;
it answers the origin server name or raises a 401 ``M_UNAUTHORIZED``
(403 ``M_FORBIDDEN`` when federation is off). Clock skew needs no rule of its
own: the signing key must be valid now, which the keyring checks.

The header grammar is RFC 9110 §11.4 auth-params, as the spec summarises it:
case-insensitive names, values as tokens or quoted strings with backslash
escapes, spaces and tabs around commas, unknown parameters ignored; values
with colons (server names with ports, key IDs) are accepted unquoted for
older senders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from mxserver.crypto.signing import ED25519, SignatureError
from mxserver.errors import MatrixError, forbidden
from mxserver.federation.acl import server_matches_acl
from mxserver.ids import is_valid_server_name

if TYPE_CHECKING:
    from mxserver.federation.keyring import Keyring

__all__ = ["FederationAuth", "XMatrixCredentials", "parse_xmatrix_header", "server_matches_acl"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Unquoted values: tokens, plus what older senders leave unquoted (":" of ports and key IDs, base64's "/" and "=").
_BARE_VALUE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:/=]+")
_OWS = " \t"


class MalformedAuthorization(ValueError):
    """The header is not a well-formed X-Matrix credential."""


class NotXMatrix(MalformedAuthorization):
    """The header uses another auth scheme."""


@attrs.frozen
class XMatrixCredentials:
    origin: str
    key: str
    sig: str
    destination: str | None = None


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def parse_auth_params(text: str) -> dict[str, str]:
    """``name=value`` pairs of an RFC 9110 credential (names lower-cased, quoted values unescaped)."""
    params: dict[str, str] = {}
    i = 0
    n = len(text)
    while True:
        i = _skip(text, i, _OWS + ",")
        if i >= n:
            return params
        m = _TOKEN.match(text, i)
        if m is None:
            raise MalformedAuthorization(f"expected a parameter name at position {i}")
        name = m.group().lower()
        i = _skip(text, m.end(), _OWS)
        if i >= n or text[i] != "=":
            raise MalformedAuthorization(f"parameter {name!r} has no value")
        i = _skip(text, i + 1, _OWS)
        if i < n and text[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise MalformedAuthorization(f"unterminated quoted value of {name!r}")
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise MalformedAuthorization(f"unterminated quoted value of {name!r}")
                    chars.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            value = "".join(chars)
        else:
            m = _BARE_VALUE.match(text, i)
            if m is None:
                raise MalformedAuthorization(f"parameter {name!r} has no value")
            value = m.group()
            i = m.end()
        i = _skip(text, i, _OWS)
        if i < n and text[i] != ",":
            raise MalformedAuthorization(f"expected ',' after parameter {name!r}")
        if name in params:
            raise MalformedAuthorization(f"parameter {name!r} appears twice")
        params[name] = value


def parse_xmatrix_header(value: str) -> XMatrixCredentials:
    """The credentials of one ``Authorization`` header value; raises :class:`MalformedAuthorization`."""
    scheme, _, rest = value.strip(_OWS).partition(" ")
    if scheme.lower() != "x-matrix":
        raise NotXMatrix(f"auth scheme {scheme!r} is not X-Matrix")
    params = parse_auth_params(rest)
    missing = [p for p in ("origin", "key", "sig") if not params.get(p)]
    if missing:
        raise MalformedAuthorization(f"missing {', '.join(missing)}")
    return XMatrixCredentials(params["origin"], params["key"], params["sig"], params.get("destination"))


def _unauthorized(msg: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", msg)


class FederationAuth:
    """Checks X-Matrix signatures of inbound federation requests."""

    def __init__(self, server_name: str, keyring: Keyring, clock: IReactorTime, enabled: bool = True) -> None:
        self.server_name = server_name
        self.keyring = keyring
        self.clock = clock
        self.enabled = enabled
        #: called with the origin of every authenticated request (the federation sender ends
        #: that server's backoff: it is evidently up)
        self.on_authenticated: list[Callable[[str], object]] = []

    def credentials(self, request: IRequest) -> list[XMatrixCredentials]:
        """The X-Matrix credentials of ``request``, checked for shape and destination."""
        headers = request.requestHeaders.getRawHeaders(b"authorization") or []
        creds: list[XMatrixCredentials] = []
        for raw in headers:
            try:
                creds.append(parse_xmatrix_header(raw.decode("utf-8")))
            except NotXMatrix:
                continue
            except (MalformedAuthorization, UnicodeDecodeError) as e:
                raise _unauthorized(f"Malformed X-Matrix Authorization header: {e}") from None
        if not creds:
            raise _unauthorized("Missing X-Matrix Authorization header")
        origins = {c.origin for c in creds}
        if len(origins) > 1:
            raise _unauthorized("X-Matrix Authorization headers name different origins")
        for c in creds:
            if not is_valid_server_name(c.origin):
                # appendices §Server Name (e.g. a non-numeric port): the request is malformed,
                # not merely unauthenticated. The spec names no status; 400 is Synapse's, which
                # SyTest's "Non-numeric ports in server names are rejected" expects.
                raise MatrixError(400, "M_UNAUTHORIZED", f"X-Matrix origin {c.origin!r} is not a valid server name")
            if c.destination is not None and c.destination != self.server_name:
                # server-server-api §Request Authentication: a wrong destination MUST be denied with 401.
                raise _unauthorized(f"X-Matrix destination {c.destination!r} is not this server ({self.server_name})")
            if not c.key.startswith(ED25519 + ":"):
                raise _unauthorized(f"X-Matrix key {c.key!r} uses an unsupported algorithm")
        return creds

    async def authenticate_request(self, request: IRequest, content: Any) -> str:
        """The origin server that signed ``request``; raises MatrixError 401 (403 if federation is off).

        ``content`` is the parsed JSON body (None for requests without one).
        """
        if not self.enabled:
            raise forbidden("Federation is disabled on this server")
        creds = self.credentials(request)
        origin = creds[0].origin
        try:
            uri = request.uri.decode("utf-8")
            method = request.method.decode("ascii")
        except UnicodeDecodeError:
            raise _unauthorized("Request target is not valid UTF-8") from None
        signed: dict[str, Any] = {
            "method": method,
            "uri": uri,
            "origin": origin,
            "destination": self.server_name,
            "signatures": {origin: {c.key: c.sig for c in creds}},
        }
        if content is not None:
            signed["content"] = content
        now_ms = int(self.clock.seconds() * 1000)
        try:
            await self.keyring.verify_json_for_server(origin, signed, now_ms)
        except SignatureError as e:
            raise _unauthorized(f"Cannot authenticate request from {origin}: {e}") from None
        for listener in self.on_authenticated:
            listener(origin)
        return origin
