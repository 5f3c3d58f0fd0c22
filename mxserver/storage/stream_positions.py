"""Persisted positions of the per-user streams (account data, to-device).

Table ``stream_positions`` (schema 0006). A write allocates its position in
its own transaction with ``UPDATE ... RETURNING``: the row lock makes
concurrent writers (Postgres) take positions in commit order, so once a
position is committed every smaller one is too, and :attr:`current` (advanced
after commit) is always safe to hand out in a sync token. Positions survive
restarts; they are loaded once at start-up by :meth:`load`.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


class PersistedStream:
    """One named stream's positions: allocate inside a transaction, read the current one."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self._current = 0

    async def load(self) -> None:
        """Read the persisted position (at start-up, after migrations)."""
        row = await self.db.select_one(
            f"load_stream_{self.name}", "SELECT position FROM stream_positions WHERE stream = ?", self.name
        )
        self._current = max(self._current, int(row[0]) if row else 0)

    @property
    def current(self) -> int:
        """The highest position whose write (and every earlier one) has committed."""
        return self._current

    def allocate_txn(self, txn: Txn) -> int:
        """The next position, for the write in ``txn``; it becomes current once ``txn`` commits.

        Call it before reading data the write depends on: on Postgres the row
        lock taken here serialises this stream's writers for the rest of the
        transaction, which makes read-modify-write (room tags) safe.
        """
        row = txn.query_one(
            "UPDATE stream_positions SET position = position + 1 WHERE stream = ? RETURNING position", (self.name,)
        )
        if row is None:
            raise RuntimeError(f"stream {self.name!r} has no row in stream_positions")
        position = int(row[0])
        txn.call_after(lambda: self._advance(position))
        return position

    def _advance(self, position: int) -> None:
        if position > self._current:
            self._current = position

    def replicated(self, position: int) -> None:
        """Another process (the cluster's writer) committed the stream up to ``position``."""
        self._advance(position)


# -- readers of the room event stream (mxserver.stream_reader): one persisted position each ----


def reader_position(db: Database, name: str) -> Deferred[int | None]:
    """The persisted position of the stream reader ``name`` (None: it never stored one)."""

    def txn(t: Txn) -> int | None:
        row = t.query_one("SELECT position FROM stream_readers WHERE name = ?", (name,))
        return int(row[0]) if row else None

    return db.run_read("stream_reader_position", txn)


def set_reader_position_txn(t: Txn, name: str, position: int) -> None:
    """Store the reader's position, in the transaction that stores what it read up to there."""
    t.execute(
        "INSERT INTO stream_readers (name, position) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        (name, position),
    )
