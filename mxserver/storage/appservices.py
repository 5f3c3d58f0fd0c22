"""SQL for application service delivery: the queues, the transaction in flight, backoff.

Tables ``appservice_events``, ``appservice_ephemeral`` and ``appservice_state`` (schema 0029),
and the reader's row in ``stream_readers``. What a transaction holds is decided once, when
it is taken (:meth:`AppServiceStore.take_transaction`: the oldest queued rows, a new
transaction ID, both recorded as pending in the same database transaction), so a retry --
also after a restart -- sends the same ID with the same rows; they leave the queue only when
the service acknowledged them (:meth:`AppServiceStore.complete_transaction`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import reader_position, set_reader_position_txn

#: kinds of rows in ``appservice_ephemeral``
EPHEMERAL = "ephemeral"
TO_DEVICE = "to_device"


@attrs.frozen
class AppServiceStateRow:
    """The stored delivery state of one application service."""

    appservice_id: str
    failure_ts: int | None
    retry_last_ts: int | None
    retry_interval: int
    last_success_ts: int | None
    pending_txn_id: int | None


@attrs.frozen
class QueuedTransaction:
    """A transaction taken from the queue: its ID and exactly the rows it carries."""

    txn_id: int
    #: the last event row (stream ordering) and ephemeral row (seq) it carries; None: none
    events_upto: int | None
    ephemeral_upto: int | None
    event_ids: list[str]
    #: ``(kind, content)`` in queue order
    ephemeral: list[tuple[str, dict[str, Any]]]


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the reader ----------------------------------------------------------------------------

    def reader_position(self, name: str) -> Deferred[int | None]:
        return reader_position(self.db, name)

    def enqueue_events(self, reader: str, position: int, rows: Sequence[tuple[str, int, str]]) -> Deferred[None]:
        """Queue ``(appservice_id, stream_ordering, event_id)`` rows and move the reader to
        ``position``, in one transaction (an event read again after a crash adds nothing)."""

        def txn(t: Txn) -> None:
            if rows:
                t.executemany(
                    "INSERT INTO appservice_events (appservice_id, stream_ordering, event_id) VALUES (?, ?, ?)"
                    " ON CONFLICT (appservice_id, stream_ordering) DO NOTHING",
                    rows,
                )
            set_reader_position_txn(t, reader, position)

        return self.db.run_interaction("appservice_enqueue_events", txn)

    def enqueue_ephemeral(self, rows: Sequence[tuple[str, int, str, dict[str, Any]]]) -> Deferred[None]:
        """Queue ``(appservice_id, seq, kind, content)`` rows."""
        values = [(a, seq, kind, json.dumps(content, ensure_ascii=False)) for a, seq, kind, content in rows]

        def txn(t: Txn) -> None:
            t.executemany(
                "INSERT INTO appservice_ephemeral (appservice_id, seq, kind, content) VALUES (?, ?, ?, ?)", values
            )

        return self.db.run_interaction("appservice_enqueue_ephemeral", txn)

    def max_ephemeral_seq(self) -> Deferred[int]:
        def txn(t: Txn) -> int:
            row = t.query_one("SELECT MAX(seq) FROM appservice_ephemeral")
            return int(row[0]) if row and row[0] is not None else 0

        return self.db.run_read("appservice_max_ephemeral_seq", txn)

    # -- the sender ------------------------------------------------------------------------------

    def load_states(self) -> Deferred[list[AppServiceStateRow]]:
        def txn(t: Txn) -> list[AppServiceStateRow]:
            rows = t.query(
                "SELECT appservice_id, failure_ts, retry_last_ts, retry_interval, last_success_ts, pending_txn_id"
                " FROM appservice_state"
            )
            return [AppServiceStateRow(r[0], r[1], r[2], int(r[3] or 0), r[4], r[5]) for r in rows]

        return self.db.run_read("appservice_load_states", txn)

    def queue_lengths(self) -> Deferred[dict[str, int]]:
        """Queued rows (events and ephemeral) per application service."""

        def txn(t: Txn) -> dict[str, int]:
            out: dict[str, int] = {}
            for table in ("appservice_events", "appservice_ephemeral"):
                for service_id, count in t.query(f"SELECT appservice_id, COUNT(*) FROM {table} GROUP BY appservice_id"):
                    out[service_id] = out.get(service_id, 0) + int(count)
            return out

        return self.db.run_read("appservice_queue_lengths", txn)

    def take_transaction(
        self, appservice_id: str, max_events: int, max_ephemeral: int
    ) -> Deferred[QueuedTransaction | None]:
        """The pending transaction if there is one; else the oldest queued rows (at most
        ``max_events`` events and ``max_ephemeral`` ephemeral rows) under a new transaction ID,
        recorded as pending. None when nothing is queued."""

        def txn(t: Txn) -> QueuedTransaction | None:
            state = t.query_one(
                "SELECT last_txn_id, pending_txn_id, pending_events_upto, pending_ephemeral_upto"
                " FROM appservice_state WHERE appservice_id = ?",
                (appservice_id,),
            )
            if state is not None and state[1] is not None:
                return self._pending_txn(t, appservice_id, int(state[1]), state[2], state[3])
            events = t.query(
                "SELECT stream_ordering, event_id FROM appservice_events WHERE appservice_id = ?"
                " ORDER BY stream_ordering LIMIT ?",
                (appservice_id, max_events),
            )
            ephemeral = t.query(
                "SELECT seq, kind, content FROM appservice_ephemeral WHERE appservice_id = ? ORDER BY seq LIMIT ?",
                (appservice_id, max_ephemeral),
            )
            if not events and not ephemeral:
                return None
            txn_id = (int(state[0]) if state is not None else 0) + 1
            events_upto = int(events[-1][0]) if events else None
            ephemeral_upto = int(ephemeral[-1][0]) if ephemeral else None
            t.execute(
                "INSERT INTO appservice_state (appservice_id, last_txn_id, pending_txn_id, pending_events_upto,"
                " pending_ephemeral_upto) VALUES (?, ?, ?, ?, ?) ON CONFLICT (appservice_id) DO UPDATE SET"
                " last_txn_id = excluded.last_txn_id, pending_txn_id = excluded.pending_txn_id,"
                " pending_events_upto = excluded.pending_events_upto,"
                " pending_ephemeral_upto = excluded.pending_ephemeral_upto",
                (appservice_id, txn_id, txn_id, events_upto, ephemeral_upto),
            )
            return QueuedTransaction(
                txn_id,
                events_upto,
                ephemeral_upto,
                [r[1] for r in events],
                [(r[1], json.loads(r[2])) for r in ephemeral],
            )

        return self.db.run_interaction("appservice_take_transaction", txn)

    @staticmethod
    def _pending_txn(
        t: Txn, appservice_id: str, txn_id: int, events_upto: int | None, ephemeral_upto: int | None
    ) -> QueuedTransaction:
        events = (
            t.query(
                "SELECT event_id FROM appservice_events WHERE appservice_id = ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering",
                (appservice_id, events_upto),
            )
            if events_upto is not None
            else []
        )
        ephemeral = (
            t.query(
                "SELECT kind, content FROM appservice_ephemeral WHERE appservice_id = ? AND seq <= ? ORDER BY seq",
                (appservice_id, ephemeral_upto),
            )
            if ephemeral_upto is not None
            else []
        )
        return QueuedTransaction(
            txn_id,
            None if events_upto is None else int(events_upto),
            None if ephemeral_upto is None else int(ephemeral_upto),
            [r[0] for r in events],
            [(r[0], json.loads(r[1])) for r in ephemeral],
        )

    def complete_transaction(self, appservice_id: str, queued: QueuedTransaction, now_ms: int) -> Deferred[None]:
        """The service acknowledged ``queued``: its rows leave the queue, nothing is pending, no backoff."""

        def txn(t: Txn) -> None:
            if queued.events_upto is not None:
                t.execute(
                    "DELETE FROM appservice_events WHERE appservice_id = ? AND stream_ordering <= ?",
                    (appservice_id, queued.events_upto),
                )
            if queued.ephemeral_upto is not None:
                t.execute(
                    "DELETE FROM appservice_ephemeral WHERE appservice_id = ? AND seq <= ?",
                    (appservice_id, queued.ephemeral_upto),
                )
            t.execute(
                "UPDATE appservice_state SET pending_txn_id = NULL, pending_events_upto = NULL,"
                " pending_ephemeral_upto = NULL, failure_ts = NULL, retry_last_ts = NULL, retry_interval = 0,"
                " last_success_ts = ? WHERE appservice_id = ? AND pending_txn_id = ?",
                (now_ms, appservice_id, queued.txn_id),
            )

        return self.db.run_interaction("appservice_complete_transaction", txn)

    def set_backoff(
        self,
        appservice_id: str,
        failure_ts: int | None,
        retry_last_ts: int | None,
        retry_interval: int,
        last_success_ts: int | None = None,
    ) -> Deferred[None]:
        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO appservice_state (appservice_id, failure_ts, retry_last_ts, retry_interval, last_success_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (appservice_id) DO UPDATE SET failure_ts = excluded.failure_ts,"
                " retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval,"
                " last_success_ts = COALESCE(excluded.last_success_ts, appservice_state.last_success_ts)",
                (appservice_id, failure_ts, retry_last_ts, retry_interval, last_success_ts),
            )

        return self.db.run_interaction("appservice_set_backoff", txn)
