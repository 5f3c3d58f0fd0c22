"""``/_synapse/admin/v1/event_reports``: the event reports users sent, for server admins.

Thin: the gate (401/403), parse and validate, call :class:`~mxserver.admin.reports.AdminReportsHandler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.admin.rooms import direction_param
from mxserver.api.http import JsonDict, query_int, query_str, route
from mxserver.errors import invalid_param

if TYPE_CHECKING:
    from mxserver.admin.reports import AdminReportsHandler
    from mxserver.api.admin import AdminGate

_V1 = "/_synapse/admin/v1"

#: the most reports one page holds, whatever the admin asks
MAX_REPORTS_LIMIT = 1000


def _report_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise invalid_param("The report ID must be a non-negative integer")
    return int(raw)


class AdminEventReportsServlet:
    """Listing, reading and deleting event reports."""

    def __init__(self, gate: AdminGate, reports: AdminReportsHandler) -> None:
        self.gate = gate
        self.reports = reports

    @route("GET", f"{_V1}/event_reports")
    async def list_reports(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return await self.reports.list_reports(
            start=query_int(request, "from", 0, minimum=0),
            limit=query_int(request, "limit", 100, minimum=0, maximum=MAX_REPORTS_LIMIT),
            # newest first unless dir=f (Synapse's default is b)
            newest_first=direction_param(request, "b") == "b",
            room_id=query_str(request, "room_id"),
            user_id=query_str(request, "user_id"),
            sender=query_str(request, "sender_user_id"),
        )

    @route("GET", f"{_V1}/event_reports/{{report_id}}")
    async def get_report(self, request: IRequest, report_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.reports.get_report(_report_id(report_id))

    @route("DELETE", f"{_V1}/event_reports/{{report_id}}")
    async def delete_report(self, request: IRequest, report_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        rid = _report_id(report_id)
        await self.reports.delete_report(rid)
        self.gate.audit(requester, "delete_event_report", report_id=rid)
        return {}
