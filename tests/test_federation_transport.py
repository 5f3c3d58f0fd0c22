"""Outbound federation: discovery, the IP filter, TLS, X-Matrix signing, bounds and errors."""

from __future__ import annotations

import email.utils
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import DNSLookupError
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web import server
from twisted.web.http_headers import Headers

from mxserver.config import FederationConfig
from mxserver.crypto.keys import generate_signing_key, get_verify_key
from mxserver.crypto.signing import verify_signed_json
from mxserver.federation.auth import parse_xmatrix_header
from mxserver.federation.client import FederationClient, FederationError, RequestFailed, encode_query
from mxserver.federation.discovery import (
    WELL_KNOWN_DEFAULT_CACHE_S,
    WELL_KNOWN_MAX_CACHE_S,
    WELL_KNOWN_MIN_CACHE_S,
    ResolvedServer,
    cache_period,
)
from mxserver.federation.ip_filter import IPRangeFilter
from tests.harness import FakeDNS, FakeNameResolver, ScriptedServer, listen_tls, make_cert, temp_dir

LOOPBACK_OK = {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}
WK = b"/.well-known/matrix/server"


class IPRangeFilterTests(unittest.SynchronousTestCase):
    def test_default_blacklist(self) -> None:
        f = IPRangeFilter(FederationConfig().ip_range_blacklist)
        for blocked in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fe80::1", "fd00::1", "0.0.0.0"]:
            self.assertTrue(f.is_blocked(blocked), blocked)
        for ok in ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"]:
            self.assertFalse(f.is_blocked(ok), ok)

    def test_ipv4_mapped_ipv6_is_judged_as_ipv4(self) -> None:
        f = IPRangeFilter(FederationConfig().ip_range_blacklist)
        self.assertTrue(f.is_blocked("::ffff:127.0.0.1"))
        self.assertFalse(f.is_blocked("::ffff:8.8.8.8"))

    def test_whitelist_punches_holes(self) -> None:
        f = IPRangeFilter(FederationConfig().ip_range_blacklist, ["127.0.0.0/8"])
        self.assertFalse(f.is_blocked("127.0.0.1"))
        self.assertTrue(f.is_blocked("::1"))
        self.assertTrue(f.is_blocked("10.0.0.1"))

    def test_allowed_reports_all_blocked(self) -> None:
        f = IPRangeFilter(["10.0.0.0/8"])
        self.assertEqual(f.allowed("h", ["10.0.0.1", "8.8.8.8"]), ["8.8.8.8"])
        with self.assertRaises(ConnectionError) as cm:
            f.allowed("internal.example", ["10.0.0.1"])
        self.assertIn(
            "internal.example (resolved to 10.0.0.1) is blocked by federation.ip_range_blacklist", str(cm.exception)
        )


class CachePeriodTests(unittest.SynchronousTestCase):
    def _headers(self, **kv: str) -> Headers:
        return Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in kv.items()})

    def test_default_min_max(self) -> None:
        self.assertEqual(cache_period(Headers(), 0), WELL_KNOWN_DEFAULT_CACHE_S)
        self.assertEqual(cache_period(self._headers(cache_control="max-age=3600"), 0), 3600)
        self.assertEqual(cache_period(self._headers(cache_control="public, max-age=10"), 0), WELL_KNOWN_MIN_CACHE_S)
        self.assertEqual(cache_period(self._headers(cache_control="max-age=99999999"), 0), WELL_KNOWN_MAX_CACHE_S)
        self.assertEqual(cache_period(self._headers(cache_control="no-store"), 0), WELL_KNOWN_MIN_CACHE_S)

    def test_expires(self) -> None:
        now = 1_700_000_000
        expires = email.utils.formatdate(now + 7200, usegmt=True)
        self.assertEqual(cache_period(self._headers(expires=expires), now), 7200)
        self.assertEqual(cache_period(self._headers(expires="garbage"), now), WELL_KNOWN_MIN_CACHE_S)
        # Cache-Control wins over Expires
        self.assertEqual(cache_period(self._headers(expires=expires, cache_control="max-age=600"), now), 600)


class _ClientTestCase(unittest.TestCase):
    """A FederationClient with fake DNS, and HTTPS test servers on 127.0.0.1."""

    def make_client(
        self,
        clock: Any = None,
        name_table: dict[str, Any] | None = None,
        srv: dict[str, Any] | None = None,
        **config: Any,
    ) -> FederationClient:
        self.names = FakeNameResolver(name_table)
        self.dns = FakeDNS(srv)
        self.signing_key = generate_signing_key("test1")
        client = FederationClient(
            reactor,
            clock or reactor,
            FederationConfig(**config),
            "origin.test",
            self.signing_key,
            dns_resolver=self.dns,
            name_resolver=self.names,
        )
        client.startService()
        self.addCleanup(client.stopService)
        return client

    def serve(self, site_resource: Any = None, cert: tuple[str, str] | None = None) -> tuple[ScriptedServer, int]:
        res = site_resource or ScriptedServer()
        cert_path, key_path = cert or make_cert(temp_dir(self))
        port = listen_tls(server.Site(res), cert_path, key_path)
        self.addCleanup(port.stopListening)
        return res, port.getHost().port


class DiscoveryTests(_ClientTestCase):
    async def test_ip_literal_with_and_without_port(self) -> None:
        d = self.make_client().discovery
        self.assertEqual(
            await d.resolve("1.2.3.4:5678"),
            ResolvedServer("1.2.3.4:5678", "1.2.3.4:5678", "1.2.3.4", (("1.2.3.4", 5678),)),
        )
        self.assertEqual(
            await d.resolve("1.2.3.4"), ResolvedServer("1.2.3.4", "1.2.3.4", "1.2.3.4", (("1.2.3.4", 8448),))
        )
        r = await d.resolve("[2001:db8::1]:443")
        self.assertEqual(
            (r.host, r.port, r.host_header, r.tls_name), ("2001:db8::1", 443, "[2001:db8::1]:443", "2001:db8::1")
        )
        self.assertEqual(self.dns.lookups, [])

    async def test_hostname_with_port_skips_well_known_and_srv(self) -> None:
        d = self.make_client().discovery
        r = await d.resolve("matrix.example.org:1234")
        self.assertEqual(
            (r.host, r.port, r.host_header, r.tls_name),
            ("matrix.example.org", 1234, "matrix.example.org:1234", "matrix.example.org"),
        )
        self.assertEqual(self.dns.lookups, [])
        self.assertEqual(self.names.lookups, [])

    async def test_invalid_server_name(self) -> None:
        client = self.make_client(**LOOPBACK_OK)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json("bad name!", "/x")
        self.assertIn("not a valid server name", cm.exception.msg)

    async def _well_known_setup(
        self, answer: Any, srv: dict[str, Any] | None = None, clock: Any = None, **config: Any
    ) -> Any:
        wk, port = self.serve()
        wk.routes[WK] = answer
        client = self.make_client(
            clock=clock,
            name_table={"example.test": {443: ("127.0.0.1", port)}},
            srv=srv,
            **{**LOOPBACK_OK, **config},
        )
        return wk, client.discovery

    async def test_well_known_delegation_with_port(self) -> None:
        wk, d = await self._well_known_setup((200, {"m.server": "target.test:1234"}))
        r = await d.resolve("example.test")
        self.assertEqual(
            r,
            ResolvedServer(
                "example.test", "target.test:1234", "target.test", (("target.test", 1234),), "target.test:1234"
            ),
        )
        self.assertEqual(self.dns.lookups, [])  # explicit port: no SRV
        self.assertEqual(wk.requests[0].headers[b"host"], [b"example.test"])

    async def test_well_known_delegation_to_ip_literal(self) -> None:
        _, d = await self._well_known_setup((200, {"m.server": "[2001:db8::5]"}))
        r = await d.resolve("example.test")
        self.assertEqual(
            (r.host, r.port, r.host_header, r.tls_name), ("2001:db8::5", 8448, "[2001:db8::5]", "2001:db8::5")
        )

    async def test_well_known_delegation_then_srv(self) -> None:
        srv = {
            "_matrix-fed._tcp.target.test": [(10, 0, 9000, "b.target.test"), (5, 0, 9001, "a.target.test")],
            "_matrix._tcp.target.test": [(1, 0, 1, "legacy.target.test")],
        }
        _, d = await self._well_known_setup((200, {"m.server": "target.test"}), srv=srv)
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("a.target.test", 9001), ("b.target.test", 9000)))
        self.assertEqual((r.host_header, r.tls_name, r.delegated_name), ("target.test", "target.test", "target.test"))
        self.assertEqual(self.dns.lookups, ["_matrix-fed._tcp.target.test"])

    async def test_well_known_delegation_deprecated_srv_then_default_port(self) -> None:
        srv = {"_matrix._tcp.target.test": [(1, 0, 7000, "legacy.target.test.")]}
        _, d = await self._well_known_setup((200, {"m.server": "target.test"}), srv=srv)
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("legacy.target.test", 7000),))
        self.assertEqual(self.dns.lookups, ["_matrix-fed._tcp.target.test", "_matrix._tcp.target.test"])
        self.dns.srv.clear()
        d._well_known.clear()
        d._srv_cache.clear()
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("target.test", 8448),))

    async def test_no_well_known_srv_on_server_name(self) -> None:
        srv = {"_matrix-fed._tcp.example.test": [(0, 0, 8888, "fed.example.test")]}
        _, d = await self._well_known_setup((404, {"errcode": "M_NOT_FOUND", "error": "x"}), srv=srv)
        r = await d.resolve("example.test")
        self.assertEqual(
            r, ResolvedServer("example.test", "example.test", "example.test", (("fed.example.test", 8888),))
        )

    async def test_srv_answers_cached_for_their_ttl(self) -> None:
        clock = Clock()
        srv = {"_matrix-fed._tcp.example.test": [(0, 0, 8888, "fed.example.test")]}  # TTL 60 s
        _, d = await self._well_known_setup((404, b""), srv=srv, clock=clock)
        for _ in range(3):
            self.assertEqual((await d.resolve("example.test")).targets, (("fed.example.test", 8888),))
        self.assertEqual(self.dns.lookups, ["_matrix-fed._tcp.example.test"])
        clock.advance(61)
        self.dns.srv["_matrix-fed._tcp.example.test"] = [(0, 0, 9999, "new.example.test")]
        self.assertEqual((await d.resolve("example.test")).targets, (("new.example.test", 9999),))
        self.assertEqual(len(self.dns.lookups), 2)

    async def test_no_well_known_no_srv(self) -> None:
        _, d = await self._well_known_setup((404, b"nope"))
        r = await d.resolve("example.test")
        self.assertEqual(r, ResolvedServer("example.test", "example.test", "example.test", (("example.test", 8448),)))
        self.assertEqual(self.dns.lookups, ["_matrix-fed._tcp.example.test", "_matrix._tcp.example.test"])

    async def test_invalid_well_known_answers_fall_back(self) -> None:
        for answer in [
            (200, b"not json"),
            (200, ["m.server"]),
            (200, {"m.server": 12}),
            (200, {"m.server": "bad host name!"}),
            (200, {"m.server": "host:99999"}),
            (200, {"other": "x"}),
            (500, {"m.server": "target.test"}),
            (200, b"{" + b" " * 100_000 + b"}"),  # too big
        ]:
            _, d = await self._well_known_setup(answer)
            r = await d.resolve("example.test")
            self.assertEqual(r.targets, (("example.test", 8448),), repr(answer)[:80])

    async def test_well_known_redirect_is_followed(self) -> None:
        def redirect(request: Any) -> Any:
            request.setHeader(b"Location", b"/elsewhere")
            return (302, b"")

        wk, d = await self._well_known_setup(redirect)
        wk.routes[b"/elsewhere"] = (200, {"m.server": "target.test:443"})
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("target.test", 443),))

    async def test_well_known_redirect_loop_is_an_error(self) -> None:
        def loop(request: Any) -> Any:
            request.setHeader(b"Location", b"/.well-known/matrix/server")
            return (302, b"")

        wk, d = await self._well_known_setup(loop)
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("example.test", 8448),))
        self.assertLessEqual(wk.hits(WK), 6)

    async def test_well_known_cached_per_headers(self) -> None:
        clock = Clock()
        clock.advance(1_000_000)
        wk, d = await self._well_known_setup(
            (200, {"m.server": "target.test:1"}, {b"Cache-Control": b"max-age=3600"}), clock=clock
        )
        for _ in range(3):
            await d.resolve("example.test")
        self.assertEqual(wk.hits(WK), 1)
        clock.advance(3599)
        await d.resolve("example.test")
        self.assertEqual(wk.hits(WK), 1)
        clock.advance(2)
        wk.routes[WK] = (200, {"m.server": "other.test:2"})
        self.assertEqual((await d.resolve("example.test")).targets, (("other.test", 2),))
        self.assertEqual(wk.hits(WK), 2)

    async def test_well_known_errors_cached_for_an_hour(self) -> None:
        clock = Clock()
        wk, d = await self._well_known_setup((404, b""), clock=clock)
        await d.resolve("example.test")
        clock.advance(3500)
        await d.resolve("example.test")
        self.assertEqual(wk.hits(WK), 1)
        clock.advance(200)
        wk.routes[WK] = (200, {"m.server": "target.test:1"})
        self.assertEqual((await d.resolve("example.test")).targets, (("target.test", 1),))

    async def test_well_known_connection_failure_backs_off_and_keeps_last_good(self) -> None:
        clock = Clock()
        wk, d = await self._well_known_setup(
            (200, {"m.server": "target.test:1"}, {b"Cache-Control": b"max-age=600"}), clock=clock
        )
        await d.resolve("example.test")

        # the server breaks: connections are dropped
        def drop(request: Any) -> Any:
            request.transport.abortConnection()
            return server.NOT_DONE_YET

        wk.routes[WK] = drop
        clock.advance(601)
        self.assertEqual((await d.resolve("example.test")).targets, (("target.test", 1),))  # grace
        clock.advance(3600 + 1)
        self.assertEqual((await d.resolve("example.test")).targets, (("example.test", 8448),))
        entry = d._well_known["example.test"]
        self.assertEqual(entry.failures, 2)

    async def test_concurrent_resolves_share_one_fetch(self) -> None:
        wk, d = await self._well_known_setup((200, {"m.server": "target.test:1"}))
        from twisted.internet.defer import ensureDeferred, gatherResults

        results = await gatherResults([ensureDeferred(d.resolve("example.test")) for _ in range(5)])
        self.assertEqual({r.targets for r in results}, {(("target.test", 1),)})
        self.assertEqual(wk.hits(WK), 1)

    async def test_well_known_tls_verified_when_enabled(self) -> None:
        # verify_tls on and a self-signed certificate: .well-known fails (and falls back)
        wk, d = await self._well_known_setup((200, {"m.server": "target.test:1"}), verify_tls=True)
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("example.test", 8448),))

    async def test_well_known_fetch_is_ip_filtered(self) -> None:
        wk, d = await self._well_known_setup((200, {"m.server": "target.test:1"}), ip_range_whitelist=[])
        r = await d.resolve("example.test")
        self.assertEqual(r.targets, (("example.test", 8448),))
        self.assertEqual(wk.hits(WK), 0)


class ClientTests(_ClientTestCase):
    def setUp(self) -> None:
        self.remote, self.port = self.serve()
        self.dest = f"127.0.0.1:{self.port}"

    async def test_signed_get_with_query(self) -> None:
        self.remote.routes[b"/_matrix/federation/v1/thing/%24ev%2Fx"] = (200, {"ok": True})
        client = self.make_client(**LOOPBACK_OK)
        body = await client.get_json(
            self.dest, "/_matrix/federation/v1/thing/%24ev%2Fx", {"a": "b c", "l": ["1", 2], "t": True}
        )
        self.assertEqual(body, {"ok": True})
        req = self.remote.requests[0]
        self.assertEqual(req.uri, b"/_matrix/federation/v1/thing/%24ev%2Fx?a=b%20c&l=1&l=2&t=true")
        self.assertEqual(req.headers[b"host"], [self.dest.encode()])
        creds = parse_xmatrix_header(req.headers[b"authorization"][0].decode())
        self.assertEqual((creds.origin, creds.destination, creds.key), ("origin.test", self.dest, "ed25519:test1"))
        signed = {
            "method": "GET",
            "uri": req.uri.decode(),
            "origin": "origin.test",
            "destination": self.dest,
            "signatures": {"origin.test": {creds.key: creds.sig}},
        }
        verify_signed_json(signed, "origin.test", get_verify_key(self.signing_key))

    async def test_signed_put_and_post_cover_the_body(self) -> None:
        self.remote.routes[b"/p"] = (200, {"done": 1})
        client = self.make_client(**LOOPBACK_OK)
        content = {"pdus": [], "emoji": "\u2603", "n": 1}
        for method, call in (("PUT", client.put_json), ("POST", client.post_json)):
            self.assertEqual(await call(self.dest, "/p", content), {"done": 1})
            req = self.remote.requests[-1]
            self.assertEqual(req.method, method.encode())
            self.assertEqual(req.headers[b"content-type"], [b"application/json"])
            creds = parse_xmatrix_header(req.headers[b"authorization"][0].decode())
            import json

            signed = {
                "method": method,
                "uri": "/p",
                "origin": "origin.test",
                "destination": self.dest,
                "content": json.loads(req.body),
                "signatures": {"origin.test": {creds.key: creds.sig}},
            }
            verify_signed_json(signed, "origin.test", get_verify_key(self.signing_key))
            self.assertEqual(json.loads(req.body), content)

    async def test_unauthenticated_request_has_no_header(self) -> None:
        self.remote.routes[b"/_matrix/key/v2/server"] = (200, {})
        client = self.make_client(**LOOPBACK_OK)
        await client.get_json(self.dest, "/_matrix/key/v2/server", authenticate=False)
        self.assertNotIn(b"authorization", self.remote.requests[0].headers)

    async def test_loopback_blocked_by_default(self) -> None:
        self.remote.routes[b"/x"] = (200, {})
        client = self.make_client(verify_tls=False)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(self.dest, "/x")
        self.assertIn("IP address 127.0.0.1 is blocked by federation.ip_range_blacklist", cm.exception.msg)
        self.assertEqual(cm.exception.code, 502)
        self.assertEqual(self.remote.requests, [])

    async def test_hostname_resolving_to_blocked_address(self) -> None:
        client = self.make_client(name_table={"sneaky.test": ["127.0.0.1", "10.0.0.1"]}, verify_tls=False)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(f"sneaky.test:{self.port}", "/x")
        self.assertIn("sneaky.test (resolved to 127.0.0.1, 10.0.0.1) is blocked", cm.exception.msg)
        self.assertEqual(self.remote.requests, [])

    async def test_unresolvable_host_names_fail_as_dns_errors(self) -> None:
        """Names DNS cannot hold never reach the system resolver (whose thread would raise, never answer)."""
        client = self.make_client(**LOOPBACK_OK)
        client.connector.name_resolver = None  # the reactor's real getaddrinfo resolver
        for host in ("a..example.org", "x" * 64 + ".example.org", ".example.org", "x." * 130 + "org"):
            with self.assertRaises(DNSLookupError, msg=host):
                await client.connector.addresses(host, 443)
            with self.assertRaises(RequestFailed, msg=host):
                await client.get_json(f"{host}:{self.port}", "/x")
        self.assertEqual(self.remote.requests, [])

    async def test_ipv4_mapped_literal_blocked(self) -> None:
        client = self.make_client(verify_tls=False)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(f"[::ffff:127.0.0.1]:{self.port}", "/x")
        self.assertIn("blocked", cm.exception.msg)

    async def test_srv_target_filtered_then_next_target(self) -> None:
        self.remote.routes[b"/x"] = (200, {"via": "srv"})
        srv = {"_matrix-fed._tcp.srv.test": [(1, 0, 1, "internal.test"), (2, 0, self.port, "good.test")]}
        client = self.make_client(
            name_table={"internal.test": ["10.0.0.7"], "good.test": ["127.0.0.1"]}, srv=srv, **LOOPBACK_OK
        )
        client.discovery._well_known["srv.test"] = _no_delegation()
        self.assertEqual(await client.get_json("srv.test", "/x"), {"via": "srv"})
        self.assertEqual(self.remote.requests[0].headers[b"host"], [b"srv.test"])

    async def test_remote_error_is_federation_error(self) -> None:
        self.remote.routes[b"/x"] = (404, {"errcode": "M_NOT_FOUND", "error": "no such event"})
        self.remote.routes[b"/y"] = (500, b"<html>oops</html>")
        client = self.make_client(**LOOPBACK_OK)
        with self.assertRaises(FederationError) as cm:
            await client.get_json(self.dest, "/x")
        e = cm.exception
        self.assertNotIsInstance(e, RequestFailed)
        self.assertEqual((e.code, e.errcode, e.msg, e.destination), (404, "M_NOT_FOUND", "no such event", self.dest))
        self.assertEqual(e.to_matrix_error().code, 404)
        with self.assertRaises(FederationError) as cm:
            await client.get_json(self.dest, "/y")
        self.assertEqual((cm.exception.code, cm.exception.errcode), (500, "M_UNKNOWN"))
        self.assertEqual(cm.exception.to_matrix_error().code, 502)

    async def test_bad_json_answers(self) -> None:
        self.remote.routes[b"/list"] = (200, [1, 2])
        self.remote.routes[b"/text"] = (200, b"hello")
        self.remote.routes[b"/nan"] = (200, b'{"a": NaN}')
        client = self.make_client(**LOOPBACK_OK)
        for path, why in (("/list", "not a JSON object"), ("/text", "not JSON"), ("/nan", "not JSON")):
            with self.assertRaises(RequestFailed) as cm:
                await client.get_json(self.dest, path)
            self.assertIn(why, cm.exception.msg)

    async def test_response_size_bound(self) -> None:
        self.remote.routes[b"/big"] = (200, b'{"a": "' + b"x" * 300_000 + b'"}')

        def chunked(request: Any) -> Any:
            request.setHeader(b"Content-Type", b"application/json")
            request.write(b'{"a": "')
            for _ in range(30):
                request.write(b"x" * 10_000)
            request.write(b'"}')
            request.finish()
            return server.NOT_DONE_YET

        self.remote.routes[b"/chunked"] = chunked
        client = self.make_client(**LOOPBACK_OK)
        for path in ("/big", "/chunked"):
            with self.assertRaises(RequestFailed) as cm:
                await client.get_json(self.dest, path, max_size=100_000)
            self.assertIn("exceeds 100000 bytes", cm.exception.msg)
            self.assertEqual(len((await client.get_json(self.dest, path, max_size=1_000_000))["a"]), 300_000)

    async def test_timeout(self) -> None:
        self.remote.routes[b"/hang"] = lambda request: server.NOT_DONE_YET
        client = self.make_client(**LOOPBACK_OK)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(self.dest, "/hang", timeout=0.3)
        self.assertEqual(cm.exception.code, 504)
        self.assertIn("timed out", cm.exception.msg)

    async def test_connection_refused(self) -> None:
        from tests.harness import free_port

        client = self.make_client(**LOOPBACK_OK)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(f"127.0.0.1:{free_port()}", "/x")
        self.assertIn("connection refused", cm.exception.msg)

    async def test_federation_disabled(self) -> None:
        client = self.make_client(enabled=False, **LOOPBACK_OK)
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(self.dest, "/x")
        self.assertIn("federation is disabled", cm.exception.msg)

    async def test_path_must_be_encoded(self) -> None:
        client = self.make_client(**LOOPBACK_OK)
        for bad in ("relative", "/with?query", "/\u00e9"):
            with self.assertRaises(ValueError):
                await client.get_json(self.dest, bad)

    def test_encode_query(self) -> None:
        self.assertEqual(encode_query({"v": ["1", "2"], "x": "a/b&c"}), "v=1&v=2&x=a%2Fb%26c")
        self.assertEqual(encode_query(None), "")


class TLSVerificationTests(_ClientTestCase):
    def setUp(self) -> None:
        self.certdir = temp_dir(self)
        self.cert, self.key = make_cert(self.certdir, dns_names=("localhost",), ips=("127.0.0.1",))
        self.remote, self.port = self.serve(cert=(self.cert, self.key))
        self.remote.routes[b"/x"] = (200, {"ok": 1})

    async def test_trusted_ca_and_ip_certificate(self) -> None:
        client = self.make_client(ca_certificates=[self.cert], ip_range_whitelist=["127.0.0.0/8"])
        self.assertEqual(await client.get_json(f"127.0.0.1:{self.port}", "/x"), {"ok": 1})

    async def test_trusted_ca_and_dns_certificate_with_sni(self) -> None:
        client = self.make_client(
            name_table={"localhost": ["127.0.0.1"]}, ca_certificates=[self.cert], ip_range_whitelist=["127.0.0.0/8"]
        )
        self.assertEqual(await client.get_json(f"localhost:{self.port}", "/x"), {"ok": 1})

    async def test_unknown_ca_is_refused(self) -> None:
        client = self.make_client(ip_range_whitelist=["127.0.0.0/8"])
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(f"127.0.0.1:{self.port}", "/x")
        self.assertIn("TLS", cm.exception.msg)
        self.assertEqual(self.remote.requests, [])

    async def test_certificate_for_another_name_is_refused(self) -> None:
        client = self.make_client(
            name_table={"other.test": ["127.0.0.1"]}, ca_certificates=[self.cert], ip_range_whitelist=["127.0.0.0/8"]
        )
        with self.assertRaises(RequestFailed) as cm:
            await client.get_json(f"other.test:{self.port}", "/x")
        self.assertIn("TLS", cm.exception.msg)
        self.assertEqual(self.remote.requests, [])


def _no_delegation() -> Any:
    from mxserver.federation.discovery import _WellKnownEntry

    return _WellKnownEntry(None, float("inf"))
