"""``/_synapse/admin/v1/federation/destinations``: the federation destinations, their retry
state and rooms, and resetting a destination's backoff, for server admins (Synapse's shapes).

Thin: the gate (401/403), parse and validate, call
:class:`~mxserver.admin.federation.AdminFederationHandler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.admin.rooms import direction_param
from mxserver.api.http import JsonDict, json_body, query_int, query_str, route
from mxserver.errors import invalid_param
from mxserver.ids import is_valid_server_name

if TYPE_CHECKING:
    from mxserver.admin.federation import AdminFederationHandler
    from mxserver.api.admin import AdminGate

_PATH = "/_synapse/admin/v1/federation/destinations"

#: the most entries one page holds, whatever the admin asks
MAX_LIMIT = 1000


def _destination(name: str) -> str:
    if not is_valid_server_name(name):
        raise invalid_param("Invalid destination (a server name)")
    return name


class AdminFederationServlet:
    """The destinations, one destination, its rooms, and resetting its connection."""

    def __init__(self, gate: AdminGate, federation: AdminFederationHandler) -> None:
        self.gate = gate
        self.federation = federation

    @route("GET", _PATH)
    async def destinations(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return self.federation.list_destinations(
            start=query_int(request, "from", 0, minimum=0),
            limit=query_int(request, "limit", 100, minimum=0, maximum=MAX_LIMIT),
            order_by=query_str(request, "order_by", "destination"),
            backwards=direction_param(request) == "b",
            name_filter=query_str(request, "destination"),
        )

    @route("GET", f"{_PATH}/{{destination}}")
    async def destination(self, request: IRequest, destination: str) -> JsonDict:
        await self.gate.require(request)
        return self.federation.get_destination(_destination(destination))

    @route("GET", f"{_PATH}/{{destination}}/rooms")
    async def rooms(self, request: IRequest, destination: str) -> JsonDict:
        await self.gate.require(request)
        return await self.federation.destination_rooms(
            _destination(destination),
            start=query_int(request, "from", 0, minimum=0),
            limit=query_int(request, "limit", 100, minimum=0, maximum=MAX_LIMIT),
            backwards=direction_param(request) == "b",
        )

    @route("POST", f"{_PATH}/{{destination}}/reset_connection")
    async def reset_connection(self, request: IRequest, destination: str) -> JsonDict:
        requester = await self.gate.require(request)
        name = _destination(destination)
        json_body(request, allow_empty=True)
        self.federation.reset_connection(name)
        self.gate.audit(requester, "reset_federation_connection", destination=name)
        return {}
