"""SQL for account data (global and per room) and room tags.

Table ``account_data`` (schema 0006): one row per (user, room or '' for
global, type) with the content and the ``account_data`` stream position of
its latest change. Room tags are the room's ``m.tag`` row, updated by
read-modify-write in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream

#: the room_id column of global account data
GLOBAL = ""

TAG_TYPE = "m.tag"

#: user IDs per IN (...) list: under SQLite's default bound on parameters
_CHUNK = 500


def _dump(content: Any) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


class AccountDataStore:
    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream

    # -- reading -----------------------------------------------------------------

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        """The content of one account data type (``room_id`` '' for global), or None."""
        row = await self.db.select_one(
            "get_account_data",
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
            user_id,
            room_id,
            data_type,
        )
        return json.loads(row[0]) if row else None

    def get_for_users(self, user_ids: Sequence[str], room_id: str, data_type: str) -> Deferred[dict[str, Any]]:
        """``{user: content}`` of one account data type for many users (those without it left out)."""
        users = list(dict.fromkeys(user_ids))

        def txn(t: Txn) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for i in range(0, len(users), _CHUNK):
                chunk = users[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for user_id, content in t.query(
                    "SELECT user_id, content FROM account_data"
                    f" WHERE room_id = ? AND type = ? AND user_id IN ({marks})",
                    (room_id, data_type, *chunk),
                ):
                    out[user_id] = json.loads(content)
            return out

        return self.db.run_read("get_account_data_for_users", txn)

    def get_rooms_of_type(self, user_id: str, data_type: str) -> Deferred[dict[str, Any]]:
        """Every room's content of one room account data type (e.g. every room's tags)."""

        def txn(t: Txn) -> dict[str, Any]:
            rows = t.query(
                "SELECT room_id, content FROM account_data WHERE user_id = ? AND type = ? AND room_id <> ?",
                (user_id, data_type, GLOBAL),
            )
            return {r[0]: json.loads(r[1]) for r in rows}

        return self.db.run_read("get_account_data_rooms_of_type", txn)

    def get_changes(self, user_id: str, from_pos: int | None, to_pos: int) -> Deferred[list[tuple[str, str, Any]]]:
        """``(room_id, type, content)`` of every row whose latest change is in (from_pos, to_pos]."""

        def txn(t: Txn) -> list[tuple[str, str, Any]]:
            if from_pos is None:
                rows = t.query(
                    "SELECT room_id, type, content FROM account_data WHERE user_id = ? AND stream_id <= ?"
                    " ORDER BY stream_id",
                    (user_id, to_pos),
                )
            else:
                rows = t.query(
                    "SELECT room_id, type, content FROM account_data"
                    " WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
                    (user_id, from_pos, to_pos),
                )
            return [(r[0], r[1], json.loads(r[2])) for r in rows]

        return self.db.run_read("get_account_data_changes", txn)

    # -- writing -----------------------------------------------------------------

    def set(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> Deferred[int]:
        """Store ``content`` for one type; returns the change's stream position."""

        def txn(t: Txn) -> int:
            position = self.stream.allocate_txn(t)
            self._upsert_txn(t, user_id, room_id, data_type, _dump(content), position)
            return position

        return self.db.run_interaction("set_account_data", txn)

    def update_tag(self, user_id: str, room_id: str, tag: str, tag_content: dict[str, Any] | None) -> Deferred[int]:
        """Add or replace a tag (``tag_content`` a dict) or remove it (None) in the room's ``m.tag``."""

        def txn(t: Txn) -> int:
            # Allocate first: on Postgres its row lock serialises this read-modify-write.
            position = self.stream.allocate_txn(t)
            row = t.query_one(
                "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
                (user_id, room_id, TAG_TYPE),
            )
            content = json.loads(row[0]) if row else {}
            tags = content.get("tags")
            if not isinstance(tags, dict):
                tags = {}
            if tag_content is None:
                tags.pop(tag, None)
            else:
                tags[tag] = tag_content
            content["tags"] = tags
            self._upsert_txn(t, user_id, room_id, TAG_TYPE, _dump(content), position)
            return position

        return self.db.run_interaction("update_room_tag", txn)

    @staticmethod
    def _upsert_txn(t: Txn, user_id: str, room_id: str, data_type: str, content_json: str, position: int) -> None:
        t.execute(
            "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content,"
            " stream_id = excluded.stream_id",
            (user_id, room_id, data_type, content_json, position),
        )
