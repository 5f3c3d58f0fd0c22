"""Media of other servers: fetched over federation once, cached, served from the cache.

server-server-api ``GET /_matrix/federation/v1/media/download/{mediaId}``
(v1.11) answers ``multipart/mixed``: a JSON metadata part and the file (or a
``Location`` to fetch it from). Servers older than v1.11 do not know it; for
them we fall back to the deprecated ``/_matrix/media/v3/download`` with
``allow_remote=false`` (no routing loops). Thumbnails of media whose original
is not cached here come from the origin's ``/media/thumbnail`` the same way.
Concurrent requests for one remote file share one fetch.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.config import MediaConfig
from mxserver.errors import MatrixError, not_found
from mxserver.federation.client import FederationClient, FederationError, RawResponse, RequestFailed
from mxserver.federation.responses import SharedCalls
from mxserver.interfaces import IMediaStorage
from mxserver.media.http import (
    MultipartError,
    base_type,
    filename_from_disposition,
    parse_multipart,
    sanitise_content_type,
)
from mxserver.media.preview import SafeFetcher
from mxserver.media.storage import remote_key, thumbnail_key
from mxserver.media.thumbnails import Media, Thumbnails, _Source
from mxserver.storage.media import MediaStore, RemoteMedia, Thumbnail

log = Logger()

#: how much more than the file a multipart answer may take (boundaries, headers, metadata)
_MULTIPART_OVERHEAD = 64 * 1024
#: seconds allowed for one remote fetch, beyond what timeout_ms lets the origin wait
_FETCH_DEADLINE_S = 120.0


def remote_too_large() -> MatrixError:
    # client-server-api §Security considerations: remote content too large is 502 M_TOO_LARGE.
    return MatrixError(502, "M_TOO_LARGE", "Remote content is too large")


def _is_unknown_endpoint(e: FederationError) -> bool:
    """Whether the origin does not know the v1.11 federation media endpoints."""
    if e.errcode == "M_UNRECOGNIZED":
        return True
    # Old servers (and proxies in front of them) may answer a plain 404/405 without a Matrix error.
    return e.code in (404, 405, 501) and e.body is None

#: longest wait for a pending upload, whatever timeout_ms a client asks for
MAX_WAIT_MS = 60_000
DEFAULT_WAIT_MS = 20_000


class RemoteMediaFetcher:
    """Downloads and thumbnails of ``mxc://`` URIs of other servers, cached locally."""

    def __init__(
        self,
        config: MediaConfig,
        clock: IReactorTime,
        store: MediaStore,
        storage: IMediaStorage,
        thumbnails: Thumbnails,
        federation_client: FederationClient,
        redirect_fetcher: SafeFetcher | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.storage = storage
        self.thumbnails = thumbnails
        self.client = federation_client
        #: fetches a ``Location`` the origin redirects to (IP-filtered); see mxserver.media.preview
        self.redirect_fetcher = redirect_fetcher
        self._fetches = SharedCalls()
        #: how many times a file was actually fetched (tests check that concurrent requests share one)
        self.fetch_count = 0

    @property
    def max_size(self) -> int:
        return int(self.config.max_upload_size)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def authenticated_only(self) -> bool:
        """Whether media cached now is frozen out of the deprecated endpoints."""
        return not self.config.unauthenticated_downloads

    # -- downloads -----------------------------------------------------------------------

    async def get_media(
        self, origin: str, media_id: str, allow_remote: bool, timeout_ms: int | None, authenticated: bool
    ) -> Media:
        if not authenticated and self.authenticated_only:
            # Frozen: whatever would be fetched now is new, so only the cache can answer.
            allow_remote = False
        row = await self.cached(origin, media_id, allow_remote, timeout_ms)
        if row.quarantined_by is not None:
            raise not_found("Media not found")  # quarantined by an admin: served to nobody
        if row.authenticated and not authenticated:
            raise not_found("Media not found")
        data = await self.storage.fetch(remote_key(origin, row.filesystem_id))
        if data is None:
            raise not_found("Media not found")
        return Media(data, row.content_type or "application/octet-stream", row.upload_name)

    async def cached(self, origin: str, media_id: str, allow_remote: bool, timeout_ms: int | None) -> RemoteMedia:
        """The cache row of a remote file, fetching it first if needed."""
        row = await self.store.get_remote_media(origin, media_id)
        if row is not None:
            now = self.now_ms()
            if now - row.last_access_ts > 60_000:  # retention needs only coarse access times
                await self.store.touch_remote_media(origin, media_id, now)
            return row
        if not allow_remote:
            raise not_found("Media not found (allow_remote is false)")
        return await self._fetches.run(("download", origin, media_id), lambda: self._fetch(origin, media_id, timeout_ms))

    def _wait(self, timeout_ms: int | None) -> int:
        return min(max(DEFAULT_WAIT_MS if timeout_ms is None else timeout_ms, 0), MAX_WAIT_MS)

    async def _fetch(self, origin: str, media_id: str, timeout_ms: int | None) -> RemoteMedia:
        self.fetch_count += 1
        wait = self._wait(timeout_ms)
        data, ctype, filename = await self._download(
            origin,
            f"/_matrix/federation/v1/media/download/{quote(media_id, safe='')}",
            {"timeout_ms": wait},
            f"/_matrix/media/v3/download/{quote(origin, safe='')}/{quote(media_id, safe='')}",
            {"allow_remote": "false", "timeout_ms": wait},
        )
        fs_id = secrets.token_hex(12)
        await self.storage.store(remote_key(origin, fs_id), data)
        width, height, animated = await self.thumbnails.pregenerate(origin, media_id, fs_id, data, ctype)
        now = self.now_ms()
        row = RemoteMedia(
            origin, media_id, fs_id, ctype, filename, len(data), now, now,
            self.authenticated_only, width, height, animated,
        )
        await self.store.store_remote_media(row)
        return row

    async def _download(
        self, origin: str, path: str, args: dict[str, Any], legacy_path: str, legacy_args: dict[str, Any]
    ) -> tuple[bytes, str, str | None]:
        """``(bytes, content type, file name)`` from the federation endpoint, or the legacy one."""
        try:
            resp = await self._get(origin, path, args, self.max_size + _MULTIPART_OVERHEAD)
        except FederationError as e:
            if not _is_unknown_endpoint(e):
                raise self._error(e) from None
            log.info("{origin} lacks {path}: using the legacy media endpoint", origin=origin, path=path.split("/")[5])
        else:
            return await self._from_multipart(origin, resp)
        try:
            resp = await self._get(origin, legacy_path, legacy_args, self.max_size)
        except FederationError as e:
            raise self._error(e) from None
        return (
            resp.body,
            sanitise_content_type(resp.header("content-type")),
            filename_from_disposition(resp.header("content-disposition")),
        )

    async def _get(self, origin: str, path: str, args: dict[str, Any], max_size: int) -> RawResponse:
        resp: RawResponse = await self.client.get_raw(
            origin, path, args, timeout=_FETCH_DEADLINE_S, max_size=max_size
        )
        return resp

    async def _from_multipart(self, origin: str, resp: RawResponse) -> tuple[bytes, str, str | None]:
        try:
            parts = parse_multipart(resp.body, resp.header("content-type") or "")
        except MultipartError as e:
            raise MatrixError(502, "M_UNKNOWN", f"{origin} sent an invalid media answer: {e}") from None
        if len(parts) < 2:
            raise MatrixError(502, "M_UNKNOWN", f"{origin} sent a media answer without the file")
        meta, file_part = parts[0], parts[1]
        try:
            if not isinstance(json.loads(meta.body or b"{}"), dict):
                raise ValueError
        except ValueError:
            raise MatrixError(502, "M_UNKNOWN", f"{origin} sent invalid media metadata") from None
        location = file_part.headers.get("location")
        if location:
            if self.redirect_fetcher is None:
                raise MatrixError(502, "M_UNKNOWN", f"{origin} redirected the download; redirects are not followed")
            data, ctype, disposition = await self.redirect_fetcher.fetch_file(location, self.max_size)
            return data, sanitise_content_type(ctype), filename_from_disposition(disposition)
        if len(file_part.body) > self.max_size:
            raise remote_too_large()
        return (
            file_part.body,
            sanitise_content_type(file_part.headers.get("content-type")),
            filename_from_disposition(file_part.headers.get("content-disposition")),
        )

    def _error(self, e: FederationError) -> MatrixError:
        if isinstance(e, RequestFailed) and "exceeds" in e.msg:
            return remote_too_large()
        if e.code == 404:
            return not_found("Media not found")
        if e.errcode == "M_NOT_YET_UPLOADED":
            return MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        if e.errcode == "M_TOO_LARGE":
            return remote_too_large()
        return e.to_matrix_error()

    # -- thumbnails -------------------------------------------------------------------------

    async def get_thumbnail(
        self,
        origin: str,
        media_id: str,
        width: int,
        height: int,
        method: str,
        animated: bool,
        allow_remote: bool,
        timeout_ms: int | None,
        authenticated: bool,
    ) -> Media:
        row = await self.store.get_remote_media(origin, media_id)
        if row is not None:
            if row.quarantined_by is not None:
                raise not_found("Media not found")  # quarantined by an admin: served to nobody
            if row.authenticated and not authenticated:
                raise not_found("Media not found")
            source = _Source(origin, media_id, row.filesystem_id, row.content_type or "", row.width, row.height,
                             row.animated, row.upload_name, remote_key(origin, row.filesystem_id))
            return await self.thumbnails.thumbnail_of(source, width, height, method, animated)
        if not authenticated and self.authenticated_only:
            # Frozen deprecated endpoints serve only what was cached before the freeze, and
            # fetched thumbnails carry no such date.
            raise not_found("Media not found")
        # The original is not here: use a thumbnail the origin made, cached under the geometry asked for.
        fetched_method = f"fetched-{method}"
        for t in await self.store.get_thumbnails(origin, media_id):
            if (t.width, t.height, t.method, t.animated) == (width, height, fetched_method, animated):
                data = await self.storage.fetch(t.storage_key)
                if data is not None:
                    return Media(data, t.content_type)
        if not allow_remote:
            raise not_found("Media not found (allow_remote is false)")
        key = ("thumbnail", origin, media_id, width, height, method, animated)
        return await self._fetches.run(
            key, lambda: self._fetch_thumbnail(origin, media_id, width, height, method, animated, timeout_ms)
        )

    async def _fetch_thumbnail(
        self, origin: str, media_id: str, width: int, height: int, method: str, animated: bool, timeout_ms: int | None
    ) -> Media:
        self.fetch_count += 1
        wait = self._wait(timeout_ms)
        args: dict[str, Any] = {"width": width, "height": height, "method": method, "timeout_ms": wait}
        if animated:
            args["animated"] = "true"
        data, ctype, _ = await self._download(
            origin,
            f"/_matrix/federation/v1/media/thumbnail/{quote(media_id, safe='')}",
            args,
            f"/_matrix/media/v3/thumbnail/{quote(origin, safe='')}/{quote(media_id, safe='')}",
            {**args, "allow_remote": "false"},
        )
        if not base_type(ctype).startswith("image/"):
            raise MatrixError(502, "M_UNKNOWN", f"{origin} sent a thumbnail that is not an image")
        fs_id = secrets.token_hex(12)
        key = thumbnail_key(origin, fs_id, width, height, f"fetched-{method}", ctype, animated)
        await self.storage.store(key, data)
        await self.store.store_thumbnails(
            [Thumbnail(origin, media_id, width, height, f"fetched-{method}", animated, ctype, len(data), key)]
        )
        return Media(data, ctype)

    # -- retention -------------------------------------------------------------------------------

    async def purge_older_than(self, before_ts: int, progress: Any = None) -> tuple[int, int]:
        """Drop cached remote media not accessed since ``before_ts``; ``(files, bytes)`` removed.

        ``progress(done, total, bytes)`` is called after each file.
        """
        rows = await self.store.remote_media_older_than(before_ts)
        freed = 0
        for i, row in enumerate(rows, 1):
            thumb_keys = await self.store.delete_remote_media(row.origin, row.media_id)
            # Rows first, then files: a crash in between leaves orphan files, never rows without bytes.
            await self.storage.delete(remote_key(row.origin, row.filesystem_id))
            for k in thumb_keys:
                await self.storage.delete(k)
            freed += row.size
            if progress is not None:
                progress(i, len(rows), freed)
        # Thumbnails fetched for originals never cached have no access time: a purge drops them
        # all (they are fetched again on demand).
        for k in await self.store.delete_fetched_thumbnails():
            await self.storage.delete(k)
        return len(rows), freed
