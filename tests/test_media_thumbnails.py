"""Thumbnails: geometry of scale and crop, nearest-larger choice, EXIF, animation, bad images."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from typing import Any

from PIL import Image
from twisted.trial import unittest

from mxserver.media import thumbnailer
from mxserver.media.thumbnailer import target_size
from mxserver.media.thumbnails import select_thumbnail
from mxserver.storage.media import Thumbnail
from tests.test_media import MediaTestCase, png


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    im = Image.new("RGB", (width, height), (10, 120, 200))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def gif(width: int, height: int, frames: int) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 80 % 256, 40, 90)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=frames > 1, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` but holds almost no data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


class GeometryTests(unittest.SynchronousTestCase):
    def test_scale_fits_the_box(self) -> None:
        self.assertEqual(target_size(1000, 500, 320, 240, "scale"), (320, 160))
        self.assertEqual(target_size(500, 1000, 320, 240, "scale"), (120, 240))
        self.assertIsNone(target_size(100, 50, 320, 240, "scale"))

    def test_crop_fills_the_box_without_upscaling(self) -> None:
        self.assertEqual(target_size(1000, 500, 96, 96, "crop"), (96, 96))
        # Narrower than the box: keep the width, cut the height to the box's aspect.
        self.assertEqual(target_size(80, 500, 96, 96, "crop"), (80, 80))
        self.assertEqual(target_size(500, 60, 100, 100, "crop"), (60, 60))
        self.assertIsNone(target_size(50, 50, 96, 96, "crop"))

    def test_nearest_larger_choice(self) -> None:
        def t(w: int, h: int, method: str, animated: bool = False) -> Thumbnail:
            return Thumbnail("", "m", w, h, method, animated, "image/png", 1, f"k{w}x{h}{method}")

        thumbs = [t(32, 32, "crop"), t(96, 96, "crop"), t(320, 160, "scale"), t(640, 320, "scale"), t(800, 400, "scale")]
        self.assertEqual(select_thumbnail(thumbs, 50, 50, "crop", False).width, 96)
        self.assertEqual(select_thumbnail(thumbs, 32, 32, "crop", False).width, 32)
        self.assertIsNone(select_thumbnail(thumbs, 100, 50, "crop", False))  # no 2:1 crop yet
        self.assertEqual(select_thumbnail(thumbs, 400, 200, "scale", False).width, 640)
        self.assertIsNone(select_thumbnail(thumbs, 900, 450, "scale", False))
        self.assertIsNone(select_thumbnail(thumbs, 32, 32, "crop", True))

    def test_bomb_refused_from_the_header(self) -> None:
        with self.assertRaises(thumbnailer.ImageTooLarge):
            thumbnailer.probe(png_header(100_000, 100_000), 32_000_000)
        with self.assertRaises(thumbnailer.ImageTooLarge):
            thumbnailer.make_thumbnails(png_header(6000, 6000), [(32, 32, "crop")], 32_000_000)

    def test_malformed(self) -> None:
        for data in (b"not an image", png(100, 100)[:60], b"\x89PNG\r\n\x1a\n"):
            with self.assertRaises(thumbnailer.ThumbnailError):
                thumbnailer.make_thumbnails(data, [(32, 32, "crop")], 32_000_000)


class ThumbnailTests(MediaTestCase):
    async def thumb(self, mxc: str, width: int, height: int, method: str = "scale", user: Any = None,
                    extra: str = "") -> tuple[int, Any]:
        path = f"/_matrix/client/v1/media/thumbnail/{self.split(mxc)}?width={width}&height={height}&method={method}{extra}"
        return await self.get(path, user or self.alice)

    async def image(self, mxc: str, width: int, height: int, method: str = "scale", extra: str = "") -> Image.Image:
        code, body = await self.thumb(mxc, width, height, method, extra=extra)
        self.assertEqual(code, 200, body)
        self.assertIsInstance(body, bytes)
        return decode(body)

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.register("alice")

    async def test_requested_geometry(self) -> None:
        mxc = await self.upload_ok(self.alice, png(1000, 500), "image/png")
        cases = [
            (96, 96, "crop", (96, 96)),
            (32, 32, "crop", (32, 32)),
            (320, 240, "scale", (320, 160)),
            (640, 480, "scale", (640, 320)),
            (50, 50, "crop", (96, 96)),  # nearest larger pre-generated
            (200, 100, "crop", (200, 100)),  # made on demand in the box's aspect
            (900, 900, "scale", (900, 450)),  # larger than every pre-generated one
        ]
        for w, h, method, expected in cases:
            im = await self.image(mxc, w, h, method)
            self.assertEqual(im.size, expected, (w, h, method))
            self.assertEqual(im.format, "PNG")
            self.assertEqual(self.header("content-type"), "image/png")
            self.assertEqual(self.header("content-disposition"), "inline")
            self.assertEqual(self.header("x-content-type-options"), "nosniff")
        # On-demand thumbnails are kept: the same request is served from the store.
        thumbs = await self.hs.media_store.get_thumbnails("", self.split(mxc).split("/")[1])
        self.assertIn((200, 100, "crop"), {(t.width, t.height, t.method) for t in thumbs})

    async def test_small_images_are_served_as_they_are(self) -> None:
        data = png(20, 10)
        mxc = await self.upload_ok(self.alice, data, "image/png")
        code, body = await self.thumb(mxc, 32, 32, "crop")
        self.assertEqual((code, body), (200, data))

    async def test_jpeg_stays_jpeg_and_exif_orientation_is_respected(self) -> None:
        # Stored 400x200, but EXIF orientation 6 (rotate 90) makes it 200x400 to look at.
        mxc = await self.upload_ok(self.alice, jpeg(400, 200, orientation=6), "image/jpeg")
        im = await self.image(mxc, 320, 240, "scale")
        self.assertEqual(im.format, "JPEG")
        self.assertEqual(im.size, (120, 240))
        self.assertEqual(self.header("content-type"), "image/jpeg")

    async def test_animated(self) -> None:
        mxc = await self.upload_ok(self.alice, gif(200, 200, 3), "image/gif")
        im = await self.image(mxc, 96, 96, "crop", extra="&animated=true")
        self.assertEqual(self.header("content-type"), "image/webp")
        self.assertEqual(im.size, (96, 96))
        self.assertTrue(getattr(im, "is_animated", False))
        self.assertEqual(im.n_frames, 3)
        # animated=false (and absent) must not be animated.
        for extra in ("&animated=false", ""):
            im = await self.image(mxc, 96, 96, "crop", extra=extra)
            self.assertEqual(self.header("content-type"), "image/png")
            self.assertFalse(getattr(im, "is_animated", False))
        # Smaller than the request, but animated: a static copy, not the original GIF.
        im = await self.image(mxc, 400, 400, "scale", extra="&animated=false")
        self.assertEqual((im.size, im.format), ((200, 200), "PNG"))
        # A still image asked for animated is just a still thumbnail.
        still = await self.upload_ok(self.alice, png(300, 300), "image/png")
        im = await self.image(still, 96, 96, "crop", extra="&animated=true")
        self.assertEqual(self.header("content-type"), "image/png")

    async def test_thumbnails_made_off_the_reactor_thread(self) -> None:
        threads: list[str] = []
        original = thumbnailer.make_thumbnails

        def spy(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return original(*args, **kwargs)

        self.patch(thumbnailer, "make_thumbnails", spy)
        mxc = await self.upload_ok(self.alice, png(500, 500), "image/png")
        await self.image(mxc, 123, 77, "crop")
        self.assertGreaterEqual(len(threads), 2)  # pre-generated at upload, then on demand
        self.assertNotIn(threading.main_thread().name, threads)
        # ... and measured.
        from prometheus_client import REGISTRY

        count = REGISTRY.get_sample_value("mxserver_media_image_work_seconds_count", {"work": "probe"})
        self.assertGreaterEqual(count or 0, 1)

    async def test_bombs_and_malformed_images_rejected_cleanly(self) -> None:
        bomb = await self.upload_ok(self.alice, png_header(100_000, 100_000), "image/png")
        self.assertMatrixError(await self.thumb(bomb, 32, 32, "crop"), 413, "M_TOO_LARGE")
        over_limit = await self.upload_ok(self.alice, png_header(6000, 6000), "image/png")
        self.assertMatrixError(await self.thumb(over_limit, 32, 32, "crop"), 413, "M_TOO_LARGE")
        for data in (b"this is not a png", png(300, 300)[:100]):
            bad = await self.upload_ok(self.alice, data, "image/png")
            self.assertMatrixError(await self.thumb(bad, 32, 32, "crop"), 400, "M_UNKNOWN")
            # The bytes are still there to download as they were.
            code, body = await self.get(f"/_matrix/client/v1/media/download/{self.split(bad)}", self.alice)
            self.assertEqual((code, body), (200, data))
        text = await self.upload_ok(self.alice, b"hello", "text/plain")
        self.assertMatrixError(await self.thumb(text, 32, 32), 400, "M_UNKNOWN")
        # The server is fine afterwards.
        good = await self.upload_ok(self.alice, png(200, 200), "image/png")
        self.assertEqual((await self.image(good, 96, 96, "crop")).size, (96, 96))

    async def test_bad_parameters(self) -> None:
        mxc = await self.upload_ok(self.alice, png(200, 200), "image/png")
        base = f"/_matrix/client/v1/media/thumbnail/{self.split(mxc)}"
        self.assertMatrixError(await self.get(base + "?width=0&height=10", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(base + "?width=-5&height=10", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(base + "?width=abc&height=10", self.alice), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(base + "?height=10", self.alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.get(base + "?width=10&height=10&method=zoom", self.alice), 400,
                               "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(base + "?width=10&height=10&animated=maybe", self.alice), 400,
                               "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.get("/_matrix/client/v1/media/thumbnail/test/unknownMedia?width=10&height=10", self.alice),
            404, "M_NOT_FOUND",
        )

    async def test_deprecated_thumbnail_endpoint(self) -> None:
        mxc = await self.upload_ok(self.alice, png(400, 400), "image/png")
        code, body = await self.get(f"/_matrix/media/v3/thumbnail/{self.split(mxc)}?width=96&height=96&method=crop")
        self.assertEqual(code, 200)
        self.assertEqual(decode(body).size, (96, 96))


class PixelLimitTests(MediaTestCase):
    config_overrides = {"media": {"max_image_pixels": 10_000}}

    async def test_configured_pixel_limit(self) -> None:
        alice = await self.register("alice")
        mxc = await self.upload_ok(alice, png(200, 200), "image/png")
        result = await self.get(f"/_matrix/client/v1/media/thumbnail/{self.split(mxc)}?width=32&height=32", alice)
        self.assertMatrixError(result, 413, "M_TOO_LARGE")
