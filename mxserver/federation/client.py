"""The federation HTTP client: signed JSON requests to other homeservers.

Every request goes through server discovery, the IP filter and TLS checks
(:mod:`mxserver.federation.endpoint`) and is signed with X-Matrix
(server-server-api §Request Authentication). Responses are bounded in time
and size and must be JSON objects. Failures are raised as
:class:`FederationError` (the remote answered with an error) or its subclass
:class:`RequestFailed` (no usable answer: network, TLS, blocked address,
timeout, oversized or malformed body).

A twisted.web ``Agent`` is used directly rather than through ``treq``'s
``HTTPClient``: the latter always adds a cookie jar and transparent gzip
decoding (whose output would bypass the size bound), and the URI we sign
must be byte for byte the one we send.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import attrs
from OpenSSL import SSL
from service_identity import VerificationError
from signedjson.types import SigningKey
from twisted.application import service
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

import mxserver
from mxserver import metrics
from mxserver.config import FederationConfig
from mxserver.crypto.canonical import decode_json, encode_json
from mxserver.crypto.signing import sign_json
from mxserver.errors import MatrixError
from mxserver.federation.discovery import ServerDiscovery, UnresolvableServerName
from mxserver.federation.endpoint import (
    FederationEndpointFactory,
    FilteredConnector,
    HTTPSEndpointFactory,
    federation_uri,
)
from mxserver.federation.ip_filter import BlockedAddressError, IPRangeFilter
from mxserver.federation.responses import ResponseTooLarge, read_body
from mxserver.federation.tls import FederationTLSPolicy
from mxserver.ids import is_valid_server_name

log = Logger()

#: default deadline of one request, connection and body included
DEFAULT_TIMEOUT_S = 60.0
#: default bound on a JSON response body
DEFAULT_MAX_JSON_SIZE = 10 * 1024 * 1024
#: no response body is ever read past this, whatever a caller asks
MAX_RESPONSE_SIZE = 100 * 1024 * 1024
#: error bodies are read up to this size (enough for errcode and error)
MAX_ERROR_BODY_SIZE = 64 * 1024

USER_AGENT = f"mxserver/{mxserver.__version__}".encode()


class FederationError(Exception):
    """A request to ``destination`` failed; ``code``/``errcode``/``msg`` say how.

    Raised as-is when the remote server answered with an HTTP error: then
    ``code`` is its status, ``errcode`` its Matrix error code (``M_UNKNOWN``
    if it gave none) and ``body`` its parsed JSON body, if any.
    """

    def __init__(self, destination: str, code: int, errcode: str, msg: str, body: Any = None) -> None:
        super().__init__(f"{destination}: {code} {errcode}: {msg}")
        self.destination = destination
        self.code = code
        self.errcode = errcode
        self.msg = msg
        self.body = body

    def to_matrix_error(self) -> MatrixError:
        """What to tell our own client when its request needed this remote call.

        Plain 4xx answers of the remote (not found, forbidden, bad request)
        are passed on; everything else is a 502 from our side.
        """
        if 400 <= self.code < 500 and self.code not in (401, 429):
            extra: dict[str, Any] = {}
            ver = self.body.get("room_version") if isinstance(self.body, dict) else None
            if self.errcode == "M_INCOMPATIBLE_ROOM_VERSION" and isinstance(ver, str):
                # joins-v1.yaml 400: room_version is "Required if the errcode is
                # M_INCOMPATIBLE_ROOM_VERSION"; the client's join error carries it on.
                extra["room_version"] = ver[:100]
            return MatrixError(self.code, self.errcode, f"{self.destination}: {self.msg}", **extra)
        return MatrixError(502, "M_UNKNOWN", f"Request to {self.destination} failed: {self.msg}")


@attrs.frozen
class RawResponse:
    """A 2xx answer read as bytes (:meth:`FederationClient.get_raw`): media downloads."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class RequestFailed(FederationError):
    """No usable answer from ``destination``: unreachable, TLS, blocked, timed out or malformed.

    ``code`` is 504 for a timeout and 502 otherwise; ``errcode`` is ``M_UNKNOWN``.
    """

    def __init__(self, destination: str, msg: str, code: int = 502) -> None:
        super().__init__(destination, code, "M_UNKNOWN", msg)


@implementer(IBodyProducer)
class _BytesProducer:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def encode_query(args: dict[str, Any] | None) -> str:
    """``a=1&b=x%20y`` for ``args``; list values repeat the key, booleans are ``true``/``false``."""
    if not args:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in args.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool):
                v = "true" if v else "false"
            pairs.append((key, str(v)))
    return urlencode(pairs, quote_via=quote, safe="")


def _describe_failure(e: BaseException) -> str:
    """One line for a connection-level failure, digging into twisted.web's wrapper exceptions."""
    reasons = getattr(e, "reasons", None)
    if reasons:
        parts = [_describe_failure(r.value) for r in reasons]
        return "; ".join(dict.fromkeys(p for p in parts if p))
    if isinstance(e, BlockedAddressError):
        return str(e)
    if isinstance(e, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, net_error.DNSLookupError):
        return f"DNS lookup failed: {e}"
    if isinstance(e, net_error.TimeoutError):
        return "connection timed out"
    text = str(e)
    if isinstance(e, SSL.Error) or "certificate" in text.lower():
        return f"TLS failure: {text}"
    if isinstance(e, VerificationError):
        return f"TLS certificate is not valid for this server: {text}"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class FederationClient(service.Service):
    """Sends signed requests to other homeservers.

    A child service of the Homeserver: stopping it closes pooled connections.
    """

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime,
        config: FederationConfig,
        server_name: str,
        signing_key: SigningKey,
        *,
        dns_resolver: Any = None,
        name_resolver: Any = None,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.config = config
        self.server_name = server_name
        self.signing_key = signing_key
        self.ip_filter = IPRangeFilter(config.ip_range_blacklist, config.ip_range_whitelist)
        self.tls = FederationTLSPolicy(config.verify_tls, config.ca_certificates)
        self.connector = FilteredConnector(reactor, self.ip_filter, self.tls, name_resolver)
        #: requests being made (each its own Deferred), abandoned at stop
        self._in_flight: set[Deferred[Any]] = set()
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 5
        self.pool.cachedConnectionTimeout = 120
        https_agent = Agent.usingEndpointFactory(reactor, HTTPSEndpointFactory(self.connector), pool=self.pool)
        self.discovery = ServerDiscovery(reactor, clock, https_agent, dns_resolver)
        self.agent = Agent.usingEndpointFactory(
            reactor, FederationEndpointFactory(self.connector, self.discovery), pool=self.pool
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        # Requests still in flight are abandoned: their callers see a failure now instead of
        # holding a connection (and the work waiting on it) open past the stop.
        for d in list(self._in_flight):
            d.cancel()
        self.discovery.close()
        return self.pool.closeCachedConnections()

    # -- the API ---------------------------------------------------------------------

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        body: Any = None,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        max_size: int = DEFAULT_MAX_JSON_SIZE,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        """``method`` ``path`` (already percent-encoded, no query) on ``destination``; the JSON object answered.

        ``body`` is sent as JSON unless it is None; ``args`` become the query string.
        """
        content: dict[str, Any] = await self._send(
            method, destination, path, args, body, timeout, max_size, authenticate, raw=False
        )
        return content

    # The verbs most call sites (and tests replacing one of them) use: thin wrappers.

    async def get_json(
        self,
        destination: str,
        path: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        max_size: int = DEFAULT_MAX_JSON_SIZE,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        """GET: see :meth:`request_json`."""
        return await self.request_json(
            "GET", destination, path, None, args, timeout, max_size=max_size, authenticate=authenticate
        )

    async def put_json(
        self,
        destination: str,
        path: str,
        body: Any,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        max_size: int = DEFAULT_MAX_JSON_SIZE,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        """PUT the JSON ``body``: see :meth:`request_json`."""
        return await self.request_json(
            "PUT", destination, path, body, args, timeout, max_size=max_size, authenticate=authenticate
        )

    async def post_json(
        self,
        destination: str,
        path: str,
        body: Any,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        max_size: int = DEFAULT_MAX_JSON_SIZE,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        """POST the JSON ``body``: see :meth:`request_json`."""
        return await self.request_json(
            "POST", destination, path, body, args, timeout, max_size=max_size, authenticate=authenticate
        )

    async def put_json_v1(
        self,
        destination: str,
        path: str,
        body: Any,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """PUT to one of the historical v1 endpoints (``send_join``, ``send_leave``, ``invite``)
        whose answer is ``[200, {...}]`` (invites-v1.yaml, joins-v1.yaml, leaving-v1.yaml): the
        object inside. Used only when the peer does not know the v2 endpoint."""
        content: dict[str, Any] = await self._send(
            "PUT", destination, path, None, body, timeout, DEFAULT_MAX_JSON_SIZE, True, raw=False, v1_wrapped=True
        )
        return content

    async def get_raw(
        self,
        destination: str,
        path: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        max_size: int,
        authenticate: bool = True,
    ) -> RawResponse:
        """GET ``path`` on ``destination``; the answer's status, headers and body, unparsed.

        For media (multipart/mixed or raw file bodies); the body is bounded by
        ``max_size`` (RequestFailed past it) and errors are raised as for JSON.
        """
        response: RawResponse = await self._send(
            "GET", destination, path, args, None, timeout, max_size, authenticate, raw=True
        )
        return response

    async def _send(
        self,
        method: str,
        destination: str,
        path: str,
        args: dict[str, Any] | None,
        body: Any,
        timeout: float | None,
        max_size: int,
        authenticate: bool,
        raw: bool,
        v1_wrapped: bool = False,
    ) -> Any:
        """One request with its checks and deadline: a JSON object, or a RawResponse if ``raw``."""
        if not self.config.enabled:
            raise RequestFailed(destination, "federation is disabled (federation.enabled: false)")
        if not is_valid_server_name(destination):
            raise RequestFailed(destination, "not a valid server name")
        if not path.startswith("/") or not path.isascii() or "#" in path or "?" in path:
            raise ValueError(f"path must be percent-encoded, start with / and have no query: {path!r}")
        query = encode_query(args)
        uri = path + ("?" + query if query else "")
        d = ensureDeferred(
            self._request(
                method, destination, uri, body, min(max_size, MAX_RESPONSE_SIZE), authenticate, raw, v1_wrapped
            )
        )
        timed_out: list[bool] = []
        self._in_flight.add(d)

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        deadline = self.clock.callLater(timeout if timeout is not None else DEFAULT_TIMEOUT_S, expire)
        outcome = "error"
        try:
            answer = await d
            outcome = "ok"
            return answer
        except FederationError:
            raise
        except Exception as e:
            if timed_out:
                raise RequestFailed(destination, f"{method} {path} timed out", 504) from None
            if isinstance(e, defer.CancelledError):
                raise
            if isinstance(e, (UnresolvableServerName, ResponseTooLarge)):
                raise RequestFailed(destination, f"{method} {path}: {e}") from None
            raise RequestFailed(destination, f"{method} {path}: {_describe_failure(e)}") from None
        finally:
            metrics.FEDERATION_REQUESTS.labels(endpoint_of(path), outcome).inc()
            self._in_flight.discard(d)
            if deadline.active():
                deadline.cancel()

    def authorization_header(self, method: str, destination: str, uri: str, content: Any = None) -> bytes:
        """The X-Matrix ``Authorization`` value for a request (server-server-api §Request Authentication)."""
        request_json: dict[str, Any] = {
            "method": method,
            "uri": uri,
            "origin": self.server_name,
            "destination": destination,
        }
        if content is not None:
            request_json["content"] = content
        signed = sign_json(request_json, self.server_name, self.signing_key)
        key_id, sig = next(iter(signed["signatures"][self.server_name].items()))
        return (f'X-Matrix origin="{self.server_name}",destination="{destination}",key="{key_id}",sig="{sig}"').encode(
            "ascii"
        )

    # -- one request ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        destination: str,
        uri: str,
        body: Any,
        max_size: int,
        authenticate: bool,
        raw: bool = False,
        v1_wrapped: bool = False,
    ) -> Any:
        server = await self.discovery.resolve(destination)
        headers = Headers({b"Host": [server.host_header.encode("ascii")], b"User-Agent": [USER_AGENT]})
        producer = None
        if body is not None:
            data = encode_json(body)
            headers.setRawHeaders(b"Content-Type", [b"application/json"])
            producer = _BytesProducer(data)
        if authenticate:
            headers.setRawHeaders(b"Authorization", [self.authorization_header(method, destination, uri, body)])
        url = federation_uri(destination, uri).encode("ascii")
        response: IResponse = await self.agent.request(method.encode("ascii"), url, headers, producer)
        if not 200 <= response.code < 300:
            raise await self._error_from(destination, method, uri, response)
        data = await read_body(response, max_size)
        if raw:
            return RawResponse(response.code, response.headers, data)
        try:
            content = decode_json(data)
        except (ValueError, UnicodeDecodeError):
            raise RequestFailed(destination, f"{method} {_path_only(uri)}: the answer is not JSON") from None
        if v1_wrapped:
            # The v1 answer's status wrapper: [200, {...}].
            ok = isinstance(content, list) and len(content) == 2 and content[0] == 200
            content = content[1] if ok else None
        if not isinstance(content, dict):
            raise RequestFailed(destination, f"{method} {_path_only(uri)}: the answer is not a JSON object")
        return content

    async def _error_from(self, destination: str, method: str, uri: str, response: IResponse) -> FederationError:
        try:
            raw = await read_body(response, MAX_ERROR_BODY_SIZE)
            parsed = decode_json(raw)
        except Exception:
            parsed = None
        errcode, msg = "M_UNKNOWN", f"{method} {_path_only(uri)} answered HTTP {response.code}"
        if isinstance(parsed, dict):
            if isinstance(parsed.get("errcode"), str):
                errcode = parsed["errcode"]
            if isinstance(parsed.get("error"), str):
                msg = parsed["error"]
        return FederationError(destination, response.code, errcode, msg, parsed)


def _path_only(uri: str) -> str:
    # Query strings are kept out of messages and logs.
    return uri.split("?", 1)[0]


def endpoint_of(path: str) -> str:
    """The metric label of a federation path: its fixed segments, up to the first parameter
    (``/_matrix/federation/v1/hierarchy/!room:x`` -> ``/_matrix/federation/v1/hierarchy``), so the
    label set stays small whatever the rooms, users and servers asked about."""
    parts = path.split("/")
    # "", "_matrix", "federation" or "key", "v1", "<name>": parameters come after the name
    return "/".join(parts[:5])
