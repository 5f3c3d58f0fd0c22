"""SQL for backfill: where a room's local history begins, and storing older events.

Backfilled events (server-server-api §Backfilling and retrieving missing
events) are history from before this server was in the room. They are
stored with *negative* stream positions, decreasing going back, so every
reader that orders by ``(room_nid, stream_ordering)`` (/messages, /context)
places them before everything else, while every reader that asks "what is
new since position N" (/sync, unread counts, the notifier; their tokens are
never negative) never sees them. They get their state snapshots like any
event, but never touch ``current_state``, ``room_memberships`` or
``forward_extremities``.

An event we held as an *outlier* (e.g. a state event from a send_join
response) that comes back in a backfill is given its place in the timeline
by an UPDATE instead of an INSERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from mxserver.storage.database import Database, Txn
from mxserver.storage.events import EventStore, PersistItem
from mxserver.storage.relations import place_relation_txn, relation_redacted_txn
from mxserver.storage.search import place_search_txn, unindex_redacted_txn
from mxserver.storage.state import NewSnapshot, StateStore

#: how many of a room's earliest timeline events are looked at for unknown prev events
EARLIEST_WINDOW = 50


@attrs.frozen
class BackwardExtremity:
    """A prev event we do not have (or only as an outlier), cited by one of the room's earliest events."""

    event_id: str
    #: the timeline event that cites it, and that event's sender
    cited_by: str
    cited_by_sender: str


@attrs.define
class TimelinePlacement:
    """An outlier we already store, placed in the timeline by a backfill."""

    event_id: str
    stream_ordering: int | None
    state_before: int | None
    state_after: int | None
    replaces_state: str | None
    rejected_reason: str | None


class BackfillStore:
    """Reads the start of a room's history; writes backfilled batches in one transaction."""

    def __init__(self, db: Database, events: EventStore, state: StateStore) -> None:
        self.db = db
        self.events = events
        self.state = state

    async def backward_extremities(self, room_nid: int, window: int = EARLIEST_WINDOW) -> list[BackwardExtremity]:
        """Prev events that we lack (or hold as outliers) of the start of the room's history: its
        first event in stream order (e.g. our join) and the backfilled events before it, at most
        ``window`` of the earliest. A gap *after* the start (events missed while unreachable) is
        not history's start and is not filled from here."""
        rows = await self.db.select(
            "backward_extremities",
            "SELECT ee.prev_event_id, e.event_id, e.sender FROM events e"
            " JOIN event_edges ee ON ee.event_nid = e.event_nid"
            " LEFT JOIN events p ON p.event_id = ee.prev_event_id"
            " WHERE e.event_nid IN ("
            "   SELECT event_nid FROM events WHERE room_nid = ? AND stream_ordering IS NOT NULL"
            "   AND stream_ordering <= COALESCE("
            "     (SELECT MIN(stream_ordering) FROM events WHERE room_nid = ? AND stream_ordering > 0), 0)"
            "   ORDER BY stream_ordering ASC LIMIT ?)"
            " AND (p.event_nid IS NULL OR p.outlier = ?)"
            " ORDER BY e.stream_ordering ASC",
            room_nid,
            room_nid,
            window,
            True,
        )
        seen: dict[str, BackwardExtremity] = {}
        for prev_id, child, sender in rows:
            seen.setdefault(prev_id, BackwardExtremity(prev_id, child, sender))
        return list(seen.values())

    async def earliest_state_before(self, room_nid: int) -> int | None:
        """The state snapshot before the room's earliest timeline event."""
        row = await self.db.select_one(
            "earliest_state_before",
            "SELECT state_before FROM events WHERE room_nid = ? AND stream_ordering IS NOT NULL"
            " ORDER BY stream_ordering ASC LIMIT 1",
            room_nid,
        )
        return row[0] if row else None

    async def redactions_in_room(self, room_nid: int) -> list[Any]:
        """The room's accepted redaction events (few, next to its messages): those that arrived
        before the events they redact are applied when those are backfilled."""
        rows = await self.db.select(
            "backfill_redactions",
            f"SELECT {EventStore.EVENT_COLUMNS} FROM events e WHERE e.room_nid = ? AND e.type = ?"
            " AND e.rejected_reason IS NULL AND e.soft_failed = ? AND e.outlier = ?",
            room_nid,
            "m.room.redaction",
            False,
            False,
        )
        return await self.events.events_from_rows(rows)

    async def min_stream_ordering(self) -> int:
        row = await self.db.select_one("min_stream_ordering", "SELECT MIN(stream_ordering) FROM events")
        return min(0, (row[0] if row else None) or 0)

    async def persist(
        self,
        inserts: Sequence[PersistItem],
        placements: Sequence[TimelinePlacement],
        snapshots: Sequence[NewSnapshot],
        now_ms: int,
        redactions: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write a backfilled batch: new events (outliers and timeline ones), outliers placed in the
        timeline, the state snapshots they need, and ``(event, redaction)`` marks for redactions
        that arrived before the events -- one transaction."""
        await self.db.run_interaction(
            "persist_backfill", self._persist_txn, inserts, placements, snapshots, now_ms, redactions
        )

    def _persist_txn(
        self,
        txn: Txn,
        inserts: Sequence[PersistItem],
        placements: Sequence[TimelinePlacement],
        snapshots: Sequence[NewSnapshot],
        now_ms: int,
        redactions: Sequence[tuple[str, str]],
    ) -> None:
        # The same rows the room server's persister writes for any event (events, DAG edges,
        # redaction marks); the items carry no current-state or extremity changes.
        self.events._persist_txn(txn, list(inserts), now_ms)
        parents: set[str] = set()
        for p in placements:
            txn.execute(
                "UPDATE events SET stream_ordering = ?, state_before = ?, state_after = ?, replaces_state = ?,"
                " rejected_reason = ?, outlier = ? WHERE event_id = ? AND outlier = ?",
                (p.stream_ordering, p.state_before, p.state_after, p.replaces_state, p.rejected_reason, False,
                 p.event_id, True),
            )
            if txn.rowcount:
                if (parent := place_relation_txn(txn, p.event_id)) is not None:
                    parents.add(parent)
                place_search_txn(txn, p.event_id)
        for event_id, redaction_id in redactions:
            txn.execute(
                "UPDATE events SET redacted_by = ? WHERE event_id = ? AND redacted_by IS NULL", (redaction_id, event_id)
            )
            if txn.rowcount:
                if (parent := relation_redacted_txn(txn, event_id)) is not None:
                    parents.add(parent)
                unindex_redacted_txn(txn, event_id)
        self.events.relations_changed_after(txn, parents)
        # Snapshots last: their entries may name any event of the batch.
        event_nids: dict[str, Any] = {i.event.event_id: i.event_nid for i in inserts}
        for snap in snapshots:
            self.state.write_txn(txn, snap, event_nids)
