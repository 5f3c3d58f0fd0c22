"""Matrix errors: raised where a problem is detected, rendered in one place.

Every failure a client or peer sees is ``{"errcode": ..., "error": ...}`` with
an HTTP status (client-server-api §Standard error response). Handlers raise
:class:`MatrixError`; the HTTP layer renders it.
"""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error with an HTTP status, a Matrix ``errcode`` and a message."""

    def __init__(self, code: int, errcode: str, msg: str, **extra: Any) -> None:
        super().__init__(f"{code} {errcode}: {msg}")
        self.code = code
        self.errcode = errcode
        self.msg = msg
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.msg}
        body.update(self.extra)
        return body


def unrecognized(msg: str = "Unrecognized request", code: int = 404) -> MatrixError:
    return MatrixError(code, "M_UNRECOGNIZED", msg)


def not_found(msg: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", msg)


def forbidden(msg: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", msg)


def bad_json(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def not_json(msg: str = "Content not JSON.") -> MatrixError:
    return MatrixError(400, "M_NOT_JSON", msg)


def invalid_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", msg)


def missing_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", msg)


def missing_token() -> MatrixError:
    return MatrixError(401, "M_MISSING_TOKEN", "Missing access token")


def unknown_token(soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=soft_logout)


def too_large(msg: str = "Request too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", msg)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    return MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=retry_after_ms)


def user_in_use() -> MatrixError:
    return MatrixError(400, "M_USER_IN_USE", "User ID already taken.")


def invalid_username(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_USERNAME", msg)


def user_locked() -> MatrixError:
    """client-server-api §Account locking: 401 with ``soft_logout`` true."""
    return MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)


def user_suspended() -> MatrixError:
    """client-server-api §Account suspension: 403 for what a suspended account may not do."""
    return MatrixError(403, "M_USER_SUSPENDED", "You cannot perform this action while suspended")


def user_deactivated() -> MatrixError:
    return MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")


class InteractiveAuthRequired(Exception):
    """Raised by UIA when more stages are needed: rendered as a 401 with the flows."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("user-interactive auth required")
        self.body = body
