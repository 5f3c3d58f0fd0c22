"""The media repository (``hs.media_repository``): uploads, downloads, thumbnails.

Local media is uploaded in one request (``POST /upload``) or reserved first
and uploaded later (``POST /create`` + ``PUT /upload/{server}/{id}``, with an
expiry and a per-user cap on pending reservations). Downloads of a pending
reservation wait up to ``timeout_ms`` for the upload, then answer
``M_NOT_YET_UPLOADED``. Remote media is fetched once
(:mod:`mxserver.media.remote`) and cached. Thumbnails are made with Pillow in
a thread (the pre-generated sizes of client-server-api §Thumbnails at upload,
others on demand) and served by nearest-larger choice.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from typing import Any

import attrs
from prometheus_client import Histogram
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mxserver.errors import MatrixError, forbidden, invalid_param, limit_exceeded, not_found, too_large
from mxserver.ids import is_valid_server_name
from mxserver.media import thumbnailer
from mxserver.media.http import MEDIA_ID, base_type, sanitise_content_type, sanitise_filename
from mxserver.media.storage import IMediaStorage, local_key, thumbnail_key
from mxserver.media.thumbnailer import THUMBNAILABLE_TYPES, ImageTooLarge, ThumbnailError, target_size
from mxserver.storage.media import LOCAL, LocalMedia, MediaStore, Thumbnail

log = Logger()

#: DESIGN.md: thumbnailing is CPU-heavy, so it is measured (time inside the worker thread)
THUMBNAIL_SECONDS = Histogram(
    "mxserver_media_image_work_seconds",
    "Time spent decoding and thumbnailing images, by kind of work",
    ["work"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

#: how often expired /create reservations are deleted (seconds)
CLEANUP_INTERVAL_S = 3600
#: longest wait for a pending upload, whatever timeout_ms a client asks for
MAX_WAIT_MS = 60_000
DEFAULT_WAIT_MS = 20_000
_ALPHABET = string.ascii_letters + string.digits


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


@attrs.frozen
class Media:
    """Bytes to serve, with what the headers need."""

    data: bytes
    content_type: str
    filename: str | None = None


def not_yet_uploaded() -> MatrixError:
    return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")


def cannot_thumbnail(msg: str = "Cannot generate thumbnails for the requested content") -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", msg)


def check_media_id(server_name: str, media_id: str) -> None:
    """client-server-api §Security considerations: sanitise both parts of an mxc:// URI."""
    if not is_valid_server_name(server_name):
        raise invalid_param(f"Invalid server name {server_name!r}")
    if not MEDIA_ID.fullmatch(media_id):
        raise invalid_param("Invalid media ID")


class MediaRepository(service.Service):
    """Uploads, downloads and thumbnails; see the module docstring.

    A child service of the Homeserver: while running, it deletes expired
    ``/create`` reservations every hour.
    """

    def __init__(self, hs: Any, store: MediaStore, storage: IMediaStorage) -> None:
        self.hs = hs
        self.server_name: str = hs.server_name
        self.config = hs.config.media
        self.clock = hs.clock
        self.store = store
        self.storage = storage
        # Thumbnailing is CPU- and memory-heavy: at most two images at once, in threads.
        self._thumbnail_slots = DeferredSemaphore(2)
        self._upload_waiters: dict[str, list[Deferred[None]]] = {}
        #: reservations whose bytes are being stored right now (PUT /upload/{server}/{id})
        self._uploading: set[str] = set()
        self.remote: Any = None  # set by build_media (mxserver.media.remote.RemoteMediaFetcher)
        self.previewer: Any = None  # set by build_media (mxserver.media.preview.UrlPreviewer)
        self._cleanup = LoopingCall(lambda: ensureDeferred(self.delete_expired_reservations()))
        self._cleanup.clock = self.clock

    def startService(self) -> None:
        super().startService()
        # Not now: the database is migrated after the services start.
        self._cleanup.start(CLEANUP_INTERVAL_S, now=False)

    def stopService(self) -> Any:
        if self._cleanup.running:
            self._cleanup.stop()
        return super().stopService()

    async def delete_expired_reservations(self) -> int:
        try:
            return int(await self.store.delete_expired_reservations(self.now_ms()))
        except Exception:
            log.failure("deleting expired media reservations failed")
            return 0

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def authenticated_only(self) -> bool:
        """Whether media stored now is frozen out of the deprecated endpoints."""
        return not self.config.unauthenticated_downloads

    # -- uploads --------------------------------------------------------------------------

    async def upload(self, user_id: str, data: bytes, content_type: str | None, filename: str | None) -> str:
        """POST /upload: store the bytes; the new ``mxc://`` URI."""
        self._check_size(len(data))
        await self._check_quota(user_id, len(data))
        media_id = new_media_id()
        ctype = sanitise_content_type(content_type)
        info = await self._store_local(media_id, data, ctype)
        now = self.now_ms()
        await self.store.store_local_media(
            LocalMedia(
                media_id, user_id, ctype, sanitise_filename(filename), len(data), now, now, None,
                self.authenticated_only, *info,
            )
        )
        return f"mxc://{self.server_name}/{media_id}"

    async def create(self, user_id: str) -> tuple[str, int]:
        """POST /create: reserve an ID; ``(mxc URI, unused_expires_at)``."""
        now = self.now_ms()
        expires = now + self.config.pending_upload_expiry_ms
        media_id = new_media_id()
        earliest = await self.store.reserve_local_media(
            media_id, user_id, now, expires, self.config.max_pending_uploads, self.authenticated_only
        )
        if earliest is not None:
            # content-repo.yaml /create: too many pending uploads is M_LIMIT_EXCEEDED.
            raise limit_exceeded(max(1000, earliest - now))
        return f"mxc://{self.server_name}/{media_id}", expires

    async def upload_to(
        self, user_id: str, server_name: str, media_id: str, data: bytes, content_type: str | None, filename: str | None
    ) -> None:
        """PUT /upload/{serverName}/{mediaId}: fill a reservation made by the same user."""
        check_media_id(server_name, media_id)
        if server_name != self.server_name:
            raise not_found("Unknown media ID")
        row = await self.store.get_local_media(media_id)
        if row is None or (row.pending and (row.unused_expires_ts or 0) <= self.now_ms()):
            raise not_found("Unknown media ID")
        if row.user_id != user_id:
            raise forbidden("This media ID was created by another user")
        if not row.pending or media_id in self._uploading:
            # A second PUT racing the first must not overwrite the bytes the first stores.
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        self._check_size(len(data))
        self._uploading.add(media_id)
        try:
            # A racing PUT may have read the row before the first one finished and checked
            # ``_uploading`` after it: read again now that we hold the claim, before any byte
            # is written, so a finished upload is never overwritten.
            fresh = await self.store.get_local_media(media_id)
            if fresh is None or not fresh.pending:
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            await self._check_quota(user_id, len(data))
            ctype = sanitise_content_type(content_type)
            info = await self._store_local(media_id, data, ctype)
            done = await self.store.complete_upload(
                media_id, ctype, sanitise_filename(filename), len(data), self.now_ms(), *info
            )
        finally:
            self._uploading.discard(media_id)
        if not done:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        for waiter in self._upload_waiters.pop(media_id, []):
            if not waiter.called:
                waiter.callback(None)

    def _check_size(self, size: int) -> None:
        if size > self.config.max_upload_size:
            raise too_large(f"Cannot upload files larger than {self.config.max_upload_size} bytes")

    async def _check_quota(self, user_id: str, size: int) -> None:
        quota = self.config.user_quota
        if quota is None:
            return
        used = await self.store.user_upload_total(user_id)
        if used + size > quota:
            # client-server-api §Security considerations: quota exceeded is 403 M_FORBIDDEN.
            raise forbidden("Media upload quota exceeded")

    async def _store_local(self, media_id: str, data: bytes, ctype: str) -> tuple[int | None, int | None, bool | None]:
        """Store the bytes and the pre-generated thumbnails; ``(width, height, animated)`` of an image."""
        await self.storage.store(local_key(media_id), data)
        return await self.pregenerate(LOCAL, media_id, media_id, data, ctype)

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

    # -- downloads ----------------------------------------------------------------------------

    async def get_media(
        self,
        server_name: str,
        media_id: str,
        *,
        allow_remote: bool = True,
        timeout_ms: int | None = None,
        authenticated: bool = True,
    ) -> Media:
        """The content of ``mxc://server_name/media_id``.

        ``authenticated`` is False on the deprecated endpoints, which do not
        serve media stored while they were frozen.
        """
        check_media_id(server_name, media_id)
        if server_name != self.server_name:
            return await self.remote.get_media(server_name, media_id, allow_remote, timeout_ms, authenticated)
        row = await self.local_media_row(media_id, timeout_ms)
        if row.authenticated and not authenticated:
            raise not_found("Media not found")
        data = await self.storage.fetch(local_key(media_id))
        if data is None:
            log.warn("local media {media_id} has a row but no stored file", media_id=media_id)
            raise not_found("Media not found")
        return Media(data, row.content_type or "application/octet-stream", row.upload_name)

    async def local_media_row(self, media_id: str, timeout_ms: int | None) -> LocalMedia:
        """The uploaded local media row, waiting for a pending upload up to ``timeout_ms``."""
        row = await self.store.get_local_media(media_id)
        if row is None:
            raise not_found("Media not found")
        if row.pending:
            if (row.unused_expires_ts or 0) <= self.now_ms():
                raise not_found("Media not found")
            wait = DEFAULT_WAIT_MS if timeout_ms is None else timeout_ms
            await self._wait_for_upload(media_id, min(max(wait, 0), MAX_WAIT_MS))
            row = await self.store.get_local_media(media_id)
            if row is None:
                raise not_found("Media not found")
            if row.pending:
                raise not_yet_uploaded()
        return row

    async def _wait_for_upload(self, media_id: str, wait_ms: int) -> None:
        if wait_ms <= 0:
            return
        waiter: Deferred[None] = Deferred()
        self._upload_waiters.setdefault(media_id, []).append(waiter)
        def expire() -> None:
            if not waiter.called:
                waiter.callback(None)

        timer = self.clock.callLater(wait_ms / 1000, expire)
        try:
            await waiter
        finally:
            if timer.active():
                timer.cancel()
            waiters = self._upload_waiters.get(media_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._upload_waiters[media_id]

    # -- thumbnails -------------------------------------------------------------------------------

    async def get_thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        animated: bool,
        *,
        allow_remote: bool = True,
        timeout_ms: int | None = None,
        authenticated: bool = True,
    ) -> Media:
        """A thumbnail of ``mxc://server_name/media_id`` (client-server-api §Thumbnails)."""
        check_media_id(server_name, media_id)
        if width < 1 or height < 1:
            raise invalid_param("width and height must be positive integers")
        if method not in ("crop", "scale"):
            raise invalid_param("method must be crop or scale")
        if server_name != self.server_name:
            return await self.remote.get_thumbnail(
                server_name, media_id, width, height, method, animated, allow_remote, timeout_ms, authenticated
            )
        row = await self.local_media_row(media_id, timeout_ms)
        if row.authenticated and not authenticated:
            raise not_found("Media not found")
        source = _Source(LOCAL, media_id, media_id, row.content_type or "", row.width, row.height, row.animated,
                         row.upload_name, local_key(media_id))
        return await self.thumbnail_of(source, width, height, method, animated)

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
