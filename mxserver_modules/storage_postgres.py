"""The Postgres storage backend (psycopg 3 through adbapi).

``database: {backend: postgres, dsn: "postgresql://user@host/db"}``. Every
connection in the pool may write; Postgres handles the concurrency.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from zope.interface import implementer

from mxserver.interfaces import IStorageBackend
from mxserver.storage.database import Database
from mxserver.storage.dialect import POSTGRES


@implementer(IStorageBackend)
class PostgresBackend:
    name = "postgres"
    dialect = POSTGRES

    def connect(self, reactor: Any, hs_config: Any) -> Database:
        size = max(2, hs_config.database.pool_size)
        pool = adbapi.ConnectionPool(
            "psycopg", hs_config.database.dsn, cp_min=1, cp_max=size, cp_reconnect=True, cp_reactor=reactor
        )
        return Database(POSTGRES, pool)

    def connect_sync(self, hs_config: Any) -> Any:
        import psycopg

        return psycopg.connect(hs_config.database.dsn)
