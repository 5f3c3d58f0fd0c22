"""SQL for sliding sync: connection state (schema 0028) and the batched room reads it needs.

Connection state is kept as rows per room (see the schema file): the base at
position 0 and the pending responses' changes at their positions. Every
method is one database interaction, whatever the number of rooms it covers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.state import StateKey
from mxserver.storage.stream_positions import PersistedStream

#: an event that can be in a timeline (as SyncStore reads them)
_TIMELINE = "stream_ordering IS NOT NULL AND rejected_reason IS NULL AND soft_failed = ?"
_CHUNK = 500
#: branches and parameters per UNION ALL statement (SQLite: 500 terms in a compound SELECT)
_UNION_BRANCHES = 400
_UNION_ARGS = 20_000


@attrs.frozen
class StoredConnection:
    conn_key: int
    base_position: int
    last_used_ts: int
    #: position (0: the base) -> room ID -> entry JSON text
    rows: Mapping[int, Mapping[str, str]]


@attrs.frozen
class RoomTraits:
    """What the list filters read of a room: its type, encryption, name."""

    room_type: str | None
    encrypted: bool
    name: str | None
    #: whether the room's state is known here (False: e.g. only a remote invite)
    known: bool = True


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class SlidingSyncStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn_keys = PersistedStream(db, "sliding_sync_connections")
        self._positions = PersistedStream(db, "sliding_sync_positions")

    # -- connections ---------------------------------------------------------------------------

    def load_connection(self, user_id: str, device_id: str, conn_id: str) -> Deferred[StoredConnection | None]:
        def txn(t: Txn) -> StoredConnection | None:
            row = t.query_one(
                "SELECT conn_key, base_position, last_used_ts FROM sliding_sync_connections"
                " WHERE user_id = ? AND device_id = ? AND conn_id = ?",
                (user_id, device_id, conn_id),
            )
            if row is None:
                return None
            conn_key, base, used = int(row[0]), int(row[1]), int(row[2])
            rows: dict[int, dict[str, str]] = {0: {}}
            for (position,) in t.query("SELECT position FROM sliding_sync_positions WHERE conn_key = ?", (conn_key,)):
                rows[int(position)] = {}
            for position, room_id, entry in t.query(
                "SELECT position, room_id, entry FROM sliding_sync_rooms WHERE conn_key = ?", (conn_key,)
            ):
                rows.setdefault(int(position), {})[room_id] = entry
            return StoredConnection(conn_key, base, used, rows)

        return self.db.run_read("sliding_sync_load_connection", txn)

    def create_connection(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        entries: Mapping[str, str],
        now_ms: int,
        max_per_device: int,
        max_per_user: int,
        unused_since_ms: int,
    ) -> Deferred[tuple[int, int, list[tuple[str, str]]]]:
        """A new connection (replacing one with the same IDs) whose first pending position holds
        ``entries``: ``(conn_key, position, [(device_id, conn_id) of connections removed])``.

        Removed with it: the device's oldest connections beyond ``max_per_device``, the user's
        beyond ``max_per_user``, and the user's connections unused since ``unused_since_ms``
        (MSC4186 §Security considerations: limit what is stored per user)."""

        def txn(t: Txn) -> tuple[int, int, list[tuple[str, str]]]:
            removed: list[tuple[int, str, str]] = []
            for key, dev, cid in t.query(
                "SELECT conn_key, device_id, conn_id FROM sliding_sync_connections"
                " WHERE user_id = ? AND ((device_id = ? AND conn_id = ?) OR last_used_ts < ?)",
                (user_id, device_id, conn_id, unused_since_ms),
            ):
                removed.append((int(key), dev, cid))
            others = t.query(
                "SELECT conn_key, conn_id FROM sliding_sync_connections WHERE user_id = ? AND device_id = ?"
                " AND conn_id <> ? ORDER BY last_used_ts DESC, conn_key DESC",
                (user_id, device_id, conn_id),
            )
            for key, cid in others[max_per_device - 1 :]:
                removed.append((int(key), device_id, cid))
            everyone = t.query(
                "SELECT conn_key, device_id, conn_id FROM sliding_sync_connections WHERE user_id = ?"
                " AND NOT (device_id = ? AND conn_id = ?) ORDER BY last_used_ts DESC, conn_key DESC",
                (user_id, device_id, conn_id),
            )
            for key, dev, cid in everyone[max_per_user - 1 :]:
                removed.append((int(key), dev, cid))
            for key in {r[0] for r in removed}:
                self._delete_connection_txn(t, key)
            conn_key = self._conn_keys.allocate_txn(t)
            position = self._positions.allocate_txn(t)
            t.execute(
                "INSERT INTO sliding_sync_connections"
                " (conn_key, user_id, device_id, conn_id, base_position, created_ts, last_used_ts)"
                " VALUES (?, ?, ?, ?, 0, ?, ?)",
                (conn_key, user_id, device_id, conn_id, now_ms, now_ms),
            )
            self._add_position_txn(t, conn_key, position, entries, now_ms)
            return conn_key, position, sorted({(r[1], r[2]) for r in removed})

        return self.db.run_interaction("sliding_sync_create_connection", txn)

    def add_position(
        self, conn_key: int, base_position: int, entries: Mapping[str, str], now_ms: int
    ) -> Deferred[int | None]:
        """A new pending position on top of the base ``base_position``; None if the connection is
        gone or its base moved on (another request confirmed a newer position meanwhile)."""

        def txn(t: Txn) -> int | None:
            row = t.query_one("SELECT base_position FROM sliding_sync_connections WHERE conn_key = ?", (conn_key,))
            if row is None or int(row[0]) != base_position:
                return None
            position = self._positions.allocate_txn(t)
            self._add_position_txn(t, conn_key, position, entries, now_ms)
            return position

        return self.db.run_interaction("sliding_sync_add_position", txn)

    @staticmethod
    def _add_position_txn(t: Txn, conn_key: int, position: int, entries: Mapping[str, str], now_ms: int) -> None:
        t.execute(
            "INSERT INTO sliding_sync_positions (position, conn_key, created_ts) VALUES (?, ?, ?)",
            (position, conn_key, now_ms),
        )
        t.executemany(
            "INSERT INTO sliding_sync_rooms (conn_key, position, room_id, entry) VALUES (?, ?, ?, ?)",
            [(conn_key, position, room_id, entry) for room_id, entry in entries.items()],
        )

    def confirm_position(self, conn_key: int, position: int, now_ms: int) -> Deferred[bool]:
        """The client used ``position``: fold its rows into the base and drop every other pending
        position. False if it is not pending (any more)."""

        def txn(t: Txn) -> bool:
            row = t.query_one(
                "SELECT 1 FROM sliding_sync_positions WHERE conn_key = ? AND position = ?", (conn_key, position)
            )
            if row is None:
                return False
            t.execute(
                "DELETE FROM sliding_sync_rooms WHERE conn_key = ? AND position = 0 AND room_id IN"
                " (SELECT room_id FROM sliding_sync_rooms WHERE conn_key = ? AND position = ?)",
                (conn_key, conn_key, position),
            )
            t.execute(
                "UPDATE sliding_sync_rooms SET position = 0 WHERE conn_key = ? AND position = ?", (conn_key, position)
            )
            t.execute("DELETE FROM sliding_sync_rooms WHERE conn_key = ? AND position <> 0", (conn_key,))
            t.execute("DELETE FROM sliding_sync_positions WHERE conn_key = ?", (conn_key,))
            t.execute(
                "UPDATE sliding_sync_connections SET base_position = ?, last_used_ts = ? WHERE conn_key = ?",
                (position, now_ms, conn_key),
            )
            return True

        return self.db.run_interaction("sliding_sync_confirm_position", txn)

    def drop_pending(self, conn_key: int, now_ms: int) -> Deferred[None]:
        """The client used the base position again (a retry): the responses after it are void."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM sliding_sync_rooms WHERE conn_key = ? AND position <> 0", (conn_key,))
            t.execute("DELETE FROM sliding_sync_positions WHERE conn_key = ?", (conn_key,))
            t.execute("UPDATE sliding_sync_connections SET last_used_ts = ? WHERE conn_key = ?", (now_ms, conn_key))

        return self.db.run_interaction("sliding_sync_drop_pending", txn)

    def delete_connections(self, user_id: str, device_ids: Sequence[str] | None) -> Deferred[list[tuple[str, str]]]:
        """Remove the connections of these devices (None: all the user's); their (device, conn_id)."""

        def txn(t: Txn) -> list[tuple[str, str]]:
            rows = t.query(
                "SELECT conn_key, device_id, conn_id FROM sliding_sync_connections WHERE user_id = ?", (user_id,)
            )
            out = []
            for key, dev, cid in rows:
                if device_ids is None or dev in device_ids:
                    self._delete_connection_txn(t, int(key))
                    out.append((dev, cid))
            return out

        return self.db.run_interaction("sliding_sync_delete_connections", txn)

    def delete_unused(self, unused_since_ms: int) -> Deferred[list[tuple[str, str, str]]]:
        """Remove every connection unused since ``unused_since_ms``; their (user, device, conn_id)."""

        def txn(t: Txn) -> list[tuple[str, str, str]]:
            rows = t.query(
                "SELECT conn_key, user_id, device_id, conn_id FROM sliding_sync_connections WHERE last_used_ts < ?",
                (unused_since_ms,),
            )
            for row in rows:
                self._delete_connection_txn(t, int(row[0]))
            return [(r[1], r[2], r[3]) for r in rows]

        return self.db.run_interaction("sliding_sync_delete_unused", txn)

    @staticmethod
    def _delete_connection_txn(t: Txn, conn_key: int) -> None:
        t.execute("DELETE FROM sliding_sync_rooms WHERE conn_key = ?", (conn_key,))
        t.execute("DELETE FROM sliding_sync_positions WHERE conn_key = ?", (conn_key,))
        t.execute("DELETE FROM sliding_sync_connections WHERE conn_key = ?", (conn_key,))

    # -- room reads -------------------------------------------------------------------------------

    def latest_positions(self, room_nids: Sequence[int]) -> Deferred[dict[int, int]]:
        """Each room's latest timeline event position (rooms without one absent): one index seek
        per room (events_room_stream), however long the room's history."""

        def txn(t: Txn) -> dict[int, int]:
            out: dict[int, int] = {}
            for nid in room_nids:
                row = t.query_one(
                    f"SELECT stream_ordering FROM events WHERE room_nid = ? AND {_TIMELINE}"
                    " ORDER BY stream_ordering DESC LIMIT 1",
                    (nid, False),
                )
                if row is not None:
                    out[nid] = int(row[0])
            return out

        return self.db.run_read("sliding_sync_latest_positions", txn)

    def bump_stamps(self, rooms: Sequence[tuple[int, int]], types: Sequence[str]) -> Deferred[dict[int, int]]:
        """For each ``(room_nid, upto)``: the position of the room's latest event at or before
        ``upto`` of one of ``types`` (one index seek per type: events_room_type_state_key)."""

        def txn(t: Txn) -> dict[int, int]:
            out: dict[int, int] = {}
            for nid, upto in rooms:
                best = 0
                for event_type in types:
                    # A message type's events have no state key, the create event an empty one.
                    key_clause = "state_key = ''" if event_type == "m.room.create" else "state_key IS NULL"
                    row = t.query_one(
                        f"SELECT stream_ordering FROM events WHERE room_nid = ? AND type = ? AND {key_clause}"
                        f" AND stream_ordering <= ? AND {_TIMELINE} ORDER BY stream_ordering DESC LIMIT 1",
                        (nid, event_type, upto, False),
                    )
                    if row is not None and int(row[0]) > best:
                        best = int(row[0])
                if best:
                    out[nid] = best
            return out

        return self.db.run_read("sliding_sync_bump_stamps", txn)

    def room_traits(self, room_nids: Sequence[int]) -> Deferred[dict[int, RoomTraits]]:
        """Type (create event), encryption and name of rooms whose state is known here."""

        def txn(t: Txn) -> dict[int, RoomTraits]:
            found: dict[int, dict[str, Any]] = {}
            for chunk in _chunks(room_nids):
                marks = ", ".join("?" for _ in chunk)
                for nid, etype, raw in t.query(
                    "SELECT c.room_nid, c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id"
                    f" WHERE c.room_nid IN ({marks}) AND c.state_key = ''"
                    " AND c.type IN ('m.room.create', 'm.room.encryption', 'm.room.name')",
                    list(chunk),
                ):
                    content = json.loads(raw).get("content", {})
                    found.setdefault(int(nid), {})[etype] = content if isinstance(content, dict) else {}
            return {nid: traits_from_state(state) for nid, state in found.items() if "m.room.create" in state}

        return self.db.run_read("sliding_sync_room_traits", txn)

    def state_changes(self, rooms: Sequence[tuple[int, int, int]]) -> Deferred[dict[int, set[StateKey]]]:
        """For each ``(room_nid, after, upto)``: the state keys of the room's state events in
        (after, upto] (the keys whose current value may have changed)."""

        def txn(t: Txn) -> dict[int, set[StateKey]]:
            out: dict[int, set[StateKey]] = {}
            for nid, after, upto in rooms:
                keys = out.setdefault(nid, set())
                for etype, state_key in t.query(
                    f"SELECT type, state_key FROM events WHERE room_nid = ? AND {_TIMELINE}"
                    " AND stream_ordering > ? AND stream_ordering <= ? AND state_key IS NOT NULL",
                    (nid, False, after, upto),
                ):
                    keys.add((etype, state_key))
            return out

        return self.db.run_read("sliding_sync_state_changes", txn)

    def current_state_ids(self, wants: Mapping[int, Any]) -> Deferred[dict[int, dict[StateKey, str]]]:
        """For each room: the current state event IDs its :class:`~mxserver.sliding_sync.request.StateWants`
        asks for (everything, whole types, exact keys, keys of any type)."""

        def txn(t: Txn) -> dict[int, dict[StateKey, str]]:
            out: dict[int, dict[StateKey, str]] = {}
            # One indexed branch per room and kind of want (the primary key is room, type, state
            # key): an OR of them would make the planner scan the whole room's state. Every
            # room's branches go in one UNION ALL: one round trip, not one per room. The exact
            # keys with an empty state key (names, avatars, create events...), asked alike of
            # most rooms, are one lookup per room and type of a single statement.
            branches: list[tuple[str, list[Any]]] = []
            unkeyed: dict[frozenset[str], list[int]] = {}
            for nid, want in wants.items():
                out[nid] = {}
                if want.everything:
                    branches.append(("", [nid]))
                    continue
                if want.types:
                    types = sorted(want.types)
                    branches.append((f" AND type IN ({', '.join('?' for _ in types)})", [nid, *types]))
                if want.any_type_keys:
                    keys = sorted(want.any_type_keys)
                    branches.append((f" AND state_key IN ({', '.join('?' for _ in keys)})", [nid, *keys]))
                by_type: dict[str, list[str]] = {}
                empty_key: set[str] = set()
                for etype, state_key in want.exact:
                    if etype in want.types:
                        continue
                    if state_key == "":
                        empty_key.add(etype)
                    else:
                        by_type.setdefault(etype, []).append(state_key)
                if empty_key:
                    unkeyed.setdefault(frozenset(empty_key), []).append(nid)
                for etype, keys in sorted(by_type.items()):
                    keys = sorted(keys)
                    for i in range(0, len(keys), _CHUNK):
                        part = keys[i : i + _CHUNK]
                        branches.append(
                            (f" AND type = ? AND state_key IN ({', '.join('?' for _ in part)})", [nid, etype, *part])
                        )
            for type_set, nids in unkeyed.items():
                types = sorted(type_set)
                for chunk in _chunks(nids):
                    rows = t.query(
                        "SELECT room_nid, type, state_key, event_id FROM current_state"
                        f" WHERE room_nid IN ({', '.join('?' for _ in chunk)})"
                        f" AND type IN ({', '.join('?' for _ in types)}) AND state_key = ''",
                        [*chunk, *types],
                    )
                    for nid, etype, state_key, event_id in rows:
                        out[int(nid)][(etype, state_key)] = event_id
            group: list[tuple[str, list[Any]]] = []
            size = 0
            for branch in [*branches, None]:
                # Statements of at most _UNION_BRANCHES branches and _UNION_ARGS parameters.
                if group and (branch is None or len(group) >= _UNION_BRANCHES or size + len(branch[1]) > _UNION_ARGS):
                    sql = " UNION ALL ".join(
                        f"SELECT room_nid, type, state_key, event_id FROM current_state WHERE room_nid = ?{clause}"
                        for clause, _ in group
                    )
                    for nid, etype, state_key, event_id in t.query(sql, [a for _, args in group for a in args]):
                        out[int(nid)][(etype, state_key)] = event_id
                    group, size = [], 0
                if branch is not None:
                    group.append(branch)
                    size += len(branch[1])
            return out

        return self.db.run_read("sliding_sync_current_state", txn)

    def event_senders(self, event_ids: Sequence[str]) -> Deferred[dict[str, str]]:
        """The sender of each event (for telling a kick from a leave)."""

        def txn(t: Txn) -> dict[str, str]:
            out: dict[str, str] = {}
            for chunk in _chunks(event_ids):
                marks = ", ".join("?" for _ in chunk)
                out.update(
                    {r[0]: r[1] for r in t.query(f"SELECT event_id, sender FROM events WHERE event_id IN ({marks})", list(chunk))}
                )
            return out

        return self.db.run_read("sliding_sync_event_senders", txn)

    def space_children(self, room_nid: int) -> Deferred[list[str]]:
        """The rooms a space lists as children: ``m.space.child`` state with a non-empty ``via``
        (hierarchy §m.space.child: without one, the child was removed)."""

        def txn(t: Txn) -> list[str]:
            out = []
            for state_key, raw in t.query(
                "SELECT c.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id"
                " WHERE c.room_nid = ? AND c.type = 'm.space.child'",
                (room_nid,),
            ):
                via = json.loads(raw).get("content", {}).get("via")
                if isinstance(via, list) and via:
                    out.append(state_key)
            return out

        return self.db.run_read("sliding_sync_space_children", txn)


def traits_from_state(state: Mapping[str, Mapping[str, Any]]) -> RoomTraits:
    """:class:`RoomTraits` from the contents of a room's create, encryption and name events."""
    create = state.get("m.room.create") or {}
    room_type = create.get("type")
    name = (state.get("m.room.name") or {}).get("name")
    return RoomTraits(
        room_type if isinstance(room_type, str) else None,
        "m.room.encryption" in state,
        name if isinstance(name, str) and name else None,
        known="m.room.create" in state,
    )
