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


class ValidatedThreepidLike(Protocol):
    """A 3PID a validation session proved."""

    @property
    def medium(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def validated_at(self) -> int: ...


class ThreepidSessions(Protocol):
    """The homeserver's 3PID validation sessions (``mxserver.accounts.threepids.ThreepidValidator``)."""

    @property
    def email_enabled(self) -> bool: ...

    def validated(self, sid: Any, client_secret: Any) -> Awaitable[ValidatedThreepidLike]:
        """The 3PID a validated session proves, or raise M_THREEPID_AUTH_FAILED."""
        ...

    def owner(self, medium: str, address: str) -> Awaitable[str | None]:
        """The local account a 3PID is associated with."""
        ...
