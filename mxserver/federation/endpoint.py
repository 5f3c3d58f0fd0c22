"""Outbound connections: resolve, filter the addresses, connect, wrap in TLS.

:class:`FilteredConnector` is the only place outbound federation opens a
socket. It resolves a target host to addresses (IP literals are used as they
are), drops every address :class:`IPRangeFilter` blocks -- failing with
:class:`BlockedAddressError` when none is left -- and then tries the allowed
addresses in turn with TLS for the name discovery chose.

Two ``IAgentEndpointFactory`` implementations put it under a twisted.web
``Agent``:

- :class:`FederationEndpointFactory` serves ``matrix-federation://`` URIs,
  whose host is the destination server name (hex-encoded, so IPv6 literals
  and ports survive URI parsing); it runs server discovery at connect time.
- :class:`HTTPSEndpointFactory` serves plain ``https://`` URIs, for
  ``/.well-known/matrix/server`` and any redirects it follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mxserver.federation.ip_filter import BlockedAddressError, IPRangeFilter, parse_ip
from mxserver.federation.tls import FederationTLSPolicy

if TYPE_CHECKING:
    from mxserver.federation.discovery import ServerDiscovery

#: scheme of the URIs the federation Agent is given
FEDERATION_SCHEME = b"matrix-federation"

#: seconds allowed for one TCP connection attempt (the request's own deadline still applies)
CONNECT_TIMEOUT = 20


def federation_uri(destination: str, path_and_query: str) -> str:
    """The URI the federation Agent understands for a request to ``destination``."""
    return f"{FEDERATION_SCHEME.decode()}://{destination.encode('utf-8').hex()}{path_and_query}"


def destination_of(uri: URI) -> str:
    """The server name a :func:`federation_uri` was built for."""
    return bytes.fromhex(uri.host.decode("ascii")).decode("utf-8")


def is_resolvable_name(host: str) -> bool:
    """Whether DNS can be asked about ``host``: every label 1..63 octets once IDNA-encoded.

    The Matrix grammar for server names allows names such as ``a..b`` or a
    100-character label that DNS cannot hold (RFC 1035 §2.3.4). Handed to the
    system resolver, those raise ``UnicodeError`` in its thread, which Twisted's
    resolver does not catch: the lookup would never complete.
    """
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return False
    return 0 < len(encoded.rstrip(b".")) <= 253


@implementer(IStreamClientEndpoint)
class TCPEndpoint:
    """A TCP client endpoint (IPv4 or IPv6 by the address) whose connections send at once.

    HTTP clients write a request's headers and its body separately. On a kept-alive
    connection, Nagle's algorithm then holds the body back until the headers are
    acknowledged, and the peer's delayed ACK makes that about 40 ms per request: every
    federation transaction or push after the first. TCP_NODELAY turns that off.
    """

    def __init__(self, reactor: Any, ip: str, port: int, timeout: float = CONNECT_TIMEOUT) -> None:
        cls = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
        self._inner = cls(reactor, ip, port, timeout=timeout)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def no_delay(protocol: IProtocol) -> IProtocol:
            transport = getattr(protocol, "transport", None)
            if transport is not None and hasattr(transport, "setTcpNoDelay"):
                transport.setTcpNoDelay(True)
            return protocol

        return self._inner.connect(protocolFactory).addCallback(no_delay)


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self.done: Deferred[list[Any]] = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class FilteredConnector:
    """Connects to (host, port) targets through the IP filter, with TLS."""

    def __init__(
        self,
        reactor: Any,
        ip_filter: IPRangeFilter,
        tls: FederationTLSPolicy,
        name_resolver: IHostnameResolver | None = None,
    ) -> None:
        self.reactor = reactor
        self.ip_filter = ip_filter
        self.tls = tls
        #: resolves host names to addresses (A/AAAA); tests put a fake here
        self.name_resolver = name_resolver

    async def addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        """The (ip, port) pairs to try for ``host``, blocked ones removed.

        Raises :class:`BlockedAddressError` if every address is blocked and
        ``DNSLookupError`` if the name has none.
        """
        ip = parse_ip(host)
        if ip is not None:
            found = [(str(ip), port)]
        else:
            if not is_resolvable_name(host):
                raise DNSLookupError(f"{host!r} is not a resolvable host name")
            resolver = self.name_resolver or self.reactor.nameResolver
            receiver = _Addresses()
            resolver.resolveHostName(receiver, host, port)
            resolved = await receiver.done
            found = [(a.host, a.port) for a in resolved if isinstance(a, (IPv4Address, IPv6Address))]
            if not found:
                raise DNSLookupError(f"{host} has no IP address")
        allowed = set(self.ip_filter.allowed(host, [a for a, _ in found]))
        return [(a, p) for a, p in found if a in allowed]

    async def connect(self, factory: IProtocolFactory, targets: Sequence[tuple[str, int]], tls_name: str) -> IProtocol:
        """Connect to the first target (and address) that answers, TLS checked for ``tls_name``."""
        errors: list[Exception] = []
        for host, port in targets:
            try:
                addresses = await self.addresses(host, port)
            except (BlockedAddressError, DNSLookupError) as e:
                errors.append(e)
                continue
            for ip, ip_port in addresses:
                endpoint = wrapClientTLS(self.tls.creator_for(tls_name), TCPEndpoint(self.reactor, ip, ip_port))
                try:
                    return await endpoint.connect(factory)
                except ConnectError as e:
                    errors.append(e)
        if not errors:
            raise ConnectError(string="no address to connect to")
        # A blocked address is the most useful thing to report: it is a policy, not an accident.
        for err in errors:
            if isinstance(err, BlockedAddressError):
                raise err
        raise errors[-1]


@implementer(IStreamClientEndpoint)
class _DeferredEndpoint:
    def __init__(self, connect: Callable[[IProtocolFactory], Any]) -> None:
        self._connect = connect

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return ensureDeferred(self._connect(protocolFactory))


@implementer(IAgentEndpointFactory)
class FederationEndpointFactory:
    """Endpoints for ``matrix-federation://`` URIs: discovery, then :class:`FilteredConnector`."""

    def __init__(self, connector: FilteredConnector, discovery: ServerDiscovery) -> None:
        self._connector = connector
        self._discovery = discovery

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme != FEDERATION_SCHEME:
            raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")
        destination = destination_of(uri)

        async def connect(factory: IProtocolFactory) -> IProtocol:
            server = await self._discovery.resolve(destination)
            return await self._connector.connect(factory, server.targets, server.tls_name)

        return _DeferredEndpoint(connect)


@implementer(IAgentEndpointFactory)
class HTTPSEndpointFactory:
    """Endpoints for ``https://`` URIs (``.well-known``), through :class:`FilteredConnector`."""

    def __init__(self, connector: FilteredConnector) -> None:
        self._connector = connector

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise SchemeNotSupported(f"only https is allowed here, not {uri.scheme!r}")
        host = uri.host.decode("idna")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = uri.port

        async def connect(factory: IProtocolFactory) -> IProtocol:
            return await self._connector.connect(factory, [(host, port)], host)

        return _DeferredEndpoint(connect)
