"""Who sent a request and with which credentials: the few request readers below the HTTP layer.

They sit outside ``mxserver/api`` so that the access-token check
(:class:`mxserver.accounts.auth.Auth`) can read a request without the account
handlers depending on the route layer; :mod:`mxserver.api.http` re-exports them.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.errors import invalid_param


def query_str(request: IRequest, name: str, default: Any = None) -> Any:
    values = request.args.get(name.encode()) if request.args else None
    if not values:
        return default
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_param(f"Query parameter '{name}' is not valid UTF-8") from None


def access_token(request: IRequest) -> str | None:
    """The access token from ``Authorization: Bearer``, else the deprecated query parameter."""
    raw = request.getHeader(b"Authorization")
    if raw:
        header = raw.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return query_str(request, "access_token")


def client_ip(request: IRequest) -> str:
    forwarded = getattr(request, "mx_forwarded_for", None)
    if forwarded:
        return forwarded
    peer = request.getClientAddress()
    return getattr(peer, "host", "unknown")
