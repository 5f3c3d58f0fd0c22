"""SQL for rooms and events: reading events, and persisting batches of them.

Persisting is one transaction per batch: events, DAG edges, state snapshots,
current state, memberships, forward extremities, client transaction IDs, the
relationship index and the search index's changes all commit together or not at all
(but the search index rows of new live events: the search indexer, a reader of the
stream, writes those).
Only the room server calls the write side (DESIGN.md: the room server is the
only writer of room state).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.model import Event, EventMetadata, client_txn_id
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxserver.storage.database import Database, Txn
from mxserver.storage.relations import relation_redacted_txn, write_relation_txn
from mxserver.storage.search import unindex_redacted_txn, write_search_txn
from mxserver.storage.state import NewSnapshot, StateKey, StateStore
from mxserver.streams import Stream


@attrs.frozen
class RoomRecord:
    room_nid: int
    room_id: str
    room_version: RoomVersion
    creator: str


@attrs.define
class PersistItem:
    """One event and everything that changes with it, planned by the room server."""

    event: Event
    room: RoomRecord
    event_nid: int
    stream_ordering: int | None
    state_before: int | None
    state_after: int | None
    snapshot: NewSnapshot | None = None
    replaces_state: str | None = None
    #: current-state changes (key -> event ID) when the event changes the room's state
    current_state_delta: dict[StateKey, str] | None = None
    #: keys that leave the current state (only after a state resolution)
    current_state_removed: Sequence[StateKey] = ()
    #: the room's current-state snapshot after the event when it differs from ``state_after``
    #: (a received event that forked the DAG: the resolved state of all forward extremities)
    current_state_after: int | None = None
    #: snapshots to write besides ``snapshot`` (a resolved state before or after a received event)
    extra_snapshots: Sequence[NewSnapshot] = ()
    extremities_removed: Sequence[str] = ()
    extremities_added: Sequence[str] = ()
    txn_key: tuple[str, str, str] | None = None
    new_room: bool = False
    #: a membership event of a room this server is not in (a remote invite, its rejection, a
    #: knock through another server): only the member's ``room_memberships`` row changes
    out_of_band_membership: bool = False
    #: for an accepted m.room.redaction: whether it redacts its target (rooms v3+ "Handling
    #: redactions": only if its sender may; never an event of another room). A target not
    #: stored yet is marked when it is, by whoever stores it (backfill checks again).
    applies_redaction: bool = True


@attrs.frozen
class StoredEventInfo:
    """Where a persisted event sits: its room, stream position, state snapshots and verdicts."""

    room_nid: int
    #: None for an outlier (not in the timeline) or a rejected event
    stream_ordering: int | None
    #: the state snapshots before and after the event
    state_before: int | None
    state_after: int | None
    #: the room's resolved current state after the event, when it differs from ``state_after``
    current_state_after: int | None
    replaces_state: str | None
    rejected_reason: str | None
    soft_failed: bool
    outlier: bool


def encode_pdu(event: Event) -> str:
    return json.dumps(event.get_pdu_json(), ensure_ascii=False, separators=(",", ":"))


class EventStore:
    """Events and rooms: cached reads, batched writes."""

    #: parsed events kept in memory (recent timelines and hot state events)
    CACHE_SIZE = 2_000

    def __init__(self, db: Database, state: StateStore) -> None:
        self.db = db
        self.state = state
        self._cache: OrderedDict[str, Event] = OrderedDict()
        self._rooms_by_id: dict[str, RoomRecord] = {}
        self._rooms_by_nid: dict[int, RoomRecord] = {}
        # The store hands out its own IDs from in-memory counters, loaded once at start-up: the
        # room server plans a batch synchronously under the room lock, so allocating must not
        # cost a database round trip. An ID taken by a write that then fails is never reused.
        self.next_event_nid = 1
        self.next_room_nid = 1
        self._next_stream = 1
        #: the highest stream position persisted (all before it are persisted too)
        self.max_stream = 0
        self.min_stream = 0
        #: after a commit that changed the children of some parents (relationships indexed,
        #: children redacted): those parents' IDs; None when any may have (events purged)
        self.relation_changes: Stream[frozenset[str] | None] = Stream("relation_changes")

    async def load_counters(self) -> None:
        def txn(t: Txn) -> None:
            def scalar(sql: str) -> int:
                row = t.query_one(sql)
                return (row[0] if row else None) or 0

            self.next_event_nid = scalar("SELECT MAX(event_nid) FROM events") + 1
            self.next_room_nid = scalar("SELECT MAX(room_nid) FROM rooms") + 1
            # A purge (admin API) may have removed the events at the top of the stream: positions
            # never go back below one already handed out.
            self.max_stream = max(
                scalar("SELECT MAX(stream_ordering) FROM events"),
                scalar("SELECT position FROM stream_positions WHERE stream = 'purged_room_events'"),
            )
            self._next_stream = self.max_stream + 1
            self.min_stream = min(0, scalar("SELECT MIN(stream_ordering) FROM events"))
            self.state.load_counters_txn(t)

        await self.db.run_read("load_event_counters", txn)

    def allocate_ids(self, stream: bool = True) -> tuple[int, int | None]:
        """``(event NID, stream position)`` for a new event; the position is None for an event
        that does not go on the room stream (``stream=False``: outliers, rejected and soft-failed
        events). Positions are handed out in order, so a batch persisted in planning order
        publishes in stream order."""
        nid = self.next_event_nid
        self.next_event_nid += 1
        if not stream:
            return nid, None
        position = self._next_stream
        self._next_stream += 1
        return nid, position

    def allocate_room_nid(self) -> int:
        """The NID for a room new to this server."""
        nid = self.next_room_nid
        self.next_room_nid += 1
        return nid

    # -- rooms -------------------------------------------------------------------------

    async def get_room(self, room_id: str) -> RoomRecord | None:
        room = self._rooms_by_id.get(room_id)
        if room is not None:
            return room
        row = await self.db.select_one(
            "get_room", "SELECT room_nid, room_id, room_version, creator FROM rooms WHERE room_id = ?", room_id
        )
        return self._room_from_row(row) if row else None

    async def get_room_by_nid(self, room_nid: int) -> RoomRecord | None:
        room = self._rooms_by_nid.get(room_nid)
        if room is not None:
            return room
        row = await self.db.select_one(
            "get_room_by_nid", "SELECT room_nid, room_id, room_version, creator FROM rooms WHERE room_nid = ?", room_nid
        )
        return self._room_from_row(row) if row else None

    def _room_from_row(self, row: Sequence[Any]) -> RoomRecord:
        room = RoomRecord(row[0], row[1], KNOWN_ROOM_VERSIONS[row[2]], row[3])
        self._rooms_by_id[room.room_id] = room
        self._rooms_by_nid[room.room_nid] = room
        return room

    def remember_room(self, room: RoomRecord) -> None:
        self._rooms_by_id[room.room_id] = room
        self._rooms_by_nid[room.room_nid] = room

    def forget_room(self, room_id: str) -> None:
        """Drop a purged room from memory: its record and its cached events."""
        room = self._rooms_by_id.pop(room_id, None)
        if room is not None:
            self._rooms_by_nid.pop(room.room_nid, None)
        self.evict_room_events(room_id)

    def evict_room_events(self, room_id: str) -> None:
        """Drop the room's events from the cache (some were purged; the others reload)."""
        for event_id in [e for e, ev in self._cache.items() if ev.room_id == room_id]:
            del self._cache[event_id]
        # ... and what was cached of their relationships
        self.relation_changes.publish(None)

    def relations_changed_after(self, txn: Txn, parents: Collection[str]) -> None:
        """Once ``txn`` has committed, tell :attr:`relation_changes` that the children of
        ``parents`` changed."""
        if parents:
            changed = frozenset(parents)
            txn.call_after(lambda: self.relation_changes.publish(changed))

    # -- reading events ---------------------------------------------------------------------

    _EVENT_COLUMNS = (
        "e.event_id, e.json, e.room_nid, e.stream_ordering, e.rejected_reason, e.soft_failed, e.outlier,"
        " e.redacted_by, e.replaces_state, e.state_before, e.state_after, e.txn_id, e.txn_device"
    )

    def timeline_event_ids_after(self, position: int, upto: int, limit: int) -> Deferred[list[str]]:
        """IDs of the accepted timeline events in ``(position, upto]``, in stream order, at most
        ``limit`` (a reader of the room event stream catching up)."""

        def txn(t: Txn) -> list[str]:
            rows = t.query(
                "SELECT event_id FROM events WHERE stream_ordering > ? AND stream_ordering <= ?"
                " AND rejected_reason IS NULL AND soft_failed = ? ORDER BY stream_ordering LIMIT ?",
                (position, upto, False, limit),
            )
            return [r[0] for r in rows]

        return self.db.run_read("reader_catch_up_events", txn)

    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]:
        """The events we have among ``event_ids`` (missing ones are absent from the result)."""
        found: dict[str, Event] = {}
        missing: list[str] = []
        for event_id in event_ids:
            ev = self._cache.get(event_id)
            if ev is not None:
                found[event_id] = ev
            elif event_id not in found:
                missing.append(event_id)
        if missing:
            rows = await self.db.run_read("get_events", self._get_events_txn, missing)
            for row in rows:
                ev = await self._event_from_row(row)
                found[ev.event_id] = ev
        if not include_rejected:
            found = {k: v for k, v in found.items() if not v.rejected}
        return found

    #: the columns :meth:`events_from_rows` expects, for queries of other stores (alias ``e``)
    EVENT_COLUMNS = _EVENT_COLUMNS

    async def events_from_rows(self, rows: Sequence[Sequence[Any]]) -> list[Event]:
        """The events of rows selected as :attr:`EVENT_COLUMNS`, in row order (cached ones reused)."""
        out = []
        for row in rows:
            ev = self._cache.get(row[0])
            out.append(ev if ev is not None else await self._event_from_row(row))
        return out

    async def get_event(self, event_id: str) -> Event | None:
        return (await self.get_events([event_id])).get(event_id)

    def _get_events_txn(self, txn: Txn, event_ids: list[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows += txn.query(f"SELECT {self._EVENT_COLUMNS} FROM events e WHERE e.event_id IN ({marks})", chunk)
        return rows

    async def _event_from_row(self, row: Sequence[Any]) -> Event:
        (event_id, raw, room_nid, stream, rejected, soft_failed, outlier, redacted_by, replaces, before, after, txn_id,
         txn_device) = row[:13]
        room = await self.get_room_by_nid(room_nid)
        assert room is not None, f"event {event_id} in unknown room {room_nid}"
        meta = EventMetadata(
            stream_ordering=stream,
            rejected_reason=rejected,
            soft_failed=bool(soft_failed),
            outlier=bool(outlier),
            redacted_by=redacted_by,
            replaces_state=replaces,
            state_before=before,
            state_after=after,
            txn_id=client_txn_id(txn_id) if txn_id is not None else None,
            device_id=txn_device,
        )
        ev = Event(json.loads(raw), room.room_version, event_id=event_id, metadata=meta)
        self._cache_event(ev)
        return ev

    def _cache_event(self, ev: Event) -> None:
        self._cache[ev.event_id] = ev
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)

    def invalidate_event(self, event_id: str) -> None:
        self._cache.pop(event_id, None)

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """The union of the auth chains of ``event_ids`` (their auth events, those events' auth
        events, and so on), as far as we have the events.

        Walks the chain one generation at a time: each generation is one batched read for the
        events not in the cache, so the cost is the chain's depth in round trips, not its size.
        """
        chain: set[str] = set()
        frontier = list(dict.fromkeys(event_ids))
        while frontier:
            events = await self.get_events(frontier)
            next_frontier: list[str] = []
            for event_id in frontier:
                ev = events.get(event_id)
                if ev is None:
                    continue
                for auth_id in ev.auth_event_ids:
                    if auth_id not in chain:
                        chain.add(auth_id)
                        next_frontier.append(auth_id)
            frontier = next_frontier
        return chain

    async def get_event_info(self, event_id: str) -> StoredEventInfo | None:
        """Where a persisted event sits (None if it is not stored)."""
        row = await self.db.select_one(
            "get_event_info",
            "SELECT room_nid, stream_ordering, state_before, state_after, current_state_after, replaces_state,"
            " rejected_reason, soft_failed, outlier FROM events WHERE event_id = ?",
            event_id,
        )
        if row is None:
            return None
        nid, stream, before, after, current_after, replaces, rejected, soft_failed, outlier = row
        return StoredEventInfo(
            nid, stream, before, after, current_after, replaces, rejected, bool(soft_failed), bool(outlier)
        )

    async def get_forward_extremities(self, room_nid: int) -> list[str]:
        rows = await self.db.select(
            "get_forward_extremities", "SELECT event_id FROM forward_extremities WHERE room_nid = ?", room_nid
        )
        return [r[0] for r in rows]

    async def get_room_head(self, room_nid: int) -> tuple[list[str], int, int | None]:
        """``(forward extremities, max depth, state snapshot after the latest event)``."""

        def txn(t: Txn) -> tuple[list[str], int, int | None]:
            extremities = [r[0] for r in t.query("SELECT event_id FROM forward_extremities WHERE room_nid = ?", (room_nid,))]
            # Rejected and soft-failed events are never prev events of ours: their depth does not count.
            depth = t.query_one(
                "SELECT MAX(depth) FROM events WHERE room_nid = ? AND stream_ordering IS NOT NULL"
                " AND rejected_reason IS NULL AND soft_failed = ?",
                (room_nid, False),
            )
            snap = t.query_one(
                "SELECT COALESCE(current_state_after, state_after) FROM events WHERE room_nid = ?"
                " AND stream_ordering IS NOT NULL AND rejected_reason IS NULL AND soft_failed = ?"
                " ORDER BY stream_ordering DESC LIMIT 1",
                (room_nid, False),
            )
            return extremities, (depth[0] or 0) if depth else 0, snap[0] if snap else None

        return await self.db.run_read("get_room_head", txn)

    async def get_device_txns(self, user_id: str, device_id: str, since_ms: int) -> dict[str, str]:
        """A device's transaction IDs (txn ID -> event ID) created since ``since_ms``."""
        rows = await self.db.select(
            "get_device_txns",
            "SELECT txn_id, event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND created_ts >= ?",
            user_id,
            device_id,
            since_ms,
        )
        return {r[0]: r[1] for r in rows}

    # -- writing -------------------------------------------------------------------------------

    def persist(self, items: list[PersistItem], now_ms: int) -> Deferred[None]:
        return self.db.run_interaction("persist_events", self._persist_txn, items, now_ms)

    def _persist_txn(self, txn: Txn, items: list[PersistItem], now_ms: int) -> None:
        event_nids = {item.event.event_id: item.event_nid for item in items}
        # The events of this batch, for _update_current_state_txn: a join over federation
        # persists the whole state as outliers with the join, and reading each member event's
        # JSON back from the table (they are cached only after commit) cost a query per member.
        batch = {item.event.event_id: item.event for item in items}
        #: parents whose children this transaction changes
        parents: set[str] = set()
        for item in items:
            ev = item.event
            room = item.room
            if item.new_room:
                txn.execute(
                    "INSERT INTO rooms (room_nid, room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?, ?)",
                    (room.room_nid, room.room_id, room.room_version.identifier, room.creator, now_ms),
                )
            meta = ev.metadata
            txn.execute(
                "INSERT INTO events (event_nid, event_id, room_nid, stream_ordering, depth, type, state_key, sender,"
                " origin_server_ts, state_before, state_after, replaces_state, outlier, soft_failed, rejected_reason,"
                " current_state_after, json, txn_id, txn_device)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.event_nid,
                    ev.event_id,
                    room.room_nid,
                    item.stream_ordering,
                    ev.depth,
                    ev.type,
                    ev.state_key,
                    ev.sender,
                    ev.origin_server_ts,
                    item.state_before,
                    item.state_after,
                    item.replaces_state,
                    meta.outlier,
                    meta.soft_failed,
                    meta.rejected_reason,
                    item.current_state_after,
                    encode_pdu(ev),
                    item.txn_key[2] if item.txn_key is not None else None,
                    item.txn_key[1] if item.txn_key is not None else None,
                ),
            )
            txn.executemany(
                "INSERT INTO event_edges (event_nid, prev_event_id) VALUES (?, ?)",
                [(item.event_nid, p) for p in dict.fromkeys(ev.prev_event_ids)],
            )
            if item.stream_ordering is not None and meta.rejected_reason is None and not meta.soft_failed:
                # Only timeline events are related children (outliers are not in the timeline).
                relation = write_relation_txn(
                    txn, ev.event_id, room.room_nid, ev.type, ev.sender, ev.content, item.stream_ordering
                )
                if relation is not None:
                    parents.add(relation.parent_id)
                if item.stream_ordering < 0:
                    # Backfilled history is not published on the stream the search indexer reads.
                    write_search_txn(txn, item.stream_ordering, room.room_nid, ev.type, ev.content)
            if item.snapshot is not None:
                self.state.write_txn(txn, item.snapshot, event_nids)
            for snap in item.extra_snapshots:
                self.state.write_txn(txn, snap, event_nids)
            if item.current_state_delta:
                self._update_current_state_txn(txn, item, batch)
            for etype, state_key in item.current_state_removed:
                txn.execute(
                    "DELETE FROM current_state WHERE room_nid = ? AND type = ? AND state_key = ?",
                    (room.room_nid, etype, state_key),
                )
                if etype == "m.room.member":
                    txn.execute(
                        "DELETE FROM room_memberships WHERE user_id = ? AND room_nid = ?", (state_key, room.room_nid)
                    )
            for event_id in item.extremities_removed:
                txn.execute(
                    "DELETE FROM forward_extremities WHERE room_nid = ? AND event_id = ?", (room.room_nid, event_id)
                )
            for event_id in item.extremities_added:
                txn.execute(
                    "INSERT INTO forward_extremities (room_nid, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (room.room_nid, event_id),
                )
            if item.out_of_band_membership and ev.state_key is not None:
                txn.execute(
                    "INSERT INTO room_memberships (user_id, room_nid, membership, event_id, stream_ordering, forgotten)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, room_nid) DO UPDATE SET"
                    " membership = excluded.membership, event_id = excluded.event_id,"
                    " stream_ordering = excluded.stream_ordering, forgotten = excluded.forgotten",
                    (ev.state_key, room.room_nid, ev.membership or "leave", ev.event_id, item.stream_ordering or 0, False),
                )
            if item.txn_key is not None:
                txn.execute(
                    "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES (?, ?, ?, ?, ?)",
                    (*item.txn_key, ev.event_id, now_ms),
                )
            if (
                ev.type == "m.room.redaction"
                and meta.rejected_reason is None
                and not meta.soft_failed
                and item.applies_redaction
            ):
                target = ev.redacts
                if target:
                    # Only an event of the same room: a redaction cannot reach into another.
                    txn.execute(
                        "UPDATE events SET redacted_by = ? WHERE event_id = ? AND room_nid = ? AND redacted_by IS NULL",
                        (ev.event_id, target, room.room_nid),
                    )
                    if txn.rowcount:
                        if (parent := relation_redacted_txn(txn, target)) is not None:
                            parents.add(parent)
                        unindex_redacted_txn(txn, target)
        self.relations_changed_after(txn, parents)

    def _update_current_state_txn(self, txn: Txn, item: PersistItem, batch: Mapping[str, Event] | None = None) -> None:
        room_nid = item.room.room_nid
        assert item.current_state_delta is not None
        for (etype, state_key), event_id in item.current_state_delta.items():
            txn.execute(
                "INSERT INTO current_state (room_nid, type, state_key, event_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_id = excluded.event_id",
                (room_nid, etype, state_key, event_id),
            )
            if etype == "m.room.member":
                member = self._cache.get(event_id)
                if member is None and batch is not None:
                    member = batch.get(event_id)
                if member is None and event_id == item.event.event_id:
                    member = item.event
                membership = member.membership if member is not None else None
                if membership is None:
                    row = txn.query_one("SELECT json FROM events WHERE event_id = ?", (event_id,))
                    membership = json.loads(row[0]).get("content", {}).get("membership") if row else None
                txn.execute(
                    "INSERT INTO room_memberships (user_id, room_nid, membership, event_id, stream_ordering, forgotten)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, room_nid) DO UPDATE SET"
                    " membership = excluded.membership, event_id = excluded.event_id,"
                    " stream_ordering = excluded.stream_ordering, forgotten = excluded.forgotten",
                    (state_key, room_nid, membership or "leave", event_id, item.stream_ordering or 0, False),
                )

    def persisted(self, items: list[PersistItem]) -> None:
        """After commit: the new events are readable from the cache with their metadata."""
        for item in items:
            item.event.metadata.stream_ordering = item.stream_ordering
            item.event.metadata.replaces_state = item.replaces_state
            item.event.metadata.state_before = item.state_before
            item.event.metadata.state_after = item.state_after
            self._cache_event(item.event)
            if item.new_room:
                self.remember_room(item.room)
            if item.snapshot is not None:
                self.state.written(item.snapshot)
            for snap in item.extra_snapshots:
                self.state.written(snap)
            if item.event.type == "m.room.redaction" and item.event.redacts and item.applies_redaction:
                target = self._cache.get(item.event.redacts)
                if target is not None and target.room_id == item.event.room_id and target.metadata.redacted_by is None:
                    target.metadata.redacted_by = item.event.event_id
            if item.stream_ordering is not None:
                self.max_stream = max(self.max_stream, item.stream_ordering)

    def replicated(self, events: Sequence[Event], position: int) -> None:
        """Events another process (the cluster's writer) persisted up to ``position``, read back
        by a replication client: the stream's position moves, and an event a redaction among them
        targets is read again (whether it applied was the writer's decision)."""
        for event in events:
            if event.type == "m.room.redaction" and event.redacts:
                self._cache.pop(event.redacts, None)
        self.max_stream = max(self.max_stream, position)

    # -- membership reads -------------------------------------------------------------------

    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",)) -> list[str]:
        marks = ",".join("?" * len(memberships))
        rows = await self.db.select(
            "get_rooms_for_user",
            f"SELECT r.room_id FROM room_memberships m JOIN rooms r ON r.room_nid = m.room_nid"
            f" WHERE m.user_id = ? AND m.membership IN ({marks})",
            user_id,
            *memberships,
        )
        return [r[0] for r in rows]

    async def get_membership(self, user_id: str, room_nid: int) -> tuple[str, str, int] | None:
        """``(membership, event_id, stream_ordering)`` of a user in a room, if any."""
        return await self.db.select_one(
            "get_membership",
            "SELECT membership, event_id, stream_ordering FROM room_memberships WHERE user_id = ? AND room_nid = ?",
            user_id,
            room_nid,
        )
