"""server-server-api content_repository.yaml: our media for other servers.

``GET /_matrix/federation/v1/media/download/{mediaId}`` and ``/thumbnail``
(v1.11) serve *local* media only, signed requests only, as ``multipart/mixed``:
an empty JSON metadata object, then the file.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import Response, query_int, route
from mxserver.api.media.media import _security_headers, _thumbnail_args
from mxserver.media.http import content_disposition, encode_multipart
from mxserver.media.repository import Media


def _multipart(media: Media) -> Response:
    body, ctype = encode_multipart(media.content_type, content_disposition(media.content_type, media.filename), media.data)
    return Response(body, ctype)


class FederationMediaServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs
        self.repo = hs.media_repository

    @route("GET", "/_matrix/federation/v1/media/download/{media_id}")
    async def download(self, request: IRequest, media_id: str) -> Response:
        _security_headers(request)
        await self.hs.federation_auth.authenticate_request(request, None)
        media = await self.repo.get_media(
            self.hs.server_name, media_id, timeout_ms=query_int(request, "timeout_ms", None, minimum=0)
        )
        return _multipart(media)

    @route("GET", "/_matrix/federation/v1/media/thumbnail/{media_id}")
    async def thumbnail(self, request: IRequest, media_id: str) -> Response:
        _security_headers(request)
        await self.hs.federation_auth.authenticate_request(request, None)
        media = await self.repo.get_thumbnail(self.hs.server_name, media_id, **_thumbnail_args(request))
        return _multipart(media)
