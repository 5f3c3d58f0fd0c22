"""Media on the local filesystem (``mxserver.media_storage`` entry point ``file``, the default).

Files live under ``media.store_path`` (default ``data_dir/media``) at their
sharded keys. Writes go to a temporary file that is renamed into place, so a
reader never sees half a file and a crash leaves no truncated media. All file
I/O runs in the reactor's thread pool.

``config``: ``path``, the directory (the server passes ``media.store_path``
unless the module's own config names one).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from mxserver.interfaces import IMediaStorage
from mxserver.media.storage import check_key


@implementer(IMediaStorage)
class FileMediaStorage:
    def __init__(self, config: dict[str, Any], api: Any) -> None:
        if not config.get("path"):
            raise ValueError("media storage 'file' needs a path")
        self.root = os.path.abspath(config["path"])
        os.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def _run(self, fn: Any, *args: Any) -> Deferred[Any]:
        return deferToThread(fn, *args)

    def store(self, key: str, data: bytes) -> Deferred[None]:
        return self._run(self._store, self._path(key), data)

    @staticmethod
    def _store(path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def fetch(self, key: str) -> Deferred[bytes | None]:
        return self._run(self._fetch, self._path(key))

    @staticmethod
    def _fetch(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> Deferred[None]:
        return self._run(self._delete, self._path(key))

    @staticmethod
    def _delete(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
