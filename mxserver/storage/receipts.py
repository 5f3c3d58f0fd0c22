"""SQL for read receipts: table ``receipts`` (schema 0007).

One row per (room, receipt type, user, thread) with the latest receipt; the
``receipts`` stream position of each change comes from
:class:`~mxserver.storage.stream_positions.PersistedStream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream

#: the thread_id column of an unthreaded receipt
UNTHREADED = ""

#: receipt types only their sender may see (receipts.md §Private read receipts)
PRIVATE_TYPES = ("m.read.private",)

_CHUNK = 500


@attrs.frozen
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    ts: int


_COLUMNS = "r.room_id, rc.receipt_type, rc.user_id, rc.thread_id, rc.event_id, rc.ts"


class ReceiptStore:
    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream

    # -- writing ---------------------------------------------------------------------

    def upsert(
        self,
        room_nid: int,
        receipt_type: str,
        user_id: str,
        thread_id: str,
        event_id: str,
        event_stream_ordering: int,
        ts: int,
    ) -> Deferred[int | None]:
        """Store a receipt unless the stored one is for the same or a later event.

        Returns the receipts-stream position of the change, or None when the
        receipt was older (receipts only move forward) and nothing changed.
        """

        def txn(t: Txn) -> int | None:
            row = t.query_one(
                "SELECT event_stream_ordering FROM receipts"
                " WHERE room_nid = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
                (room_nid, receipt_type, user_id, thread_id),
            )
            if row is not None and row[0] >= event_stream_ordering:
                return None
            # Allocating takes the stream row's lock (Postgres): concurrent writers of this
            # stream wait here, and the WHERE below still keeps the newest receipt.
            position = self.stream.allocate_txn(t)
            t.execute(
                "INSERT INTO receipts (room_nid, receipt_type, user_id, thread_id, event_id,"
                " event_stream_ordering, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_nid, receipt_type, user_id, thread_id) DO UPDATE SET"
                " event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering,"
                " ts = excluded.ts, stream_id = excluded.stream_id"
                " WHERE receipts.event_stream_ordering < excluded.event_stream_ordering RETURNING stream_id",
                (room_nid, receipt_type, user_id, thread_id, event_id, event_stream_ordering, ts, position),
            )
            return position if t.fetchall() else None

        return self.db.run_interaction("upsert_receipt", txn)

    # -- reading -----------------------------------------------------------------------

    def receipts_in_rooms(self, room_ids: Sequence[str], to_pos: int, viewer: str) -> Deferred[list[ReceiptRow]]:
        """Every current receipt in ``room_ids`` up to ``to_pos`` that ``viewer`` may see (initial sync)."""

        def txn(t: Txn) -> list[ReceiptRow]:
            out: list[ReceiptRow] = []
            private = _private_clause()
            for i in range(0, len(room_ids), _CHUNK):
                chunk = list(room_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    f"SELECT {_COLUMNS} FROM receipts rc JOIN rooms r ON r.room_nid = rc.room_nid"
                    f" WHERE r.room_id IN ({marks}) AND rc.stream_id <= ? AND {private}",
                    (*chunk, to_pos, *PRIVATE_TYPES, viewer),
                )
                out += [ReceiptRow(*row) for row in rows]
            return out

        return self.db.run_read("receipts_in_rooms", txn)

    def receipts_changed(self, from_pos: int, to_pos: int, viewer: str) -> Deferred[list[ReceiptRow]]:
        """Receipts (any room) whose latest change is in (from_pos, to_pos] that ``viewer`` may see."""

        def txn(t: Txn) -> list[ReceiptRow]:
            rows = t.query(
                f"SELECT {_COLUMNS} FROM receipts rc JOIN rooms r ON r.room_nid = rc.room_nid"
                f" WHERE rc.stream_id > ? AND rc.stream_id <= ? AND {_private_clause()}"
                " ORDER BY rc.stream_id",
                (from_pos, to_pos, *PRIVATE_TYPES, viewer),
            )
            return [ReceiptRow(*row) for row in rows]

        return self.db.run_read("receipts_changed", txn)

    def read_up_to(self, user_id: str, room_nids: Sequence[int], receipt_types: Sequence[str]) -> Deferred[dict[int, int]]:
        """Per room, the highest acknowledged event stream ordering among the user's
        unthreaded and main-timeline receipts of ``receipt_types``."""

        def txn(t: Txn) -> dict[int, int]:
            out: dict[int, int] = {}
            types = ",".join("?" * len(receipt_types))
            for i in range(0, len(room_nids), _CHUNK):
                chunk = list(room_nids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    "SELECT room_nid, MAX(event_stream_ordering) FROM receipts"
                    f" WHERE user_id = ? AND room_nid IN ({marks}) AND receipt_type IN ({types})"
                    " AND thread_id IN (?, 'main') GROUP BY room_nid",
                    (user_id, *chunk, *receipt_types, UNTHREADED),
                )
                out.update({row[0]: row[1] for row in rows})
            return out

        return self.db.run_read("receipts_read_up_to", txn)


def _private_clause() -> str:
    """SQL (two parameters: the private types, then the viewer) hiding others' private receipts."""
    marks = ",".join("?" * len(PRIVATE_TYPES))
    return f"(rc.receipt_type NOT IN ({marks}) OR rc.user_id = ?)"


def receipt_content(rows: Sequence[ReceiptRow]) -> dict[str, dict[str, Any]]:
    """Group receipts by room into ``m.receipt`` content (receipts.md): event -> type -> user -> receipt."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        receipt: dict[str, Any] = {"ts": row.ts}
        if row.thread_id != UNTHREADED:
            receipt["thread_id"] = row.thread_id
        content = out.setdefault(row.room_id, {})
        content.setdefault(row.event_id, {}).setdefault(row.receipt_type, {})[row.user_id] = receipt
    return out
