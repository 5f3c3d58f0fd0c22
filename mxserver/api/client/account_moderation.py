"""Account moderation in the client API (admin.yaml, v1.18): ``GET``/``PUT
/_matrix/client/v1/admin/lock/{userId}`` and ``/admin/suspend/{userId}``. Server admins only;
the requester is checked before the target is looked up (no user enumeration). The state is
the one Synapse's admin API changes too (:class:`~mxserver.admin.users.AdminUsers`), and every
change is audited.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.admin.users import AdminUsers
from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, get_bool, json_body, route

_V1 = "/_matrix/client/v1/admin"


class AccountModerationServlet:
    """Locking (§Account locking) and suspending (§Account suspension) local accounts."""

    def __init__(self, gate: AdminGate, users: AdminUsers) -> None:
        self.gate = gate
        self.users = users

    @route("GET", f"{_V1}/lock/{{user_id}}")
    async def get_lock(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        user = await self.users.moderated_user(requester, user_id, changing=False)
        return {"locked": user.locked}

    @route("PUT", f"{_V1}/lock/{{user_id}}")
    async def put_lock(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        locked = get_bool(json_body(request), "locked")
        await self.users.moderated_user(requester, user_id, changing=True)
        await self.users.set_moderation(user_id, locked=locked)
        self.gate.audit(requester, "lock_user", user_id=user_id, locked=locked)
        return {"locked": locked}

    @route("GET", f"{_V1}/suspend/{{user_id}}")
    async def get_suspend(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        user = await self.users.moderated_user(requester, user_id, changing=False)
        return {"suspended": user.suspended}

    @route("PUT", f"{_V1}/suspend/{{user_id}}")
    async def put_suspend(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        suspended = get_bool(json_body(request), "suspended")
        await self.users.moderated_user(requester, user_id, changing=True)
        await self.users.set_moderation(user_id, suspended=suspended)
        self.gate.audit(requester, "suspend_user", user_id=user_id, suspended=suspended)
        return {"suspended": suspended}
