"""TLS for outbound federation: which certificates we accept, for which name.

server-server-api §TLS: the destination presents a certificate from a known
CA for the name discovery says it must match (the server name, the delegated
name, or an IP address; §Resolving server names). We trust the operating
system's CAs plus ``federation.ca_certificates``; certificates are checked
with service-identity. SNI is sent for DNS names, never for IP addresses.
``federation.verify_tls: false`` (loopback tests) skips verification but
still sends SNI.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer


@implementer(IOpenSSLTrustRoot)
class _PlatformAndExtraCAs:
    """The system's CAs plus some more (``federation.ca_certificates``)."""

    def __init__(self, extra: list[crypto.X509]) -> None:
        self._extra = extra

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        assert store is not None
        for cert in self._extra:
            store.add_cert(cert)


def _load_pem_certificates(path: str) -> list[crypto.X509]:
    """Every certificate in a PEM file (a bundle may hold several)."""
    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----END CERTIFICATE-----"
    certs = []
    for chunk in data.split(marker)[:-1]:
        certs.append(crypto.load_certificate(crypto.FILETYPE_PEM, chunk + marker))
    if not certs:
        raise ValueError(f"{path}: no PEM certificate found")
    return certs


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerification:
    """TLS without certificate checks (``verify_tls: false``), still sending SNI."""

    def __init__(self, context: SSL.Context, name: str) -> None:
        self._context = context
        self._sni = None if isIPAddress(name) or isIPv6Address(name) else name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        return connection


class FederationTLSPolicy:
    """Makes the TLS connection creator for each name we connect to."""

    def __init__(self, verify: bool = True, ca_certificate_paths: list[str] | tuple[str, ...] = ()) -> None:
        self.verify = verify
        extra: list[crypto.X509] = []
        for path in ca_certificate_paths:
            extra.extend(_load_pem_certificates(path))
        self._trust = _PlatformAndExtraCAs(extra)
        self._unverified_context: SSL.Context | None = None

    def verified_creator_for(self, name: str) -> IOpenSSLClientConnectionCreator:
        """A connection creator that always checks the certificate (system CAs plus the extra ones).

        For URL previews: they trust the operator's extra CAs, as they obey the
        federation IP filter, but never go unverified (``verify_tls`` is federation's).
        """
        return ssl.optionsForClientTLS(name, trustRoot=self._trust)

    def creator_for(self, name: str) -> IOpenSSLClientConnectionCreator:
        """A connection creator checking that the peer's certificate is valid for ``name``."""
        if not self.verify:
            if self._unverified_context is None:
                self._unverified_context = ssl.CertificateOptions(verify=False).getContext()
            return _NoVerification(self._unverified_context, name)
        return ssl.optionsForClientTLS(name, trustRoot=self._trust)
