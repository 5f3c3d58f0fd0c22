"""Forwarding one HTTP request to another mxserver process, as a reverse proxy does (issue 19).

:class:`Forwarder` sends a request's method, raw path and query, headers and body to a target
base URL over a pool of persistent connections, and streams the answer (status, headers,
body) back as it arrives. The client's address travels in ``X-Forwarded-For`` (appended, as
reverse proxies do): a target listener with ``x_forwarded: true`` takes the last entry as
the client (:func:`mxserver.api.resource.forwarded_client`).

A target that is down answers ``502 M_UNKNOWN``; one that does not answer in time ``504``.
The deadline allows for long-polls: a request with a ``timeout`` query parameter (``/sync``,
``/events``) gets that much longer, so a 30 s long-poll is never cut short. A request body
was already bounded by the listener's :class:`~mxserver.api.resource.MatrixSite` (413 when
too large), as on a single process.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from mxserver.errors import too_large

log = Logger()

#: headers that concern one connection, not the request (RFC 9110 §7.6.1), never forwarded
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: how long a request may wait for the target's answer to begin (seconds), on top of its own
#: ``timeout`` query parameter; a target that stays silent longer answers 504
DEFAULT_TIMEOUT = 60.0
#: the longest ``timeout`` parameter honoured (seconds); servers cap long-polls well below
MAX_LONG_POLL = 600.0
#: how long to wait for a TCP connection to the target
CONNECT_TIMEOUT = 10.0


def _error_body(request: IRequest, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"errcode": "M_UNKNOWN", "error": message}).encode()


def _client_address(request: IRequest) -> str | None:
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def deadline_for(uri: bytes, default: float = DEFAULT_TIMEOUT) -> float:
    """Seconds a request may wait for its answer: ``default`` plus its ``timeout`` parameter
    (milliseconds, as ``/sync`` and ``/events`` take it), capped at :data:`MAX_LONG_POLL`."""
    query = urlsplit(uri).query
    extra = 0.0
    if query:
        values = parse_qs(query.decode("latin-1")).get("timeout")
        if values:
            try:
                extra = min(max(int(values[0]), 0) / 1000.0, MAX_LONG_POLL)
            except ValueError:
                extra = 0.0
    return default + extra


class _Relay(Protocol):
    """Writes the target's answer body into the client's request as it arrives."""

    def __init__(self, request: IRequest, done: defer.Deferred[None], gone: list[bool]) -> None:
        self.request = request
        self.done = done
        self.gone = gone

    def dataReceived(self, data: bytes) -> None:
        if not self.gone[0]:
            self.request.write(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class Forwarder:
    """Forwards requests to base URLs over one pool of persistent connections."""

    def __init__(
        self, reactor: Any, clock: IReactorTime | None = None, timeout: float = DEFAULT_TIMEOUT, pool_size: int = 50
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock or reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = pool_size
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=CONNECT_TIMEOUT)

    def close(self) -> defer.Deferred[None]:
        """Close the idle connections (at shutdown)."""
        return self.pool.closeCachedConnections()

    def forward(self, request: server.Request, base_url: str) -> Any:
        """Render ``request`` by forwarding it to ``base_url`` (``http://host:port``); for a
        resource's ``render``: returns ``NOT_DONE_YET``, or the error body when there is
        nothing to forward."""
        if getattr(request, "mx_too_large", False):
            err = too_large()
            request.setResponseCode(err.code)
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps(err.to_json()).encode()
        if not request.uri.startswith(b"/"):
            # An absolute-form or asterisk request target: we are no general-purpose proxy.
            return _error_body(request, 400, "Request target must be a path")
        defer.ensureDeferred(self._forward(request, base_url)).addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _failed(self, failure: Failure, request: server.Request) -> None:
        """A bug while forwarding: logged; the client gets a 502 if nothing was sent yet, else
        its connection is closed (never a hang, never a traceback)."""
        log.failure("forwarding {uri} failed", failure=failure, uri=request.uri)
        if request.finished or request._disconnected:
            return
        if not request.startedWriting:
            request.write(_error_body(request, 502, "The router could not forward the request"))
            request.finish()
        elif request.channel is not None:
            request.channel.loseConnection()

    async def _forward(self, request: server.Request, base_url: str) -> None:
        # finished[0]: the client's request is over (answered, or the client went away)
        finished = [False]
        on_gone: list[Any] = []

        def gone(result: Any) -> None:
            finished[0] = True
            if isinstance(result, Failure):
                for fn in on_gone:
                    fn()

        request.notifyFinish().addBoth(gone)
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            lower = name.lower()
            # Content-Length comes from the body sent; Expect was answered by our own server.
            if lower in HOP_BY_HOP or lower in (b"content-length", b"expect", b"x-forwarded-for"):
                continue
            headers.setRawHeaders(name, values)
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        chain = [v.strip() for v in b",".join(forwarded).split(b",") if v.strip()]
        if getattr(request, "mx_forwarded_for", None) is None:
            # Our listener does not trust the header (or it named no address): the client is
            # our peer. A trusted header already ends with the client, and goes on unchanged.
            client = _client_address(request)
            if client:
                chain.append(client.encode())
        if chain:
            headers.setRawHeaders(b"X-Forwarded-For", [b", ".join(chain)])
        headers.setRawHeaders(b"X-Forwarded-Proto", [b"https" if request.isSecure() else b"http"])
        body = None
        content = request.content
        if content is not None:
            content.seek(0, 2)
            if content.tell() > 0 or request.method in (b"POST", b"PUT", b"PATCH"):
                content.seek(0)
                body = FileBodyProducer(content)
        url = base_url.rstrip("/").encode() + request.uri
        answer = self.agent.request(request.method, url, headers, body)
        timed_out = [False]
        # what ends the exchange with the target: cancel the request, later stop the answer
        abort: list[Any] = [answer.cancel]

        def time_out() -> None:
            timed_out[0] = True
            abort[0]()

        timer = self.clock.callLater(deadline_for(request.uri, self.timeout), time_out)
        # A client that goes away abandons its request at the target too.
        on_gone.append(answer.cancel)
        try:
            response = await answer
        except Exception as e:
            if timer.active():
                timer.cancel()
            if finished[0]:
                return
            if timed_out[0]:
                request.write(_error_body(request, 504, "The server behind the router did not answer in time"))
            else:
                log.warn("forwarding to {url} failed: {reason}", url=base_url, reason=_reason(e))
                request.write(_error_body(request, 502, "The server behind the router is not reachable"))
            request.finish()
            return
        if finished[0]:
            timer.cancel()
            response.deliverBody(Protocol())
            return
        request.setResponseCode(response.code, response.phrase)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP:
                request.responseHeaders.setRawHeaders(name, values)
        done: defer.Deferred[None] = defer.Deferred()
        relay = _Relay(request, done, finished)
        response.deliverBody(relay)
        abort[0] = lambda: relay.transport.stopProducing() if relay.transport else None  # type: ignore[attr-defined]
        on_gone.append(abort[0])
        try:
            await done
        except Exception as e:
            # The answer broke off midway: the status is sent already; drop the connection so
            # the client sees a truncated answer, not a complete-looking one.
            reason = "no complete answer in time" if timed_out[0] else _reason(e)
            log.warn("answer from {url} broke off: {reason}", url=base_url, reason=reason)
            if not finished[0] and request.channel is not None:
                request.channel.loseConnection()
            return
        finally:
            if timer.active():
                timer.cancel()
        if not finished[0]:
            request.finish()


def _reason(e: BaseException) -> str:
    if isinstance(e, ResponseFailed):
        return "; ".join(f.getErrorMessage() for f in e.reasons)
    if isinstance(e, error.ConnectError):
        return e.__class__.__name__
    return str(e) or e.__class__.__name__
