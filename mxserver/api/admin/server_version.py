"""``GET /_synapse/admin/v1/server_version``: which server software this is (admins only)."""

from __future__ import annotations

from twisted.web.iweb import IRequest

import mxserver
from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, route


class ServerVersionServlet:
    """The server's name and version, in Synapse's admin shape (synadm's ``version``)."""

    def __init__(self, gate: AdminGate) -> None:
        self.gate = gate

    @route("GET", "/_synapse/admin/v1/server_version")
    async def server_version(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return {"server_version": f"mxserver {mxserver.__version__}"}
