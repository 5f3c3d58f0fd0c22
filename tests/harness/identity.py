"""A stub identity server on loopback (HTTPS), for third-party invite tests.

It serves what a homeserver asks of an identity server for 3PID invites
(identity-service-api v2): ``GET /hash_details``, ``POST /lookup`` (sha256 and
none), ``POST /store-invite`` and ``GET /pubkey/isvalid``, all but the last
requiring ``Authorization: Bearer <ACCESS_TOKEN>``. The test binds 3PIDs
(:meth:`IdentityServerStub.bind`), which gives the body the identity server
would send to the owner's homeserver's ``/3pid/onbind``, with each pending
invite's ``signed`` proof; it can also revoke keys and sign proofs itself.
Every request is recorded.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from signedjson.sign import sign_json
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web import resource, server

from mxserver.accounts.identity_lookup import lookup_hash
from mxserver.api.http import render_json
from mxserver.crypto.keys import generate_signing_key, verify_key_base64
from tests.harness.network import listen_tls, make_cert, temp_dir

ACCESS_TOKEN = "swordfish"
PEPPER = "matrixrocks"
PREFIX = b"/_matrix/identity/v2"


@attrs.define
class IdentityRequest:
    method: bytes
    path: bytes
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


class IdentityServerStub(resource.Resource):
    """The identity server's resource; :meth:`start` listens on 127.0.0.1 with TLS."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.server_key = generate_signing_key("0")
        self.ephemeral_key = generate_signing_key("ephemeral")
        #: public keys isvalid says are valid
        self.valid_keys = {verify_key_base64(self.server_key), verify_key_base64(self.ephemeral_key)}
        #: (medium, address) -> user ID
        self.bindings: dict[tuple[str, str], str] = {}
        #: stored invitations, in order
        self.invites: list[dict[str, Any]] = []
        self.requests: list[IdentityRequest] = []
        self.algorithms = ["none", "sha256"]
        self._port: Any = None
        self._tokens = 0

    async def start(self, test: unittest.TestCase) -> str:
        """Listen (stopped at the test's clean-up); the server's name, ``127.0.0.1:PORT``."""
        cert = make_cert(temp_dir(test))
        self._port = listen_tls(server.Site(self), *cert)
        test.addCleanup(self.stop)
        self.name = f"127.0.0.1:{self._port.getHost().port}"
        return self.name

    def stop(self) -> Deferred[None] | None:
        """Stop listening (an unreachable identity server from now on)."""
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    @property
    def key_validity_url(self) -> str:
        return f"https://{self.name}/_matrix/identity/v2/pubkey/isvalid"

    def hits(self, path: str) -> list[IdentityRequest]:
        return [r for r in self.requests if r.path == PREFIX + path.encode()]

    # -- what tests do -------------------------------------------------------------------------

    def sign(self, obj: dict[str, Any], ephemeral: bool = False) -> dict[str, Any]:
        """``obj`` signed (in place, and returned) by the server's or the ephemeral key."""
        return sign_json(obj, self.name, self.ephemeral_key if ephemeral else self.server_key)

    def revoke_keys(self) -> None:
        """isvalid says no to every key handed out so far, and new keys sign from now on."""
        self.server_key = generate_signing_key("0")
        self.ephemeral_key = generate_signing_key("ephemeral")
        self.valid_keys = {verify_key_base64(self.server_key), verify_key_base64(self.ephemeral_key)}

    def bind(self, medium: str, address: str, mxid: str) -> dict[str, Any]:
        """Bind the 3PID; the ``/3pid/onbind`` body for its pending invites (now taken)."""
        self.bindings[(medium, address)] = mxid
        pending = [i for i in self.invites if (i["medium"], i["address"]) == (medium, address)]
        self.invites = [i for i in self.invites if i not in pending]
        invites = []
        for invite in pending:
            signed = self.sign({"mxid": mxid, "token": invite["token"], "sender": invite["sender"]})
            invites.append({**invite, "mxid": mxid, "signed": signed})
        return {"medium": medium, "address": address, "mxid": mxid, "invites": invites}

    # -- the API -------------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        raw = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        raw_auth = request.getHeader(b"authorization")
        auth = raw_auth.decode() if raw_auth is not None else None
        query = {k.decode(): [v.decode() for v in vs] for k, vs in (request.args or {}).items()}
        self.requests.append(IdentityRequest(request.method, request.path, query, auth, body))
        path = request.path
        if path == PREFIX + b"/pubkey/isvalid":
            key = query.get("public_key", [""])[0]
            return render_json(request, 200, {"valid": key in self.valid_keys})
        if auth != f"Bearer {ACCESS_TOKEN}":
            return render_json(request, 401, {"errcode": "M_UNAUTHORIZED", "error": "bad token"})
        if path == PREFIX + b"/hash_details" and request.method == b"GET":
            return render_json(request, 200, {"algorithms": self.algorithms, "lookup_pepper": PEPPER})
        if path == PREFIX + b"/lookup" and request.method == b"POST":
            return self._lookup(request, body)
        if path == PREFIX + b"/store-invite" and request.method == b"POST":
            return self._store_invite(request, body)
        return render_json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "no such route"})

    def _lookup(self, request: Any, body: Any) -> bytes:
        if body.get("pepper") != PEPPER:
            return render_json(request, 400, {"errcode": "M_INVALID_PEPPER", "error": "wrong pepper"})
        mappings = {}
        for (medium, address), mxid in self.bindings.items():
            if body["algorithm"] == "sha256":
                key = lookup_hash(medium, address, PEPPER)
            else:
                key = f"{address} {medium}"
            if key in body["addresses"]:
                mappings[key] = mxid
        return render_json(request, 200, {"mappings": mappings})

    def _store_invite(self, request: Any, body: Any) -> bytes:
        self._tokens += 1
        token = f"tok{self._tokens}"
        self.invites.append(
            {
                "medium": body["medium"],
                "address": body["address"],
                "room_id": body["room_id"],
                "sender": body["sender"],
                "token": token,
            }
        )
        keys = [
            {"public_key": verify_key_base64(k), "key_validity_url": self.key_validity_url}
            for k in (self.server_key, self.ephemeral_key)
        ]
        return render_json(request, 200, {"token": token, "display_name": "a...@e...", "public_keys": keys})
