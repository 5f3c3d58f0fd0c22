"""Every Client-Server and Server-Server operation of the spec is routed.

The table (``tests/fixtures/spec_endpoints.txt``, made by ``contrib/gen_spec_endpoints.py``
from the spec's endpoint index) lists each operation as ``METHOD PATH``. Each is called on a
running server with placeholder parameters; what it answers is not asserted here (other tests
do that), only that it is not the router's "no such endpoint": 404 or 405 ``M_UNRECOGNIZED``
(client-server-api §Standard error response, ``M_UNRECOGNIZED``: "expected to be returned with
a 404 HTTP status code if the endpoint is not implemented or a 405 HTTP status code if the
endpoint is implemented, but the incorrect HTTP method is used"). Federation operations are
called unsigned: a 401 still proves the route exists.

Also: the client operations that existed in r0.6.1 are served under ``/_matrix/client/r0``
(and the media ones under ``/_matrix/media/r0``), as ``/versions`` advertises r0.6.1.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.harness import HomeserverTestCase, TestUser, q

TABLE = Path(__file__).resolve().parent / "fixtures" / "spec_endpoints.txt"


def spec_operations() -> list[tuple[str, str]]:
    ops = []
    for line in TABLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            method, path = line.split(" ", 1)
            ops.append((method, path))
    return ops


#: Operations whose documented answer, for a feature this server does not offer, is exactly
#: 404 M_UNRECOGNIZED.
UNSERVED_BY_SPEC: dict[tuple[str, str], str] = {
    # client-server-api §Authentication API discovery: "To discover if a homeserver supports the
    # OAuth 2.0 API, the GET /auth_metadata endpoint can be used. [...] the server SHOULD respond
    # with 404 and an M_UNRECOGNIZED error code if the corresponding API is not supported."
    ("GET", "/_matrix/client/v1/auth_metadata"): "no OAuth 2.0 API",
    # modules/sso_login.md: SSO login is a module ("This module allows a Matrix homeserver that
    # supports the legacy authentication API to authenticate users [...] via an external
    # server"); §Standard error response, M_UNRECOGNIZED: "expected to be returned with a 404
    # HTTP status code if the endpoint is not implemented". No SSO is offered here.
    ("GET", "/_matrix/client/v3/login/sso/redirect"): "no SSO",
    ("GET", "/_matrix/client/v3/login/sso/redirect/{idpId}"): "no SSO",
    # policy_server.yaml, GET /.well-known/matrix/policy_server: '"404": No policy server
    # information available.' This server is not a policy server.
    ("GET", "/.well-known/matrix/policy_server"): "not a policy server",
    # room_policy.yaml, POST /_matrix/policy/v1/sign: '"404": The server is not a Policy Server
    # [...] `M_UNRECOGNIZED` - The server is not a Policy Server.'
    ("POST", "/_matrix/policy/v1/sign"): "not a policy server",
}

#: what to put in each path parameter
PLACEHOLDERS: dict[str, str] = {
    "roomId": "!nowhere:test",
    "roomIdOrAlias": "!nowhere:test",
    "roomAlias": "#nowhere:test",
    "eventId": "$event",
    "deviceId": "NODEVICE",
    "eventType": "m.room.message",
    "type": "m.test",
    "stateKey": "key",
    "txnId": "txn1",
    "serverName": "test",
    "mediaId": "nomedia",
    "fileName": "file.txt",
    "kind": "override",
    "ruleId": "rule",
    "keyName": "displayname",
    "protocol": "irc",
    "filterId": "1",
    "tag": "u.tag",
    "version": "1",
    "sessionId": "session",
    "receiptType": "m.read",
    "relType": "m.thread",
    "networkId": "network",
    "appserviceId": "service",
    "idpId": "idp",
    "queryType": "profile",
}

#: query strings that keep a call from waiting (long polls)
QUERIES = {"/_matrix/client/v3/sync": "?timeout=0", "/_matrix/client/v3/events": "?timeout=0"}

_PARAM = re.compile(r"\{(\w+)\}")


def fill(path: str, user: TestUser) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        return q(user.user_id if name == "userId" else PLACEHOLDERS[name])

    return _PARAM.sub(value, path) + QUERIES.get(path.replace("/client/r0/", "/client/v3/"), "")


def is_unrecognized(code: int, body: Any) -> bool:
    return code in (404, 405) and isinstance(body, dict) and body.get("errcode") == "M_UNRECOGNIZED"


class SpecEndpointTests(HomeserverTestCase):
    async def call(self, method: str, path: str, user: TestUser) -> tuple[int, Any]:
        body = {} if method in ("POST", "PUT") else None
        return await self.request(method, fill(path, user), body, token=user)

    async def test_every_operation_is_routed(self) -> None:
        user = await self.register("alice")
        unrouted = []
        for method, path in spec_operations():
            code, body = await self.call(method, path, user)
            expected_unserved = (method, path) in UNSERVED_BY_SPEC
            if is_unrecognized(code, body) != expected_unserved:
                unrouted.append(f"{method} {path}: {code} {body!r:.100}")
        self.assertEqual(unrouted, [], "\n".join(unrouted))

    async def test_r0_aliases(self) -> None:
        """Each v3 operation that r0.6.1 had is served under ``r0`` too (Synapse does, and older
        clients and SyTest call it); ``/versions`` advertises r0.6.1."""
        code, versions = await self.get("/_matrix/client/versions")
        self.assertIn("r0.6.1", versions["versions"])
        user = await self.register("alice")
        unrouted = []
        for method, path, r0_path in r0_operations():
            expected_unserved = (method, path) in UNSERVED_BY_SPEC
            code, body = await self.call(method, r0_path, user)
            if is_unrecognized(code, body) != expected_unserved:
                unrouted.append(f"{method} {r0_path}: {code} {body!r:.100}")
        self.assertEqual(unrouted, [], "\n".join(unrouted))


#: v3 operations added after r0.6.1 (v1.1 and later), which r0 never had; the rest of the
#: spec's ``/_matrix/client/v3`` and ``/_matrix/media/v3`` operations were r0.6.1's.
ADDED_AFTER_R0: set[tuple[str, str]] = {
    ("POST", "/_matrix/client/v3/knock/{roomIdOrAlias}"),  # v1.1
    ("GET", "/_matrix/client/v3/login/sso/redirect/{idpId}"),  # v1.1
    ("POST", "/_matrix/client/v3/refresh"),  # v1.3
    ("PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}"),  # v1.7
    ("POST", "/_matrix/client/v3/rooms/{roomId}/report"),  # v1.13
    ("POST", "/_matrix/client/v3/users/{userId}/report"),  # v1.14
    ("DELETE", "/_matrix/client/v3/profile/{userId}/{keyName}"),  # v1.16
}


def r0_operations() -> list[tuple[str, str, str]]:
    """``(method, v3 path, r0 path)`` of each operation r0.6.1 had."""
    out = []
    for method, path in spec_operations():
        if (method, path) in ADDED_AFTER_R0:
            continue
        for v3, r0 in (("/_matrix/client/v3/", "/_matrix/client/r0/"), ("/_matrix/media/v3/", "/_matrix/media/r0/")):
            if path.startswith(v3):
                out.append((method, path, r0 + path[len(v3):]))
    return out
