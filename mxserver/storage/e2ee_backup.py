"""SQL for server-side key backups (key_backup.yaml; schema 0017).

A user's backup versions are numbered 1, 2, ... and never reused: a deleted
version stays as a tombstone (``deleted``). The current version is the
highest one not deleted. ``etag`` counts writes of keys to a version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

JsonDict = dict[str, Any]


@attrs.frozen
class BackupVersion:
    version: int
    algorithm: str
    auth_data: JsonDict
    etag: int
    count: int


@attrs.frozen
class RoomKey:
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: JsonDict

    def to_json(self) -> JsonDict:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }

    def better_than(self, other: RoomKey) -> bool:
        """end_to_end_encryption.md §Server-side key backups: which key the server keeps."""
        if self.is_verified != other.is_verified:
            return self.is_verified
        if self.first_message_index != other.first_message_index:
            return self.first_message_index < other.first_message_index
        return self.forwarded_count < other.forwarded_count


class VersionNotFound(Exception):
    pass


class WrongVersion(Exception):
    def __init__(self, current: int | None) -> None:
        super().__init__("wrong backup version")
        self.current = current


def _version_row_txn(t: Txn, user_id: str, version: int | None) -> BackupVersion | None:
    if version is None:
        row = t.query_one(
            "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions WHERE user_id = ? AND deleted = ?"
            " ORDER BY version DESC LIMIT 1",
            (user_id, False),
        )
    else:
        row = t.query_one(
            "SELECT version, algorithm, auth_data, etag FROM e2e_room_keys_versions"
            " WHERE user_id = ? AND version = ? AND deleted = ?",
            (user_id, version, False),
        )
    if row is None:
        return None
    count = t.query_one("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, row[0]))
    return BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]), int(count[0]) if count else 0)


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_version(self, user_id: str, algorithm: str, auth_data: JsonDict) -> Deferred[int]:
        def txn(t: Txn) -> int:
            row = t.query_one("SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = ?", (user_id,))
            version = (int(row[0]) if row and row[0] is not None else 0) + 1
            t.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, version, algorithm, json.dumps(auth_data), 0, False),
            )
            return version

        return self.db.run_interaction("backup_create_version", txn)

    def get_version(self, user_id: str, version: int | None) -> Deferred[BackupVersion | None]:
        """A live version (None: the current one)."""
        return self.db.run_read("backup_get_version", _version_row_txn, user_id, version)

    def update_auth_data(self, user_id: str, version: int, auth_data: JsonDict) -> Deferred[bool]:
        def txn(t: Txn) -> bool:
            t.execute(
                "UPDATE e2e_room_keys_versions SET auth_data = ? WHERE user_id = ? AND version = ? AND deleted = ?",
                (json.dumps(auth_data), user_id, version, False),
            )
            return t.rowcount > 0

        return self.db.run_interaction("backup_update_version", txn)

    def delete_version(self, user_id: str, version: int) -> Deferred[str]:
        """'deleted', 'already' (a tombstone: success again) or 'unknown'."""

        def txn(t: Txn) -> str:
            row = t.query_one(
                "SELECT deleted FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?", (user_id, version)
            )
            if row is None:
                return "unknown"
            if row[0]:
                return "already"
            t.execute(
                "UPDATE e2e_room_keys_versions SET deleted = ? WHERE user_id = ? AND version = ?",
                (True, user_id, version),
            )
            t.execute("DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version))
            return "deleted"

        return self.db.run_interaction("backup_delete_version", txn)

    def put_keys(
        self, user_id: str, version: int, keys: Sequence[tuple[str, str, RoomKey]]
    ) -> Deferred[tuple[int, int]]:
        """Store ``(room_id, session_id, key)`` in the current version by the replacement rules.

        Raises :class:`WrongVersion` unless ``version`` is the current one
        (key_backup.yaml: keys go to the most recent version only). Returns
        ``(etag, count)``.
        """

        def txn(t: Txn) -> tuple[int, int]:
            current = _version_row_txn(t, user_id, None)
            if current is None:
                raise VersionNotFound()
            if current.version != version:
                raise WrongVersion(current.version)
            changed = False
            for room_id, session_id, key in keys:
                row = t.query_one(
                    "SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2e_room_keys"
                    " WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
                    (user_id, version, room_id, session_id),
                )
                if row is not None:
                    old = RoomKey(int(row[0]), int(row[1]), bool(row[2]), json.loads(row[3]))
                    if not key.better_than(old):
                        continue
                t.execute(
                    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
                    " forwarded_count, is_verified, session_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,"
                    " is_verified = excluded.is_verified, session_data = excluded.session_data",
                    (
                        user_id,
                        version,
                        room_id,
                        session_id,
                        key.first_message_index,
                        key.forwarded_count,
                        key.is_verified,
                        json.dumps(key.session_data),
                    ),
                )
                changed = True
            if changed:
                t.execute(
                    "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
                    (user_id, version),
                )
            return _etag_count_txn(t, user_id, version)

        return self.db.run_interaction("backup_put_keys", txn)

    def get_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> Deferred[dict[str, dict[str, RoomKey]] | None]:
        """``{room: {session: key}}`` of a live version (None if there is no such version)."""

        def txn(t: Txn) -> dict[str, dict[str, RoomKey]] | None:
            if _version_row_txn(t, user_id, version) is None:
                return None
            sql = (
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"
                " FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            )
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            out: dict[str, dict[str, RoomKey]] = {}
            for r, s, fmi, fc, verified, data in t.query(sql, args):
                out.setdefault(r, {})[s] = RoomKey(int(fmi), int(fc), bool(verified), json.loads(data))
            return out

        return self.db.run_read("backup_get_keys", txn)

    def delete_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> Deferred[tuple[int, int] | None]:
        """Delete keys of a live version; ``(etag, count)`` or None if there is no such version."""

        def txn(t: Txn) -> tuple[int, int] | None:
            if _version_row_txn(t, user_id, version) is None:
                return None
            sql = "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            t.execute(sql, args)
            if t.rowcount:
                t.execute(
                    "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
                    (user_id, version),
                )
            return _etag_count_txn(t, user_id, version)

        return self.db.run_interaction("backup_delete_keys", txn)


def _etag_count_txn(t: Txn, user_id: str, version: int) -> tuple[int, int]:
    row = t.query_one("SELECT etag FROM e2e_room_keys_versions WHERE user_id = ? AND version = ?", (user_id, version))
    count = t.query_one("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version))
    return int(row[0]) if row else 0, int(count[0]) if count else 0
