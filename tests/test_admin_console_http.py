"""The web admin console's files (``/_mxserver/admin/``) and the metrics view it polls
(``/_mxserver/admin/v1/metrics``), over plain HTTP: headers, content types, what is never
served (unknown files, directories, paths out of the console's folder), and who may read
the metrics. The console itself, in a browser, is tested in ``tests.test_admin_console``."""

from __future__ import annotations

import http.client
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from mxserver import metrics
from mxserver.admin_console import CONTENT_SECURITY_POLICY, ConsoleFiles
from tests.harness import HomeserverTestCase

CONSOLE = "/_mxserver/admin"
METRICS = "/_mxserver/admin/v1/metrics"


def raw_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A request whose path goes out exactly as written (no client-side ``..`` clean-up)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class ConsoleFilesTests(HomeserverTestCase):
    async def raw(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        port = self.hs.listening_ports[0].getHost().port
        return await deferToThread(raw_get, port, path, method)

    def assert_console_headers(self, headers: dict[str, str]) -> None:
        self.assertEqual(headers["content-security-policy"], CONTENT_SECURITY_POLICY)
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(headers["referrer-policy"], "no-referrer")
        self.assertEqual(headers["x-frame-options"], "DENY")
        self.assertNotIn("set-cookie", headers)

    async def test_index_page(self) -> None:
        code, headers, body = await self.raw(f"{CONSOLE}/")
        self.assertEqual((code, headers["content-type"]), (200, "text/html; charset=utf-8"))
        self.assert_console_headers(headers)
        page = body.decode()
        self.assertIn('<script type="module" src="app.js"></script>', page)
        # No inline script or style: every <script> loads a file and is empty; no style attribute.
        for attrs, content in re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S):
            self.assertIn("src=", attrs)
            self.assertEqual(content.strip(), "")
        self.assertNotIn("style=", page)
        self.assertNotIn("<style", page)
        # HEAD answers the same headers without the page.
        code, headers, body = await self.raw(f"{CONSOLE}/", "HEAD")
        self.assertEqual((code, body), (200, b""))
        self.assert_console_headers(headers)

    async def test_without_slash_redirects(self) -> None:
        code, headers, _ = await self.raw(CONSOLE)
        self.assertEqual((code, headers["location"]), (301, f"{CONSOLE}/"))

    async def test_every_file_with_its_type(self) -> None:
        names = ConsoleFiles().names()
        for expected in ("index.html", "app.js", "api.js", "console.css", "favicon.svg"):
            self.assertIn(expected, names)
        types = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        for name in names:
            code, headers, body = await self.raw(f"{CONSOLE}/{name}")
            self.assertEqual(code, 200, name)
            self.assertTrue(headers["content-type"].startswith(types[name.rsplit(".", 1)[1]]), (name, headers))
            self.assert_console_headers(headers)
            self.assertTrue(body)
        self.assertEqual((await self.raw(f"{CONSOLE}/index.html"))[2], (await self.raw(f"{CONSOLE}/"))[2])

    async def test_scripts_have_no_inline_handlers_or_eval(self) -> None:
        # The CSP would block them in the browser; catch them before it does.
        for name in ConsoleFiles().names():
            if name.endswith(".js"):
                code, _, body = await self.raw(f"{CONSOLE}/{name}")
                text = body.decode()
                for banned in ("eval(", "new Function(", "innerHTML", "document.write", "localStorage", "document.cookie"):
                    self.assertNotIn(banned, text, name)

    async def test_unknown_files_and_directories(self) -> None:
        for path in ("nope.js", "static/", "static/index.html", "static", "admin_console/", "__init__.py",
                     ".", "index.html/", "index.html/x", "APP.JS"):
            code, headers, body = await self.raw(f"{CONSOLE}/{path}")
            self.assertEqual(code, 404, (path, body))
            self.assertIn(b'"errcode":"M_UNRECOGNIZED"', body, path)
            self.assertEqual(headers["content-type"], "application/json")

    async def test_no_path_traversal(self) -> None:
        for path in ("../../setup.cfg", "..%2F..%2Fsetup.cfg", "%2E%2E/%2E%2E/setup.cfg", "..%2f__init__.py",
                     "..", "%2e%2e", "..%5C..%5Csetup.cfg", "%2Fetc%2Fpasswd", "..%2F..%2Fapi%2Fhttp.py",
                     "static%2Findex.html", "..%2Fadmin_console%2Fstatic%2Findex.html", "%00index.html"):
            code, _, body = await self.raw(f"{CONSOLE}/{path}")
            self.assertIn(code, (400, 404), (path, body))
            self.assertNotIn(b"[metadata]", body)
            self.assertNotIn(b"root:", body)
            self.assertNotIn(b"<html", body)

    async def test_only_get(self) -> None:
        for method in ("POST", "PUT", "DELETE"):
            code, _, _ = await self.raw(f"{CONSOLE}/index.html", method)
            self.assertEqual(code, 405, method)


class MetricsTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")

    async def test_admins_only(self) -> None:
        self.assertMatrixError(await self.get(METRICS), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get(METRICS, "not a token"), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.get(METRICS, self.alice), 403, "M_FORBIDDEN")

    async def read(self) -> dict[str, Any]:
        code, body = await self.get(METRICS, self.admin)
        self.assertEqual(code, 200, body)
        return body

    async def test_shape_and_live_values(self) -> None:
        first = await self.read()
        self.assertIsInstance(first["ts"], int)
        by_name = {m["name"]: m for m in first["metrics"]}
        self.assertEqual([m["name"] for m in first["metrics"]], sorted(by_name))
        requests = by_name["mxserver_http_requests"]
        self.assertEqual(requests["type"], "counter")
        self.assertEqual(requests["help"], "HTTP requests by endpoint, method and status")
        self.assertEqual(by_name["mxserver_http_request_seconds"]["type"], "histogram")
        self.assertEqual(by_name["mxserver_reactor_lag_seconds"]["type"], "gauge")
        for m in first["metrics"]:
            for s in m["samples"]:
                self.assertIsInstance(s["name"], str)
                self.assertTrue(all(isinstance(v, str) for v in s["labels"].values()), s)
                self.assertTrue(s["value"] is None or isinstance(s["value"], int | float), s)

        def count(body: dict[str, Any]) -> float:
            (family,) = [m for m in body["metrics"] if m["name"] == "mxserver_http_requests"]
            return sum(s["value"] for s in family["samples"]
                       if s["name"] == "mxserver_http_requests_total"
                       and s["labels"]["endpoint"] == METRICS and s["labels"]["status"] == "200")

        # The request that read the first figures is counted once it finished: the next read sees it.
        second = await self.read()
        self.assertGreaterEqual(count(second), count(first) + 1)
        self.assertGreaterEqual(second["ts"], first["ts"])


class SnapshotTests(unittest.TestCase):
    def test_values_json_cannot_hold_are_null(self) -> None:
        registry = CollectorRegistry()
        Gauge("g_nan", "not a number", registry=registry).set(float("nan"))
        Gauge("g_inf", "infinite", registry=registry).set(float("inf"))
        Counter("c", "a counter", ["kind"], registry=registry).labels("x").inc(3)
        snap = {m["name"]: m for m in metrics.snapshot(registry)}
        self.assertEqual(snap["g_nan"]["samples"], [{"name": "g_nan", "labels": {}, "value": None}])
        self.assertEqual(snap["g_inf"]["samples"][0]["value"], None)
        self.assertEqual(snap["c"]["type"], "counter")
        self.assertIn({"name": "c_total", "labels": {"kind": "x"}, "value": 3.0}, snap["c"]["samples"])
