"""URL previews: OpenGraph from HTML, images re-hosted, size/time limits, the IP filter."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web import server

from mxserver.config import HomeserverConfig
from mxserver.media.preview import parse_opengraph
from tests.harness import ScriptedServer, listen_tls, make_cert, temp_dir
from tests.test_media import MediaTestCase, png

PAGE = b"""<!doctype html><html><head>
<meta charset="utf-8"><title>  The   Title </title>
<meta property="og:title" content="OG title &amp; more">
<meta property="og:description" content="A description">
<meta property="og:image" content="/logo.png">
</head><body><p>hi</p></body></html>"""


class OpenGraphParsingTests(unittest.SynchronousTestCase):
    def test_og_tags_and_fallbacks(self) -> None:
        og = parse_opengraph(PAGE, "text/html")
        self.assertEqual(og["og:title"], "OG title & more")
        self.assertEqual(og["og:description"], "A description")
        plain = parse_opengraph(b"<title>Only\n a title</title><meta name=description content=desc>", "text/html")
        self.assertEqual(plain, {"og:title": "Only a title", "og:description": "desc"})
        latin = parse_opengraph("<title>caf\u00e9</title>".encode("latin-1"), "text/html; charset=latin-1")
        self.assertEqual(latin["og:title"], "caf\u00e9")
        self.assertEqual(parse_opengraph(b"<html><<<>>", "text/html"), {})


class _PreviewCase(MediaTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.web = ScriptedServer()
        port = reactor.listenTCP(0, server.Site(self.web), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.site = f"http://127.0.0.1:{port.getHost().port}"
        self.alice = await self.register("alice")

    async def preview(self, url: str, user: Any = None) -> tuple[int, Any]:
        return await self.get(f"/_matrix/client/v1/media/preview_url?url={quote(url, safe='')}", user or self.alice)


class PreviewTests(_PreviewCase):
    config_overrides = {
        "federation": {"ip_range_whitelist": ["127.0.0.0/8"]},
        "media": {"url_preview": {"enabled": True, "max_page_size": "64K", "timeout_ms": "2s"}},
    }

    async def test_opengraph_with_rehosted_image(self) -> None:
        logo = png(48, 32)
        self.web.routes[b"/page"] = (200, PAGE, {"Content-Type": "text/html; charset=utf-8"})
        self.web.routes[b"/logo.png"] = (200, logo, {"Content-Type": "image/png"})
        code, body = await self.preview(self.site + "/page")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["og:title"], "OG title & more")
        self.assertEqual(body["og:description"], "A description")
        self.assertEqual((body["og:image:width"], body["og:image:height"]), (48, 32))
        self.assertEqual(body["og:image:type"], "image/png")
        self.assertEqual(body["matrix:image:size"], len(logo))
        mxc = body["og:image"]
        self.assertTrue(mxc.startswith("mxc://test/"))
        code, data = await self.get(f"/_matrix/client/v1/media/download/{mxc[6:]}", self.alice)
        self.assertEqual((code, data), (200, logo))
        # Cached: a second ask (the deprecated path too) does not fetch again.
        code, again = await self.get(f"/_matrix/media/v3/preview_url?url={quote(self.site + '/page')}", self.alice)
        self.assertEqual((code, again), (200, body))
        self.assertEqual(self.web.hits(b"/page"), 1)

    async def test_redirects_images_and_other_types(self) -> None:
        self.web.routes[b"/moved"] = (302, b"", {"Location": "/final"})
        self.web.routes[b"/final"] = (200, b"<title>Final</title>", {"Content-Type": "text/html"})
        code, body = await self.preview(self.site + "/moved")
        self.assertEqual((code, body), (200, {"og:title": "Final"}))
        self.web.routes[b"/pic"] = (200, png(10, 20), {"Content-Type": "image/png"})
        code, body = await self.preview(self.site + "/pic")
        self.assertEqual((code, body["og:image:width"], body["og:image:height"]), (200, 10, 20))
        self.web.routes[b"/data.json"] = (200, b"{}", {"Content-Type": "application/json"})
        self.assertEqual(await self.preview(self.site + "/data.json"), (200, {}))

    async def test_limits_and_errors(self) -> None:
        self.web.routes[b"/huge"] = (200, b"<p>" + b"x" * (100 * 1024), {"Content-Type": "text/html"})
        self.assertMatrixError(await self.preview(self.site + "/huge"), 502, "M_TOO_LARGE")
        self.web.routes[b"/hang"] = lambda request: server.NOT_DONE_YET
        self.assertMatrixError(await self.preview(self.site + "/hang"), 502, "M_UNKNOWN")
        self.web.routes[b"/missing"] = (404, b"no", {"Content-Type": "text/plain"})
        self.assertMatrixError(await self.preview(self.site + "/missing"), 502, "M_UNKNOWN")
        loop = {b"/loop": (302, b"", {"Location": "/loop"})}
        self.web.routes.update(loop)
        self.assertMatrixError(await self.preview(self.site + "/loop"), 502, "M_UNKNOWN")
        for bad in ("ftp://127.0.0.1/x", "file:///etc/passwd", "not a url", "http:///nohost"):
            self.assertMatrixError(await self.preview(bad), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get("/_matrix/client/v1/media/preview_url", self.alice), 400,
                               "M_MISSING_PARAM")
        self.assertMatrixError(
            await self.get("/_matrix/client/v1/media/preview_url?url=x&ts=abc", self.alice), 400, "M_INVALID_PARAM"
        )


class PreviewIPFilterTests(_PreviewCase):
    """The default federation blacklist (loopback and private ranges) applies to previews."""

    config_overrides = {"media": {"url_preview": {"enabled": True}}}

    async def test_loopback_and_redirects_to_it_are_refused(self) -> None:
        self.web.routes[b"/page"] = (200, PAGE, {"Content-Type": "text/html"})
        self.assertMatrixError(await self.preview(self.site + "/page"), 403, "M_FORBIDDEN")
        for url in ("http://10.1.2.3/", "http://[::1]/", "http://169.254.169.254/latest/meta-data/",
                    "http://[::ffff:127.0.0.1]/", "http://localhost:1/"):
            self.assertMatrixError(await self.preview(url), 403, "M_FORBIDDEN")
        self.assertEqual(self.web.requests, [])


class PreviewDisabledTests(_PreviewCase):
    async def test_off_by_default(self) -> None:
        self.web.routes[b"/page"] = (200, PAGE, {"Content-Type": "text/html"})
        self.assertMatrixError(await self.preview(self.site + "/page"), 404, "M_UNRECOGNIZED")
        self.assertEqual(self.web.requests, [])


class PreviewTLSTests(_PreviewCase):
    """https pages: certificates are always verified, against the system's CAs plus
    ``federation.ca_certificates`` (SyTest's web server has a certificate from its own CA)."""

    def make_config(self) -> HomeserverConfig:
        self.cert, self.key = make_cert(temp_dir(self), dns_names=("localhost",), ips=("127.0.0.1",))
        self.config_overrides = {
            "federation": {"ip_range_whitelist": ["127.0.0.0/8"], "ca_certificates": [self.cert], "verify_tls": False},
            "media": {"url_preview": {"enabled": True}},
        }
        return super().make_config()

    def serve_tls(self, cert: tuple[str, str]) -> tuple[ScriptedServer, str]:
        web = ScriptedServer()
        port = listen_tls(server.Site(web), *cert)
        self.addCleanup(port.stopListening)
        return web, f"https://127.0.0.1:{port.getHost().port}"

    async def test_extra_ca_is_trusted_and_unknown_ones_refused(self) -> None:
        web, site = self.serve_tls((self.cert, self.key))
        web.routes[b"/page"] = (200, PAGE, {"Content-Type": "text/html"})
        web.routes[b"/logo.png"] = (200, png(4, 3), {"Content-Type": "image/png"})
        code, body = await self.preview(site + "/page")
        self.assertEqual(code, 200, body)
        self.assertEqual((body["og:title"], body["og:image:width"]), ("OG title & more", 4))
        # A certificate from a CA nobody configured is refused, though federation.verify_tls
        # is off: that switch is federation's, previews always verify.
        stranger, other_site = self.serve_tls(make_cert(temp_dir(self)))
        stranger.routes[b"/page"] = (200, PAGE, {"Content-Type": "text/html"})
        self.assertMatrixError(await self.preview(other_site + "/page"), 502, "M_UNKNOWN")
        self.assertEqual(stranger.requests, [])
