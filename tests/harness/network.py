"""The harness's network: certificates, ports, fake DNS, a scriptable HTTPS server, keyring fakes."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import IHostnameResolver
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.web import resource, server
from zope.interface import implementer

from mxserver.api.http import render_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(
    directory: str, dns_names: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[str, str]:
    """A self-signed certificate (usable as its own CA) for the names and IPs; (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mxserver test")])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, f"cert-{cert.serial_number}.pem")
    key_path = os.path.join(directory, f"key-{cert.serial_number}.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


def listen_tls(site: server.Site, cert_path: str, key_path: str, port: int = 0) -> Any:
    """Listen with TLS on 127.0.0.1; returns the IListeningPort."""
    with open(cert_path, "rb") as c, open(key_path, "rb") as k:
        cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    return reactor.listenSSL(port, site, cert.options(), interface="127.0.0.1")


@attrs.define
class Recorded:
    method: bytes
    uri: bytes
    path: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes


Route = Callable[[Any], Any]


class ScriptedServer(resource.Resource):
    """A leaf resource: routes[path] gives (code, body[, headers]) or a callable(request) returning that.

    A body that is a dict or list is sent as JSON; bytes as they are;
    ``server.NOT_DONE_YET`` leaves the request hanging. Every request is recorded.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[bytes, Any] = {}
        self.requests: list[Recorded] = []

    def hits(self, path: bytes) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def render(self, request: Any) -> Any:
        self.record(request)
        route = self.routes.get(request.path)
        if route is None:
            return render_json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "no such route"})
        return self.answer(request, route)

    def record(self, request: Any) -> Recorded:
        """Keep the request (its body read once, here) in ``requests``."""
        body = request.content.read() if request.content is not None else b""
        recorded = Recorded(
            request.method,
            request.uri,
            request.path,
            {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()},
            body,
        )
        self.requests.append(recorded)
        return recorded

    def answer(self, request: Any, route: Any) -> Any:
        """Render ``route``: ``(code, body[, headers])`` or a callable(request) giving that or NOT_DONE_YET."""
        answer = route(request) if callable(route) else route
        if answer is server.NOT_DONE_YET:
            return answer
        code, payload, *rest = answer
        if isinstance(payload, (dict, list)):
            payload = render_json(request, code, payload)
        request.setResponseCode(code)
        for name, value in (rest[0] if rest else {}).items():
            request.setHeader(name, value)
        return payload


@implementer(IHostnameResolver)
class FakeNameResolver:
    """Resolves names from a table: host -> [ip, ...] or {port: (ip, port)} to also move ports."""

    def __init__(self, table: dict[str, Any] | None = None) -> None:
        self.table = table or {}
        self.lookups: list[tuple[str, int]] = []

    def resolveHostName(
        self,
        receiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        self.lookups.append((hostName, portNumber))
        receiver.resolutionBegan(None)
        entry = self.table.get(hostName, [])
        if isinstance(entry, dict):
            pairs = [entry[portNumber]] if portNumber in entry else []
        else:
            pairs = [(ip, portNumber) for ip in entry]
        for ip, port in pairs:
            cls = IPv6Address if ":" in ip else IPv4Address
            receiver.addressResolved(cls("TCP", ip, port))
        receiver.resolutionComplete()
        return receiver


class FakeDNS:
    """An IResolver answering SRV look-ups from a table: name -> [(priority, weight, port, target)]."""

    def __init__(self, srv: dict[str, list[tuple[int, int, int, str]]] | None = None) -> None:
        self.srv = srv or {}
        self.lookups: list[str] = []

    def lookupService(self, name: str, timeout: Any = None) -> Any:
        self.lookups.append(name)
        records = self.srv.get(name)
        if records is None:
            return fail(DNSNameError(name))
        answers = [
            dns.RRHeader(name=name, type=dns.SRV, payload=dns.Record_SRV(p, w, port, target, ttl=60), ttl=60)
            for p, w, port, target in records
        ]
        return succeed((answers, [], []))


def temp_dir(test: Any) -> str:
    d = tempfile.mkdtemp(prefix="mxserver-fed-")
    test.addCleanup(shutil.rmtree, d, True)
    return d


# -- keyring fakes ----------------------------------------------------------------------


def key_response(
    server_name: str,
    signing_key: Any,
    valid_until_ts: int,
    old_verify_keys: dict[str, Any] | None = None,
    signers: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """A /_matrix/key/v2/server answer for ``signing_key``, signed by ``signers`` (default: itself)."""
    from mxserver.crypto.keys import key_id, verify_key_base64
    from mxserver.crypto.signing import sign_json

    body: dict[str, Any] = {
        "server_name": server_name,
        "verify_keys": {key_id(signing_key): {"key": verify_key_base64(signing_key)}},
        "old_verify_keys": old_verify_keys or {},
        "valid_until_ts": valid_until_ts,
    }
    for name, key in signers if signers is not None else [(server_name, signing_key)]:
        sign_json(body, name, key)
    return body


class FakeKeyClient:
    """Stands in for the FederationClient under a Keyring: answers[(destination, path)].

    An answer is a dict (returned), an Exception (raised), a Deferred (awaited)
    or a callable taking the request body. Missing answers raise RequestFailed.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str, str, Any]] = []

    def count(self, destination: str, path: str | None = None) -> int:
        return sum(1 for c in self.calls if c[1] == destination and (path is None or c[2] == path))

    async def _answer(self, method: str, destination: str, path: str, body: Any) -> Any:
        import copy

        from twisted.internet.defer import Deferred

        from mxserver.federation.client import RequestFailed

        self.calls.append((method, destination, path, body))
        answer = self.answers.get((destination, path))
        if answer is None:
            raise RequestFailed(destination, "unreachable (fake)")
        if isinstance(answer, Deferred):
            answer = await answer
        if callable(answer):
            answer = answer(body)
        if isinstance(answer, Exception):
            raise answer
        return copy.deepcopy(answer)

    async def get_json(self, destination: str, path: str, args: Any = None, timeout: Any = None, **kw: Any) -> Any:
        return await self._answer("GET", destination, path, None)

    async def post_json(
        self, destination: str, path: str, body: Any, args: Any = None, timeout: Any = None, **kw: Any
    ) -> Any:
        return await self._answer("POST", destination, path, body)


class MemoryKeyStore:
    """A ServerKeyStore in memory."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Any] = {}

    def store_server_keys(self, keys: Any) -> Any:
        for k in keys:
            self.rows[(k.server_name, k.key_id)] = k
        return succeed(None)

    def get_server_keys(self, server_name: str) -> Any:
        return succeed([v for (s, _), v in sorted(self.rows.items()) if s == server_name])
