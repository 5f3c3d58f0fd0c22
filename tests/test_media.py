"""Media repository over HTTP: uploads, downloads, async uploads, limits, headers, auth."""

from __future__ import annotations

import io
import os
from typing import Any
from urllib.parse import quote

from PIL import Image
from twisted.internet.defer import Deferred, ensureDeferred

from tests.harness import HomeserverTestCase, TestUser


def png(width: int, height: int, color: tuple[int, ...] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


class MediaTestCase(HomeserverTestCase):
    async def upload(
        self, user: TestUser, data: bytes, content_type: str | None = "application/octet-stream", filename: str | None = None
    ) -> tuple[int, Any]:
        path = "/_matrix/media/v3/upload"
        if filename is not None:
            path += "?filename=" + quote(filename)
        headers = {"Content-Type": content_type} if content_type else {}
        return await self.request("POST", path, raw=data, token=user, headers=headers)

    async def upload_ok(self, user: TestUser, data: bytes, content_type: str = "application/octet-stream",
                        filename: str | None = None) -> str:
        code, body = await self.upload(user, data, content_type, filename)
        self.assertEqual(code, 200, body)
        self.assertTrue(body["content_uri"].startswith(f"mxc://{self.server_name}/"), body)
        return body["content_uri"]

    @staticmethod
    def split(mxc: str) -> str:
        return mxc[len("mxc://") :]

    def header(self, name: str) -> str | None:
        values = self.last_headers.getRawHeaders(name)
        return values[0] if values else None


class UploadDownloadTests(MediaTestCase):
    async def test_round_trip_bytes_exactly(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        data = os.urandom(300_000) + b"\x00\r\n--boundary--\r\n"
        mxc = await self.upload_ok(alice, data, "application/x-thing", "report.bin")
        code, body = await self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}", bob)
        self.assertEqual(code, 200)
        self.assertEqual(body, data)
        self.assertEqual(self.header("content-type"), "application/x-thing")
        self.assertEqual(self.header("content-disposition"), 'attachment; filename="report.bin"')
        self.assertTrue(self.header("content-security-policy").startswith("sandbox"))
        self.assertEqual(self.header("x-content-type-options"), "nosniff")
        self.assertEqual(self.header("cross-origin-resource-policy"), "cross-origin")
        # The deprecated endpoint serves it too (not frozen by default), and r0.
        for prefix in ("/_matrix/media/v3", "/_matrix/media/r0"):
            code, body = await self.get(f"{prefix}/download/{self.split(mxc)}")
            self.assertEqual((code, body), (200, data))

    async def test_file_name_override_and_unicode_names(self) -> None:
        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, b"hello", "text/plain", "na\u00efve \u263a.txt")
        code, body = await self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}", alice)
        self.assertEqual((code, body), (200, b"hello"))
        self.assertEqual(self.header("content-disposition"), "inline; filename*=utf-8''na%C3%AFve%20%E2%98%BA.txt")
        code, _ = await self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}/other%20name.txt", alice)
        self.assertEqual(code, 200)
        self.assertEqual(self.header("content-disposition"), 'inline; filename="other name.txt"')

    async def test_content_types_sanitised_and_html_is_an_attachment(self) -> None:
        alice = await self.register("alice")
        cases = [
            ("text/html", "text/html", "attachment"),
            ("TEXT/Plain; charset=UTF-8; x=\"<script>\"", "text/plain; charset=utf-8", "inline"),
            ("image/svg+xml", "image/svg+xml", "attachment"),
            ("not a type", "application/octet-stream", "attachment"),
            (None, "application/octet-stream", "attachment"),
            ("image/png\r\nX-Evil: 1", "application/octet-stream", "attachment"),
        ]
        for sent, served, disposition in cases:
            headers = {}
            if sent is not None and "\r" not in sent:
                headers["Content-Type"] = sent
            code, body = await self.request("POST", "/_matrix/media/v3/upload", raw=b"<b>x</b>", token=alice,
                                            headers=headers)
            self.assertEqual(code, 200, body)
            if sent is not None and "\r" in sent:
                continue  # the HTTP client refuses such a header; nothing to check
            await self.get(f"/_matrix/client/v1/media/download/{self.split(body['content_uri'])}", alice)
            self.assertEqual(self.header("content-type"), served, sent)
            self.assertEqual(self.header("content-disposition"), disposition, sent)

    async def test_unknown_media_and_invalid_ids(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.get("/_matrix/client/v1/media/download/test/nosuchmedia", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get("/_matrix/media/v3/download/test/nosuchmedia"), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.get("/_matrix/client/v1/media/download/test/..%2F..%2Fetc%2Fpasswd", alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.get("/_matrix/client/v1/media/download/bad%20server/abc", alice), 400, "M_INVALID_PARAM"
        )
        # Errors of download routes carry the sandbox too.
        self.assertTrue(self.header("content-security-policy").startswith("sandbox"))

    async def test_authenticated_endpoints_refuse_missing_tokens(self) -> None:
        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, png(64, 64), "image/png")
        paths = [
            f"/_matrix/client/v1/media/download/{self.split(mxc)}",
            f"/_matrix/client/v1/media/download/{self.split(mxc)}/f.png",
            f"/_matrix/client/v1/media/thumbnail/{self.split(mxc)}?width=32&height=32",
            "/_matrix/client/v1/media/config",
            "/_matrix/client/v1/media/preview_url?url=http://127.0.0.1/",
        ]
        for path in paths:
            self.assertMatrixError(await self.get(path), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.get(path, "not-a-token"), 401, "M_UNKNOWN_TOKEN")
        for path in ("/_matrix/media/v3/upload", "/_matrix/media/v1/create"):
            self.assertMatrixError(await self.request("POST", path, raw=b"x"), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get("/_matrix/media/v3/config"), 401, "M_MISSING_TOKEN")

    async def test_config(self) -> None:
        alice = await self.register("alice")
        for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
            code, body = await self.get(path, alice)
            self.assertEqual((code, body), (200, {"m.upload.size": 50 * 1024 * 1024}))

    async def test_head_request(self) -> None:
        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, b"12345", "text/plain")
        code, body = await self.request("HEAD", f"/_matrix/client/v1/media/download/{self.split(mxc)}", token=alice)
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(self.header("content-length"), "5")

    async def test_versions_advertise_authenticated_media(self) -> None:
        code, body = await self.get("/_matrix/client/versions")
        self.assertEqual(code, 200)
        self.assertIn("v1.11", body["versions"])


class UploadLimitTests(MediaTestCase):
    config_overrides = {"media": {"max_upload_size": "100K", "user_quota": "150K"}}

    async def test_too_large_upload(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.upload(alice, b"x" * (100 * 1024 + 1)), 413, "M_TOO_LARGE")
        await self.upload_ok(alice, b"x" * (100 * 1024))
        # The server keeps serving, and the config says the limit.
        code, body = await self.get("/_matrix/client/v1/media/config", alice)
        self.assertEqual(body, {"m.upload.size": 100 * 1024})

    async def test_quota(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.upload_ok(alice, b"x" * (80 * 1024))
        self.assertMatrixError(await self.upload(alice, b"x" * (80 * 1024)), 403, "M_FORBIDDEN")
        await self.upload_ok(bob, b"x" * (80 * 1024))
        # The quota applies to async uploads too.
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        self.assertEqual(code, 200)
        result = await self.request(
            "PUT", f"/_matrix/media/v3/upload/{self.split(body['content_uri'])}", raw=b"y" * (80 * 1024), token=alice
        )
        self.assertMatrixError(result, 403, "M_FORBIDDEN")


class AsyncUploadTests(MediaTestCase):
    config_overrides = {"media": {"max_pending_uploads": 2, "pending_upload_expiry_ms": "1h"}}

    async def test_create_then_upload(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        self.assertEqual(code, 200, body)
        mxc = body["content_uri"]
        self.assertGreater(body["unused_expires_at"], 0)
        path = f"/_matrix/client/v1/media/download/{self.split(mxc)}"
        # Not uploaded yet: a short wait, then M_NOT_YET_UPLOADED.
        self.assertMatrixError(await self.get(path + "?timeout_ms=50", bob), 504, "M_NOT_YET_UPLOADED")
        # Another user may not fill it.
        put = f"/_matrix/media/v3/upload/{self.split(mxc)}?filename=a.txt"
        self.assertMatrixError(await self.request("PUT", put, raw=b"data", token=bob), 403, "M_FORBIDDEN")
        code, body = await self.request("PUT", put, raw=b"data", token=alice, headers={"Content-Type": "text/plain"})
        self.assertEqual((code, body), (200, {}))
        code, body = await self.get(path, bob)
        self.assertEqual((code, body), (200, b"data"))
        self.assertEqual(self.header("content-disposition"), 'inline; filename="a.txt"')
        # Only once.
        self.assertMatrixError(await self.request("PUT", put, raw=b"other", token=alice), 409, "M_CANNOT_OVERWRITE_MEDIA")

    async def test_concurrent_puts_one_wins(self) -> None:
        from twisted.internet.defer import ensureDeferred, gatherResults

        alice = await self.register("alice")
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        put = f"/_matrix/media/v3/upload/{self.split(body['content_uri'])}"
        results = await gatherResults([
            ensureDeferred(self.request("PUT", put, raw=bytes([i]) * 50_000, token=alice)) for i in range(4)
        ])
        codes = sorted(code for code, _ in results)
        self.assertEqual(codes, [200, 409, 409, 409], results)
        winner = [i for i, (code, _) in enumerate(results) if code == 200][0]
        code, data = await self.get(f"/_matrix/client/v1/media/download/{self.split(body['content_uri'])}", alice)
        self.assertEqual(data, bytes([winner]) * 50_000)

    async def test_waiting_download_wakes_on_upload(self) -> None:
        alice = await self.register("alice")
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        mxc = body["content_uri"]
        waiting = self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}?timeout_ms=10000", alice)
        from twisted.internet.defer import ensureDeferred

        d = ensureDeferred(waiting)
        code, body = await self.request("PUT", f"/_matrix/media/v3/upload/{self.split(mxc)}", raw=b"late", token=alice)
        self.assertEqual(code, 200)
        self.assertEqual(await d, (200, b"late"))

    async def test_pending_limit_and_unknown_ids(self) -> None:
        alice = await self.register("alice")
        for _ in range(2):
            code, _ = await self.post("/_matrix/media/v1/create", {}, alice)
            self.assertEqual(code, 200)
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        self.assertMatrixError((code, body), 429, "M_LIMIT_EXCEEDED")
        self.assertGreater(body["retry_after_ms"], 0)
        # Never created, or another server's: M_NOT_FOUND.
        for target in ("test/neverCreated", "elsewhere.example/abc"):
            result = await self.request("PUT", f"/_matrix/media/v3/upload/{target}", raw=b"x", token=alice)
            self.assertMatrixError(result, 404, "M_NOT_FOUND")


class ExpiryTests(MediaTestCase):
    use_fake_clock = True
    config_overrides = {"media": {"pending_upload_expiry_ms": "10s", "max_pending_uploads": 1}}

    async def test_expired_reservation(self) -> None:
        alice = await self.register("alice")
        code, body = await self.post("/_matrix/media/v1/create", {}, alice)
        mxc = body["content_uri"]
        self.assertEqual(body["unused_expires_at"], int(self.clock.seconds() * 1000) + 10_000)
        self.assertMatrixError(await self.post("/_matrix/media/v1/create", {}, alice), 429, "M_LIMIT_EXCEEDED")
        self.clock.advance(11)
        result = await self.request("PUT", f"/_matrix/media/v3/upload/{self.split(mxc)}", raw=b"x", token=alice)
        self.assertMatrixError(result, 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}", alice), 404,
                               "M_NOT_FOUND")
        # An expired reservation no longer counts against the limit.
        code, _ = await self.post("/_matrix/media/v1/create", {}, alice)
        self.assertEqual(code, 200)
        # The hourly clean-up deletes the expired row (and only it).
        media_id = mxc.split("/")[-1]
        self.assertIsNotNone(await self.hs.media_store.get_local_media(media_id))
        # The clock starts the clean-up, which then runs its query: wait for that run itself.
        repo = self.hs.media_repository
        delete = repo.delete_expired_reservations
        runs: list[Deferred[int]] = []

        def recording() -> Deferred[int]:
            d = ensureDeferred(delete())
            runs.append(d)
            return d

        repo.delete_expired_reservations = recording  # type: ignore[assignment,method-assign]
        self.clock.advance(3600)
        self.assertEqual(len(runs), 1)
        await runs[0]
        self.assertIsNone(await self.hs.media_store.get_local_media(media_id))


class FrozenUnauthenticatedMediaTests(MediaTestCase):
    config_overrides = {"media": {"unauthenticated_downloads": False}}

    async def test_new_media_only_through_authenticated_endpoints(self) -> None:
        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, png(100, 100), "image/png")
        self.assertMatrixError(await self.get(f"/_matrix/media/v3/download/{self.split(mxc)}"), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.get(f"/_matrix/media/v3/thumbnail/{self.split(mxc)}?width=32&height=32"), 404, "M_NOT_FOUND"
        )
        code, _ = await self.get(f"/_matrix/client/v1/media/download/{self.split(mxc)}", alice)
        self.assertEqual(code, 200)


class FreezeOnRestartTests(MediaTestCase):
    """The operator freezes the deprecated endpoints (config change, restart): older media stays there."""

    async def test_media_from_before_the_freeze_stays_available(self) -> None:
        alice = await self.register("alice")
        # Stored while the deprecated endpoints were open (the default).
        mxc = await self.upload_ok(alice, b"old", "text/plain")
        await self.restart({"media": {"unauthenticated_downloads": False}})
        code, body = await self.get(f"/_matrix/media/v3/download/{self.split(mxc)}")
        self.assertEqual((code, body), (200, b"old"))
        # what is stored from now on is frozen out of them
        new = await self.upload_ok(alice, b"new", "text/plain")
        self.assertMatrixError(await self.get(f"/_matrix/media/v3/download/{self.split(new)}"), 404, "M_NOT_FOUND")


class StorageModuleTests(MediaTestCase):
    """The storage module is chosen like any module; its config reaches it."""

    def make_config(self) -> Any:
        self.config_overrides = {
            "modules": [{"group": "mxserver.media_storage", "name": "file",
                         "config": {"path": os.path.join(self.data_dir, "elsewhere")}}]
        }
        return super().make_config()

    async def test_files_are_sharded_under_the_module_path(self) -> None:
        from mxserver.media.storage import check_key, local_key

        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, b"stored elsewhere")
        media_id = mxc.rsplit("/", 1)[1]
        path = os.path.join(self.data_dir, "elsewhere", "local_content", media_id[:2], media_id[2:4], media_id[4:])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"stored elsewhere")
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "media", "local_content")))
        self.assertEqual(local_key(media_id), f"local_content/{media_id[:2]}/{media_id[2:4]}/{media_id[4:]}")
        for bad in ("../etc/passwd", "a//b", "a/./b", "/abs", "a/b\\c"):
            with self.assertRaises(ValueError):
                check_key(bad)
