"""Media routes: the ``/_matrix/media`` API (uploads and the deprecated downloads),
the authenticated ``/_matrix/client/v1/media`` endpoints and the federation
``/_matrix/federation/v1/media`` endpoints."""

from __future__ import annotations

from typing import Any


def media_servlets(hs: Any) -> list[Any]:
    """Routes under /_matrix/media/ (the ``media`` listener resource)."""
    from mxserver.api.media.media import MediaServlet

    return [MediaServlet(hs)]


def client_media_servlets(hs: Any) -> list[Any]:
    """Routes under /_matrix/client/v1/media/ (the ``client`` resource)."""
    from mxserver.api.media.media import AuthenticatedMediaServlet

    return [AuthenticatedMediaServlet(hs)]


def federation_media_servlets(hs: Any) -> list[Any]:
    """Routes under /_matrix/federation/v1/media/ (the ``federation`` resource)."""
    from mxserver.api.media.federation import FederationMediaServlet

    return [FederationMediaServlet(hs)]
