"""Receipts and read markers: ``POST /rooms/{roomId}/receipt/...`` and ``/read_markers``."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, json_body, route
from mxserver.ephemeral.receipts import ReceiptsHandler
from mxserver.errors import bad_json, invalid_param
from mxserver.identifier_checks import check_room_id

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"


def _paths(suffix: str) -> list[str]:
    return [_V3 + suffix, _R0 + suffix]


def _event_id_field(body: JsonDict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_json(f"'{key}' must be an event ID")
    return value


class ReceiptsServlet:
    def __init__(self, auth: Auth, receipts: ReceiptsHandler) -> None:
        self.auth = auth
        self.receipts = receipts

    @route("POST", *_paths("/rooms/{room_id}/receipt/{receipt_type}/{event_id}"))
    async def send_receipt(self, request: IRequest, room_id: str, receipt_type: str, event_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        # receipts.yaml: the body holds only optional fields; clients often send none at all.
        body = json_body(request, allow_empty=True)
        thread_id = body.get("thread_id")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise invalid_param("thread_id field must be a non-empty string")
        await self.receipts.send_receipt(requester, check_room_id(room_id), receipt_type, event_id, thread_id)
        return {}

    @route("POST", *_paths("/rooms/{room_id}/read_markers"))
    async def set_read_markers(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request)
        await self.receipts.set_read_markers(
            requester,
            check_room_id(room_id),
            _event_id_field(body, "m.fully_read"),
            _event_id_field(body, "m.read"),
            _event_id_field(body, "m.read.private"),
        )
        return {}
