"""SQL for device lists (schema 0017): the change log and the cache of remote users' lists.

``device_list_changes`` is the ``device_lists`` stream: who changed at which
position. Remote users' device lists are cached in ``e2e_device_keys`` and
``e2e_cross_signing_keys`` (the same tables as local ones) once
``e2e_remote_device_lists`` says we track the user.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.e2ee_keys import _dumps, record_change_txn
from mxserver.storage.stream_positions import PersistedStream

JsonDict = dict[str, Any]

#: how many applied stream IDs are remembered per remote user (to recognise prev_id)
KEEP_REMOTE_IDS = 20


class DeviceListStore:
    """The device-list change log and the cache of remote users' device lists."""

    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream

    # -- the change log ---------------------------------------------------------------------

    def users_changed_between(self, after: int, upto: int, viewer: str) -> Deferred[set[str]]:
        """Users with a device-list change at a position in (after, upto] that ``viewer`` may hear of."""

        def txn(t: Txn) -> set[str]:
            rows = t.query(
                "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > ? AND stream_id <= ?"
                " AND (owner_only = FALSE OR user_id = ?)",
                (after, upto, viewer),
            )
            return {r[0] for r in rows}

        return self.db.run_read("device_list_changed_between", txn)

    async def latest_stream_id(self, user_id: str) -> int:
        row = await self.db.select_one(
            "device_list_latest", "SELECT MAX(stream_id) FROM device_list_changes WHERE user_id = ?", user_id
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def latest_device_stream_id(self, user_id: str) -> int:
        """The position of ``user_id``'s last device change (cross-signing changes left out)."""
        row = await self.db.select_one(
            "device_list_latest_device",
            "SELECT MAX(stream_id) FROM device_list_changes WHERE user_id = ? AND device_id <> ''",
            user_id,
        )
        return int(row[0]) if row and row[0] is not None else 0

    def record_remote_change(self, user_id: str) -> Deferred[tuple[int, int | None]]:
        """A remote user's list changed (or we learnt it may have): a position local syncs see."""
        return self.db.run_interaction("device_list_remote_change", record_change_txn, self.stream, user_id, "")

    def membership_changes(
        self, room_nids: Sequence[int], after: int, upto: int
    ) -> Deferred[list[tuple[int, str, str]]]:
        """``(room_nid, user_id, membership)`` of current memberships set at room positions in (after, upto]."""

        def txn(t: Txn) -> list[tuple[int, str, str]]:
            out: list[tuple[int, str, str]] = []
            nids = list(room_nids)
            for i in range(0, len(nids), 200):
                chunk = nids[i : i + 200]
                marks = ",".join("?" * len(chunk))
                out += [
                    (int(r[0]), r[1], r[2])
                    for r in t.query(
                        "SELECT room_nid, user_id, membership FROM room_memberships"
                        f" WHERE room_nid IN ({marks}) AND stream_ordering > ? AND stream_ordering <= ?",
                        (*chunk, after, upto),
                    )
                ]
            return out

        return self.db.run_read("device_list_membership_changes", txn)

    # -- remote cache -------------------------------------------------------------------------------

    def tracked(self, user_ids: Iterable[str]) -> Deferred[dict[str, int | None]]:
        """Which of ``user_ids`` have a cached device list: ``{user: remote stream_id or None}``."""
        users = list(dict.fromkeys(user_ids))

        def txn(t: Txn) -> dict[str, int | None]:
            out: dict[str, int | None] = {}
            for i in range(0, len(users), 200):
                chunk = users[i : i + 200]
                marks = ",".join("?" * len(chunk))
                for user_id, stream_id in t.query(
                    f"SELECT user_id, stream_id FROM e2e_remote_device_lists WHERE user_id IN ({marks})", chunk
                ):
                    out[user_id] = int(stream_id) if stream_id is not None else None
            return out

        return self.db.run_read("device_list_tracked", txn)

    def known_remote_ids(self, user_id: str) -> Deferred[set[int]]:
        def txn(t: Txn) -> set[int]:
            return {
                int(r[0])
                for r in t.query("SELECT stream_id FROM e2e_remote_device_list_ids WHERE user_id = ?", (user_id,))
            }

        return self.db.run_read("device_list_known_ids", txn)

    def replace_remote_list(
        self,
        user_id: str,
        stream_id: int | None,
        devices: dict[str, tuple[JsonDict | None, str | None]],
        cross_signing: dict[str, tuple[str, JsonDict]],
    ) -> Deferred[None]:
        """Cache a remote user's whole device list (a resync or a /user/keys/query answer)."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM e2e_device_keys WHERE user_id = ?", (user_id,))
            t.executemany(
                "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES (?, ?, ?, ?)",
                [(user_id, d, _dumps(keys) if keys is not None else None, name) for d, (keys, name) in devices.items()],
            )
            t.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,))
            _set_cross_signing_txn(t, user_id, cross_signing)
            t.execute(
                "INSERT INTO e2e_remote_device_lists (user_id, stream_id) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id",
                (user_id, stream_id),
            )
            t.execute("DELETE FROM e2e_remote_device_list_ids WHERE user_id = ?", (user_id,))
            if stream_id is not None:
                t.execute(
                    "INSERT INTO e2e_remote_device_list_ids (user_id, stream_id) VALUES (?, ?)", (user_id, stream_id)
                )

        return self.db.run_interaction("device_list_replace_remote", txn)

    def apply_remote_update(
        self, user_id: str, stream_id: int, device_id: str, deleted: bool, keys: JsonDict | None, name: str | None
    ) -> Deferred[None]:
        """Apply one m.device_list_update to a cached list whose prev_ids are all known."""

        def txn(t: Txn) -> None:
            if deleted:
                t.execute("DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id))
            else:
                t.execute(
                    "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json,"
                    " display_name = excluded.display_name",
                    (user_id, device_id, _dumps(keys) if keys is not None else None, name),
                )
            t.execute(
                "UPDATE e2e_remote_device_lists SET stream_id = ? WHERE user_id = ? AND (stream_id IS NULL OR stream_id < ?)",
                (stream_id, user_id, stream_id),
            )
            t.execute(
                "INSERT INTO e2e_remote_device_list_ids (user_id, stream_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user_id, stream_id),
            )
            # Only the latest few are needed to recognise the next EDU's prev_id.
            t.execute(
                "DELETE FROM e2e_remote_device_list_ids WHERE user_id = ? AND stream_id NOT IN"
                " (SELECT stream_id FROM e2e_remote_device_list_ids WHERE user_id = ? ORDER BY stream_id DESC LIMIT ?)",
                (user_id, user_id, KEEP_REMOTE_IDS),
            )

        return self.db.run_interaction("device_list_apply_remote", txn)

    def set_remote_cross_signing(self, user_id: str, keys: dict[str, tuple[str, JsonDict]]) -> Deferred[None]:
        return self.db.run_interaction("device_list_remote_cross_signing", _set_cross_signing_txn, user_id, keys)

    def forget_remote(self, user_id: str) -> Deferred[None]:
        """Stop trusting the cache of ``user_id``'s list: the next query asks their server again."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM e2e_remote_device_lists WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM e2e_remote_device_list_ids WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM e2e_device_keys WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,))

        return self.db.run_interaction("device_list_forget_remote", txn)


def _set_cross_signing_txn(t: Txn, user_id: str, keys: dict[str, tuple[str, JsonDict]]) -> None:
    for key_type, (public_key, key) in keys.items():
        t.execute(
            "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key,"
            " key_json = excluded.key_json",
            (user_id, key_type, public_key, _dumps(key)),
        )


def loads(raw: str | None) -> Any:
    return json.loads(raw) if raw else None
