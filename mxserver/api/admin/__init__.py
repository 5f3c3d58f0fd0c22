"""The server admin API: Synapse's ``/_synapse/admin`` shapes (what synadm, synapse-admin and
admin scripts speak) and mxserver's own ``/_mxserver/admin``.

Every servlet here starts with :meth:`AdminGate.require`: a request without a token is
answered 401 ``M_MISSING_TOKEN`` (by :class:`~mxserver.accounts.auth.Auth`), one from a user
who is not a server admin 403 ``M_FORBIDDEN``. Every action that changes something is logged
with the admin who took it (:meth:`AdminGate.audit`), on the ``mxserver.admin.audit`` log
namespace, so an operator can route those lines on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from mxserver.errors import forbidden

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth, Requester
    from mxserver.storage.accounts import AccountStore

#: the audit trail of admin actions (one line per action, with the acting admin)
audit_log = Logger(namespace="mxserver.admin.audit")


class AdminGate:
    """Who may use the admin API, and the audit trail of what they did."""

    def __init__(self, auth: Auth, accounts: AccountStore) -> None:
        self._auth = auth
        self._accounts = accounts

    async def require(self, request: IRequest) -> Requester:
        """The requester, if they are a server admin; else 401 (no or bad token) or 403."""
        requester = await self._auth.get_user(request)
        user = await self._accounts.get_user(requester.user_id)
        if user is None or not user.is_admin:
            raise forbidden("You are not a server admin")
        return requester

    def audit(self, requester: Requester, action: str, **details: Any) -> None:
        """Record that ``requester`` took ``action`` (e.g. ``"deactivate_user"``) on what
        ``details`` name (e.g. ``user_id=...``)."""
        audit_log.info(
            "admin {admin} {action} {details}",
            admin=requester.user_id,
            action=action,
            details=" ".join(f"{k}={v!r}" for k, v in sorted(details.items())),
            **{f"admin_{k}": v for k, v in details.items()},
        )
