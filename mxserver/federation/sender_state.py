"""The sender's per-destination state and its transactions (see :mod:`mxserver.federation.sender`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.model import Event


@attrs.define(eq=False)
class Transaction:
    """One transaction: built once, sent (and resent after a failure) as it is."""

    txn_id: str
    pdus: list[dict[str, Any]]
    edus: list[dict[str, Any]]
    #: the highest room-stream position among its PDUs (0 without PDUs)
    stream: int
    origin_server_ts: int
    #: the persisted EDUs it carries (deleted from the store once it succeeds)
    outbox: list[int] = attrs.field(factory=list)


@attrs.define(eq=False)
class Destination:
    """Everything the sender knows about one destination."""

    name: str
    pdus: list[Event] = attrs.field(factory=list)
    #: (edu_type, key) -> EDU; unkeyed EDUs get a unique key
    edus: OrderedDict[Hashable, dict[str, Any]] = attrs.field(factory=OrderedDict)
    in_flight: Transaction | None = None
    #: the loop is running (sending, or reading the store for a catch-up)
    running: bool = False
    #: a transaction that failed, to send again as it was
    retry: Transaction | None = None
    failure_ts: int | None = None
    retry_last_ts: int | None = None
    retry_interval: int = 0
    last_success_ts: int | None = None
    last_stream: int = 0
    #: PDUs were not kept: send the latest event of each room it missed first
    catching_up: bool = False
    #: some persisted EDUs are only in the store (queue overflow, restart): read them back
    outbox_in_store: bool = False
    #: the highest persisted EDU put in a transaction
    outbox_after: int = 0
    timer: Any = None
    #: the backoff timer fired: one attempt may go ahead although the backoff is still set
    retry_allowed: bool = False
    txn_counter: int = 0
    #: why the last attempt failed (for the admin API)
    last_error: str | None = None
    request: Deferred[Any] | None = None

    @property
    def next_retry_ts(self) -> int | None:
        if self.retry_interval <= 0 or self.retry_last_ts is None:
            return None
        return self.retry_last_ts + self.retry_interval

    def status(self) -> dict[str, Any]:
        """The admin API's view of this destination (times in ms since the epoch)."""
        in_flight = self.in_flight
        return {
            "destination": self.name,
            "pending_pdus": len(self.pdus),
            "pending_edus": len(self.edus),
            "in_flight": None
            if in_flight is None
            else {"txn_id": in_flight.txn_id, "pdus": len(in_flight.pdus), "edus": len(in_flight.edus)},
            "catching_up": self.catching_up,
            "persisted_edus_in_store": self.outbox_in_store,
            "backing_off": self.retry_interval > 0,
            "retry_interval_ms": self.retry_interval,
            "failure_ts": self.failure_ts,
            "next_retry_ts": self.next_retry_ts,
            "last_success_ts": self.last_success_ts,
            "last_successful_stream": self.last_stream,
            "last_error": self.last_error,
        }
