"""SQL for the outbound federation sender: per-destination backoff and catch-up positions.

Tables ``federation_destinations`` and ``federation_destination_rooms``
(schema 0014). The sender keeps everything else (queued PDUs and EDUs, the
transaction in flight) in memory; what is stored here is just enough that a
restart neither hammers a dead server nor forgets that a server missed events.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from mxserver.storage.database import Database, Txn

log = Logger()


@attrs.define
class DestinationRow:
    """The stored state of one destination."""

    destination: str
    failure_ts: int | None = None
    retry_last_ts: int | None = None
    retry_interval: int = 0
    last_success_ts: int | None = None
    last_successful_stream: int = 0


@attrs.frozen
class QueuedRoom:
    """The latest of our events queued for a destination in a room."""

    destination: str
    room_id: str
    stream_ordering: int
    event_id: str


class FederationSenderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load_destinations(self) -> Deferred[list[DestinationRow]]:
        def txn(t: Txn) -> list[DestinationRow]:
            rows = t.query(
                "SELECT destination, failure_ts, retry_last_ts, retry_interval, last_success_ts, last_successful_stream"
                " FROM federation_destinations"
            )
            return [DestinationRow(r[0], r[1], r[2], int(r[3] or 0), r[4], int(r[5] or 0)) for r in rows]

        return self.db.run_read("federation_load_destinations", txn)

    def destinations_behind(self) -> Deferred[set[str]]:
        """Destinations with a room whose latest queued event is past their last delivered position."""

        def txn(t: Txn) -> set[str]:
            rows = t.query(
                "SELECT DISTINCT r.destination FROM federation_destination_rooms r"
                " LEFT JOIN federation_destinations d ON d.destination = r.destination"
                " WHERE r.stream_ordering > COALESCE(d.last_successful_stream, 0)"
            )
            return {r[0] for r in rows}

        return self.db.run_read("federation_destinations_behind", txn)

    def rooms_behind(self, destination: str, after_stream: int, limit: int) -> Deferred[list[QueuedRoom]]:
        """Up to ``limit`` rooms whose latest event queued for ``destination`` is after ``after_stream``,
        oldest first."""

        def txn(t: Txn) -> list[QueuedRoom]:
            rows = t.query(
                "SELECT room_id, stream_ordering, event_id FROM federation_destination_rooms"
                " WHERE destination = ? AND stream_ordering > ? ORDER BY stream_ordering LIMIT ?",
                (destination, after_stream, limit),
            )
            return [QueuedRoom(destination, r[0], int(r[1]), r[2]) for r in rows]

        return self.db.run_read("federation_rooms_behind", txn)

    def record_queued(self, rows: Sequence[QueuedRoom]) -> Deferred[None]:
        """Remember the latest event queued per (destination, room); a position only moves forward."""

        def txn(t: Txn) -> None:
            t.executemany(
                "INSERT INTO federation_destination_rooms (destination, room_id, stream_ordering, event_id)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination, room_id) DO UPDATE SET"
                " stream_ordering = excluded.stream_ordering, event_id = excluded.event_id"
                " WHERE excluded.stream_ordering > federation_destination_rooms.stream_ordering",
                [(r.destination, r.room_id, r.stream_ordering, r.event_id) for r in rows],
            )

        return self.db.run_interaction("federation_record_queued", txn)

    def set_backoff(self, destination: str, failure_ts: int, retry_last_ts: int, retry_interval: int) -> Deferred[None]:
        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO federation_destinations (destination, failure_ts, retry_last_ts, retry_interval)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET failure_ts = excluded.failure_ts,"
                " retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval",
                (destination, failure_ts, retry_last_ts, retry_interval),
            )

        return self.db.run_interaction("federation_set_backoff", txn)

    def clear_backoff(self, destination: str) -> Deferred[None]:
        """An admin reset the destination's backoff: no failure on record, no wait."""
        return self.db.execute(
            "federation_clear_backoff",
            "UPDATE federation_destinations SET failure_ts = NULL, retry_last_ts = NULL, retry_interval = 0"
            " WHERE destination = ?",
            destination,
        )

    def destination_rooms(
        self, destination: str, start: int, limit: int, backwards: bool
    ) -> Deferred[tuple[list[tuple[str, int]], int]]:
        """A page of the rooms whose events were queued for ``destination`` (by room ID; ``start``
        an offset): ``(room ID, stream position of its latest event queued there)``, and how
        many there are in all."""

        def txn(t: Txn) -> tuple[list[tuple[str, int]], int]:
            row = t.query_one("SELECT COUNT(*) FROM federation_destination_rooms WHERE destination = ?", (destination,))
            order = "DESC" if backwards else "ASC"
            rows = t.query(
                "SELECT room_id, stream_ordering FROM federation_destination_rooms WHERE destination = ?"
                f" ORDER BY room_id {order} LIMIT ? OFFSET ?",
                (destination, limit, start),
            )
            return [(str(r[0]), int(r[1])) for r in rows], int(row[0]) if row else 0

        return self.db.run_read("federation_destination_rooms_page", txn)

    def set_success(self, destination: str, now_ms: int, stream: int) -> Deferred[None]:
        """A transaction succeeded: no backoff; everything up to ``stream`` was delivered."""

        def txn(t: Txn) -> None:
            t.execute(
                "INSERT INTO federation_destinations"
                " (destination, failure_ts, retry_last_ts, retry_interval, last_success_ts, last_successful_stream)"
                " VALUES (?, NULL, NULL, 0, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                " failure_ts = NULL, retry_last_ts = NULL, retry_interval = 0,"
                " last_success_ts = excluded.last_success_ts,"
                " last_successful_stream = CASE"
                " WHEN excluded.last_successful_stream > federation_destinations.last_successful_stream"
                " THEN excluded.last_successful_stream ELSE federation_destinations.last_successful_stream END",
                (destination, now_ms, stream),
            )

        return self.db.run_interaction("federation_set_success", txn)

    # -- the outbox of persisted EDUs --------------------------------------------------------------

    def add_outbox(self, destination: str, seq: int, edu_type: str, content: Any, now_ms: int) -> Deferred[None]:
        return self.db.execute(
            "federation_add_outbox",
            "INSERT INTO federation_outbox (destination, seq, edu_type, content, created_ts) VALUES (?, ?, ?, ?, ?)",
            destination,
            seq,
            edu_type,
            json.dumps(content, ensure_ascii=False),
            now_ms,
        )

    def outbox_after(self, destination: str, after_seq: int, limit: int) -> Deferred[list[tuple[int, dict[str, Any]]]]:
        """Up to ``limit`` stored EDUs for ``destination`` after ``after_seq``, oldest first: (seq, EDU)."""

        def txn(t: Txn) -> list[tuple[int, dict[str, Any]]]:
            rows = t.query(
                "SELECT seq, edu_type, content FROM federation_outbox WHERE destination = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (destination, after_seq, limit),
            )
            return [(int(r[0]), {"edu_type": r[1], "content": json.loads(r[2])}) for r in rows]

        return self.db.run_read("federation_outbox_after", txn)

    def delete_outbox(self, destination: str, seqs: Sequence[int]) -> Deferred[None]:
        def txn(t: Txn) -> None:
            t.executemany(
                "DELETE FROM federation_outbox WHERE destination = ? AND seq = ?", [(destination, s) for s in seqs]
            )

        return self.db.run_interaction("federation_delete_outbox", txn)

    def outbox_state(self) -> Deferred[tuple[int, set[str]]]:
        """The highest outbox sequence number in use, and the destinations with stored EDUs."""

        def txn(t: Txn) -> tuple[int, set[str]]:
            row = t.query_one("SELECT MAX(seq) FROM federation_outbox")
            names = {r[0] for r in t.query("SELECT DISTINCT destination FROM federation_outbox")}
            return (int(row[0]) if row and row[0] is not None else 0), names

        return self.db.run_read("federation_outbox_state", txn)


class OrderedWrites:
    """Runs writes one at a time, in the order given.

    The sender's catch-up positions must land in order (a destination's
    delivered position must not overtake the rooms queued before it), and on
    Postgres two interactions may otherwise commit in either order.
    """

    def __init__(self) -> None:
        self._queue: list[Callable[[], Awaitable[Any]]] = []
        self._running = False
        self._queued = 0
        self._done = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def write(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._queued += 1
        self._queue.append(fn)
        if not self._running:
            self._running = True
            ensureDeferred(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                fn = self._queue.pop(0)
                try:
                    await fn()
                except Exception:
                    log.failure("federation sender: a store write failed")
                self._done += 1
                ready = [w for w in self._waiters if w[0] <= self._done]
                if ready:
                    self._waiters = [w for w in self._waiters if w[0] > self._done]
                    for _, d in ready:
                        d.callback(None)
        finally:
            self._running = False

    def flush(self) -> Deferred[None]:
        """Fires once every write queued so far has finished (later ones are not waited for)."""
        if self._done >= self._queued:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((self._queued, d))
        return d
