"""``/_synapse/admin/v1/send_server_notice``: a server notice to a local user (Synapse's shape).

Thin: the gate (401/403), parse and validate, call
:class:`~mxserver.admin.server_notices.ServerNoticesHandler`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, get_dict, get_str, json_body, route
from mxserver.identifier_checks import check_user_id

if TYPE_CHECKING:
    from mxserver.admin.server_notices import ServerNoticesHandler
    from mxserver.api.admin import AdminGate

_PATH = "/_synapse/admin/v1/send_server_notice"

#: event types are at most 255 bytes (server-server-api §Size limits)
_MAX_TYPE_LENGTH = 255


class ServerNoticesServlet:
    """Sending server notices."""

    def __init__(self, gate: AdminGate, notices: ServerNoticesHandler) -> None:
        self.gate = gate
        self.notices = notices

    @route("POST", _PATH)
    async def send(self, request: IRequest) -> JsonDict:
        return await self._send(request, None)

    @route("PUT", f"{_PATH}/{{txn_id}}")
    async def send_with_txn(self, request: IRequest, txn_id: str) -> JsonDict:
        return await self._send(request, txn_id)

    async def _send(self, request: IRequest, txn_id: str | None) -> JsonDict:
        requester = await self.gate.require(request)
        body = json_body(request)
        user_id = check_user_id(get_str(body, "user_id"))
        content = get_dict(body, "content")
        event_type = get_str(body, "type", "m.room.message", max_length=_MAX_TYPE_LENGTH)
        state_key = get_str(body, "state_key", None, max_length=_MAX_TYPE_LENGTH)
        # The admin's transaction: two admins' IDs never meet (the system user sends for both).
        scoped = None
        if txn_id is not None:
            key = "\x00".join((requester.user_id, requester.session, txn_id)).encode("utf-8")
            scoped = "admin-" + hashlib.sha256(key).hexdigest()
        event_id = await self.notices.send_notice(user_id, event_type, content, state_key, scoped)
        self.gate.audit(requester, "send_server_notice", user_id=user_id, event_id=event_id, txn_id=txn_id)
        return {"event_id": event_id}
