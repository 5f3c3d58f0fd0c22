"""``GET /_mxserver/admin/v1/workers``: the processes of the cluster (admins only).

Each process records itself in the worker registry (:mod:`mxserver.cluster.registry`); a
single-process server lists itself as ``main``. Synapse has no such API.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, route
from mxserver.cluster.registry import WorkerRegistry


class AdminWorkersServlet:
    def __init__(self, gate: AdminGate, registry: WorkerRegistry) -> None:
        self.gate = gate
        self.registry = registry

    @route("GET", "/_mxserver/admin/v1/workers")
    async def workers(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        return {"workers": await self.registry.list_workers()}
