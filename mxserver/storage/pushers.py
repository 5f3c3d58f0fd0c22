"""SQL for pushers (schema 0021) and the reads pushers and ``/notifications`` make of
notifications (schemas 0020, 0022).

Which notifications count as read is decided here exactly as for /sync's unread counts
(:mod:`mxserver.storage.push_actions`): a notification is read once the user's unthreaded
read receipt, or their receipt for its thread, is at or after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.push_actions import READ_RECEIPT_TYPES, user_notifications_args, user_notifications_sql
from mxserver.storage.receipts import UNTHREADED

_COLUMNS = (
    "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data,"
    " device_id, pushkey_ts, last_stream_ordering, failure_ts, retry_last_ts, retry_interval, last_success_ts"
)

#: SQL: the stream position of the user's latest read receipt covering notification ``a``
_READ_UPTO = (
    "COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r"
    " WHERE r.room_nid = a.room_nid AND r.user_id = a.user_id"
    " AND r.thread_id IN (a.thread_id, ?) AND r.receipt_type IN (?, ?)), 0)"
)
_READ_ARGS = (UNTHREADED, *READ_RECEIPT_TYPES)


@attrs.define
class PusherRow:
    """One stored pusher (pusher.yaml fields plus its delivery state)."""

    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    device_id: str | None
    pushkey_ts: int
    last_stream_ordering: int
    failure_ts: int | None = None
    retry_last_ts: int | None = None
    retry_interval: int = 0
    last_success_ts: int | None = None


@attrs.frozen
class PendingNotification:
    """An unread notification a pusher has not handled yet."""

    stream_ordering: int
    event_id: str
    room_id: str
    actions: list[Any]
    highlight: bool


@attrs.frozen
class NotificationEntry:
    """A row of ``GET /notifications``."""

    stream_ordering: int
    event_id: str
    room_id: str
    actions: list[Any]
    ts: int
    read: bool


def _row(r: Sequence[Any]) -> PusherRow:
    return PusherRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9],
        int(r[10]), int(r[11]), r[12], r[13], int(r[14] or 0), r[15],
    )


class PusherStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- pushers -------------------------------------------------------------------------------

    def all_pushers(self) -> Deferred[list[PusherRow]]:
        return self.db.run_read("pushers_all", lambda t: [_row(r) for r in t.query(f"SELECT {_COLUMNS} FROM pushers")])

    def user_pushers(self, user_id: str) -> Deferred[list[PusherRow]]:
        def txn(t: Txn) -> list[PusherRow]:
            rows = t.query(f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey", (user_id,))
            return [_row(r) for r in rows]

        return self.db.run_read("pushers_of_user", txn)

    def set_pusher(self, row: PusherRow, append: bool) -> Deferred[list[tuple[str, str, str]]]:
        """Add or replace ``row``; without ``append``, the pushers of other users with the same
        app ID and pushkey go (pusher.yaml ``append``). The removed pushers' keys."""

        def txn(t: Txn) -> list[tuple[str, str, str]]:
            removed: list[tuple[str, str, str]] = []
            if not append:
                removed = [
                    (r[0], row.app_id, row.pushkey)
                    for r in t.query(
                        "SELECT user_id FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                        (row.app_id, row.pushkey, row.user_id),
                    )
                ]
                t.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    (row.app_id, row.pushkey, row.user_id),
                )
            t.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                (row.user_id, row.app_id, row.pushkey),
            )
            t.execute(
                f"INSERT INTO pushers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.user_id, row.app_id, row.pushkey, row.kind, row.app_display_name,
                    row.device_display_name, row.profile_tag, row.lang, json.dumps(row.data),
                    row.device_id, row.pushkey_ts, row.last_stream_ordering, row.failure_ts,
                    row.retry_last_ts, row.retry_interval, row.last_success_ts,
                ),
            )
            return removed

        return self.db.run_interaction("pushers_set", txn)

    def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> Deferred[bool]:
        def txn(t: Txn) -> bool:
            t.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?", (user_id, app_id, pushkey)
            )
            return t.rowcount > 0

        return self.db.run_interaction("pushers_delete", txn)

    def delete_for_devices(self, user_id: str, device_ids: Sequence[str] | None) -> Deferred[list[tuple[str, str, str]]]:
        """Remove the pushers of these devices of ``user_id`` (None: of every device the user no
        longer has). The removed pushers' keys."""

        def txn(t: Txn) -> list[tuple[str, str, str]]:
            if device_ids is None:
                where = (
                    "user_id = ? AND device_id IS NOT NULL AND device_id NOT IN"
                    " (SELECT device_id FROM devices WHERE user_id = ?)"
                )
                args: tuple[Any, ...] = (user_id, user_id)
                keys = [(user_id, r[0], r[1]) for r in t.query(f"SELECT app_id, pushkey FROM pushers WHERE {where}", args)]
                t.execute(f"DELETE FROM pushers WHERE {where}", args)
                return keys
            keys = []
            for device_id in device_ids:
                rows = t.query(
                    "SELECT app_id, pushkey FROM pushers WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
                keys.extend((user_id, r[0], r[1]) for r in rows)
                t.execute("DELETE FROM pushers WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            return keys

        return self.db.run_interaction("pushers_delete_for_devices", txn)

    def set_position(self, user_id: str, app_id: str, pushkey: str, stream_ordering: int) -> Deferred[None]:
        """Notifications up to ``stream_ordering`` are handled (only ever moves forward)."""
        return self.db.execute(
            "pushers_set_position",
            "UPDATE pushers SET last_stream_ordering = ? WHERE user_id = ? AND app_id = ? AND pushkey = ?"
            " AND last_stream_ordering < ?",
            stream_ordering, user_id, app_id, pushkey, stream_ordering,
        )

    def set_backoff(
        self, key: tuple[str, str, str], failure_ts: int | None, retry_last_ts: int | None, retry_interval: int,
        last_success_ts: int | None = None,
    ) -> Deferred[None]:
        user_id, app_id, pushkey = key
        return self.db.execute(
            "pushers_set_backoff",
            "UPDATE pushers SET failure_ts = ?, retry_last_ts = ?, retry_interval = ?,"
            " last_success_ts = COALESCE(?, last_success_ts) WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            failure_ts, retry_last_ts, retry_interval, last_success_ts, user_id, app_id, pushkey,
        )

    # -- notifications ----------------------------------------------------------------------------

    def pending_notifications(self, user_id: str, after: int, limit: int) -> Deferred[list[PendingNotification]]:
        """Up to ``limit`` unread notifications of ``user_id`` after stream position ``after``, oldest first."""

        def txn(t: Txn) -> list[PendingNotification]:
            rows = t.query(
                "SELECT a.stream_ordering, a.event_id, rm.room_id, a.actions, a.highlight"
                f" FROM ({user_notifications_sql()}) a JOIN rooms rm ON rm.room_nid = a.room_nid"
                f" WHERE a.stream_ordering > ? AND a.stream_ordering > {_READ_UPTO}"
                " ORDER BY a.stream_ordering LIMIT ?",
                (*user_notifications_args(user_id), after, *_READ_ARGS, limit),
            )
            return [PendingNotification(int(r[0]), r[1], r[2], json.loads(r[3]), bool(r[4])) for r in rows]

        return self.db.run_read("pushers_pending_notifications", txn)

    def unread_total(self, user_id: str) -> Deferred[int]:
        """The user's unread notifications across every room (the push gateway's ``counts.unread``)."""

        def txn(t: Txn) -> int:
            row = t.query_one(
                f"SELECT COUNT(*) FROM ({user_notifications_sql()}) a WHERE a.stream_ordering > {_READ_UPTO}"
                # Rooms the user left count no more (their badge is about rooms they are in).
                " AND a.room_nid IN (SELECT m.room_nid FROM room_memberships m WHERE m.user_id = ? AND m.membership = ?)",
                (*user_notifications_args(user_id), *_READ_ARGS, user_id, "join"),
            )
            return int(row[0]) if row else 0

        return self.db.run_read("pushers_unread_total", txn)

    def notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> Deferred[list[NotificationEntry]]:
        """``GET /notifications``: the user's notifications before ``before`` (None: the newest), newest first."""

        def txn(t: Txn) -> list[NotificationEntry]:
            rows = t.query(
                "SELECT a.stream_ordering, a.event_id, rm.room_id, a.actions, a.ts,"
                f" CASE WHEN a.stream_ordering <= {_READ_UPTO} THEN 1 ELSE 0 END"
                f" FROM ({user_notifications_sql()}) a JOIN rooms rm ON rm.room_nid = a.room_nid"
                " WHERE a.stream_ordering < ?"
                + (" AND a.highlight = ?" if only_highlight else "")
                + " ORDER BY a.stream_ordering DESC LIMIT ?",
                (
                    *_READ_ARGS,
                    *user_notifications_args(user_id),
                    before if before is not None else 2**62,
                    *((True,) if only_highlight else ()),
                    limit,
                ),
            )
            return [NotificationEntry(int(r[0]), r[1], r[2], json.loads(r[3]), int(r[4]), bool(r[5])) for r in rows]

        return self.db.run_read("pushers_notifications", txn)
