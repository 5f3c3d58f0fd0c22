"""The sender's per-destination state and its transactions (see :mod:`mxserver.federation.sender`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import attrs

from mxserver.delivery.destinations import DestinationState
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
class Destination(DestinationState):
    """Everything the sender knows about one destination (backoff and loop state: the base)."""

    pdus: list[Event] = attrs.field(factory=list)
    #: (edu_type, key) -> EDU; unkeyed EDUs get a unique key
    edus: OrderedDict[Hashable, dict[str, Any]] = attrs.field(factory=OrderedDict)
    in_flight: Transaction | None = None
    #: a transaction that failed, to send again as it was
    retry: Transaction | None = None
    last_stream: int = 0
    #: PDUs were not kept: send the latest event of each room it missed first
    catching_up: bool = False
    #: some persisted EDUs are only in the store (queue overflow, restart): read them back
    outbox_in_store: bool = False
    #: the highest persisted EDU put in a transaction
    outbox_after: int = 0
    txn_counter: int = 0

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
