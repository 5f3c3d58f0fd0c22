"""The writer's side of replication: after each commit, hints on the bus for the sync workers.

:class:`ReplicationPublisher` subscribes to the writer's local streams like any reader (no writer
calls it). What one reactor turn produced goes out as one hint (or a few, each under the bus's
payload limit)::

    {"p": {"room": 12, "push": 12, "receipts": 3, "account_data": 7, "to_device": 2, "device_lists": 5},
     "r": [{"s": "typing", "p": 4, "room": "!r:hs", "users": ["@a:hs"]}, ...]}

``p`` holds every followed stream's committed position (so any hint tells a worker how far to
catch up from the database); ``r`` the change records: whom a change wakes, typing and presence
(which live in the writer's memory, not the database) and cache invalidations. A record too big
for one hint is dropped: the worker catches up from ``p`` and wakes every long-poll.

It also serves what workers ask of the writer (channel :data:`~mxserver.replication.bus.TO_MAIN`):
a ``/sync`` on a worker marks its user online; a worker's ``/sync`` waits for the push reader; a
worker starting (or back on the bus) asks for the typing and presence this process holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.replication.bus import MAX_PAYLOAD, TO_MAIN, TO_WORKERS, IReplicationBus, JsonDict, encode
from mxserver.streams import (
    AccountDataChange,
    DeviceListChange,
    EphemeralStreams,
    Invalidation,
    Phase,
    PresenceChange,
    ReceiptChange,
    RoomEventStream,
    Stream,
    ToDeviceSent,
    TypingChange,
)

log = Logger()

#: a change record naming more users than this wakes by its stream's rule on the worker instead
MAX_WAKE_USERS = 100


class ReplicationPublisher:
    """Publishes the writer's committed positions and change records (see the module docstring).

    ``positions``: each followed stream's committed position (``room``, ``push`` and the
    per-user streams); ``presence_synced(user_id, set_presence)`` and ``push_wanted(position)``
    answer workers' requests.
    """

    def __init__(
        self,
        bus: IReplicationBus,
        room_stream: RoomEventStream,
        streams: EphemeralStreams,
        invalidations: Stream[Invalidation],
        positions: Mapping[str, Callable[[], int]],
        reactor: IReactorTime,
        presence_synced: Callable[[str, str | None], Any],
        push_wanted: Callable[[int], Any],
        typing_snapshot: Callable[[], Iterable[TypingChange]],
        presence_snapshot: Callable[[], Iterable[PresenceChange]],
    ) -> None:
        self._bus = bus
        self._positions = positions
        self._reactor = reactor
        self._presence_synced = presence_synced
        self._push_wanted = push_wanted
        self._typing_snapshot = typing_snapshot
        self._presence_snapshot = presence_snapshot
        self._records: list[JsonDict] = []
        self._flush_call: IDelayedCall | None = None
        #: the positions of the last hint (a hint that would say nothing new is not sent)
        self._last: dict[str, int] = {}
        #: the highest push-reader position a worker waits for
        self._push_asked = 0
        #: per-user streams: the position of the last change record made (what a hint's ``p``
        #: says for them: a position committed but whose change is not yet published would make
        #: workers wake every long-poll for a change that is about to come with its record)
        self._announced: dict[str, int] = {}
        # After the caches (READERS): a hint goes out in a later reactor turn anyway.
        room_stream.subscribe(self._on_room_events, Phase.READERS)
        streams.typing.subscribe(self._on_typing)
        streams.receipts.subscribe(self._on_receipt)
        streams.presence.subscribe(self._on_presence)
        streams.to_device.subscribe(self._on_to_device)
        streams.device_lists.subscribe(self._on_device_lists)
        streams.account_data.subscribe(self._on_account_data)
        invalidations.subscribe(self._on_invalidation)
        bus.subscribe(TO_MAIN, self._from_worker)

    def push_advanced(self, position: int) -> None:
        """The push reader read further (subscribe it to the reader's ``on_advanced``). Its
        position travels with every hint; on its own only when a worker waits for it (a worker
        asks): under load that is half the hints fewer."""
        if self._push_asked > self._last.get("push", 0):
            self._schedule()

    # -- the local streams -------------------------------------------------------------------------

    def _on_room_events(self, events: list[Event]) -> None:
        self._schedule()

    def _on_typing(self, change: TypingChange) -> None:
        if change.refreshed is None:
            self._add({"s": "typing", "p": change.position, "room": change.room_id, "users": sorted(change.typing_now)})

    def _on_receipt(self, change: ReceiptChange) -> None:
        self._add(
            {
                "s": "receipts",
                "p": self._announce("receipts"),
                "room": change.room_id,
                "type": change.receipt_type,
                "user": change.user_id,
                "event": change.event_id,
                "thread": change.thread_id,
                "ts": change.ts,
            }
        )

    def _on_presence(self, change: PresenceChange) -> None:
        self._add({"s": "presence", "p": change.position, "user": change.user_id, "state": dict(change.state)})

    def _on_to_device(self, change: ToDeviceSent) -> None:
        self._add(
            {
                "s": "to_device",
                "p": self._announce("to_device"),
                "sender": change.sender,
                "type": change.event_type,
                "users": sorted(change.local_recipients),
            }
        )

    def _on_device_lists(self, change: DeviceListChange) -> None:
        record: JsonDict = {"s": "device_lists", "p": self._announce("device_lists"), "user": change.user_id}
        if len(change.notify_users) <= MAX_WAKE_USERS:
            record["users"] = sorted(change.notify_users)
        self._add(record)

    def _on_account_data(self, change: AccountDataChange) -> None:
        self._add({"s": "account_data", "p": self._announce("account_data"), "user": change.user_id})

    def _on_invalidation(self, change: Invalidation) -> None:
        self._add({"s": "invalidate", "cache": change.cache, "keys": list(change.keys)})

    def _announce(self, stream: str) -> int:
        position = self._announced[stream] = self._positions[stream]()
        return position

    # -- hints ---------------------------------------------------------------------------------------

    def _add(self, record: JsonDict) -> None:
        self._records.append(record)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        positions = {name: self._announced.get(name) or current() for name, current in self._positions.items()}
        records, self._records = self._records, []
        if not records and positions == self._last:
            return
        self._last = positions
        base = len(encode({"p": positions, "r": []}).encode())
        batch: list[JsonDict] = []
        size = base
        for record in records:
            n = len(encode(record).encode()) + 1
            if base + n >= MAX_PAYLOAD:
                # Workers see the stream move without it in ``p`` and wake every long-poll.
                log.warn("replication: a {stream} record is too big for a hint; workers catch up without it", stream=record.get("s"))
                continue
            if size + n >= MAX_PAYLOAD:
                self._publish({"p": positions, "r": batch})
                batch, size = [], base
            batch.append(record)
            size += n
        self._publish({"p": positions, "r": batch})

    def _publish(self, hint: JsonDict) -> None:
        try:
            self._bus.publish(TO_WORKERS, hint)
        except Exception:
            log.failure("replication: publishing a hint failed")

    # -- what workers ask -------------------------------------------------------------------------------

    def _from_worker(self, hint: JsonDict) -> None:
        kind = hint.get("k")
        if kind == "synced" and isinstance(hint.get("user"), str):
            set_presence = hint.get("set_presence")
            self._presence_synced(hint["user"], set_presence if isinstance(set_presence, str) else None)
        elif kind == "push" and isinstance(hint.get("p"), int):
            self._push_asked = max(self._push_asked, hint["p"])
            self._push_wanted(hint["p"])
            self._schedule()  # the reader may be there already
        elif kind == "snapshot":
            # A worker (re)started: typing and presence live in this process's memory only.
            for typing in self._typing_snapshot():
                self._on_typing(typing)
            for presence in self._presence_snapshot():
                self._on_presence(presence)
            self._schedule()
