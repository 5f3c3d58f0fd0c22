"""SQL of the inbound federation API: transactions (table ``federation_inbound_txns``, schema 0012)
and the timestamp look-up of ``/timestamp_to_event``."""

from __future__ import annotations

import json
from typing import Any

from mxserver.storage.database import Database, Txn

#: how long a transaction's answer is kept (senders retry within minutes, not days)
TXN_RETENTION_MS = 24 * 3600 * 1000


class FederationTxnStore:
    """Answers to inbound transactions, kept for retransmissions; the event closest to a time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        """The answer given to ``origin``'s transaction ``txn_id``, if it was processed."""
        row = await self.db.select_one(
            "get_federation_txn",
            "SELECT response_json FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?",
            origin,
            txn_id,
        )
        return json.loads(row[0]) if row else None

    async def store_response(self, origin: str, txn_id: str, response: dict[str, Any], now_ms: int) -> None:
        def txn(t: Txn) -> None:
            t.execute("DELETE FROM federation_inbound_txns WHERE received_ts < ?", (now_ms - TXN_RETENTION_MS,))
            t.execute(
                "INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (origin, txn_id) DO NOTHING",
                (origin, txn_id, json.dumps(response), now_ms),
            )

        await self.db.run_interaction("store_federation_txn", txn)

    async def closest_event_by_ts(self, room_nid: int, ts: int, forward: bool) -> tuple[str, int] | None:
        """``(event_id, origin_server_ts)`` of the room's timeline event closest to ``ts`` at or after it
        (``forward``) or at or before it; rejected, soft-failed and outlier events do not count."""
        order = "ASC" if forward else "DESC"
        cmp = ">=" if forward else "<="
        row = await self.db.select_one(
            "closest_event_by_ts",
            "SELECT event_id, origin_server_ts FROM events WHERE room_nid = ? AND stream_ordering IS NOT NULL"
            f" AND rejected_reason IS NULL AND soft_failed = ? AND origin_server_ts {cmp} ?"
            f" ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
            room_nid,
            False,
            ts,
        )
        return (row[0], row[1]) if row else None
