"""SQL for content reports (schema 0027): what users reported, kept for administrators."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream


@attrs.frozen
class Report:
    """One stored report; the fields its kind does not use are None."""

    report_id: int
    kind: str
    reporter: str
    room_id: str | None
    event_id: str | None
    target_user_id: str | None
    reason: str | None
    score: int | None
    received_ts: int


_COLUMNS = "report_id, kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts"


class ReportsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._ids = PersistedStream(db, "content_reports")

    def add(
        self,
        kind: str,
        reporter: str,
        received_ts: int,
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        target_user_id: str | None = None,
        reason: str | None = None,
        score: int | None = None,
    ) -> Deferred[int]:
        """Store a report; its ID."""

        def txn(t: Txn) -> int:
            report_id = self._ids.allocate_txn(t)
            t.execute(
                f"INSERT INTO content_reports ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (report_id, kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts),
            )
            return report_id

        return self.db.run_interaction("content_report_add", txn)

    def recent(self, limit: int, before_id: int | None = None) -> Deferred[list[Report]]:
        """Reports newest first (``before_id``: only older ones), for administrators."""

        def txn(t: Txn) -> list[Report]:
            if before_id is None:
                rows = t.query(f"SELECT {_COLUMNS} FROM content_reports ORDER BY report_id DESC LIMIT ?", (limit,))
            else:
                rows = t.query(
                    f"SELECT {_COLUMNS} FROM content_reports WHERE report_id < ? ORDER BY report_id DESC LIMIT ?",
                    (before_id, limit),
                )
            return [_report(r) for r in rows]

        return self.db.run_read("content_reports_recent", txn)


def _report(r: tuple[object, ...]) -> Report:
    return Report(
        int(r[0]),  # type: ignore[call-overload]
        str(r[1]),
        str(r[2]),
        None if r[3] is None else str(r[3]),
        None if r[4] is None else str(r[4]),
        None if r[5] is None else str(r[5]),
        None if r[6] is None else str(r[6]),
        None if r[7] is None else int(r[7]),  # type: ignore[call-overload]
        int(r[8]),  # type: ignore[call-overload]
    )
