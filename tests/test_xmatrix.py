"""Inbound X-Matrix authentication, server ACLs, and two homeservers talking over TLS."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IRequest
from zope.interface import implementer

from mxserver.api.http import build_app, json_body, route
from mxserver.api.resource import MatrixResource, MatrixSite
from mxserver.config import load_config_dict
from mxserver.crypto.keys import generate_signing_key, get_verify_key, key_id
from mxserver.crypto.signing import sign_json, verify_signed_json
from mxserver.errors import MatrixError
from mxserver.federation.acl import server_matches_acl
from mxserver.federation.auth import FederationAuth, MalformedAuthorization, NotXMatrix, parse_xmatrix_header
from mxserver.federation.keyring import Keyring
from mxserver.homeserver import Homeserver
from tests.harness import (
    FakeKeyClient,
    HomeserverTestCase,
    MemoryKeyStore,
    free_port,
    key_response,
    listen_tls,
    make_cert,
    postgres,
    temp_dir,
)

DAY_MS = 24 * 3600 * 1000


def xmatrix(
    origin: str, key: Any, method: str, uri: str, destination: str | None, content: Any = None, kid: str | None = None
) -> bytes:
    """An X-Matrix header value signed by ``key`` (under ``kid`` if given)."""
    signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination or "dest.test"}
    if content is not None:
        signed["content"] = content
    sign_json(signed, origin, key)
    sig = signed["signatures"][origin][key_id(key)]
    parts = [f'origin="{origin}"']
    if destination is not None:
        parts.append(f'destination="{destination}"')
    parts += [f'key="{kid or key_id(key)}"', f'sig="{sig}"']
    return ("X-Matrix " + ",".join(parts)).encode()


class HeaderParsingTests(unittest.SynchronousTestCase):
    def test_spec_example(self) -> None:
        c = parse_xmatrix_header(
            'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."'
        )
        self.assertEqual(
            (c.origin, c.destination, c.key, c.sig),
            ("origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", "ABCDEF..."),
        )

    def test_grammar(self) -> None:
        # case-insensitive scheme and names, several spaces, OWS around commas, unquoted tokens,
        # unquoted colons (older senders), escapes in quoted values, unknown parameters
        c = parse_xmatrix_header(
            'x-matrix   ORIGIN=a.example:8448 ,\tKey="ed25519:k\\"1" , extra=whatever,  sig=abc/+=, Destination="b.test"'
        )
        self.assertEqual((c.origin, c.key, c.sig, c.destination), ("a.example:8448", 'ed25519:k"1', "abc/+=", "b.test"))

    def test_destination_optional(self) -> None:
        self.assertIsNone(parse_xmatrix_header('X-Matrix origin=a,key="ed25519:1",sig="s"').destination)

    def test_malformed(self) -> None:
        for bad in [
            'X-Matrix origin="a",key="ed25519:1"',  # no sig
            'X-Matrix origin="a,key="ed25519:1",sig="s"',  # unterminated quote
            "X-Matrix origin",
            'X-Matrix origin="a" key="k",sig="s"',  # missing comma
            'X-Matrix origin="a",origin="b",key="k",sig="s"',  # duplicate
            'X-Matrix origin="",key="k",sig="s"',
            'X-Matrix =x,origin="a",key="k",sig="s"',
            'X-Matrix origin="a\\',
        ]:
            with self.assertRaises(MalformedAuthorization, msg=bad):
                parse_xmatrix_header(bad)
        with self.assertRaises(NotXMatrix):
            parse_xmatrix_header("Bearer abc")


class ServerACLTests(unittest.SynchronousTestCase):
    def test_no_acl_allows(self) -> None:
        self.assertTrue(server_matches_acl("evil.com", None))

    def test_rules_in_order(self) -> None:
        acl = {"allow": ["*"], "deny": ["evil.com", "*.evil.com"], "allow_ip_literals": False}
        self.assertTrue(server_matches_acl("good.org", acl))
        self.assertFalse(server_matches_acl("evil.com", acl))
        self.assertFalse(server_matches_acl("evil.com:8448", acl))  # ports are not considered
        self.assertFalse(server_matches_acl("sub.EVIL.com", acl))  # case-insensitive
        self.assertTrue(server_matches_acl("notevil.com", acl))
        self.assertFalse(server_matches_acl("1.2.3.4", acl))
        self.assertFalse(server_matches_acl("[::1]:8448", acl))
        self.assertTrue(server_matches_acl("1.2.3.4:80", {"allow": ["*"]}))  # default: IP literals allowed
        self.assertTrue(
            server_matches_acl("1.2.3.4", {"allow": ["1.2.3.*"], "allow_ip_literals": "no"})
        )  # non-bool = true

    def test_empty_or_missing_allow_denies_everyone(self) -> None:
        self.assertFalse(server_matches_acl("good.org", {}))
        self.assertFalse(server_matches_acl("good.org", {"allow": [], "deny": []}))
        self.assertFalse(server_matches_acl("good.org", {"allow": "*"}))  # not a list: empty

    def test_globs(self) -> None:
        acl = {"allow": ["matrix.?rg", "*.example.com", 7]}
        self.assertTrue(server_matches_acl("matrix.org", acl))
        self.assertFalse(server_matches_acl("matrix.oorg", acl))
        self.assertTrue(server_matches_acl("a.b.example.com", acl))
        self.assertFalse(server_matches_acl("example.com", acl))
        self.assertFalse(server_matches_acl("a.example.com.evil", acl))
        self.assertTrue(server_matches_acl("x(y).test", {"allow": ["x(y).*"]}))  # regex characters are literal


class _Req:
    def __init__(self, method: bytes, uri: bytes, auth: list[bytes]) -> None:
        self.method = method
        self.uri = uri
        self.requestHeaders = Headers({b"Authorization": auth} if auth else {})


class AuthenticateRequestTests(unittest.TestCase):
    """authenticate_request against a fake request, with the remote's keys from a fake client."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.remote_key = generate_signing_key("r1")
        self.fake = FakeKeyClient()
        self.fake.answers[("origin.test", "/_matrix/key/v2/server")] = key_response(
            "origin.test", self.remote_key, int(self.clock.seconds() * 1000) + DAY_MS
        )
        self.keyring = Keyring("dest.test", generate_signing_key("d1"), MemoryKeyStore(), self.fake, self.clock)
        self.auth = FederationAuth("dest.test", self.keyring, self.clock)

    async def check(self, req: _Req, content: Any = None) -> MatrixError:
        with self.assertRaises(MatrixError) as cm:
            await self.auth.authenticate_request(req, content)
        return cm.exception

    async def test_valid_get_and_put(self) -> None:
        uri = "/_matrix/federation/v1/event/%24x?a=b"
        req = _Req(b"GET", uri.encode(), [xmatrix("origin.test", self.remote_key, "GET", uri, "dest.test")])
        self.assertEqual(await self.auth.authenticate_request(req, None), "origin.test")
        content = {"edus": [], "pdus": [{"x": "\u00e9"}]}
        req = _Req(b"PUT", b"/t", [xmatrix("origin.test", self.remote_key, "PUT", "/t", "dest.test", content)])
        self.assertEqual(await self.auth.authenticate_request(req, content), "origin.test")

    async def test_destination_may_be_absent(self) -> None:
        req = _Req(b"GET", b"/t", [xmatrix("origin.test", self.remote_key, "GET", "/t", None)])
        self.assertEqual(await self.auth.authenticate_request(req, None), "origin.test")

    async def test_one_of_several_headers_is_x_matrix(self) -> None:
        req = _Req(b"GET", b"/t", [b"Bearer foo", xmatrix("origin.test", self.remote_key, "GET", "/t", "dest.test")])
        self.assertEqual(await self.auth.authenticate_request(req, None), "origin.test")

    async def test_missing_header(self) -> None:
        e = await self.check(_Req(b"GET", b"/t", []))
        self.assertEqual((e.code, e.errcode), (401, "M_UNAUTHORIZED"))
        self.assertIn("Missing X-Matrix", e.msg)
        e = await self.check(_Req(b"GET", b"/t", [b"Bearer abc"]))
        self.assertIn("Missing X-Matrix", e.msg)

    async def test_malformed_header(self) -> None:
        e = await self.check(_Req(b"GET", b"/t", [b'X-Matrix origin="origin.test",key="ed25519:r1"']))
        self.assertEqual((e.code, e.errcode), (401, "M_UNAUTHORIZED"))
        self.assertIn("Malformed X-Matrix", e.msg)
        e = await self.check(_Req(b"GET", b"/t", [b'X-Matrix origin="bad name!",key="ed25519:r1",sig="x"']))
        self.assertIn("not a valid server name", e.msg)
        # a non-numeric port (SyTest "Non-numeric ports in server names are rejected"): 400
        e = await self.check(_Req(b"GET", b"/t", [b'X-Matrix origin="localhost:http",key="ed25519:r1",sig="x"']))
        self.assertEqual((e.code, e.errcode), (400, "M_UNAUTHORIZED"))
        self.assertIn("not a valid server name", e.msg)
        e = await self.check(_Req(b"GET", b"/t", [b'X-Matrix origin="origin.test",key="rsa:1",sig="x"']))
        self.assertIn("unsupported algorithm", e.msg)

    async def test_wrong_destination(self) -> None:
        req = _Req(b"GET", b"/t", [xmatrix("origin.test", self.remote_key, "GET", "/t", "other.test")])
        e = await self.check(req)
        self.assertEqual((e.code, e.errcode), (401, "M_UNAUTHORIZED"))
        self.assertIn("'other.test' is not this server (dest.test)", e.msg)
        self.assertEqual(self.fake.calls, [])  # refused before any key fetch

    async def test_forged_signature(self) -> None:
        forger = generate_signing_key("r1")  # same key ID, different key
        e = await self.check(_Req(b"GET", b"/t", [xmatrix("origin.test", forger, "GET", "/t", "dest.test")]))
        self.assertEqual((e.code, e.errcode), (401, "M_UNAUTHORIZED"))
        self.assertIn("bad signature from origin.test", e.msg)

    async def test_tampered_request(self) -> None:
        header = xmatrix("origin.test", self.remote_key, "PUT", "/t", "dest.test", {"a": 1})
        for req, content in [
            (_Req(b"PUT", b"/t", [header]), {"a": 2}),  # content
            (_Req(b"PUT", b"/t?x=1", [header]), {"a": 1}),  # uri
            (_Req(b"POST", b"/t", [header]), {"a": 1}),  # method
            (_Req(b"PUT", b"/t", [header]), None),  # body dropped
        ]:
            e = await self.check(req, content)
            self.assertEqual(e.code, 401)

    async def test_unknown_key(self) -> None:
        header = xmatrix("origin.test", generate_signing_key("zz"), "GET", "/t", "dest.test")
        e = await self.check(_Req(b"GET", b"/t", [header]))
        self.assertEqual((e.code, e.errcode), (401, "M_UNAUTHORIZED"))
        self.assertIn("no key of origin.test among ed25519:zz", e.msg)

    async def test_unreachable_origin(self) -> None:
        header = xmatrix("gone.test", self.remote_key, "GET", "/t", "dest.test")
        e = await self.check(_Req(b"GET", b"/t", [header]))
        self.assertEqual(e.code, 401)
        self.assertIn("unreachable", e.msg)

    async def test_expired_key(self) -> None:
        self.fake.answers[("origin.test", "/_matrix/key/v2/server")] = key_response(
            "origin.test", self.remote_key, int(self.clock.seconds() * 1000) - 1
        )
        e = await self.check(_Req(b"GET", b"/t", [xmatrix("origin.test", self.remote_key, "GET", "/t", "dest.test")]))
        self.assertEqual(e.code, 401)

    async def test_different_origins(self) -> None:
        a = xmatrix("origin.test", self.remote_key, "GET", "/t", "dest.test")
        b = xmatrix("other.test", self.remote_key, "GET", "/t", "dest.test")
        e = await self.check(_Req(b"GET", b"/t", [a, b]))
        self.assertIn("different origins", e.msg)

    async def test_federation_disabled(self) -> None:
        auth = FederationAuth("dest.test", self.keyring, self.clock, enabled=False)
        with self.assertRaises(MatrixError) as cm:
            await auth.authenticate_request(_Req(b"GET", b"/t", []), None)
        self.assertEqual((cm.exception.code, cm.exception.errcode), (403, "M_FORBIDDEN"))


class AuthProbe:
    """A test-only federation route that authenticates its caller."""

    def __init__(self, auth: FederationAuth) -> None:
        self.auth = auth

    @route("GET", "/_matrix/federation/v1/mxtest/probe/{thing}")
    async def probe_get(self, request: IRequest, thing: str) -> dict:
        origin = await self.auth.authenticate_request(request, None)
        return {"origin": origin, "thing": thing}

    @route("PUT", "/_matrix/federation/v1/mxtest/probe/{thing}")
    async def probe_put(self, request: IRequest, thing: str) -> dict:
        content = json_body(request)
        origin = await self.auth.authenticate_request(request, content)
        return {"origin": origin, "content": content}


@implementer(IPolicyForHTTPS)
class _NoVerify:
    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from mxserver.federation.tls import FederationTLSPolicy

        return FederationTLSPolicy(verify=False).creator_for(hostname.decode())


LOOPBACK = {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}


class TwoServerTests(HomeserverTestCase):
    """Server A (this test's) and server B, both named 127.0.0.1:PORT, federating over TLS."""

    def make_config(self):  # type: ignore[no-untyped-def]
        self.port_a = free_port()
        self.server_name = f"127.0.0.1:{self.port_a}"
        self.cert, self.key = make_cert(self.data_dir)
        self.config_overrides = {
            "tls": {"certificate_path": self.cert, "private_key_path": self.key},
            "listeners": [
                {"host": "127.0.0.1", "port": 0, "resources": ["client", "federation"]},
                {"host": "127.0.0.1", "port": self.port_a, "resources": ["federation"], "tls": True},
            ],
            "federation": LOOPBACK,
        }
        return super().make_config()

    async def _set_up(self) -> None:
        await super()._set_up()
        self.port_b = free_port()
        self.name_b = f"127.0.0.1:{self.port_b}"
        conf: dict[str, Any] = {
            "server_name": self.name_b,
            "data_dir": temp_dir(self),
            "listeners": [],
            "federation": LOOPBACK,
            "log": {"level": "WARNING"},
        }
        if self.backend == "postgres":
            cluster = postgres.cluster()
            assert cluster is not None
            dsn = cluster.new_database()
            self.addCleanup(cluster.drop_database, dsn)
            conf["database"] = {"backend": "postgres", "dsn": dsn}
        self.hs_b = Homeserver(load_config_dict(conf), reactor)
        self.hs_b.startService()
        self.addCleanup(self.hs_b.stopService)
        await self.hs_b.when_ready()
        app = build_app([*self.hs_b.servlets("federation"), AuthProbe(self.hs_b.federation_auth)])
        site = MatrixSite(
            MatrixResource({"federation": app.resource()}), max_json_body=1 << 20, max_upload_body=1 << 20
        )
        port = listen_tls(site, self.cert, self.key, self.port_b)
        self.addCleanup(port.stopListening)
        self.raw_pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.raw_pool.closeCachedConnections)

    def now_ms(self) -> int:
        return int(reactor.seconds() * 1000)

    async def raw(self, method: str, path: str, auth: list[bytes], content: Any = None) -> tuple[int, Any]:
        """A request to B with hand-made Authorization headers."""
        agent = Agent(reactor, contextFactory=_NoVerify(), pool=self.raw_pool)
        headers = {"Authorization": auth} if auth else {}
        data = json.dumps(content).encode() if content is not None else None
        resp = await treq.request(
            method, f"https://127.0.0.1:{self.port_b}{path}", headers=headers, data=data, agent=agent
        )
        return resp.code, json.loads(await resp.content())

    async def test_signed_requests_round_trip(self) -> None:
        client = self.hs.federation_client
        body = await client.get_json(self.name_b, "/_matrix/federation/v1/mxtest/probe/%24ev%2Fid", {"q": "a b"})
        self.assertEqual(body, {"origin": self.server_name, "thing": "$ev/id"})
        body = await client.put_json(self.name_b, "/_matrix/federation/v1/mxtest/probe/t", {"pdus": [], "x": "\u2603"})
        self.assertEqual(body, {"origin": self.server_name, "content": {"pdus": [], "x": "\u2603"}})
        # B fetched A's key over TLS (once) and keeps it in its database
        rows = await self.hs_b.server_keys.get_server_keys(self.server_name)
        self.assertEqual([(r.key_id, r.from_server) for r in rows], [(self.hs.signing_key_id, self.server_name)])

    async def test_a_fetches_b_keys(self) -> None:
        keys = await self.hs.keyring.get_verify_keys(self.name_b, [self.hs_b.signing_key_id], self.now_ms())
        self.assertEqual(bytes(keys[self.hs_b.signing_key_id]), bytes(get_verify_key(self.hs_b.signing_key)))

    async def test_rejected_requests(self) -> None:
        a, key = self.server_name, self.hs.signing_key
        path = "/_matrix/federation/v1/mxtest/probe/x"
        cases = {
            "missing": ([], "Missing X-Matrix"),
            "forged": ([xmatrix(a, generate_signing_key(key.version), "GET", path, self.name_b)], "bad signature"),
            "wrong destination": ([xmatrix(a, key, "GET", path, "elsewhere.test")], "is not this server"),
            "unknown key": ([xmatrix(a, generate_signing_key("nope"), "GET", path, self.name_b)], "no key of"),
            "other path": ([xmatrix(a, key, "GET", path + "?admin=1", self.name_b)], "bad signature"),
        }
        for name, (auth, reason) in cases.items():
            code, body = await self.raw("GET", path, auth)
            self.assertEqual((code, body["errcode"]), (401, "M_UNAUTHORIZED"), name)
            self.assertIn(reason, body["error"], name)
        code, body = await self.raw("PUT", path, [xmatrix(a, key, "PUT", path, self.name_b, {"a": 1})], {"a": 2})
        self.assertEqual(code, 401)
        code, body = await self.raw("PUT", path, [xmatrix(a, key, "PUT", path, self.name_b, {"a": 1})], {"a": 1})
        self.assertEqual((code, body["origin"]), (200, a))

    async def test_notary_signs_with_both_keys(self) -> None:
        client = self.hs.federation_client
        for answer in [
            await client.post_json(
                self.name_b, "/_matrix/key/v2/query", {"server_keys": {self.server_name: {}}}, authenticate=False
            ),
            await client.get_json(self.name_b, f"/_matrix/key/v2/query/{self.server_name}", authenticate=False),
        ]:
            (item,) = answer["server_keys"]
            verify_signed_json(item, self.server_name, get_verify_key(self.hs.signing_key))
            verify_signed_json(item, self.name_b, get_verify_key(self.hs_b.signing_key))
        # A checks B's notary signature with B's keys, fetched from B
        await self.hs.keyring.verify_json_for_server(self.name_b, item, self.now_ms())

    async def test_blocked_without_whitelist(self) -> None:
        from mxserver.config import FederationConfig
        from mxserver.federation.client import FederationClient, RequestFailed

        config = FederationConfig(verify_tls=False)  # the default blacklist, no whitelist
        client = FederationClient(reactor, reactor, config, self.server_name, self.hs.signing_key)
        client.startService()
        self.addCleanup(client.stopService)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(self.name_b, "/_matrix/federation/v1/version")
        self.assertIn("IP address 127.0.0.1 is blocked by federation.ip_range_blacklist", str(cm.exception))
