"""Which IP addresses outbound federation may connect to (no SSRF).

Every address a federation connection would use passes through
:meth:`IPRangeFilter.check` first: addresses from DNS, from SRV targets, from
``.well-known`` redirects, and IP-literal server names alike. An address is
blocked when it lies in ``federation.ip_range_blacklist`` and not in
``federation.ip_range_whitelist``. IPv4-mapped IPv6 addresses
(``::ffff:127.0.0.1``) are judged as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddressError(ConnectionError):
    """Every address of a destination is in a blocked IP range."""

    def __init__(self, host: str, addresses: Iterable[str]) -> None:
        self.host = host
        self.addresses = list(addresses)
        shown = ", ".join(self.addresses)
        if len(self.addresses) == 1 and self.addresses[0] == host:
            what = f"IP address {host}"
        else:
            what = f"{host} (resolved to {shown})"
        super().__init__(
            f"{what} is blocked by federation.ip_range_blacklist "
            "(add the range to federation.ip_range_whitelist to allow it)"
        )


def parse_ip(text: str) -> IPAddress | None:
    """The address of an IP literal (``[v6]`` brackets and a ``%zone`` allowed), else None."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class IPRangeFilter:
    """The blacklist minus the whitelist, as configured."""

    def __init__(self, blacklist: Iterable[str], whitelist: Iterable[str] = ()) -> None:
        self._black = [ipaddress.ip_network(n, strict=False) for n in blacklist]
        self._white = [ipaddress.ip_network(n, strict=False) for n in whitelist]

    @staticmethod
    def _in(ip: IPAddress, networks: list[IPNetwork]) -> bool:
        return any(ip.version == net.version and ip in net for net in networks)

    def is_blocked(self, address: str | IPAddress) -> bool:
        """Whether ``address`` (an IP address) may not be connected to."""
        ip = parse_ip(address) if isinstance(address, str) else address
        if ip is None:
            # Not an IP address at all: nothing to connect to.
            return True
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if self._in(candidate, self._black) and not self._in(candidate, self._white):
                return True
        return False

    def allowed(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses that are not blocked; :class:`BlockedAddressError` if none is left.

        ``host`` is what was resolved, for the error message.
        """
        addresses = list(addresses)
        ok = [a for a in addresses if not self.is_blocked(a)]
        if addresses and not ok:
            raise BlockedAddressError(host, addresses)
        return ok
