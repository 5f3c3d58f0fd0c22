"""A small identity server on loopback (HTTPS, a self-signed certificate) for tests: validation
sessions the test creates directly, ``/3pid/bind`` (with the client's access token) and
``/3pid/unbind`` (signed by the homeserver, X-Matrix), and a lookup of what is bound."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.web import resource, server

from mxserver.crypto.signing import SignatureError, verify_signed_json
from mxserver.federation.auth import parse_xmatrix_header
from tests.harness.network import listen_tls, make_cert

ACCESS_TOKEN = "is-access-token"


@attrs.define
class ISRequest:
    path: str
    authorization: str | None
    body: Any


class FakeIdentityServer(resource.Resource):
    """``listen(test, cert_dir)`` gives its name (``127.0.0.1:PORT``) and the certificate to trust."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        #: sid → (client_secret, medium, address): sessions the test validated
        self.sessions: dict[str, tuple[str, str, str]] = {}
        #: (medium, address) → mxid
        self.bindings: dict[tuple[str, str], str] = {}
        self.requests: list[ISRequest] = []
        #: the homeserver's verify keys by key ID, to check signed unbinds (None: not checked)
        self.hs_keys: dict[str, Any] | None = None
        self.hs_name = ""
        self.name = ""

    def listen(self, test: Any, cert_dir: str) -> tuple[str, str]:
        cert_path, key_path = make_cert(cert_dir)
        port = listen_tls(server.Site(self), cert_path, key_path)
        test.addCleanup(port.stopListening)
        self.name = f"127.0.0.1:{port.getHost().port}"
        return self.name, cert_path

    def validate(self, sid: str, client_secret: str, medium: str, address: str) -> None:
        self.sessions[sid] = (client_secret, medium, address)

    def render_POST(self, request: Any) -> bytes:
        path = request.path.decode()
        raw = request.content.read()
        auth = request.getHeader("Authorization")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(ISRequest(path, auth, body))
        if path == "/_matrix/identity/v2/3pid/bind":
            return self._bind(request, auth, body)
        if path == "/_matrix/identity/v2/3pid/unbind":
            return self._unbind(request, auth, body, path)
        return self._answer(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})

    def _bind(self, request: Any, auth: str | None, body: dict[str, Any]) -> bytes:
        if auth != f"Bearer {ACCESS_TOKEN}":
            return self._answer(request, 401, {"errcode": "M_UNAUTHORIZED", "error": "Bad access token"})
        session = self.sessions.get(body.get("sid", ""))
        if session is None or session[0] != body.get("client_secret"):
            return self._answer(request, 400, {"errcode": "M_NO_VALID_SESSION", "error": "No valid session"})
        _, medium, address = session
        self.bindings[(medium, address)] = body["mxid"]
        return self._answer(request, 200, {"medium": medium, "address": address, "mxid": body["mxid"], "ts": 0})

    def _unbind(self, request: Any, auth: str | None, body: dict[str, Any], path: str) -> bytes:
        if auth is None or not self._signed_by_homeserver(auth, path, body):
            return self._answer(request, 403, {"errcode": "M_FORBIDDEN", "error": "Not signed"})
        key = (body["threepid"]["medium"], body["threepid"]["address"])
        if self.bindings.get(key) != body["mxid"]:
            return self._answer(request, 404, {"errcode": "M_NOT_FOUND", "error": "Not bound"})
        del self.bindings[key]
        return self._answer(request, 200, {})

    def _signed_by_homeserver(self, auth: str, path: str, body: Any) -> bool:
        """identity-service-api /3pid/unbind: "signed by the homeserver which controls the user_id"."""
        if self.hs_keys is None:
            return True
        creds = parse_xmatrix_header(auth)
        if creds.origin != self.hs_name or creds.destination != self.name:
            return False
        signed = {
            "method": "POST",
            "uri": path,
            "origin": creds.origin,
            "destination": creds.destination,
            "content": body,
            "signatures": {creds.origin: {creds.key: creds.sig}},
        }
        try:
            verify_signed_json(signed, creds.origin, self.hs_keys)
        except SignatureError:
            return False
        return True

    @staticmethod
    def _answer(request: Any, code: int, body: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body).encode()
