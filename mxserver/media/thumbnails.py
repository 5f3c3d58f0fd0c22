"""Thumbnails of stored media: made with Pillow in worker threads, stored, served by nearest-larger choice.

The pre-generated sizes of client-server-api §Thumbnails are made when an
image is stored (local upload or first fetch of remote media); other sizes on
demand. Both the local repository and the remote-media cache use this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from prometheus_client import Histogram
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mxserver.config import MediaConfig
from mxserver.errors import MatrixError, not_found, too_large
from mxserver.interfaces import IMediaStorage
from mxserver.media import thumbnailer
from mxserver.media.http import base_type
from mxserver.media.storage import thumbnail_key
from mxserver.media.thumbnailer import THUMBNAILABLE_TYPES, ImageTooLarge, ThumbnailError, target_size
from mxserver.storage.media import MediaStore, Thumbnail

log = Logger()

#: DESIGN.md: thumbnailing is CPU-heavy, so it is measured (time inside the worker thread)
THUMBNAIL_SECONDS = Histogram(
    "mxserver_media_image_work_seconds",
    "Time spent decoding and thumbnailing images, by kind of work",
    ["work"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)



@attrs.frozen
class Media:
    """Bytes to serve, with what the headers need."""

    data: bytes
    content_type: str
    filename: str | None = None


def cannot_thumbnail(msg: str = "Cannot generate thumbnails for the requested content") -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", msg)


@attrs.frozen
class _Source:
    """A stored original to thumbnail: local media or a cached remote file."""

    origin: str
    media_id: str
    file_id: str
    content_type: str
    width: int | None
    height: int | None
    animated: bool | None
    filename: str | None
    storage_key: str



class Thumbnails:
    """Makes, stores and chooses thumbnails of stored originals."""

    def __init__(self, server_name: str, config: MediaConfig, store: MediaStore, storage: IMediaStorage) -> None:
        self.server_name = server_name
        self.config = config
        self.store = store
        self.storage = storage
        # Thumbnailing is CPU- and memory-heavy: at most two images at once, in threads.
        self._thumbnail_slots = DeferredSemaphore(2)

    async def pregenerate(
        self, origin: str, media_id: str, file_id: str, data: bytes, ctype: str
    ) -> tuple[int | None, int | None, bool | None]:
        """Make the pre-generated thumbnails of an image; its ``(width, height, animated)``.

        Content that is not a decodable image within the limits is stored all
        the same: it just has no thumbnails (a thumbnail request says so).
        """
        if base_type(ctype) not in THUMBNAILABLE_TYPES:
            return None, None, None
        try:
            info = await self._in_thread(thumbnailer.probe, data, self.config.max_image_pixels)
            await self._generate(origin, media_id, file_id, data, list(thumbnailer.PREGENERATED), False)
        except ThumbnailError as e:
            log.info("no thumbnails for {origin}/{media_id}: {e}", origin=origin or self.server_name, media_id=media_id, e=e)
            return None, None, None
        return info.width, info.height, info.animated

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        def timed() -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                THUMBNAIL_SECONDS.labels(fn.__name__).observe(time.perf_counter() - start)

        await self._thumbnail_slots.acquire()
        try:
            return await deferToThread(timed)
        finally:
            self._thumbnail_slots.release()

    async def thumbnail_of(self, src: _Source, width: int, height: int, method: str, animated: bool) -> Media:
        """The best thumbnail of a stored original: nearest larger existing one, else made now."""
        if base_type(src.content_type) not in THUMBNAILABLE_TYPES:
            raise cannot_thumbnail()
        if src.width is None or src.height is None:
            # Not decodable when stored (corrupt, or over the pixel limit): say which.
            data = await self._fetch_original(src)
            try:
                await self._in_thread(thumbnailer.probe, data, self.config.max_image_pixels)
            except ImageTooLarge:
                raise too_large("Content is too large to thumbnail") from None
            except ThumbnailError:
                raise cannot_thumbnail() from None
            raise cannot_thumbnail()
        want_animated = animated and bool(src.animated)
        size = target_size(src.width, src.height, width, height, method)
        if size is None and not (src.animated and not animated):
            # §Thumbnails: content smaller than the request is served as it is.
            return Media(await self._fetch_original(src), src.content_type, src.filename)
        if size is None:
            # An animated original may not be returned for animated=false: a static copy of its size.
            size, method = (src.width, src.height), "scale"
        thumbs = await self.store.get_thumbnails(src.origin, src.media_id)
        choice = select_thumbnail(thumbs, size[0], size[1], method, want_animated)
        if choice is not None:
            data = await self.storage.fetch(choice.storage_key)
            if data is not None:
                return Media(data, choice.content_type)
        data = await self._fetch_original(src)
        try:
            made = await self._generate(src.origin, src.media_id, src.file_id, data,
                                        [(size[0], size[1], method)], want_animated, force=True)
        except ImageTooLarge:
            raise too_large("Content is too large to thumbnail") from None
        except ThumbnailError:
            raise cannot_thumbnail() from None
        if not made:
            return Media(data, src.content_type, src.filename)
        return Media(made[0][1], made[0][0].content_type)

    async def _fetch_original(self, src: _Source) -> bytes:
        data = await self.storage.fetch(src.storage_key)
        if data is None:
            raise not_found("Media not found")
        return data

    async def _generate(
        self,
        origin: str,
        media_id: str,
        file_id: str,
        data: bytes,
        requests: list[tuple[int, int, str]],
        animated: bool,
        force: bool = False,
    ) -> list[tuple[Thumbnail, bytes]]:
        """Make, store and record thumbnails; ``(row, bytes)`` of each made."""
        made: list[thumbnailer.Thumb] = await self._in_thread(
            thumbnailer.make_thumbnails, data, requests, self.config.max_image_pixels, animated, force
        )
        rows = []
        for t in made:
            key = thumbnail_key(origin, file_id, t.width, t.height, t.method, t.content_type, t.animated)
            await self.storage.store(key, t.data)
            rows.append((Thumbnail(origin, media_id, t.width, t.height, t.method, t.animated, t.content_type,
                                   len(t.data), key), t.data))
        await self.store.store_thumbnails([r for r, _ in rows])
        return rows


def select_thumbnail(
    thumbs: list[Thumbnail], width: int, height: int, method: str, animated: bool
) -> Thumbnail | None:
    """The smallest thumbnail at least ``width`` x ``height`` (of the box's aspect for crop).

    §Thumbnails: never smaller than asked for; the nearest larger is the
    cheapest to send and closest to what was asked.
    """
    best: Thumbnail | None = None
    for t in thumbs:
        if t.method != method or t.animated != animated or t.width < width or t.height < height:
            continue
        # crop: the box's aspect ratio, within a pixel of rounding
        if method == "crop" and abs(t.width * height - t.height * width) > max(width, height):
            continue
        if best is None or t.width * t.height < best.width * best.height:
            best = t
    return best
