"""Where media bytes are kept: the keys media storage modules store bytes under.

The repository names every stored file by a *key*: a relative, slash-separated
path built only from ``[A-Za-z0-9_.-]`` segments (never ``..``). Keys are
sharded (``local_content/ab/cd/efgh…``) so no directory grows too large on
the default local-filesystem store. Another store (object storage, …) is a
distribution declaring an entry point in the ``mxserver.media_storage`` group
(:class:`mxserver.interfaces.IMediaStorage`)
and chosen with ``modules: [{group: mxserver.media_storage, name: ..., config: {...}}]``.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


def check_key(key: str) -> str:
    """``key`` if it is a well-formed storage key, else ValueError (no traversal, ever)."""
    parts = key.split("/")
    if not parts or any(not _SEGMENT.fullmatch(p) or p in (".", "..") for p in parts):
        raise ValueError(f"invalid media storage key {key!r}")
    return key


def _shard(name: str) -> str:
    return f"{name[0:2]}/{name[2:4]}/{name[4:]}"


def _origin_dir(origin: str) -> str:
    # Server names are host[:port] with host a DNS name, IPv4 or [IPv6]; ':' and '[]' are kept out of paths.
    return origin.replace("[", "").replace("]", "").replace(":", "_")


def local_key(media_id: str) -> str:
    return check_key(f"local_content/{_shard(media_id)}")


def remote_key(origin: str, filesystem_id: str) -> str:
    return check_key(f"remote_content/{_origin_dir(origin)}/{_shard(filesystem_id)}")


def thumbnail_key(origin: str, file_id: str, width: int, height: int, method: str, content_type: str, animated: bool) -> str:
    """Key of one thumbnail; ``file_id`` is the media ID (local) or filesystem ID (remote)."""
    base = "local_thumbnails" if not origin else f"remote_thumbnails/{_origin_dir(origin)}"
    kind = content_type.replace("/", "-")
    name = f"{width}-{height}-{method}-{kind}{'-animated' if animated else ''}"
    return check_key(f"{base}/{_shard(file_id)}/{name}")
