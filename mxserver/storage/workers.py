"""SQL for the worker registry (table ``workers``, schema 0038): which processes of a cluster
exist and when each was last seen."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


@attrs.frozen
class WorkerRow:
    name: str
    role: str
    pid: int
    started_ts: int
    last_seen_ts: int


class WorkerStore:
    """One row per process name."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_start(self, name: str, role: str, pid: int, now_ms: int) -> Deferred[None]:
        """The process ``name`` (re)started now: its row, replaced."""
        return self.db.execute(
            "record_worker_start",
            "INSERT INTO workers (name, role, pid, started_ts, last_seen_ts) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET role = excluded.role, pid = excluded.pid,"
            " started_ts = excluded.started_ts, last_seen_ts = excluded.last_seen_ts",
            name, role, pid, now_ms, now_ms,
        )

    def heartbeat(self, name: str, pid: int, now_ms: int) -> Deferred[None]:
        """The process ``name`` is alive now (only while the row is still its own: a process of
        the same name started since owns it)."""
        return self.db.execute(
            "worker_heartbeat", "UPDATE workers SET last_seen_ts = ? WHERE name = ? AND pid = ?", now_ms, name, pid
        )

    def list_workers(self) -> Deferred[list[WorkerRow]]:
        def txn(t: Txn) -> list[WorkerRow]:
            rows = t.query("SELECT name, role, pid, started_ts, last_seen_ts FROM workers ORDER BY name")
            return [WorkerRow(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]

        return self.db.run_read("list_workers", txn)
