"""Server discovery: from a server name to where to connect (server-server-api §Resolving server names).

:meth:`ServerDiscovery.resolve` returns a :class:`ResolvedServer`: the
(host, port) targets to try in order, the ``Host`` header to send and the
name the TLS certificate must be valid for. The steps, as numbered in the
spec:

1. IP literal: that address, the given port or 8448.
2. Host name with an explicit port: that host and port.
3. ``https://<hostname>/.well-known/matrix/server`` names a delegated server,
   itself resolved by 3.1-3.5 (IP literal, explicit port, SRV
   ``_matrix-fed._tcp``, deprecated SRV ``_matrix._tcp``, port 8448); the
   ``Host`` header and certificate are the delegated name's.
4./5. Otherwise SRV ``_matrix-fed._tcp.<hostname>``, then ``_matrix._tcp``.
6. Otherwise ``<hostname>:8448``.

``.well-known`` answers are cached (successes per Cache-Control/Expires
within [5 minutes, 48 hours], 24 hours by default; invalid answers for an
hour; connection failures with an exponential back-off up to an hour, while
a recently expired delegation stays in use). Concurrent look-ups of one name
share one fetch. SRV records come from a ``twisted.names`` resolver (caching
per their TTL); host names of targets are resolved to addresses later, at
connect time, where the IP filter applies.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.web import error as web_error
from twisted.web.client import BrowserLikeRedirectAgent
from twisted.web.http_headers import Headers

from mxserver.crypto.canonical import decode_json
from mxserver.federation.ip_filter import BlockedAddressError, parse_ip
from mxserver.federation.responses import SharedCalls, read_body
from mxserver.ids import split_host_port

log = Logger()

DEFAULT_PORT = 8448

#: §Resolving server names step 3: cache .well-known answers for 24 h unless told otherwise ...
WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600
#: ... for at most 48 h ...
WELL_KNOWN_MAX_CACHE_S = 48 * 3600
#: ... and, whatever the headers say, long enough not to ask on every request.
WELL_KNOWN_MIN_CACHE_S = 5 * 60
#: invalid answers (non-200, bad JSON, bad m.server) are cached for an hour
WELL_KNOWN_INVALID_CACHE_S = 3600
#: connection failures: first back-off, doubled for each failure in a row, up to an hour
WELL_KNOWN_RETRY_FIRST_S = 2 * 60
WELL_KNOWN_RETRY_MAX_S = 3600
#: a delegation that expired less than this long ago is used while its refresh fails
WELL_KNOWN_GRACE_S = 3600
#: the largest .well-known body read (it holds one short string)
WELL_KNOWN_MAX_SIZE = 50 * 1024
WELL_KNOWN_TIMEOUT_S = 15
WELL_KNOWN_REDIRECT_LIMIT = 5

SRV_SERVICES = ("_matrix-fed._tcp.", "_matrix._tcp.")  # the second is deprecated
#: SRV answers are cached for their TTL, within these bounds; "no such name" and errors for a while
SRV_MIN_CACHE_S = 60
SRV_MAX_CACHE_S = 3600
SRV_NEGATIVE_CACHE_S = 600
SRV_ERROR_CACHE_S = 60
SRV_CACHE_SIZE = 10_000


class UnresolvableServerName(ValueError):
    """The server name is not valid server-name grammar (appendices §Server Name)."""


@attrs.frozen
class ResolvedServer:
    """Where and how to reach a server."""

    #: the server name that was resolved (what X-Matrix signs; discovery never changes it)
    server_name: str
    #: the ``Host`` header to send
    host_header: str
    #: the name (DNS name or IP address) the server's certificate must be valid for; SNI unless an IP
    tls_name: str
    #: (host, port) pairs to try in order; hosts may be IP literals or names still to resolve
    targets: tuple[tuple[str, int], ...]
    #: the ``m.server`` of ``.well-known``, when delegation took place
    delegated_name: str | None = None

    @property
    def host(self) -> str:
        """The first host to try."""
        return self.targets[0][0]

    @property
    def port(self) -> int:
        """The first port to try."""
        return self.targets[0][1]


@attrs.define
class _WellKnownEntry:
    delegated: str | None
    expires: float
    failures: int = 0
    #: the last valid delegation, kept through refresh failures (WELL_KNOWN_GRACE_S)
    last_good: str | None = None
    last_good_expires: float = 0.0


class _FetchError(Exception):
    def __init__(self, msg: str, transient: bool) -> None:
        super().__init__(msg)
        self.transient = transient


class ServerDiscovery:
    """Resolves server names; one per homeserver (it holds the ``.well-known`` cache)."""

    def __init__(self, reactor: Any, clock: IReactorTime, https_agent: Any, dns_resolver: Any = None) -> None:
        self.reactor = reactor
        self.clock = clock
        #: an IResolver for SRV look-ups; created on first use unless given (tests give a fake)
        self.dns_resolver = dns_resolver
        self._owns_resolver = False
        self._agent = BrowserLikeRedirectAgent(https_agent, redirectLimit=WELL_KNOWN_REDIRECT_LIMIT)
        self._well_known: dict[str, _WellKnownEntry] = {}
        self._well_known_fetches = SharedCalls()
        self._srv_cache: dict[str, tuple[list[dns.Record_SRV], float]] = {}

    # -- the steps -----------------------------------------------------------------

    async def resolve(self, server_name: str) -> ResolvedServer:
        """Where to connect for ``server_name``; raises :class:`UnresolvableServerName` if it is invalid."""
        try:
            host, port = split_host_port(server_name)
        except ValueError as e:
            raise UnresolvableServerName(f"invalid server name {server_name!r}: {e}") from None
        if not host:
            raise UnresolvableServerName(f"invalid server name {server_name!r}")
        ip = parse_ip(host)
        if ip is not None:  # step 1
            return ResolvedServer(server_name, server_name, str(ip), ((str(ip), port or DEFAULT_PORT),))
        if port is not None:  # step 2
            return ResolvedServer(server_name, server_name, host, ((host, port),))
        delegated = await self.well_known(host)  # step 3
        if delegated is not None:
            return await self._resolve_delegated(server_name, delegated)
        # steps 4-6
        targets = await self.srv_targets(host)
        return ResolvedServer(server_name, host, host, targets or ((host, DEFAULT_PORT),))

    async def _resolve_delegated(self, server_name: str, delegated: str) -> ResolvedServer:
        host, port = split_host_port(delegated)  # validated when the answer was parsed
        ip = parse_ip(host)
        if ip is not None:  # 3.1
            return ResolvedServer(server_name, delegated, str(ip), ((str(ip), port or DEFAULT_PORT),), delegated)
        if port is not None:  # 3.2
            return ResolvedServer(server_name, delegated, host, ((host, port),), delegated)
        targets = await self.srv_targets(host)  # 3.3, 3.4, else 3.5
        return ResolvedServer(server_name, host, host, targets or ((host, DEFAULT_PORT),), delegated)

    # -- SRV -----------------------------------------------------------------------------

    def _resolver(self) -> Any:
        if self.dns_resolver is None:
            from twisted.names import client

            try:
                self.dns_resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=self.reactor)
            except ValueError:  # no nameserver configured
                self.dns_resolver = client.Resolver(servers=[("127.0.0.1", 53)], reactor=self.reactor)
            self._owns_resolver = True
        return self.dns_resolver

    async def srv_targets(self, hostname: str) -> tuple[tuple[str, int], ...]:
        """Targets from ``_matrix-fed._tcp.<hostname>``, else from the deprecated ``_matrix._tcp``."""
        for service in SRV_SERVICES:
            records = await self._lookup_srv(service + hostname)
            if records:
                return tuple(order_srv_records(records))
        return ()

    async def _lookup_srv(self, name: str) -> list[dns.Record_SRV]:
        """SRV records of ``name``, cached for their TTL (within bounds); [] if none."""
        now = self.clock.seconds()
        cached = self._srv_cache.get(name)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            answers, _authority, _additional = await self._resolver().lookupService(name)
        except DNSNameError:
            self._srv_cache[name] = ([], now + SRV_NEGATIVE_CACHE_S)
            return []
        except Exception as e:  # timeouts, SERVFAIL...: as if there were no record (the spec's fallbacks apply)
            log.info("SRV lookup for {name} failed: {error}", name=name, error=str(e) or type(e).__name__)
            self._srv_cache[name] = ([], now + SRV_ERROR_CACHE_S)
            return []
        srv = [a for a in answers if a.type == dns.SRV]
        records = [a.payload for a in srv]
        # RFC 2782: a single record with target "." means the service is decidedly not available.
        if len(records) == 1 and records[0].target.name in (b"", b"."):
            records = []
        records = [r for r in records if r.target.name not in (b"", b".")]
        ttl = min((a.ttl for a in srv), default=SRV_NEGATIVE_CACHE_S)
        ttl = max(SRV_MIN_CACHE_S, min(SRV_MAX_CACHE_S, ttl))
        if len(self._srv_cache) > SRV_CACHE_SIZE:
            self._srv_cache = {k: v for k, v in self._srv_cache.items() if v[1] > now}
        self._srv_cache[name] = (records, now + ttl)
        return records

    # -- .well-known -------------------------------------------------------------------

    async def well_known(self, hostname: str) -> str | None:
        """The delegated server name from ``https://<hostname>/.well-known/matrix/server``, cached."""
        now = self.clock.seconds()
        entry = self._well_known.get(hostname)
        if entry is not None and entry.expires > now:
            return entry.delegated
        return await self._well_known_fetches.run(hostname, lambda: self._refresh_well_known(hostname))

    async def _refresh_well_known(self, hostname: str) -> str | None:
        now = self.clock.seconds()
        previous = self._well_known.get(hostname)
        try:
            delegated, ttl = await self._fetch_well_known(hostname)
        except _FetchError as e:
            failures = (previous.failures if previous else 0) + 1
            if e.transient:
                ttl = min(WELL_KNOWN_RETRY_MAX_S, WELL_KNOWN_RETRY_FIRST_S * 2 ** (failures - 1))
            else:
                ttl = WELL_KNOWN_INVALID_CACHE_S
            last_good = previous.last_good if previous else None
            last_good_expires = previous.last_good_expires if previous else 0.0
            use = None
            if e.transient and last_good is not None and now - last_good_expires < WELL_KNOWN_GRACE_S:
                use = last_good
                ttl = min(ttl, WELL_KNOWN_GRACE_S - (now - last_good_expires))
            log.info(
                "no .well-known delegation for {host}: {error} (cached {ttl:.0f}s)",
                host=hostname,
                error=str(e),
                ttl=ttl,
            )
            self._well_known[hostname] = _WellKnownEntry(use, now + ttl, failures, last_good, last_good_expires)
            return use
        expires = now + ttl
        self._well_known[hostname] = _WellKnownEntry(delegated, expires, 0, delegated, expires)
        return delegated

    async def _fetch_well_known(self, hostname: str) -> tuple[str, float]:
        """``(m.server, seconds to cache)``, or :class:`_FetchError`."""
        host = f"[{hostname}]" if ":" in hostname else hostname
        url = f"https://{host}/.well-known/matrix/server"

        async def fetch() -> tuple[Any, bytes]:
            response = await self._agent.request(
                b"GET", url.encode("ascii"), Headers({b"Accept": [b"application/json"]})
            )
            return response, await read_body(response, WELL_KNOWN_MAX_SIZE)

        try:
            # One deadline for the answer and its body: a server dripping bytes cannot hold us up.
            response, body = await ensureDeferred(fetch()).addTimeout(WELL_KNOWN_TIMEOUT_S, self.clock)
        except (web_error.InfiniteRedirection, web_error.RedirectWithNoLocation, web_error.SchemeNotSupported) as e:
            raise _FetchError(str(e) or type(e).__name__, transient=False) from None
        except BlockedAddressError as e:
            raise _FetchError(str(e), transient=False) from None
        except Exception as e:
            raise _FetchError(_describe(e), transient=True) from None
        if response.code != 200:
            raise _FetchError(f"HTTP {response.code}", transient=False)
        try:
            content = decode_json(body)
        except ValueError:
            raise _FetchError("the answer is not JSON", transient=False) from None
        if not isinstance(content, dict) or not isinstance(content.get("m.server"), str):
            raise _FetchError("the answer has no m.server string", transient=False)
        delegated = content["m.server"]
        try:
            delegated_host, _ = split_host_port(delegated)
        except ValueError:
            delegated_host = ""
        if not delegated_host or (parse_ip(delegated_host) is None and not _is_dns_name(delegated_host)):
            raise _FetchError(f"m.server {delegated!r} is not a server name", transient=False)
        return delegated, cache_period(response.headers, self.clock.seconds())

    def close(self) -> None:
        """Stop the DNS resolver's timers (only one we created ourselves)."""
        call = getattr(self.dns_resolver, "_parseCall", None) if self._owns_resolver else None
        if call is not None and call.active():
            call.cancel()


def _is_dns_name(host: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9.\-]{1,255}", host))


def _describe(e: BaseException) -> str:
    reasons = getattr(e, "reasons", None)
    if reasons:
        return "; ".join(_describe(r.value) for r in reasons)
    return str(e) or type(e).__name__


def cache_period(headers: Any, now: float) -> float:
    """Seconds to cache a successful ``.well-known`` answer, from its response headers."""
    directives: dict[str, str | None] = {}
    for value in headers.getRawHeaders(b"cache-control", []):
        for part in value.decode("latin-1").split(","):
            name, _, arg = part.strip().partition("=")
            if name:
                directives[name.lower()] = arg.strip().strip('"') or None
    period: float | None = None
    if "no-store" in directives or "no-cache" in directives:
        period = 0
    elif directives.get("max-age") is not None:
        try:
            period = int(directives["max-age"])  # type: ignore[arg-type]
        except ValueError:
            period = None
    if period is None:
        expires = headers.getRawHeaders(b"expires", [])
        if expires:
            try:
                when = email.utils.parsedate_to_datetime(expires[0].decode("latin-1"))
                period = when.timestamp() - now
            except (TypeError, ValueError):
                period = 0  # RFC 9111 §5.3: an invalid Expires means "already expired"
    if period is None:
        period = WELL_KNOWN_DEFAULT_CACHE_S
    return float(max(WELL_KNOWN_MIN_CACHE_S, min(WELL_KNOWN_MAX_CACHE_S, period)))


def order_srv_records(records: Iterable[dns.Record_SRV]) -> list[tuple[str, int]]:
    """RFC 2782 order: by priority, and by weighted random choice within one priority."""
    by_priority: dict[int, list[dns.Record_SRV]] = {}
    for r in records:
        by_priority.setdefault(r.priority, []).append(r)
    ordered: list[tuple[str, int]] = []
    for priority in sorted(by_priority):
        group = list(by_priority[priority])
        while group:
            total = sum(r.weight for r in group)
            pick = group[0]
            if total > 0:
                point = random.randint(0, total)
                running = 0
                for r in sorted(group, key=lambda r: r.weight):  # zero weights first (RFC 2782)
                    running += r.weight
                    if running >= point:
                        pick = r
                        break
            else:
                pick = random.choice(group)
            group.remove(pick)
            ordered.append((pick.target.name.decode("ascii").rstrip("."), pick.port))
    return ordered
