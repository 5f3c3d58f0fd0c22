"""The SQLite storage backend (the default): WAL, one writer, several readers.

``synchronous=NORMAL`` in WAL mode keeps every committed transaction through
a process crash (kill -9); only an operating-system crash or power loss can
lose the last transactions. That is the durability mxserver promises on
SQLite; use Postgres for more.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.enterprise import adbapi
from zope.interface import implementer

from mxserver.interfaces import IStorageBackend
from mxserver.storage.database import Database
from mxserver.storage.dialect import SQLITE


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=30000")
    # 2 MiB of page cache per connection: the OS caches the file too, and every
    # connection keeps its own cache, so large values multiply the server's memory.
    conn.execute("PRAGMA cache_size=-2000")


@implementer(IStorageBackend)
class SQLiteBackend:
    """``database: {backend: sqlite, path: ...}``"""

    name = "sqlite"
    dialect = SQLITE

    def _path(self, hs_config: Any) -> str:
        path = hs_config.sqlite_path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return path

    def connect(self, reactor: Any, hs_config: Any) -> Database:
        path = self._path(hs_config)
        kwargs = {"database": path, "check_same_thread": False, "cp_openfun": _configure, "cp_reactor": reactor}
        writer = adbapi.ConnectionPool("sqlite3", cp_min=1, cp_max=1, **kwargs)
        reader = adbapi.ConnectionPool("sqlite3", cp_min=1, cp_max=max(1, hs_config.database.pool_size), **kwargs)
        return Database(SQLITE, writer, reader)

    def connect_sync(self, hs_config: Any) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path(hs_config))
        _configure(conn)
        return conn
