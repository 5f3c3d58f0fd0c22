"""SQL for send-to-device messages (tables ``device_inbox`` and ``to_device_txns``, schema 0006).

A message is stored once per target device under the ``to_device`` stream
position of the request that sent it, and deleted when the device's sync
acknowledges it. Sending also reads the ``devices`` table (the accounts
store owns it) to expand ``*`` and drop messages for unknown devices, in the
same transaction.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream

#: transaction IDs are remembered this long (a retry after that is a new request)
TXN_ID_LIFETIME_MS = 24 * 3600 * 1000


class ToDeviceStore:
    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream

    def add_messages(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        messages: dict[str, dict[str, dict[str, Any]]],
        now_ms: int,
    ) -> Deferred[tuple[int, set[str]] | None]:
        """Queue ``messages`` ({user_id: {device_id or "*": content}}) for local devices.

        Returns ``(position, users with a new message)``, or None when this
        (sender, device, type, txn_id) was already sent: a retransmission
        delivers nothing twice. Messages for devices that do not exist are dropped.
        """

        def txn(t: Txn) -> tuple[int, set[str]] | None:
            t.execute(
                "DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND created_ts < ?",
                (sender, sender_device, now_ms - TXN_ID_LIFETIME_MS),
            )
            fresh = t.query(
                "INSERT INTO to_device_txns (user_id, device_id, event_type, txn_id, created_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, event_type, txn_id) DO NOTHING"
                " RETURNING txn_id",
                (sender, sender_device, event_type, txn_id, now_ms),
            )
            if not fresh:
                return None
            position = self.stream.allocate_txn(t)
            rows: list[tuple[str, str, int, str]] = []
            for user_id, by_device in messages.items():
                known = {r[0] for r in t.query("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))}
                if "*" in by_device:
                    # to_device.yaml: "*" means all known devices; an explicit entry for a device wins.
                    targets = {d: by_device.get(d, by_device["*"]) for d in known}
                else:
                    targets = {d: c for d, c in by_device.items() if d in known}
                for device_id, content in targets.items():
                    message = {"type": event_type, "sender": sender, "content": content}
                    rows.append((user_id, device_id, position, json.dumps(message, ensure_ascii=False)))
            t.executemany(
                "INSERT INTO device_inbox (user_id, device_id, stream_id, message_json) VALUES (?, ?, ?, ?)", rows
            )
            return position, {r[0] for r in rows}

        return self.db.run_interaction("add_to_device_messages", txn)

    def get_messages(
        self, user_id: str, device_id: str, since_pos: int, to_pos: int, limit: int
    ) -> Deferred[list[tuple[int, dict[str, Any]]]]:
        """Up to ``limit`` ``(position, message)`` for a device in (since_pos, to_pos], oldest first."""

        def txn(t: Txn) -> list[tuple[int, dict[str, Any]]]:
            rows = t.query(
                "SELECT stream_id, message_json FROM device_inbox WHERE user_id = ? AND device_id = ?"
                " AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
                (user_id, device_id, since_pos, to_pos, limit),
            )
            return [(int(r[0]), json.loads(r[1])) for r in rows]

        return self.db.run_read("get_to_device_messages", txn)

    def delete_messages(self, user_id: str, device_id: str, up_to_pos: int) -> Deferred[int]:
        """Delete a device's messages at or before ``up_to_pos``; returns how many."""

        def txn(t: Txn) -> int:
            t.execute(
                "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
                (user_id, device_id, up_to_pos),
            )
            return t.rowcount

        return self.db.run_interaction("delete_to_device_messages", txn)

    def delete_device_queues(self, user_id: str, device_ids: list[str] | None) -> Deferred[None]:
        """Drop the queues (and remembered transaction IDs) of removed devices.

        ``device_ids`` None means every device the user no longer has (after
        "log out everywhere", a password change or deactivation).
        """

        def txn(t: Txn) -> None:
            if device_ids is None:
                for table in ("device_inbox", "to_device_txns"):
                    t.execute(
                        f"DELETE FROM {table} WHERE user_id = ?"
                        " AND device_id NOT IN (SELECT device_id FROM devices WHERE user_id = ?)",
                        (user_id, user_id),
                    )
                return
            for device_id in device_ids:
                t.execute("DELETE FROM device_inbox WHERE user_id = ? AND device_id = ?", (user_id, device_id))
                t.execute("DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ?", (user_id, device_id))

        return self.db.run_interaction("delete_device_queues", txn)
