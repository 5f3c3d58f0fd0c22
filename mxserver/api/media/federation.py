"""server-server-api content_repository.yaml: our media for other servers.

``GET /_matrix/federation/v1/media/download/{mediaId}`` and ``/thumbnail``
(v1.11) serve *local* media only, signed requests only, as ``multipart/mixed``:
an empty JSON metadata object, then the file.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.api.http import Response, query_int, route
from mxserver.api.media.media import _security_headers, _thumbnail_args
from mxserver.federation.auth import FederationAuth
from mxserver.media.http import content_disposition, encode_multipart
from mxserver.media.repository import MediaRepository
from mxserver.media.thumbnails import Media


def _multipart(media: Media) -> Response:
    body, ctype = encode_multipart(media.content_type, content_disposition(media.content_type, media.filename), media.data)
    return Response(body, ctype)


class FederationMediaServlet:
    def __init__(self, federation_auth: FederationAuth, repo: MediaRepository, server_name: str) -> None:
        self.federation_auth = federation_auth
        self.repo = repo
        self.server_name = server_name

    @route("GET", "/_matrix/federation/v1/media/download/{media_id}")
    async def download(self, request: IRequest, media_id: str) -> Response:
        _security_headers(request)
        await self.federation_auth.authenticate_request(request, None)
        media = await self.repo.get_media(
            self.server_name, media_id, timeout_ms=query_int(request, "timeout_ms", None, minimum=0)
        )
        return _multipart(media)

    @route("GET", "/_matrix/federation/v1/media/thumbnail/{media_id}")
    async def thumbnail(self, request: IRequest, media_id: str) -> Response:
        _security_headers(request)
        await self.federation_auth.authenticate_request(request, None)
        media = await self.repo.get_thumbnail(self.server_name, media_id, **_thumbnail_args(request))
        return _multipart(media)
