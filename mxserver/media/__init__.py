"""The media repository (issue 7): uploads, downloads, thumbnails, remote media, URL previews.

The storage of the bytes is a module (group ``mxserver.media_storage``,
:class:`mxserver.interfaces.IMediaStorage`; default ``file``: sharded files
under ``media.store_path``). homeserver.py builds the parts:
:class:`~mxserver.media.thumbnails.Thumbnails`,
:class:`~mxserver.media.remote.RemoteMediaFetcher`,
:class:`~mxserver.media.repository.MediaRepository` and
:class:`~mxserver.media.preview.UrlPreviewer`.
"""
