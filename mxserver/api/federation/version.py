"""/_matrix/federation/v1/version and /.well-known/matrix/server."""

from __future__ import annotations

from twisted.web.iweb import IRequest

import mxserver
from mxserver.api.http import JsonDict, route
from mxserver.config import WellKnownConfig
from mxserver.errors import not_found


class FederationVersionServlet:
    """Our software version, and where other servers should reach us (server delegation)."""

    def __init__(self, well_known: WellKnownConfig) -> None:
        self.well_known = well_known

    @route("GET", "/_matrix/federation/v1/version")
    def version(self, request: IRequest) -> JsonDict:
        return {"server": {"name": "mxserver", "version": mxserver.__version__}}

    @route("GET", "/.well-known/matrix/server")
    def well_known_server(self, request: IRequest) -> JsonDict:
        # server-server-api §Server discovery: no delegation configured means 404.
        if not self.well_known.server:
            raise not_found("No server delegation configured")
        return {"m.server": self.well_known.server}
