"""``GET /_mxserver/admin/v1/metrics``: the Prometheus metrics' current values as JSON (admins only).

The same figures a ``metrics`` listener serves in the text format, for the admin console's
live view, which polls this and works out rates between two answers (``ts`` is the server's
time of the reading, in milliseconds).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from mxserver import metrics
from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, route


class AdminMetricsServlet:
    def __init__(self, gate: AdminGate, clock: IReactorTime) -> None:
        self.gate = gate
        self.clock = clock

    @route("GET", "/_mxserver/admin/v1/metrics")
    async def metrics(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return {"ts": int(self.clock.seconds() * 1000), "metrics": metrics.snapshot()}
