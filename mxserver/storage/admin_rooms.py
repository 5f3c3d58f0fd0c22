"""SQL for the admin API's view of rooms: per-room statistics, the block list, room deletion.

Reads the tables the room server writes (``rooms``, ``current_state``, ``room_memberships``,
``events``) and the directory's (``room_directory``); writes only its own tables
(``blocked_rooms``, ``room_delete_tasks``, schema 0031), except for the purge of a deleted
room, which removes every row that names the room (:meth:`AdminRoomStore.purge_room`).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.directory import stored_content
from mxserver.storage.search import unindex_events_txn

#: the current state (type, "") the room list and the room details are made of
STATS_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.join_rules",
    "m.room.guest_access",
    "m.room.history_visibility",
)


#: the stream_positions row that keeps the highest stream position of purged events
PURGED_STREAM = "purged_room_events"

#: a background task's states (Synapse's delete_status values)
SCHEDULED, ACTIVE, COMPLETE, FAILED = "scheduled", "active", "complete", "failed"


@attrs.frozen
class RoomTask:
    """A room deletion or history purge running in the background, or its outcome."""

    task_id: str
    kind: str
    room_id: str
    status: str
    error: str | None
    result: dict[str, Any] | None
    created_ts: int
    updated_ts: int


_TASK_COLUMNS = "task_id, kind, room_id, status, error, result, created_ts, updated_ts"


def _task(row: tuple[Any, ...]) -> RoomTask:
    result = json.loads(row[5]) if row[5] is not None else None
    return RoomTask(row[0], row[1], row[2], row[3], row[4], result, int(row[6]), int(row[7]))


@attrs.frozen
class RoomStats:
    """One room as the admin room list shows it."""

    room_id: str
    version: str
    creator: str
    joined_members: int
    joined_local_members: int
    state_events: int
    public: bool
    #: event type -> content of the room's current (type, "") state among STATS_STATE_TYPES
    state: dict[str, dict[str, Any]]


class AdminRoomStore:
    """Room statistics for the admin API (and, with room deletion, the block list and purge)."""

    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self._local_pattern = "%:" + server_name

    def list_rooms(self) -> Deferred[list[RoomStats]]:
        """Every room this server knows, with its statistics."""
        return self.db.run_read("admin_list_rooms", self._stats_txn, None)

    async def get_room_stats(self, room_id: str) -> RoomStats | None:
        rooms = await self.db.run_read("admin_room_stats", self._stats_txn, room_id)
        return rooms[0] if rooms else None

    def _stats_txn(self, t: Txn, room_id: str | None) -> list[RoomStats]:
        where, args = ("WHERE r.room_id = ?", (room_id,)) if room_id is not None else ("", ())
        members: dict[int, tuple[int, int]] = {}
        for nid, joined, local in t.query(
            "SELECT r.room_nid, COUNT(m.user_id), SUM(CASE WHEN m.user_id LIKE ? THEN 1 ELSE 0 END)"
            " FROM rooms r JOIN room_memberships m ON m.room_nid = r.room_nid AND m.membership = 'join'"
            f" {where} GROUP BY r.room_nid",
            (self._local_pattern, *args),
        ):
            members[int(nid)] = (int(joined), int(local or 0))
        state_counts = {
            int(nid): int(n)
            for nid, n in t.query(
                f"SELECT r.room_nid, COUNT(*) FROM rooms r JOIN current_state cs ON cs.room_nid = r.room_nid"
                f" {where} GROUP BY r.room_nid",
                args,
            )
        }
        marks = ",".join("?" * len(STATS_STATE_TYPES))
        states: dict[int, dict[str, dict[str, Any]]] = {}
        for nid, version, etype, raw, redacted_by in t.query(
            "SELECT r.room_nid, r.room_version, cs.type, e.json, e.redacted_by FROM rooms r"
            " JOIN current_state cs ON cs.room_nid = r.room_nid"
            " JOIN events e ON e.event_id = cs.event_id"
            f" WHERE cs.state_key = '' AND cs.type IN ({marks})" + (" AND r.room_id = ?" if room_id is not None else ""),
            (*STATS_STATE_TYPES, *args),
        ):
            states.setdefault(int(nid), {})[etype] = stored_content(raw, version, redacted_by)
        published = {
            rid
            for (rid,) in t.query(
                "SELECT d.room_id FROM room_directory d JOIN rooms r ON r.room_id = d.room_id"
                + (" WHERE r.room_id = ?" if room_id is not None else ""),
                args,
            )
        }
        out = []
        for nid, rid, version, creator in t.query(
            f"SELECT r.room_nid, r.room_id, r.room_version, r.creator FROM rooms r {where}", args
        ):
            joined, local = members.get(int(nid), (0, 0))
            out.append(
                RoomStats(
                    room_id=rid,
                    version=version,
                    creator=creator,
                    joined_members=joined,
                    joined_local_members=local,
                    state_events=state_counts.get(int(nid), 0),
                    public=rid in published,
                    state=states.get(int(nid), {}),
                )
            )
        return out

    def count_joined_local_devices(self, room_nid: int) -> Deferred[int]:
        """How many devices the room's joined local users have."""

        def txn(t: Txn) -> int:
            row = t.query(
                "SELECT COUNT(*) FROM devices d JOIN room_memberships m ON m.user_id = d.user_id"
                " WHERE m.room_nid = ? AND m.membership = 'join' AND m.user_id LIKE ?",
                (room_nid, self._local_pattern),
            )
            return int(row[0][0])

        return self.db.run_read("admin_room_devices", txn)

    def all_local_forgotten(self, room_nid: int) -> Deferred[bool]:
        """Whether every local user with a membership of the room has forgotten it (False when no local user has one)."""

        def txn(t: Txn) -> bool:
            rows = t.query(
                "SELECT forgotten FROM room_memberships WHERE room_nid = ? AND user_id LIKE ?",
                (room_nid, self._local_pattern),
            )
            return bool(rows) and all(bool(f) for (f,) in rows)

        return self.db.run_read("admin_room_forgotten", txn)

    def joined_members(self, room_nid: int) -> Deferred[list[str]]:
        """The room's joined users, sorted."""

        def txn(t: Txn) -> list[str]:
            return [
                u
                for (u,) in t.query(
                    "SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership = 'join' ORDER BY user_id",
                    (room_nid,),
                )
            ]

        return self.db.run_read("admin_room_members", txn)

    def local_members(self, room_nid: int, memberships: tuple[str, ...]) -> Deferred[list[str]]:
        """The local users whose membership of the room is one of ``memberships``, sorted."""

        def txn(t: Txn) -> list[str]:
            marks = ",".join("?" * len(memberships))
            rows = t.query(
                f"SELECT user_id FROM room_memberships WHERE room_nid = ? AND membership IN ({marks})"
                " AND user_id LIKE ? ORDER BY user_id",
                (room_nid, *memberships, self._local_pattern),
            )
            return [u for (u,) in rows]

        return self.db.run_read("admin_room_local_members", txn)

    def purge_history(self, room_nid: int, before_depth: int | None, before_ts: int | None, delete_local: bool) -> Deferred[int]:
        """Remove the room's message events (never state events, never a forward extremity;
        events of local senders only with ``delete_local``) below depth ``before_depth`` or
        sent before ``before_ts``; how many were removed."""
        return self.db.run_interaction(
            "admin_purge_history", purge_history_txn, room_nid, before_depth, before_ts, delete_local, self._local_pattern
        )

    def purge_room(self, room_nid: int, room_id: str) -> Deferred[None]:
        """Remove the room from the database (see :func:`purge_room_txn`), in one transaction."""
        return self.db.run_interaction("admin_purge_room", purge_room_txn, room_nid, room_id)



class RoomTaskStore:
    """The background room tasks (table ``admin_room_tasks``): deletions and history purges."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, task_id: str, kind: str, room_id: str, now_ms: int) -> Deferred[None]:
        return self.db.execute(
            "admin_task_add",
            f"INSERT INTO admin_room_tasks ({_TASK_COLUMNS}) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?)",
            task_id,
            kind,
            room_id,
            SCHEDULED,
            now_ms,
            now_ms,
        )

    def update(
        self,
        task_id: str,
        status: str,
        now_ms: int,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> Deferred[None]:
        """Set the task's status (and its error, and its result when one is given)."""

        def txn(t: Txn) -> None:
            t.execute(
                "UPDATE admin_room_tasks SET status = ?, error = ?, updated_ts = ? WHERE task_id = ?",
                (status, error, now_ms, task_id),
            )
            if result is not None:
                t.execute("UPDATE admin_room_tasks SET result = ? WHERE task_id = ?", (json.dumps(result), task_id))

        return self.db.run_interaction("admin_task_update", txn)

    def get(self, task_id: str) -> Deferred[RoomTask | None]:
        def txn(t: Txn) -> RoomTask | None:
            row = t.query_one(f"SELECT {_TASK_COLUMNS} FROM admin_room_tasks WHERE task_id = ?", (task_id,))
            return _task(row) if row is not None else None

        return self.db.run_read("admin_task_get", txn)

    def for_room(self, kind: str, room_id: str) -> Deferred[list[RoomTask]]:
        """The room's tasks of ``kind``, oldest first."""

        def txn(t: Txn) -> list[RoomTask]:
            rows = t.query(
                f"SELECT {_TASK_COLUMNS} FROM admin_room_tasks WHERE kind = ? AND room_id = ?"
                " ORDER BY created_ts, task_id",
                (kind, room_id),
            )
            return [_task(r) for r in rows]

        return self.db.run_read("admin_task_for_room", txn)

    def forget_finished_before(self, ts: int) -> Deferred[None]:
        """Drop the outcome of tasks that finished before ``ts`` (statuses are kept for a while)."""
        return self.db.execute(
            "admin_task_forget",
            "DELETE FROM admin_room_tasks WHERE status IN (?, ?) AND updated_ts < ?",
            COMPLETE,
            FAILED,
            ts,
        )

    def fail_interrupted(self, now_ms: int) -> Deferred[None]:
        """At start-up: the tasks a stop interrupted failed (their work is not resumed)."""
        return self.db.execute(
            "admin_task_interrupted",
            "UPDATE admin_room_tasks SET status = ?, error = ?, updated_ts = ? WHERE status IN (?, ?)",
            FAILED,
            "Interrupted by a server restart",
            now_ms,
            SCHEDULED,
            ACTIVE,
        )


class BlockedRoomsStore:
    """Rooms local users may not join (table ``blocked_rooms``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def block(self, room_id: str, user_id: str, now_ms: int) -> Deferred[None]:
        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id) DO NOTHING",
                (room_id, user_id, now_ms),
            )

        return self.db.run_interaction("block_room", txn)

    def unblock(self, room_id: str) -> Deferred[None]:
        return self.db.execute("unblock_room", "DELETE FROM blocked_rooms WHERE room_id = ?", room_id)

    async def blocked_by(self, room_id: str) -> str | None:
        """The admin who blocked the room, or None if it is not blocked."""
        row = await self.db.select_one("room_blocked_by", "SELECT user_id FROM blocked_rooms WHERE room_id = ?", room_id)
        return str(row[0]) if row else None

    async def is_blocked(self, room_id: str) -> bool:
        return await self.blocked_by(room_id) is not None


#: tables with a room_nid column, that a room purge empties of the room's rows
_ROOM_NID_TABLES = (
    "event_push_actions",
    "event_push_defaults",
    "event_relations",
    "threads",
    "receipts",
    "room_memberships",
    "current_state",
    "forward_extremities",
)
#: tables with a room_id column, that a room purge empties of the room's rows (not
#: blocked_rooms: a block outlives the room; not admin_room_tasks: the deletion's status)
_ROOM_ID_TABLES = (
    "room_aliases",
    "room_directory",
    "appservice_room_list",
    "account_data",
    "federation_destination_rooms",
    "content_reports",
    "sliding_sync_rooms",
    "e2e_room_keys",
    "server_notice_rooms",
)


def purge_room_txn(t: Txn, room_nid: int, room_id: str) -> None:
    """Remove every row of every table that names the room (its events, state, memberships,
    receipts, push actions, relations, aliases, directory entry, users' room account data and
    key backups, reports, ...); only the block list and the admin tasks keep its ID."""
    _remember_purged_positions_txn(t, "e.room_nid = ?", (room_nid,))
    unindex_events_txn(t, "e.room_nid = ?", (room_nid,))
    events_of_room = "SELECT event_id FROM events WHERE room_nid = ?"
    t.execute(f"DELETE FROM event_txn_ids WHERE event_id IN ({events_of_room})", (room_nid,))
    t.execute(f"DELETE FROM appservice_events WHERE event_id IN ({events_of_room})", (room_nid,))
    t.execute("DELETE FROM event_edges WHERE event_nid IN (SELECT event_nid FROM events WHERE room_nid = ?)", (room_nid,))
    for table in _ROOM_NID_TABLES:
        t.execute(f"DELETE FROM {table} WHERE room_nid = ?", (room_nid,))
    t.execute(
        "DELETE FROM state_snapshot_entries WHERE snapshot_nid IN (SELECT snapshot_nid FROM state_snapshots WHERE room_nid = ?)",
        (room_nid,),
    )
    t.execute("DELETE FROM state_snapshots WHERE room_nid = ?", (room_nid,))
    t.execute("DELETE FROM events WHERE room_nid = ?", (room_nid,))
    for table in _ROOM_ID_TABLES:
        t.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
    t.execute("DELETE FROM rooms WHERE room_nid = ?", (room_nid,))


def _remember_purged_positions_txn(t: Txn, condition: str, args: tuple[Any, ...]) -> None:
    """Keep the highest stream position of the events about to go (see :data:`PURGED_STREAM`)."""
    row = t.query_one(f"SELECT MAX(e.stream_ordering) FROM events e WHERE {condition}", args)
    if row is not None and row[0] is not None:
        t.execute(
            "UPDATE stream_positions SET position = ? WHERE stream = ? AND position < ?",
            (int(row[0]), PURGED_STREAM, int(row[0])),
        )


#: events a history purge removes at once (IN lists stay short)
_PURGE_BATCH = 500


def purge_history_txn(
    t: Txn, room_nid: int, before_depth: int | None, before_ts: int | None, delete_local: bool, local_pattern: str
) -> int:
    """See :meth:`AdminRoomStore.purge_history`. Room state (every state event, current or
    replaced) stays, and so do the forward extremities: the room's DAG keeps its head and
    every state snapshot keeps its events."""
    condition = (
        "e.room_nid = ? AND e.state_key IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM forward_extremities f WHERE f.room_nid = e.room_nid AND f.event_id = e.event_id)"
    )
    args: list[Any] = [room_nid]
    if before_depth is not None:
        condition += " AND e.depth < ?"
        args.append(before_depth)
    if before_ts is not None:
        condition += " AND e.origin_server_ts < ?"
        args.append(before_ts)
    if not delete_local:
        condition += " AND e.sender NOT LIKE ?"
        args.append(local_pattern)
    rows = t.query(f"SELECT e.event_nid, e.event_id FROM events e WHERE {condition}", args)
    _remember_purged_positions_txn(t, condition, tuple(args))
    for i in range(0, len(rows), _PURGE_BATCH):
        batch = rows[i : i + _PURGE_BATCH]
        nids = [int(r[0]) for r in batch]
        ids = [str(r[1]) for r in batch]
        nid_marks = ",".join("?" * len(nids))
        id_marks = ",".join("?" * len(ids))
        unindex_events_txn(t, f"e.event_nid IN ({nid_marks})", nids)
        t.execute(f"DELETE FROM event_edges WHERE event_nid IN ({nid_marks})", nids)
        for table in ("event_txn_ids", "appservice_events", "event_relations", "event_push_actions", "event_push_defaults"):
            t.execute(f"DELETE FROM {table} WHERE event_id IN ({id_marks})", ids)
        # a thread whose root is gone has nothing to show
        t.execute(f"DELETE FROM threads WHERE room_nid = ? AND root_id IN ({id_marks})", (room_nid, *ids))
        t.execute(f"DELETE FROM events WHERE event_nid IN ({nid_marks})", nids)
    return len(rows)
