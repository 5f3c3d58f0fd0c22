"""The twisted.web side of the HTTP layer: the root resource, requests and sites.

:class:`MatrixResource` is what a listener (or an embedding application)
serves. It answers CORS pre-flights, picks the Klein app for the path's API
(client, federation, media), writes one access-log line per request, and
counts requests for the metrics. It works wherever it is mounted: it routes on
the request's full raw path, not on what is left after traversal.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from twisted.logger import Logger
from twisted.web import resource, server

from mxserver import metrics
from mxserver.api.http import MAX_TRANSACTION_BODY, render_error
from mxserver.errors import too_large, unrecognized
from mxserver.request_info import client_ip

log = Logger(namespace="mxserver.access")

#: which API a path prefix belongs to (listener resources choose among them)
PREFIXES: list[tuple[bytes, str]] = [
    (b"/_matrix/client/", "client"),
    (b"/_matrix/federation/", "federation"),
    (b"/_matrix/key/", "federation"),
    (b"/_matrix/media/", "media"),
    (b"/_synapse/admin/", "client"),
    (b"/_mxserver/admin/", "client"),
    (b"/.well-known/matrix/client", "client"),
    (b"/.well-known/matrix/support", "client"),
    (b"/.well-known/matrix/server", "federation"),
]

_CORS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization",
}


def api_of(path: bytes) -> str | None:
    for prefix, api in PREFIXES:
        if path.startswith(prefix) or path == prefix.rstrip(b"/"):
            return api
    return None


class MatrixResource(resource.Resource):
    """Serves the Matrix APIs named in ``apis`` (a dict: API name → Klein resource)."""

    isLeaf = True

    def __init__(self, apis: dict[str, resource.Resource], extra: dict[bytes, resource.Resource] | None = None):
        super().__init__()
        self._apis = apis
        self._extra = extra or {}

    def render(self, request: server.Request) -> Any:  # type: ignore[override]
        start = time.perf_counter()
        request.notifyFinish().addBoth(_finished, request, start)
        for name, value in _CORS.items():
            request.setHeader(name, value)
        path = request.path
        if path in self._extra:
            return self._extra[path].render(request)
        if request.method == b"OPTIONS":
            # client-server-api §Web Browser Clients: pre-flight requests get the CORS headers.
            request.setResponseCode(204)
            return b""
        api = api_of(path)
        target = self._apis.get(api) if api else None
        if target is None:
            return render_error(request, unrecognized())
        if getattr(request, "mx_too_large", False):
            return render_error(request, too_large())
        # Klein routes on prepath/postpath: hand it the whole raw path wherever we are mounted.
        request.prepath = []
        request.postpath = path.split(b"/")[1:]
        return target.render(request)


def _finished(result: Any, request: server.Request, start: float) -> None:
    elapsed = time.perf_counter() - start
    endpoint = getattr(request, "mx_endpoint", "unmatched")
    status = request.code
    metrics.REQUESTS.labels(endpoint, request.method.decode("ascii", "replace"), str(status)).inc()
    metrics.REQUEST_SECONDS.labels(endpoint).observe(elapsed)
    log.info(
        "{client} {method} {path} {status} {ms:.1f}ms",
        client=client_ip(request),
        method=request.method.decode("ascii", "replace"),
        path=request.path.decode("ascii", "replace"),
        status=status,
        ms=elapsed * 1000,
    )


class MatrixRequest(server.Request):
    """A request that stops buffering a body once it passes the size limit.

    Twisted reads the whole body before rendering; without this an attacker
    could make the server buffer gigabytes. The limit depends on the path
    (media uploads may be larger than JSON bodies).
    """

    max_json_body = 1024 * 1024
    max_upload_body = 50 * 1024 * 1024
    max_transaction_body = MAX_TRANSACTION_BODY
    #: the listener is behind a reverse proxy (``x_forwarded: true``): believe X-Forwarded-For
    trust_forwarded = False

    mx_too_large = False
    _mx_received = 0
    #: the client's address as the reverse proxy saw it (None: use the peer's)
    mx_forwarded_for: str | None = None

    def process(self) -> None:
        if self.trust_forwarded:
            raw = self.getHeader(b"x-forwarded-for")
            self.mx_forwarded_for = forwarded_client(raw.decode("latin-1") if raw is not None else None)
        super().process()

    def _limit(self) -> int:
        path = getattr(self.channel, "_path", b"") or b""
        if path.startswith(b"/_matrix/media/"):
            return self.max_upload_body
        if path.startswith(b"/_matrix/federation/v1/send/"):
            return max(self.max_json_body, self.max_transaction_body)
        return self.max_json_body

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.mx_too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.mx_too_large:
            return
        self._mx_received += len(data)
        if self._mx_received > self._limit():
            self.mx_too_large = True
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)


def forwarded_client(header: str | None) -> str | None:
    """The client address in an X-Forwarded-For header: its last entry, the one our reverse
    proxy added (entries before it come from the client and prove nothing); None if it is
    missing or not an IP address."""
    if not header:
        return None
    last = header.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


class MatrixSite(server.Site):
    """A Site for a listener: our request class, our access log (not Twisted's)."""

    def __init__(
        self, root: resource.Resource, max_json_body: int, max_upload_body: int, x_forwarded: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        self.requestFactory = type(  # type: ignore[assignment]
            "BoundMatrixRequest",
            (MatrixRequest,),
            {"max_json_body": max_json_body, "max_upload_body": max_upload_body, "trust_forwarded": x_forwarded},
        )
        self.displayTracebacks = False

    def log(self, request: server.Request) -> None:  # type: ignore[override]
        # MatrixResource writes the access log line (without query strings, which may hold tokens).
        pass
