"""What a cluster's sync worker reads to catch up with the writer (issue 19): committed positions.

The room stream's committed position is the highest stream ordering stored (the writer persists
one batch at a time, so every lower position is committed or was never used), or a purge's
mark above it; the per-user streams' positions are their ``stream_positions`` rows (allocated
under a row lock, so committed in order); a stream reader's is its ``stream_readers`` row.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

#: the per-user streams a sync worker follows (rows of ``stream_positions``)
FOLLOWED_STREAMS = ("receipts", "account_data", "to_device", "device_lists")


class ReplicationStore:
    """Reads the committed positions of the streams a worker follows, in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def positions(self, reader: str) -> Deferred[dict[str, int]]:
        """``{"room": ..., "push": <reader's position>, <stream>: ...}`` for :data:`FOLLOWED_STREAMS`."""

        def txn(t: Txn) -> dict[str, int]:
            row = t.query_one("SELECT MAX(stream_ordering) FROM events")
            purged = t.query_one("SELECT position FROM stream_positions WHERE stream = 'purged_room_events'")
            out = {"room": max(int((row[0] if row else 0) or 0), int((purged[0] if purged else 0) or 0))}
            marks = ",".join("?" * len(FOLLOWED_STREAMS))
            for stream, position in t.query(
                f"SELECT stream, position FROM stream_positions WHERE stream IN ({marks})", FOLLOWED_STREAMS
            ):
                out[stream] = int(position)
            pushed = t.query_one("SELECT position FROM stream_readers WHERE name = ?", (reader,))
            out["push"] = int(pushed[0]) if pushed else 0
            return out

        return self.db.run_read("replication_positions", txn)
