"""SQL for uploaded filters (table ``user_filters``, schema 0006).

Filter IDs are small per-user integers as strings (never starting with "{",
filter.yaml). Uploading a filter identical to an earlier one (same hash and
JSON) returns the earlier ID instead of storing a copy.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_filter(self, user_id: str, body: dict[str, Any], digest: str) -> Deferred[str]:
        """Store a filter (or find the identical one); returns its ID."""
        text = _dump(body)

        def txn(t: Txn) -> str:
            for nid, stored in t.query(
                "SELECT filter_nid, filter_json FROM user_filters WHERE user_id = ? AND filter_hash = ?",
                (user_id, digest),
            ):
                if json.loads(stored) == body:
                    return str(nid)
            # Two concurrent uploads (Postgres) may pick the same number: the loser tries the next.
            for _ in range(10):
                row = t.query_one("SELECT MAX(filter_nid) FROM user_filters WHERE user_id = ?", (user_id,))
                nid = (row[0] if row and row[0] is not None else -1) + 1
                inserted = t.query(
                    "INSERT INTO user_filters (user_id, filter_nid, filter_hash, filter_json) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user_id, filter_nid) DO NOTHING RETURNING filter_nid",
                    (user_id, nid, digest, text),
                )
                if inserted:
                    return str(nid)
            raise RuntimeError("could not allocate a filter ID")

        return self.db.run_interaction("add_filter", txn)

    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        """The stored filter JSON, or None (also for an ID that is not one of ours)."""
        if not filter_id.isascii() or not filter_id.isdigit() or len(filter_id) > 18:
            return None
        row = await self.db.select_one(
            "get_filter",
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_nid = ?",
            user_id,
            int(filter_id),
        )
        return json.loads(row[0]) if row else None
