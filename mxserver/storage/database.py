"""The database handle every store uses: adbapi pools, timing, after-commit hooks.

All SQL runs in adbapi's thread pool, never on the reactor thread. A logical
write is one call to :meth:`Database.run_interaction`, which is one database
transaction: it commits as a whole or not at all. SQLite gets one writer
connection (concurrent SQLite writers only produce "database is locked") and
a pool of readers (WAL lets them run beside the writer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxserver import metrics
from mxserver.storage.dialect import Dialect

R = TypeVar("R")

log = Logger()


class Txn:
    """A cursor inside one transaction, with ``?`` placeholders on every backend."""

    __slots__ = ("_cursor", "_dialect", "_after")

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect
        self._after: list[Callable[[], Any]] = []

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Txn:
        self._cursor.execute(self._dialect.translate(sql), tuple(args))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self._cursor.executemany(self._dialect.translate(sql), rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, args)
        return self._cursor.fetchall()

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, args)
        return self._cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def call_after(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the reactor thread once this transaction has committed."""
        self._after.append(fn)


class Database:
    """Runs interactions on a backend's pools and times them."""

    def __init__(
        self,
        dialect: Dialect,
        writer: adbapi.ConnectionPool,
        reader: adbapi.ConnectionPool | None = None,
    ) -> None:
        self.dialect = dialect
        self._writer = writer
        self._reader = reader or writer

    def run_interaction(self, desc: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Deferred[R]:
        """Run ``fn(txn, *args)`` in one write transaction."""
        return self._run(self._writer, desc, fn, args, kwargs)

    def run_read(self, desc: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Deferred[R]:
        """Run ``fn(txn, *args)`` on a reader connection (no writes)."""
        return self._run(self._reader, desc, fn, args, kwargs)

    def _run(
        self, pool: adbapi.ConnectionPool, desc: str, fn: Callable[..., R], args: Any, kwargs: Any
    ) -> Deferred[R]:
        dialect = self.dialect
        holder: list[Txn] = []

        def interaction(adbapi_txn: adbapi.Transaction) -> R:
            start = time.perf_counter()
            txn = Txn(adbapi_txn, dialect)
            holder.append(txn)
            try:
                return fn(txn, *args, **kwargs)
            finally:
                metrics.DB_TXN_SECONDS.labels(desc).observe(time.perf_counter() - start)

        def after(result: R) -> R:
            for cb in holder[0]._after if holder else ():
                try:
                    cb()
                except Exception:
                    log.failure("after-commit callback of {desc} failed", desc=desc)
            return result

        d = pool.runInteraction(interaction)
        d.addCallback(after)
        return d

    def run_with_connection(self, fn: Callable[..., R], *args: Any) -> Deferred[R]:
        """Run ``fn(connection, *args)`` on the writer's DB-API connection (schema migrations)."""
        return self._writer.runWithConnection(fn, *args)

    # Convenience wrappers for one-statement work.

    def execute(self, desc: str, sql: str, *args: Any) -> Deferred[None]:
        return self.run_interaction(desc, lambda txn: txn.execute(sql, args) and None)

    def select(self, desc: str, sql: str, *args: Any) -> Deferred[list[tuple[Any, ...]]]:
        return self.run_read(desc, lambda txn: txn.query(sql, args))

    def select_one(self, desc: str, sql: str, *args: Any) -> Deferred[tuple[Any, ...] | None]:
        return self.run_read(desc, lambda txn: txn.query_one(sql, args))

    def close(self) -> None:
        self._writer.close()
        if self._reader is not self._writer:
            self._reader.close()
