"""The media repository: uploads and downloads of local media, remote media through its fetcher.

Local media is uploaded in one request (``POST /upload``) or reserved first
and uploaded later (``POST /create`` + ``PUT /upload/{server}/{id}``, with an
expiry and a per-user cap on pending reservations). Downloads of a pending
reservation wait up to ``timeout_ms`` for the upload, then answer
``M_NOT_YET_UPLOADED``. Remote media is fetched once
(:mod:`mxserver.media.remote`) and cached. Thumbnails are made with Pillow in
a thread (the pre-generated sizes of client-server-api §Thumbnails at upload,
others on demand) and served by nearest-larger choice.

Quarantined media (the admin API) is served to nobody: downloads and thumbnails answer 404
``M_NOT_FOUND`` as for unknown media, here and over federation. Deleting local media (the admin
API) removes its row, then its stored file and thumbnails through the media storage module.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxserver.config import MediaConfig
from mxserver.errors import MatrixError, forbidden, invalid_param, limit_exceeded, not_found, too_large
from mxserver.ids import is_valid_server_name
from mxserver.interfaces import IMediaStorage
from mxserver.media.http import MEDIA_ID, sanitise_content_type, sanitise_filename
from mxserver.media.remote import DEFAULT_WAIT_MS, MAX_WAIT_MS, RemoteMediaFetcher
from mxserver.media.storage import local_key
from mxserver.media.thumbnails import Media, Thumbnails, _Source
from mxserver.storage.media import LOCAL, LocalMedia, MediaStore

log = Logger()

#: how often expired /create reservations are deleted (seconds)
CLEANUP_INTERVAL_S = 3600
_ALPHABET = string.ascii_letters + string.digits


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


#: local media's last download is recorded at most this often (ms): retention needs only coarse times
ACCESS_RESOLUTION_MS = 60_000


def quarantined() -> MatrixError:
    # Synapse's answer, the same as for unknown media: nothing tells the media exists.
    return not_found("Media not found")


def not_yet_uploaded() -> MatrixError:
    return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")


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

    def __init__(
        self,
        server_name: str,
        config: MediaConfig,
        clock: IReactorTime,
        store: MediaStore,
        storage: IMediaStorage,
        thumbnails: Thumbnails,
        remote: RemoteMediaFetcher,
    ) -> None:
        self.server_name = server_name
        self.config = config
        self.clock = clock
        self.store = store
        self.storage = storage
        self.thumbnails = thumbnails
        #: media of other servers (fetched once over federation, then cached)
        self.remote = remote
        self._upload_waiters: dict[str, list[Deferred[None]]] = {}
        #: reservations whose bytes are being stored right now (PUT /upload/{server}/{id})
        self._uploading: set[str] = set()
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
        return await self.thumbnails.pregenerate(LOCAL, media_id, media_id, data, ctype)

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
        await self._touch(row)
        return Media(data, row.content_type or "application/octet-stream", row.upload_name)

    async def _touch(self, row: LocalMedia) -> None:
        now = self.now_ms()
        if row.last_access_ts is None or now - row.last_access_ts > ACCESS_RESOLUTION_MS:
            await self.store.touch_local_media(row.media_id, now)

    async def local_media_row(self, media_id: str, timeout_ms: int | None) -> LocalMedia:
        """The uploaded local media row, waiting for a pending upload up to ``timeout_ms``."""
        row = await self.store.get_local_media(media_id)
        if row is None:
            raise not_found("Media not found")
        if row.quarantined_by is not None:
            raise quarantined()
        if row.pending:
            if (row.unused_expires_ts or 0) <= self.now_ms():
                raise not_found("Media not found")
            wait = DEFAULT_WAIT_MS if timeout_ms is None else timeout_ms
            await self._wait_for_upload(media_id, min(max(wait, 0), MAX_WAIT_MS))
            row = await self.store.get_local_media(media_id)
            if row is None:
                raise not_found("Media not found")
            if row.quarantined_by is not None:
                raise quarantined()
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
        thumbnail = await self.thumbnails.thumbnail_of(source, width, height, method, animated)
        await self._touch(row)
        return thumbnail

    # -- deleting (the admin API) -------------------------------------------------------------

    async def delete_local_media(self, media_ids: list[str]) -> list[str]:
        """Delete local media with its thumbnails; the IDs that existed (and are gone now).

        Rows first, then files: a crash in between leaves orphan files, never rows without bytes.
        """
        deleted = await self.store.delete_local_media(media_ids)
        for media_id, thumbnail_keys in deleted.items():
            await self.storage.delete(local_key(media_id))
            for key in thumbnail_keys:
                await self.storage.delete(key)
        if deleted:
            log.info("deleted {n} local media files", n=len(deleted))
        return list(deleted)
