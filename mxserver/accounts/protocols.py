"""What account code needs of collaborators defined outside ``mxserver.accounts``, as Protocols.

Login flows are modules (entry points, :class:`mxserver.interfaces.ILoginFlow`);
rate limiters live with the HTTP layer, which handlers do not import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from mxserver.appservice.registration import AppService


class LoginFlow(Protocol):
    """A login flow module: ``POST /login`` type and UIA stage."""

    login_type: str

    def check_login(self, submission: dict[str, Any]) -> Awaitable[str]:
        """The user ID ``submission`` authenticates, or raise a MatrixError."""
        ...


#: login flows by login type (``m.login.password``, ...), in configuration order
LoginFlows = Mapping[str, LoginFlow]


class RateLimit(Protocol):
    """A token-bucket limiter per key (``mxserver.api.ratelimit.RateLimiter``)."""

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` from ``key``'s bucket or raise M_LIMIT_EXCEEDED."""
        ...


class UserNamespaces(Protocol):
    """Application services' exclusive user namespaces (the appservice registry)."""

    def user_reserved(self, user_id: str, by: AppService | None = None) -> bool:
        """Whether a service other than ``by`` claims ``user_id`` exclusively."""
        ...
