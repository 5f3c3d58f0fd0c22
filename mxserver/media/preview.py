"""URL previews (``/preview_url``) and the one safe way media code fetches URLs.

:class:`SafeFetcher` fetches ``http(s)://`` URLs for previews and for media
downloads an origin redirects to. Every address it connects to -- the first
and every redirect's -- passes the federation IP filter
(``federation.ip_range_blacklist`` / ``ip_range_whitelist``), so a preview
cannot be pointed at the server's own network (no SSRF). Bodies are bounded
in size, whole fetches in time.

:class:`UrlPreviewer` turns a page into OpenGraph keys (``og:title``,
``og:description``, ``og:image`` re-hosted as an ``mxc://`` URI, ...), as
content-repo.yaml ``preview_url`` describes. Off unless
``media.url_preview.enabled``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

import mxserver
from mxserver.config import UrlPreviewConfig
from mxserver.errors import MatrixError, forbidden, invalid_param, unrecognized
from mxserver.federation.endpoint import FilteredConnector, TCPEndpoint, _DeferredEndpoint
from mxserver.federation.ip_filter import BlockedAddressError, IPRangeFilter
from mxserver.federation.responses import ResponseTooLarge, SharedCalls, read_body
from mxserver.media.http import base_type

if TYPE_CHECKING:
    from mxserver.media.repository import MediaRepository

log = Logger()

MAX_REDIRECTS = 5
#: previews are kept this long (seconds) and shared by every user asking
CACHE_SECONDS = 3600
_USER_AGENT = f"mxserver/{mxserver.__version__} (URL preview)".encode()


class FetchFailed(Exception):
    """A fetch produced no usable answer; ``blocked`` when the IP filter refused it."""

    def __init__(self, msg: str, blocked: bool = False, too_large: bool = False) -> None:
        super().__init__(msg)
        self.blocked = blocked
        self.too_large = too_large


@implementer(IAgentEndpointFactory)
class _FilteredWebEndpoints:
    """``http``/``https`` endpoints whose every address passes the IP filter."""

    def __init__(
        self, reactor: Any, connector: FilteredConnector, tls: Callable[[str], IOpenSSLClientConnectionCreator]
    ) -> None:
        self._reactor = reactor
        self._connector = connector
        self._tls = tls

    def endpointForURI(self, uri: URI) -> Any:
        host = uri.host.decode("idna")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port, tls = uri.port, uri.scheme == b"https"

        async def connect(factory: IProtocolFactory) -> IProtocol:
            errors: list[Exception] = []
            for ip, ip_port in await self._connector.addresses(host, port):
                endpoint: Any = TCPEndpoint(self._reactor, ip, ip_port, timeout=20)
                if tls:
                    endpoint = wrapClientTLS(self._tls(host), endpoint)
                try:
                    return await endpoint.connect(factory)
                except ConnectError as e:
                    errors.append(e)
            raise errors[-1] if errors else ConnectError(string="no address to connect to")

        return _DeferredEndpoint(connect)


class _ClosablePool(HTTPConnectionPool):
    """A connection pool that keeps nothing once closed: a request that was still finishing at
    shutdown hands its connection back after :meth:`closeCachedConnections`, which would
    otherwise keep it (and its idle timer) alive past the server's stop."""

    closed = False

    def closeCachedConnections(self) -> Deferred[None]:
        self.closed = True
        return super().closeCachedConnections()  # type: ignore[no-any-return]

    def _putConnection(self, key: Any, connection: Any) -> None:
        if self.closed:
            connection.transport.abortConnection()
            return
        super()._putConnection(key, connection)


class SafeFetcher:
    """GETs URLs through the IP filter, bounded in size and time (see the module docstring)."""

    def __init__(
        self,
        reactor: Any,
        clock: IReactorTime,
        ip_filter: IPRangeFilter,
        config: UrlPreviewConfig,
        tls: Callable[[str], IOpenSSLClientConnectionCreator] = optionsForClientTLS,
        keep_per_host: int = 0,
    ) -> None:
        """``tls`` makes the TLS connection creator for a host name (default: the system's CAs);
        ``keep_per_host`` connections per host stay open for the next requests (push gateways
        get one request per notification, from every pusher at once: a TLS handshake each
        would cost more than the request). Whoever asks for that calls :meth:`close` at shutdown."""
        self.clock = clock
        self.config = config
        connector = FilteredConnector(reactor, ip_filter, None)  # type: ignore[arg-type]
        self.pool = _ClosablePool(reactor, persistent=keep_per_host > 0)
        if keep_per_host > 0:
            self.pool.maxPersistentPerHost = keep_per_host
        self.agent = Agent.usingEndpointFactory(reactor, _FilteredWebEndpoints(reactor, connector, tls), pool=self.pool)

    def close(self) -> Deferred[None]:
        """Close the connections kept open (with ``persistent``)."""
        return self.pool.closeCachedConnections()

    async def fetch(self, url: str, max_size: int) -> tuple[str, Headers, bytes]:
        """``(final URL, headers, body)`` of a 2xx answer, following redirects."""
        d = ensureDeferred(self._fetch(url, max_size))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self.clock.callLater(self.config.timeout_ms / 1000, expire)
        try:
            return await d
        except FetchFailed:
            raise
        except BlockedAddressError as e:
            raise FetchFailed(str(e), blocked=True) from None
        except ResponseTooLarge:
            raise FetchFailed(f"larger than {max_size} bytes", too_large=True) from None
        except Exception as e:
            if expired:
                raise FetchFailed("timed out") from None
            reasons = getattr(e, "reasons", None) or []
            if any(r.check(BlockedAddressError) for r in reasons):
                raise FetchFailed("address blocked by federation.ip_range_blacklist", blocked=True) from None
            if isinstance(e, DNSLookupError):
                raise FetchFailed("DNS lookup failed") from None
            raise FetchFailed(f"{type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _fetch(self, url: str, max_size: int) -> tuple[str, Headers, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url)
            headers = Headers({b"User-Agent": [_USER_AGENT], b"Accept-Language": [b"en"]})
            response = await self.agent.request(b"GET", url.encode("ascii"), headers)
            if response.code in (301, 302, 303, 307, 308):
                location = response.headers.getRawHeaders(b"location")
                response.deliverBody(_Discard())
                if not location:
                    raise FetchFailed("redirect without a Location")
                url = urljoin(url, location[0].decode("latin-1"))
                continue
            if not 200 <= response.code < 300:
                response.deliverBody(_Discard())
                raise FetchFailed(f"answered HTTP {response.code}")
            body = await read_body(response, max_size)
            return url, response.headers, body
        raise FetchFailed("too many redirects")

    async def fetch_file(self, url: str, max_size: int) -> tuple[bytes, str | None, str | None]:
        """``(bytes, Content-Type, Content-Disposition)`` of a file (an origin's media redirect)."""
        try:
            _, headers, body = await self.fetch(url, max_size)
        except FetchFailed as e:
            code, errcode = (502, "M_TOO_LARGE") if e.too_large else (502, "M_UNKNOWN")
            raise MatrixError(code, errcode, f"Cannot fetch redirected media: {e}") from None
        ctype = headers.getRawHeaders("content-type")
        disp = headers.getRawHeaders("content-disposition")
        return body, ctype[0] if ctype else None, disp[0] if disp else None


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def check_url(url: str) -> None:
    if not url.isascii():
        raise FetchFailed("URL is not ASCII")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed("only http and https URLs with a host")


# -- OpenGraph -----------------------------------------------------------------------------------


class _OpenGraphParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "meta":
            prop = a.get("property") or a.get("name") or ""
            content = a.get("content")
            if content is None:
                return
            if prop.lower().startswith("og:") and prop.lower() not in self.og:
                self.og[prop.lower()] = content[:1000]
            elif prop.lower() == "description" and self.description is None:
                self.description = content[:1000]
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:1000]


def _charset(content_type: str, body: bytes) -> str:
    name = "utf-8"
    m = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", content_type, re.IGNORECASE)
    if m:
        name = m.group(1)
    else:
        mb = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", body[:4096], re.IGNORECASE)
        if mb:
            name = mb.group(1).decode("ascii")
    try:
        "".encode(name)
    except LookupError:
        return "utf-8"
    return name


def parse_opengraph(body: bytes, content_type: str) -> dict[str, str]:
    """OpenGraph keys of an HTML page, with ``<title>``/description as fallbacks."""
    parser = _OpenGraphParser()
    parser.feed(body.decode(_charset(content_type, body), errors="replace"))
    parser.close()
    og = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    return og


class UrlPreviewer:
    """``/preview_url``: cached, shared, IP-filtered OpenGraph previews."""

    def __init__(self, repo: MediaRepository, fetcher: SafeFetcher, config: UrlPreviewConfig) -> None:
        self.repo = repo
        self.fetcher = fetcher
        self.config = config
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._running = SharedCalls()

    async def preview(self, url: str, user_id: str) -> dict[str, Any]:
        if not self.config.enabled:
            raise unrecognized("URL previews are disabled on this server (media.url_preview.enabled)")
        try:
            check_url(url)
        except FetchFailed as e:
            raise invalid_param(f"Invalid URL: {e}") from None
        now = self.repo.clock.seconds()
        cached = self._cache.get(url)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return dict(cached[1])
        result: dict[str, Any] = await self._running.run(url, lambda: self._preview(url, user_id))
        self._cache[url] = (now, result)
        if len(self._cache) > 1000:
            for key in [k for k, (ts, _) in self._cache.items() if now - ts >= CACHE_SECONDS] or list(self._cache)[:100]:
                self._cache.pop(key, None)
        return dict(result)

    async def _get(self, url: str) -> tuple[str, Headers, bytes]:
        try:
            return await self.fetcher.fetch(url, self.config.max_page_size)
        except FetchFailed as e:
            if e.blocked:
                raise forbidden(f"Cannot preview this URL: {e}") from None
            if e.too_large:
                raise MatrixError(502, "M_TOO_LARGE", "The content is too large to preview") from None
            raise MatrixError(502, "M_UNKNOWN", f"Cannot fetch the URL: {e}") from None

    async def _preview(self, url: str, user_id: str) -> dict[str, Any]:
        final_url, headers, body = await self._get(url)
        ctype = (headers.getRawHeaders("content-type") or ["application/octet-stream"])[0]
        kind = base_type(ctype)
        if kind.startswith("image/"):
            return await self._image_keys(user_id, body, ctype)
        if kind not in ("text/html", "application/xhtml+xml"):
            return {}
        og: dict[str, Any] = parse_opengraph(body, ctype)
        image = og.pop("og:image", None)
        if image:
            image_url = urljoin(final_url, image)
            try:
                _, img_headers, img_body = await self._get(image_url)
                img_type = (img_headers.getRawHeaders("content-type") or [""])[0]
                if base_type(img_type).startswith("image/"):
                    og.update(await self._image_keys(user_id, img_body, img_type))
            except MatrixError as e:
                log.info("preview image of {url} not fetched: {e}", url=url, e=e.msg)
        return og

    async def _image_keys(self, user_id: str, data: bytes, ctype: str) -> dict[str, Any]:
        """Re-host an image as local media; its OpenGraph keys."""
        mxc = await self.repo.upload(user_id, data, ctype, None)
        media_id = mxc.rsplit("/", 1)[1]
        row = await self.repo.store.get_local_media(media_id)
        keys: dict[str, Any] = {"og:image": mxc, "og:image:type": ctype, "matrix:image:size": len(data)}
        if row is None:  # deleted (an admin purge) since the upload just now
            return keys
        keys["og:image:type"] = row.content_type
        if row.width is not None:
            keys["og:image:width"] = row.width
            keys["og:image:height"] = row.height
        return keys
