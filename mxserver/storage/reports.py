"""SQL for content reports (schema 0027): what users reported, kept for administrators, and
the admin API's view of the event reports among them (with the reported event's sender)."""

from __future__ import annotations

from typing import Any

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

    def event_reports(
        self,
        start: int,
        limit: int,
        newest_first: bool,
        room_id: str | None = None,
        user_id: str | None = None,
        sender: str | None = None,
    ) -> Deferred[tuple[list[EventReport], int]]:
        """A page of the event reports (``start`` is an offset) whose room ID contains
        ``room_id``, whose reporter contains ``user_id``, of events ``sender`` sent; and how many
        there are in all."""
        return self.db.run_read(
            "event_reports_page", list_event_reports_txn, start, limit, newest_first, room_id, user_id, sender
        )

    def get_event_report(self, report_id: int) -> Deferred[EventReport | None]:
        def txn(t: Txn) -> EventReport | None:
            r = t.query_one(
                f"SELECT {_EVENT_REPORT_COLUMNS} FROM {_EVENT_REPORT_FROM} WHERE r.kind = 'event' AND r.report_id = ?",
                (report_id,),
            )
            return EventReport(_report(r[:9]), r[9]) if r is not None else None

        return self.db.run_read("event_report_get", txn)

    def delete_event_report(self, report_id: int) -> Deferred[bool]:
        """Remove an event report; whether there was one."""

        def txn(t: Txn) -> bool:
            rows = t.query(
                "DELETE FROM content_reports WHERE kind = 'event' AND report_id = ? RETURNING report_id", (report_id,)
            )
            return bool(rows)

        return self.db.run_interaction("event_report_delete", txn)


@attrs.frozen
class EventReport:
    """An event report with the reported event's sender (None if the event is not stored)."""

    report: Report
    sender: str | None


def _like_contains(value: str) -> str:
    """A LIKE pattern for "contains ``value``" (``\\`` escapes: see the ESCAPE clauses)."""
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _event_report_filter(room_id: str | None, user_id: str | None, sender: str | None) -> tuple[str, list[Any]]:
    where = ["r.kind = 'event'"]
    args: list[Any] = []
    if room_id:
        where.append("r.room_id LIKE ? ESCAPE '\\'")
        args.append(_like_contains(room_id))
    if user_id:
        where.append("r.reporter LIKE ? ESCAPE '\\'")
        args.append(_like_contains(user_id))
    if sender:
        where.append("e.sender = ?")
        args.append(sender)
    return " AND ".join(where), args


_EVENT_REPORT_FROM = "content_reports r LEFT JOIN events e ON e.event_id = r.event_id"
_EVENT_REPORT_COLUMNS = ", ".join(f"r.{c.strip()}" for c in _COLUMNS.split(",")) + ", e.sender"


def list_event_reports_txn(
    t: Txn, start: int, limit: int, newest_first: bool, room_id: str | None, user_id: str | None, sender: str | None
) -> tuple[list[EventReport], int]:
    where, args = _event_report_filter(room_id, user_id, sender)
    row = t.query_one(f"SELECT COUNT(*) FROM {_EVENT_REPORT_FROM} WHERE {where}", args)
    total = int(row[0]) if row else 0
    order = "DESC" if newest_first else "ASC"
    rows = t.query(
        f"SELECT {_EVENT_REPORT_COLUMNS} FROM {_EVENT_REPORT_FROM} WHERE {where}"
        f" ORDER BY r.report_id {order} LIMIT ? OFFSET ?",
        (*args, limit, start),
    )
    return [EventReport(_report(r[:9]), r[9]) for r in rows], total


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
