"""Client media routes: uploads (``/_matrix/media/v3/upload``, ``/v1/create``),
the authenticated downloads (``/_matrix/client/v1/media/*``, v1.11) and the
deprecated unauthenticated ones (``/_matrix/media/v3/download`` and
``/thumbnail``), which ``media.unauthenticated_downloads: false`` freezes."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, Response, query_bool, query_int, query_str, read_body, route
from mxserver.config import MediaConfig
from mxserver.errors import missing_param
from mxserver.media.http import SECURITY_HEADERS, download_headers, sanitise_filename
from mxserver.media.preview import UrlPreviewer
from mxserver.media.repository import MediaRepository
from mxserver.media.thumbnails import Media


def _security_headers(request: IRequest) -> None:
    # On every answer of a download route, errors included: nothing served here may run in a browser.
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name.encode(), value.encode())


def _render(media: Media, filename: str | None = None) -> Response:
    name = sanitise_filename(filename) or media.filename
    headers = download_headers(media.content_type, name)
    # Explicit, so HEAD answers say the size too.
    headers["Content-Length"] = str(len(media.data))
    return Response(media.data, media.content_type, 200, headers)


def _thumbnail_args(request: IRequest) -> dict[str, Any]:
    width = query_int(request, "width", minimum=1)
    height = query_int(request, "height", minimum=1)
    if width is None or height is None:
        raise missing_param("width and height are required")
    method = query_str(request, "method", "scale")
    return {
        "width": width,
        "height": height,
        "method": method,
        "animated": query_bool(request, "animated", False),
        "timeout_ms": query_int(request, "timeout_ms", None, minimum=0),
    }


class _MediaRoutes:
    def __init__(self, auth: Auth, repo: MediaRepository, previewer: UrlPreviewer, config: MediaConfig) -> None:
        self.auth = auth
        self.repo = repo
        self.previewer = previewer
        self.media_config = config

    def config(self) -> JsonDict:
        return {"m.upload.size": self.media_config.max_upload_size}

    async def preview(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        url = query_str(request, "url")
        if not url:
            raise missing_param("Missing 'url'")
        query_int(request, "ts", None, minimum=0)  # validated; any cached preview is recent enough
        result: JsonDict = await self.previewer.preview(url, requester.user_id)
        return result


class MediaServlet(_MediaRoutes):
    """``/_matrix/media/*``: uploads, config, and the deprecated downloads."""

    @route("POST", "/_matrix/media/v3/upload", "/_matrix/media/r0/upload")
    async def upload(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        data = read_body(request, self.media_config.max_upload_size)
        ctype = request.getHeader(b"Content-Type")
        mxc = await self.repo.upload(
            requester.user_id, data, ctype.decode("latin-1") if ctype else None, query_str(request, "filename")
        )
        return {"content_uri": mxc}

    @route("POST", "/_matrix/media/v1/create")
    async def create(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        mxc, expires = await self.repo.create(requester.user_id)
        return {"content_uri": mxc, "unused_expires_at": expires}

    @route("PUT", "/_matrix/media/v3/upload/{server_name}/{media_id}")
    async def upload_to(self, request: IRequest, server_name: str, media_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        data = read_body(request, self.media_config.max_upload_size)
        ctype = request.getHeader(b"Content-Type")
        await self.repo.upload_to(
            requester.user_id, server_name, media_id, data,
            ctype.decode("latin-1") if ctype else None, query_str(request, "filename"),
        )
        return {}

    @route("GET", "/_matrix/media/v3/config", "/_matrix/media/r0/config")
    async def legacy_config(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request)
        return self.config()

    @route("GET", "/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url")
    async def legacy_preview(self, request: IRequest) -> JsonDict:
        return await self.preview(request)

    @route(
        "GET",
        "/_matrix/media/v3/download/{server_name}/{media_id}",
        "/_matrix/media/r0/download/{server_name}/{media_id}",
        "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
        "/_matrix/media/r0/download/{server_name}/{media_id}/{file_name}",
    )
    async def legacy_download(
        self, request: IRequest, server_name: str, media_id: str, file_name: str | None = None
    ) -> Response:
        _security_headers(request)
        media = await self.repo.get_media(
            server_name,
            media_id,
            allow_remote=query_bool(request, "allow_remote", True),
            timeout_ms=query_int(request, "timeout_ms", None, minimum=0),
            authenticated=False,
        )
        return _render(media, file_name)

    @route(
        "GET",
        "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
        "/_matrix/media/r0/thumbnail/{server_name}/{media_id}",
    )
    async def legacy_thumbnail(self, request: IRequest, server_name: str, media_id: str) -> Response:
        _security_headers(request)
        args = _thumbnail_args(request)
        media = await self.repo.get_thumbnail(
            server_name, media_id, allow_remote=query_bool(request, "allow_remote", True), authenticated=False, **args
        )
        return _render(media)


class AuthenticatedMediaServlet(_MediaRoutes):
    """``/_matrix/client/v1/media/*`` (authed-content-repo.yaml): every route needs an access token."""

    @route("GET", "/_matrix/client/v1/media/config")
    async def authed_config(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request)
        return self.config()

    @route("GET", "/_matrix/client/v1/media/preview_url")
    async def authed_preview(self, request: IRequest) -> JsonDict:
        return await self.preview(request)

    @route(
        "GET",
        "/_matrix/client/v1/media/download/{server_name}/{media_id}",
        "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
    )
    async def download(self, request: IRequest, server_name: str, media_id: str, file_name: str | None = None) -> Response:
        _security_headers(request)
        await self.auth.get_user(request, allow_guest=True)
        media = await self.repo.get_media(
            server_name, media_id, timeout_ms=query_int(request, "timeout_ms", None, minimum=0)
        )
        return _render(media, file_name)

    @route("GET", "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}")
    async def thumbnail(self, request: IRequest, server_name: str, media_id: str) -> Response:
        _security_headers(request)
        await self.auth.get_user(request, allow_guest=True)
        media = await self.repo.get_thumbnail(server_name, media_id, **_thumbnail_args(request))
        return _render(media)
