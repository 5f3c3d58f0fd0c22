"""State snapshots: shared by every event with the same state, stored as bounded deltas.

A snapshot is a parent snapshot plus a few changed entries; after
``MAX_CHAIN`` deltas a full snapshot is written instead, so loading any
state touches at most ``MAX_CHAIN`` rows sets (one recursive query). Loaded
maps are cached in memory, bounded by their total number of entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import attrs

from mxserver.storage.database import Database, Txn

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

#: deltas allowed on top of a full snapshot before writing a full one again
MAX_CHAIN = 48


@attrs.define
class NewSnapshot:
    """A snapshot to write: ``entries`` is the delta on ``parent_nid`` (or all of it if no parent)."""

    snapshot_nid: int
    room_nid: int
    parent_nid: int | None
    chain_length: int
    entries: dict[StateKey, str]
    full_map: dict[StateKey, str]


class StateStore:
    """Reads and plans state snapshots; writes happen inside the event persister's transaction."""

    #: total state entries kept in memory across cached snapshots
    CACHE_ENTRIES = 50_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[int, dict[StateKey, str]] = OrderedDict()
        self._cached_entries = 0
        self._chain: dict[int, int] = {}  # snapshot -> chain length (for planning)
        self._next_nid = 0
        self._state_key_nids: dict[StateKey, int] = {}
        self._next_state_key_nid = 0

    def load_counters_txn(self, txn: Txn) -> None:
        row = txn.query_one("SELECT MAX(snapshot_nid) FROM state_snapshots")
        self._next_nid = (row[0] or 0) + 1 if row else 1
        row = txn.query_one("SELECT MAX(state_key_nid) FROM state_keys")
        self._next_state_key_nid = (row[0] or 0) + 1 if row else 1

    # -- cache ---------------------------------------------------------------------

    def _remember(self, nid: int, state: dict[StateKey, str]) -> None:
        if nid in self._cache:
            self._cache.move_to_end(nid)
            return
        self._cache[nid] = state
        self._cached_entries += len(state)
        while self._cached_entries > self.CACHE_ENTRIES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_entries -= len(old)

    def cached(self, nid: int) -> dict[StateKey, str] | None:
        state = self._cache.get(nid)
        if state is not None:
            self._cache.move_to_end(nid)
        return state

    # -- reading ---------------------------------------------------------------------

    async def get_state(self, snapshot_nid: int | None) -> dict[StateKey, str]:
        """The full state map of a snapshot (treat the result as read-only)."""
        if snapshot_nid is None:
            return {}
        cached = self.cached(snapshot_nid)
        if cached is not None:
            return cached
        state, chain_length = await self.db.run_read("get_state_snapshot", self._load_txn, snapshot_nid)
        self._chain[snapshot_nid] = chain_length
        self._remember(snapshot_nid, state)
        return state

    @staticmethod
    def _load_txn(txn: Txn, snapshot_nid: int) -> tuple[dict[StateKey, str], int]:
        rows = txn.query(
            "WITH RECURSIVE chain(nid, depth) AS ("
            "  SELECT CAST(? AS BIGINT), 0"
            "  UNION ALL"
            "  SELECT s.parent_nid, c.depth + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.nid"
            "  WHERE s.parent_nid IS NOT NULL"
            ") SELECT c.depth, k.type, k.state_key, e.event_id FROM chain c"
            " JOIN state_snapshot_entries se ON se.snapshot_nid = c.nid"
            " JOIN state_keys k ON k.state_key_nid = se.state_key_nid"
            " JOIN events e ON e.event_nid = se.event_nid",
            (snapshot_nid,),
        )
        # Apply the root first: deltas nearer the requested snapshot override it.
        rows.sort(key=lambda r: -r[0])
        state = {(r[1], r[2]): r[3] for r in rows}
        chain_length = max((r[0] for r in rows), default=0)
        return state, chain_length

    # -- planning and writing ---------------------------------------------------------------

    def plan(
        self, room_nid: int, parent_nid: int | None, parent_state: StateMap, changes: Mapping[StateKey, str]
    ) -> NewSnapshot:
        """A new snapshot equal to ``parent_state`` updated with ``changes``."""
        nid = self._next_nid
        self._next_nid += 1
        full = dict(parent_state)
        full.update(changes)
        chain = self._chain.get(parent_nid, MAX_CHAIN) if parent_nid is not None else MAX_CHAIN
        removed = any(k not in full for k in parent_state)
        if parent_nid is None or chain + 1 >= MAX_CHAIN or removed:
            snap = NewSnapshot(nid, room_nid, None, 0, dict(full), full)
        else:
            snap = NewSnapshot(nid, room_nid, parent_nid, chain + 1, dict(changes), full)
        self._chain[nid] = snap.chain_length
        return snap

    def plan_from_map(self, room_nid: int, base_nid: int | None, base: StateMap, state: StateMap) -> NewSnapshot:
        """A snapshot for an arbitrary map (after state resolution), as a delta on ``base`` if it fits."""
        if any(k not in state for k in base):
            return self.plan(room_nid, None, {}, state)
        changes = {k: v for k, v in state.items() if base.get(k) != v}
        return self.plan(room_nid, base_nid, base, changes)

    def written(self, snap: NewSnapshot) -> None:
        """Called after the snapshot's transaction committed: cache its full map."""
        self._remember(snap.snapshot_nid, snap.full_map)

    def forget_planned(self, snap: NewSnapshot) -> None:
        self._chain.pop(snap.snapshot_nid, None)

    def state_key_nid_txn(self, txn: Txn, key: StateKey) -> int:
        nid = self._state_key_nids.get(key)
        if nid is not None:
            return nid
        row = txn.query_one("SELECT state_key_nid FROM state_keys WHERE type = ? AND state_key = ?", key)
        if row is None:
            nid = self._next_state_key_nid
            self._next_state_key_nid += 1
            txn.execute("INSERT INTO state_keys (state_key_nid, type, state_key) VALUES (?, ?, ?)", (nid, *key))
        else:
            nid = row[0]
        # Safe to cache before commit: a failed transaction's nid is simply never used again.
        self._state_key_nids[key] = nid
        return nid

    def write_txn(self, txn: Txn, snap: NewSnapshot, event_nids: dict[str, int]) -> None:
        """Write ``snap``; ``event_nids`` maps event IDs to nids (missing ones are looked up)."""
        txn.execute(
            "INSERT INTO state_snapshots (snapshot_nid, room_nid, parent_nid, chain_length) VALUES (?, ?, ?, ?)",
            (snap.snapshot_nid, snap.room_nid, snap.parent_nid, snap.chain_length),
        )
        missing = [e for e in snap.entries.values() if e not in event_nids]
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for event_id, nid in txn.query(f"SELECT event_id, event_nid FROM events WHERE event_id IN ({marks})", chunk):
                event_nids[event_id] = nid
        rows: list[Any] = []
        for key, event_id in snap.entries.items():
            if event_id in event_nids:
                rows.append((snap.snapshot_nid, self.state_key_nid_txn(txn, key), event_nids[event_id]))
        txn.executemany(
            "INSERT INTO state_snapshot_entries (snapshot_nid, state_key_nid, event_nid) VALUES (?, ?, ?)", rows
        )

    def invalidate_planned(self) -> None:
        """After a failed write: forget chain lengths of snapshots that may not exist."""
        self._chain = {k: v for k, v in self._chain.items() if k in self._cache}


