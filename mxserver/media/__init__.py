"""The media repository (issue 7): uploads, downloads, thumbnails, remote media, URL previews.

:func:`build_media` puts ``hs.media_repository`` on the Homeserver, with the
media storage module chosen in ``modules`` (group ``mxserver.media_storage``,
default ``file``: sharded files under ``media.store_path``).
"""

from __future__ import annotations

from typing import Any

from mxserver.media.storage import MEDIA_STORAGE, IMediaStorage


def build_media(hs: Any) -> None:
    from mxserver.media.preview import SafeFetcher, UrlPreviewer
    from mxserver.media.remote import RemoteMediaFetcher
    from mxserver.media.repository import MediaRepository
    from mxserver.module_loader import construct
    from mxserver.storage.media import MediaStore

    name, module_config = hs.config.module_config(MEDIA_STORAGE, "file")
    storage_config = dict(module_config)
    if name == "file":
        storage_config.setdefault("path", hs.config.media_path)
    storage = construct(MEDIA_STORAGE, name, IMediaStorage, storage_config, hs.module_api)
    hs.media_store = MediaStore(hs.db)
    repo = MediaRepository(hs, hs.media_store, storage)
    fetcher = SafeFetcher(hs.reactor, hs.clock, hs.federation_client.ip_filter, hs.config.media.url_preview)
    repo.remote = RemoteMediaFetcher(repo, hs.federation_client, fetcher)
    repo.previewer = UrlPreviewer(repo, fetcher, hs.config.media.url_preview)
    hs.media_repository = repo
    repo.setServiceParent(hs)
