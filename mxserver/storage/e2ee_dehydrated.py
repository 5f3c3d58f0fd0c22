"""SQL for dehydrated devices (MSC3814; table ``e2e_dehydrated_devices``, schema 0017)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


class DehydratedDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, user_id: str) -> Deferred[tuple[str, dict[str, Any]] | None]:
        """``(device_id, device_data)`` of the user's dehydrated device."""

        def txn(t: Txn) -> tuple[str, dict[str, Any]] | None:
            row = t.query_one("SELECT device_id, device_data FROM e2e_dehydrated_devices WHERE user_id = ?", (user_id,))
            return (row[0], json.loads(row[1])) if row else None

        return self.db.run_read("dehydrated_get", txn)

    def create(
        self, user_id: str, device_id: str, display_name: str | None, device_data: dict[str, Any], now_ms: int
    ) -> Deferred[str | None]:
        """Create the device (no tokens) and make it the user's dehydrated one, in one transaction.

        Returns the previous dehydrated device's ID (to delete), or raises
        :class:`DeviceIdTaken` when ``device_id`` is an ordinary device of the user.
        """

        def txn(t: Txn) -> str | None:
            old = t.query_one("SELECT device_id FROM e2e_dehydrated_devices WHERE user_id = ?", (user_id,))
            old_id = old[0] if old else None
            t.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO NOTHING",
                (user_id, device_id, display_name, now_ms),
            )
            if t.rowcount == 0 and device_id != old_id:
                raise DeviceIdTaken()
            t.execute(
                "INSERT INTO e2e_dehydrated_devices (user_id, device_id, device_data) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data",
                (user_id, device_id, json.dumps(device_data)),
            )
            return old_id if old_id != device_id else None

        return self.db.run_interaction("dehydrated_create", txn)

    def delete(self, user_id: str) -> Deferred[str | None]:
        """Forget the user's dehydrated device; its ID (the device itself is deleted by the caller)."""

        def txn(t: Txn) -> str | None:
            rows = t.query("DELETE FROM e2e_dehydrated_devices WHERE user_id = ? RETURNING device_id", (user_id,))
            return rows[0][0] if rows else None

        return self.db.run_interaction("dehydrated_delete", txn)


class DeviceIdTaken(Exception):
    """The requested dehydrated device ID belongs to an ordinary device."""
