"""Invite blocking (client-server-api §Invite permission, spec v1.18, MSC4380).

A user whose ``m.invite_permission_config`` account data has ``default_action: "block"`` gets no
invites: the endpoints that would invite them answer 403 ``M_INVITE_BLOCKED`` and /sync serves no
invite of theirs (the room state and application services still see the events)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from mxserver.errors import MatrixError
from mxserver.identifier_checks import server_of_user
from mxserver.storage.account_data import GLOBAL

#: the account data type (event-schemas m.invite_permission_config)
INVITE_PERMISSION_CONFIG = "m.invite_permission_config"


class AccountDataReader(Protocol):
    """One account data entry, or None (mxserver.storage.account_data.AccountDataStore)."""

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None: ...


def blocks_all(content: Mapping[str, Any] | None) -> bool:
    """Whether a config blocks every invite. "A missing, invalid or unsupported value means
    that the user wants to receive invites as normal" (the event's schema)."""
    return content is not None and content.get("default_action") == "block"


def invite_blocked(user_id: str) -> MatrixError:
    return MatrixError(403, "M_INVITE_BLOCKED", f"{user_id} does not accept invites")


class InvitePermissions:
    """Reads local users' invite permission config."""

    def __init__(self, account_data: AccountDataReader, server_name: str) -> None:
        self._account_data = account_data
        self._server_name = server_name

    async def blocks_invites(self, user_id: str) -> bool:
        """Whether invites to ``user_id`` are blocked (only ever for a user of this server)."""
        if not user_id.startswith("@") or ":" not in user_id or server_of_user(user_id) != self._server_name:
            return False
        return blocks_all(await self._account_data.get(user_id, GLOBAL, INVITE_PERMISSION_CONFIG))

    async def check_invitable(self, user_id: str) -> None:
        """403 ``M_INVITE_BLOCKED`` if ``user_id`` blocks invites."""
        if await self.blocks_invites(user_id):
            raise invite_blocked(user_id)
