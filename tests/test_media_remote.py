"""Remote media: fetched over federation (multipart), legacy fallback, one fetch for many
requests, caching, limits; our federation media endpoints; retention."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote

from PIL import Image
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.trial import unittest
from twisted.web import server

from mxserver.media.http import encode_multipart, parse_multipart
from tests.harness import ScriptedServer, TwoServerTestCase, deep_merge, listen_tls, make_cert, temp_dir
from tests.test_media import MediaTestCase, png


def multipart(data: bytes, ctype: str, disposition: str = "inline") -> tuple[bytes, str]:
    return encode_multipart(ctype, disposition, data)


class MultipartTests(unittest.SynchronousTestCase):
    def test_round_trip_and_foreign_shapes(self) -> None:
        body, ctype = multipart(b"\r\n--x\r\nbinary\r\n", "image/png", 'attachment; filename="a.png"')
        parts = parse_multipart(body, ctype)
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0].headers["content-type"], "application/json")
        self.assertEqual(parts[1].body, b"\r\n--x\r\nbinary\r\n")
        self.assertEqual(parts[1].headers["content-disposition"], 'attachment; filename="a.png"')
        # A preamble, a quoted boundary, a Location part without a body.
        other = (b"preamble\r\n--b0\r\nContent-Type: application/json\r\n\r\n{}\r\n--b0\r\n"
                 b"Location: https://cdn.example/file\r\n\r\n\r\n--b0--\r\n")
        parts = parse_multipart(other, 'multipart/mixed; boundary="b0"')
        self.assertEqual(parts[1].headers["location"], "https://cdn.example/file")
        for bad, bad_type in [(b"--b0\r\nno end", "multipart/mixed; boundary=b0"), (b"x", "multipart/mixed"),
                              (b"x", "application/json")]:
            with self.assertRaises(ValueError):
                parse_multipart(bad, bad_type)


class _ScriptedRemoteCase(MediaTestCase):
    """Against a scripted remote server over TLS, so every answer shape can be tried."""

    config_overrides = {
        "federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]},
        "media": {"max_upload_size": "200K"},
    }

    async def _set_up(self) -> None:
        await super()._set_up()
        self.remote = ScriptedServer()
        cert, key = make_cert(temp_dir(self))
        port = listen_tls(server.Site(self.remote), cert, key)
        self.addCleanup(port.stopListening)
        self.origin = f"127.0.0.1:{port.getHost().port}"
        self.alice = await self.register("alice")

    def fed_path(self, media_id: str, kind: str = "download") -> bytes:
        return f"/_matrix/federation/v1/media/{kind}/{media_id}".encode()

    def legacy_path(self, media_id: str, kind: str = "download") -> bytes:
        return f"/_matrix/media/v3/{kind}/{quote(self.origin, safe='')}/{media_id}".encode()

    async def download(self, media_id: str, query: str = "") -> tuple[int, Any]:
        return await self.get(f"/_matrix/client/v1/media/download/{self.origin}/{media_id}{query}", self.alice)


class ScriptedRemoteTests(_ScriptedRemoteCase):

    async def test_multipart_download_is_cached(self) -> None:
        body, ctype = multipart(b"remote bytes", "text/plain", 'inline; filename="r.txt"')
        self.remote.routes[self.fed_path("abc")] = (200, body, {"Content-Type": ctype})
        self.assertEqual(await self.download("abc"), (200, b"remote bytes"))
        self.assertEqual(self.header("content-type"), "text/plain")
        self.assertEqual(self.header("content-disposition"), 'inline; filename="r.txt"')
        # The request was signed (X-Matrix) and let the origin wait for a pending upload.
        rec = self.remote.requests[-1]
        self.assertTrue(rec.headers[b"authorization"][0].startswith(b"X-Matrix "))
        self.assertIn(b"timeout_ms=", rec.uri)
        # From the cache now, even with the origin gone quiet.
        del self.remote.routes[self.fed_path("abc")]
        self.assertEqual(await self.download("abc"), (200, b"remote bytes"))
        self.assertEqual(self.remote.hits(self.fed_path("abc")), 1)

    async def test_legacy_fallback_for_old_servers(self) -> None:
        self.remote.routes[self.fed_path("old")] = (404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized"})
        self.remote.routes[self.legacy_path("old")] = (200, b"legacy", {"Content-Type": "application/pdf"})
        self.assertEqual(await self.download("old"), (200, b"legacy"))
        self.assertEqual(self.header("content-type"), "application/pdf")
        self.assertEqual(self.header("content-disposition"), "attachment")
        legacy = [r for r in self.remote.requests if r.path == self.legacy_path("old")][0]
        self.assertIn(b"allow_remote=false", legacy.uri)

    async def test_not_found_is_not_retried_on_the_legacy_endpoint(self) -> None:
        self.remote.routes[self.fed_path("gone")] = (404, {"errcode": "M_NOT_FOUND", "error": "nope"})
        self.assertMatrixError(await self.download("gone"), 404, "M_NOT_FOUND")
        self.assertEqual(self.remote.hits(self.legacy_path("gone")), 0)

    async def test_concurrent_requests_fetch_once(self) -> None:
        body, ctype = multipart(b"shared", "text/plain")
        arrived: Deferred[Any] = Deferred()

        def slow(request: Any) -> Any:
            arrived.callback(request)
            return server.NOT_DONE_YET

        # Every download joins the one fetch through the fetcher's shared calls: count them in.
        fetches = self.hs.media_repository.remote._fetches
        run = fetches.run
        joined: list[Any] = []
        all_joined: Deferred[None] = Deferred()

        def counting(key: Any, fn: Any) -> Any:
            joined.append(key)
            if len(joined) == 5:
                all_joined.callback(None)
            return run(key, fn)

        fetches.run = counting  # type: ignore[method-assign]
        self.remote.routes[self.fed_path("same")] = slow
        pending = [ensureDeferred(self.download("same")) for _ in range(5)]
        request = await arrived
        await all_joined  # every request is now waiting on the one fetch
        self.assertEqual(len(set(joined)), 1)
        request.setHeader(b"Content-Type", ctype.encode())
        request.write(body)
        request.finish()
        results = await gatherResults(pending)
        self.assertEqual(results, [(200, b"shared")] * 5)
        self.assertEqual(self.remote.hits(self.fed_path("same")), 1)
        self.assertEqual(self.hs.media_repository.remote.fetch_count, 1)

    async def test_too_large_and_malformed_answers(self) -> None:
        body, ctype = multipart(b"x" * (300 * 1024), "application/octet-stream")
        self.remote.routes[self.fed_path("big")] = (200, body, {"Content-Type": ctype})
        self.assertMatrixError(await self.download("big"), 502, "M_TOO_LARGE")
        self.remote.routes[self.fed_path("junk")] = (200, b"not multipart", {"Content-Type": "multipart/mixed; boundary=zz"})
        self.assertMatrixError(await self.download("junk"), 502, "M_UNKNOWN")
        self.remote.routes[self.fed_path("plain")] = (200, b"bytes", {"Content-Type": "image/png"})
        self.assertMatrixError(await self.download("plain"), 502, "M_UNKNOWN")
        self.remote.routes[self.fed_path("err")] = (500, {"errcode": "M_UNKNOWN", "error": "boom"})
        self.assertMatrixError(await self.download("err"), 502, "M_UNKNOWN")
        self.remote.routes[self.fed_path("later")] = (504, {"errcode": "M_NOT_YET_UPLOADED", "error": "wait"})
        self.assertMatrixError(await self.download("later"), 504, "M_NOT_YET_UPLOADED")
        # Nothing half-cached: a later good answer is fetched and served.
        good, good_type = multipart(b"fine", "text/plain")
        self.remote.routes[self.fed_path("junk")] = (200, good, {"Content-Type": good_type})
        self.assertEqual(await self.download("junk"), (200, b"fine"))

    async def test_location_redirect_is_followed_through_the_ip_filter(self) -> None:
        cdn = ScriptedServer()
        cdn.routes[b"/file"] = (200, b"from the cdn", {"Content-Type": "text/plain"})
        port = reactor.listenTCP(0, server.Site(cdn), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        boundary = "b1"
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n"
                f"Location: http://127.0.0.1:{port.getHost().port}/file\r\n\r\n\r\n--{boundary}--\r\n").encode()
        self.remote.routes[self.fed_path("redir")] = (200, body, {"Content-Type": f"multipart/mixed; boundary={boundary}"})
        self.assertEqual(await self.download("redir"), (200, b"from the cdn"))

    async def test_allow_remote_false_and_bad_names(self) -> None:
        self.assertMatrixError(
            await self.get(f"/_matrix/media/v3/download/{self.origin}/abc?allow_remote=false"), 404, "M_NOT_FOUND"
        )
        self.assertEqual(self.remote.requests, [])
        self.assertMatrixError(await self.download("a.b"), 400, "M_INVALID_PARAM")

    async def test_remote_thumbnail_fetched_from_the_origin(self) -> None:
        thumb = png(64, 48)
        body, ctype = multipart(thumb, "image/png")
        self.remote.routes[self.fed_path("pic", "thumbnail")] = (200, body, {"Content-Type": ctype})
        path = f"/_matrix/client/v1/media/thumbnail/{self.origin}/pic?width=64&height=48&method=scale"
        self.assertEqual(await self.get(path, self.alice), (200, thumb))
        rec = self.remote.requests[-1]
        for arg in (b"width=64", b"height=48", b"method=scale"):
            self.assertIn(arg, rec.uri)
        self.assertEqual(await self.get(path, self.alice), (200, thumb))
        self.assertEqual(self.remote.hits(self.fed_path("pic", "thumbnail")), 1)
        # Not an image: refused.
        body, ctype = multipart(b"<html>", "text/html")
        self.remote.routes[self.fed_path("html", "thumbnail")] = (200, body, {"Content-Type": ctype})
        self.assertMatrixError(
            await self.get(f"/_matrix/client/v1/media/thumbnail/{self.origin}/html?width=8&height=8", self.alice),
            502, "M_UNKNOWN",
        )


class FrozenScriptedRemoteTests(_ScriptedRemoteCase):
    config_overrides = deep_merge(_ScriptedRemoteCase.config_overrides, {"media": {"unauthenticated_downloads": False}})

    async def test_frozen_deprecated_endpoints_serve_no_newly_cached_remote_media(self) -> None:
        body, ctype = multipart(b"remote", "text/plain")
        self.remote.routes[self.fed_path("new")] = (200, body, {"Content-Type": ctype})
        self.assertMatrixError(await self.get(f"/_matrix/media/v3/download/{self.origin}/new"), 404, "M_NOT_FOUND")
        self.assertEqual(self.remote.requests, [])  # nothing fetched for a request that could not be served
        self.assertEqual(await self.download("new"), (200, b"remote"))
        self.assertMatrixError(await self.get(f"/_matrix/media/v3/download/{self.origin}/new"), 404, "M_NOT_FOUND")
        thumb, thumb_type = multipart(png(8, 8), "image/png")
        self.remote.routes[self.fed_path("pic", "thumbnail")] = (200, thumb, {"Content-Type": thumb_type})
        self.assertMatrixError(
            await self.get(f"/_matrix/media/v3/thumbnail/{self.origin}/pic?width=8&height=8"), 404, "M_NOT_FOUND"
        )
        self.assertEqual(self.remote.hits(self.fed_path("pic", "thumbnail")), 0)



def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


class TwoServerMediaTests(TwoServerTestCase):
    """Media between two real mxservers over TLS federation."""

    async def upload(self, user: Any, data: bytes, ctype: str) -> str:
        code, body = await self.a.request("POST", "/_matrix/media/v3/upload?filename=cat.png", raw=data, token=user,
                                          headers={"Content-Type": ctype})
        self.assertEqual(code, 200, body)
        return body["content_uri"][len("mxc://"):]

    async def test_download_and_thumbnail_over_federation(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        data = png(640, 400)
        mxc = await self.upload(alice, data, "image/png")
        self.assertTrue(mxc.startswith(self.a.server_name + "/"))
        code, body = await self.b.get(f"/_matrix/client/v1/media/download/{mxc}", bob)
        self.assertEqual((code, body), (200, data))
        headers = self.b.last_headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["image/png"])
        self.assertEqual(headers.getRawHeaders("content-disposition"), ['inline; filename="cat.png"'])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        # The original is cached on B: thumbnails are made there.
        code, body = await self.b.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=320&height=240", bob)
        self.assertEqual(code, 200)
        self.assertEqual(image_size(body), (320, 200))
        self.assertEqual(self.b.hs.media_repository.remote.fetch_count, 1)

    async def test_thumbnail_first_uses_the_federation_thumbnail_endpoint(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        mxc = await self.upload(alice, png(500, 500), "image/png")
        code, body = await self.b.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=96&height=96&method=crop", bob)
        self.assertEqual(code, 200)
        self.assertEqual(image_size(body), (96, 96))
        # B holds the thumbnail but not the original.
        origin, media_id = mxc.split("/")
        self.assertIsNone(await self.b.hs.media_store.get_remote_media(origin, media_id))

    async def test_concurrent_downloads_share_one_fetch(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        data = b"z" * 200_000
        mxc = await self.upload(alice, data, "application/octet-stream")
        results = await gatherResults(
            [ensureDeferred(self.b.get(f"/_matrix/client/v1/media/download/{mxc}", bob)) for _ in range(6)]
        )
        self.assertEqual(results, [(200, data)] * 6)
        self.assertEqual(self.b.hs.media_repository.remote.fetch_count, 1)

    async def test_unknown_and_pending_remote_media(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        result = await self.b.get(f"/_matrix/client/v1/media/download/{self.a.server_name}/doesNotExist", bob)
        self.assertEqual(result[0], 404, result)
        self.assertEqual(result[1]["errcode"], "M_NOT_FOUND")
        code, body = await self.a.post("/_matrix/media/v1/create", {}, alice)
        mxc = body["content_uri"][len("mxc://"):]
        code, body = await self.b.get(f"/_matrix/client/v1/media/download/{mxc}?timeout_ms=100", bob)
        self.assertEqual((code, body["errcode"]), (504, "M_NOT_YET_UPLOADED"))

    async def test_federation_endpoints_need_signatures_and_serve_only_local_media(self) -> None:
        from mxserver.federation.client import FederationError

        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        mxc = await self.upload(alice, b"secret", "text/plain")
        media_id = mxc.split("/")[1]
        client = self.b.hs.federation_client
        with self.assertRaises(FederationError) as cm:
            await client.get_raw(self.a.server_name, f"/_matrix/federation/v1/media/download/{media_id}",
                                 max_size=1000, authenticate=False)
        self.assertEqual((cm.exception.code, cm.exception.errcode), (401, "M_UNAUTHORIZED"))
        resp = await client.get_raw(self.a.server_name, f"/_matrix/federation/v1/media/download/{media_id}",
                                    max_size=1000)
        parts = parse_multipart(resp.body, resp.header("content-type"))
        self.assertEqual((parts[0].body, parts[1].body), (b"{}", b"secret"))
        # Bad input is a Matrix error there too.
        for path, status, errcode in [
            (f"/_matrix/federation/v1/media/thumbnail/{media_id}", 400, "M_MISSING_PARAM"),
            (f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=0&height=5", 400, "M_INVALID_PARAM"),
            (f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=5&height=5", 400, "M_UNKNOWN"),  # text
            ("/_matrix/federation/v1/media/download/bad.id", 400, "M_INVALID_PARAM"),
            ("/_matrix/federation/v1/media/download/unknownMedia", 404, "M_NOT_FOUND"),
        ]:
            base, _, query = path.partition("?")
            args = dict(kv.split("=") for kv in query.split("&")) if query else None
            with self.assertRaises(FederationError) as cm:
                await client.get_raw(self.a.server_name, base, args, max_size=1000)
            self.assertEqual((cm.exception.code, cm.exception.errcode), (status, errcode), path)
        # B caches A's media, but does not serve it to A as B's own.
        await self.b.get(f"/_matrix/client/v1/media/download/{mxc}", bob)
        with self.assertRaises(FederationError) as cm:
            await self.a.hs.federation_client.get_raw(
                self.b.server_name, f"/_matrix/federation/v1/media/download/{media_id}", max_size=1000
            )
        self.assertEqual(cm.exception.code, 404)

    async def test_purge_remote_cache(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        mxc = await self.upload(alice, png(200, 200), "image/png")
        await self.b.get(f"/_matrix/client/v1/media/download/{mxc}", bob)
        await self.b.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop", bob)
        repo = self.b.hs.media_repository
        # Nothing is older than a day.
        self.assertEqual(await repo.remote.purge_older_than(self.now_ms() - 86_400_000), (0, 0))
        seen: list[tuple[int, int, int]] = []
        files, freed = await repo.remote.purge_older_than(self.now_ms() + 1, lambda *a: seen.append(a))
        self.assertEqual(files, 1)
        self.assertGreater(freed, 0)
        self.assertEqual(seen[-1][:2], (1, 1))
        origin, media_id = mxc.split("/")
        self.assertIsNone(await self.b.hs.media_store.get_remote_media(origin, media_id))
        self.assertEqual(await self.b.hs.media_store.get_thumbnails(origin, media_id), [])
        # A's own copy is untouched; B fetches it again on demand.
        code, _ = await self.b.get(f"/_matrix/client/v1/media/download/{mxc}", bob)
        self.assertEqual(code, 200)
        self.assertEqual(repo.remote.fetch_count, 2)
