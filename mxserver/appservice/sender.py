"""Sending each application service its queue, in transactions: one destination per service.

An application service is a destination of the shared mechanism
(:mod:`mxserver.delivery.destinations`, DESIGN.md §Destinations), like a federation server or a
pusher: one request in flight, exponential backoff with jitter persisted in its
``appservice_state`` row, a retry timer. What this module adds is the request:

- the **queue** is the service's rows in ``appservice_events`` and ``appservice_ephemeral``,
  filled by the reader (:mod:`mxserver.appservice.reader`) and read from the database a
  transaction at a time, so a long outage costs no memory and survives restarts;
- a **transaction** is the oldest rows (at most :data:`MAX_EVENTS_PER_TXN` events and
  :data:`MAX_EPHEMERAL_PER_TXN` ephemeral rows) under the next transaction ID, recorded as
  pending before it is sent (:meth:`~mxserver.storage.appservices.AppServiceStore.take_transaction`);
  it is sent as ``PUT /_matrix/app/v1/transactions/{txnId}`` and, whatever the failure (no
  answer, a timeout, any status but 2xx), sent again with the same ID and the same rows after
  the backoff, until the service answers 2xx (application-service-api §Pushing events: "Homeservers
  MUST NOT alter (e.g. add more) events they were going to send within that transaction ID on
  retries"). Only then do its rows leave the queue.

The backoff starts at :data:`MIN_RETRY_INTERVAL_MS` and doubles up to :data:`MAX_RETRY_INTERVAL_MS`
(Synapse's recoverer: 2 s to 512 s). Each service has its own loop: one service being down
delays no other, and neither sends nor /sync ever wait for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
from twisted.application import service as tservice
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver import metrics
from mxserver.appservice.api import AppServiceApi, RequestFailed
from mxserver.appservice.registration import AppService, ReloadResult
from mxserver.delivery.destinations import DeliveryLoops, DestinationState, RetryPolicy
from mxserver.events.model import Event
from mxserver.storage.appservices import TO_DEVICE, AppServiceStore, QueuedTransaction
from mxserver.storage.federation_sender import OrderedWrites

log = Logger()

MAX_EVENTS_PER_TXN = 100
MAX_EPHEMERAL_PER_TXN = 100
MIN_RETRY_INTERVAL_MS = 2_000
MAX_RETRY_INTERVAL_MS = 512_000
#: the transaction body's key for to-device messages (MSC4203, under the name Synapse sends)
TO_DEVICE_KEY = "de.sorunome.msc2409.to_device"


class EventSource(Protocol):
    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]: ...


class Serializer(Protocol):
    async def serialize(
        self, events: Sequence[Event], viewer: tuple[str, str | None] | None = None, include_room_id: bool = True
    ) -> list[dict[str, Any]]: ...


@attrs.define(eq=False)
class AppServiceDestination(DestinationState):
    """One application service as a destination."""

    service: AppService | None = None
    #: rows may wait in the queue
    pending: bool = True
    #: the transaction taken from the queue and not yet acknowledged (resent as it is)
    txn: QueuedTransaction | None = None
    #: rows queued and not yet acknowledged (the queue-length metric)
    queued: int = 0
    #: no longer registered (or no URL): its loop stops
    removed: bool = False

    def status(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "url": self.service.url if self.service is not None else None,
            "queued": self.queued,
            "pending_txn_id": str(self.txn.txn_id) if self.txn is not None else None,
            "retry_interval_ms": self.retry_interval,
            "next_retry_ts": self.next_retry_ts,
            "last_success_ts": self.last_success_ts,
            "last_error": self.last_error,
        }


class AppServiceSender(tservice.Service):
    """Every application service's deliveries (see the module docstring)."""

    def __init__(
        self,
        services: Callable[[], Sequence[AppService]],
        store: AppServiceStore,
        api: AppServiceApi,
        events: EventSource,
        serializer: Serializer,
        clock: IReactorTime,
    ) -> None:
        """``services``: the services with a URL, now."""
        self.setName("appservice_sender")
        self._services = services
        self._store = store
        self._api = api
        self._events = events
        self._serializer = serializer
        self._dests: dict[str, AppServiceDestination] = {}
        self._writes = OrderedWrites()
        self.loops: DeliveryLoops[AppServiceDestination] = DeliveryLoops(
            clock,
            RetryPolicy(MIN_RETRY_INTERVAL_MS, MAX_RETRY_INTERVAL_MS),
            lambda d: not d.removed and (d.pending or d.txn is not None),
            self._run,
            self,
            # A row queued while the loop was finishing (it had just found the queue empty)
            # still gets its transaction.
            on_stopped=lambda d: self.loops.kick(d),
            kind="appservice",
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load each service's backoff and queue length (a start hook); each sends what waits."""
        states = {row.appservice_id: row for row in await self._store.load_states()}
        lengths = await self._store.queue_lengths()
        for service in self._services():
            dest = self._add(service)
            row = states.get(service.id)
            if row is not None:
                self.loops.load(dest, row.failure_ts, row.retry_last_ts, row.retry_interval)
                dest.last_success_ts = row.last_success_ts
            dest.queued = lengths.get(service.id, 0)
            self._gauges(dest)
        self.loops.started = True
        for dest in list(self._dests.values()):
            self.loops.kick(dest)

    def stopService(self) -> Deferred[None]:
        """No new attempts; the request in flight is cancelled (and sent again after the next start)."""
        super().stopService()
        d = self.loops.stop(self._dests.values())
        d.addCallback(lambda _: self._writes.flush())
        d.addBoth(lambda result: self._api.close().addCallback(lambda _: result))
        return d

    def _add(self, service: AppService) -> AppServiceDestination:
        dest = self._dests.get(service.id)
        if dest is None or dest.removed:
            dest = self._dests[service.id] = AppServiceDestination(name=service.id, service=service)
        dest.service = service
        return dest

    def services_changed(self, result: ReloadResult) -> None:
        """The registrations were reloaded: new services start, removed ones stop (their queue
        stays in the database), changed ones use their new URL and tokens from the next request."""
        current = {s.id: s for s in self._services()}
        for service_id, dest in list(self._dests.items()):
            if service_id not in current:
                dest.removed = True
                self.loops.cancel_timer(dest)
                del self._dests[service_id]
        for service in current.values():
            dest = self._add(service)
            dest.pending = True
            self.loops.kick(dest)

    # -- the reader's cue ----------------------------------------------------------------------------

    def on_queued(self, counts: dict[str, int]) -> None:
        for service_id, count in counts.items():
            dest = self._dests.get(service_id)
            if dest is None:
                continue
            dest.pending = True
            dest.queued += count
            self._gauges(dest)
            self.loops.kick(dest)

    def status(self) -> list[dict[str, Any]]:
        """What the admin API shows: one entry per service with a URL."""
        return [d.status() for d in sorted(self._dests.values(), key=lambda d: d.name)]

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self, dest: AppServiceDestination) -> None:
        while self.loops.started and not dest.removed:
            if dest.txn is None:
                if not dest.pending:
                    return
                dest.pending = False
                # Acknowledgements still being written must land before the queue is read again.
                await self._writes.flush()
                txn = await self._store.take_transaction(dest.name, MAX_EVENTS_PER_TXN, MAX_EPHEMERAL_PER_TXN)
                if txn is None:
                    return
                dest.pending = True  # there may be more after these rows
                dest.txn = txn
            if not await self._attempt(dest, dest.txn):
                return

    async def _attempt(self, dest: AppServiceDestination, txn: QueuedTransaction) -> bool:
        """Send ``txn``; False when the service now backs off."""
        service = dest.service
        assert service is not None
        body = await self._body(service, txn)
        if body is not None:
            d = ensureDeferred(self._api.push(service, str(txn.txn_id), body))
            dest.request = d
            try:
                answer = await d
            except CancelledError:
                if not self.loops.started:
                    return False  # shutting down: no verdict on the service
                return self._failed(dest, txn, "cancelled")
            except RequestFailed as e:
                return self._failed(dest, txn, str(e))
            finally:
                dest.request = None
            if not answer.ok:
                return self._failed(dest, txn, f"answered HTTP {answer.code}")
        now = self.loops.now_ms()
        self._writes.write(lambda: self._store.complete_transaction(dest.name, txn, now))
        await self._writes.flush()
        dest.txn = None
        if self.loops.succeeded(dest):
            log.info("application service {id} is reachable again", id=dest.name)
        rows = len(txn.event_ids) + len(txn.ephemeral)
        dest.queued = max(0, dest.queued - rows)
        metrics.APPSERVICE_TRANSACTIONS.labels(dest.name, "sent").inc()
        metrics.APPSERVICE_EVENTS_SENT.labels(dest.name).inc(len(txn.event_ids))
        self._gauges(dest)
        return True

    def _failed(self, dest: AppServiceDestination, txn: QueuedTransaction, reason: str) -> bool:
        self.loops.failed(dest, reason)
        metrics.APPSERVICE_TRANSACTIONS.labels(dest.name, "failed").inc()
        self._gauges(dest)
        log.info(
            "transaction {txn_id} to application service {id} failed ({reason}); retrying in {secs:.0f}s",
            txn_id=txn.txn_id,
            id=dest.name,
            reason=reason,
            secs=dest.retry_interval / 1000,
        )
        return False

    async def _body(self, service: AppService, txn: QueuedTransaction) -> dict[str, Any] | None:
        """transactions.yaml: ``events`` in client format, and for a service with
        ``receive_ephemeral`` its ``ephemeral`` data and to-device messages. None when nothing
        is left to send (the events are gone)."""
        found = await self._events.get_events(txn.event_ids) if txn.event_ids else {}
        events = [found[i] for i in txn.event_ids if i in found]
        body: dict[str, Any] = {"events": await self._serializer.serialize(events) if events else []}
        if service.receive_ephemeral:
            ephemeral = [content for kind, content in txn.ephemeral if kind != TO_DEVICE]
            to_device = [content for kind, content in txn.ephemeral if kind == TO_DEVICE]
            # transactions.yaml: `ephemeral` "can be omitted if it would be empty"
            if ephemeral:
                body["ephemeral"] = ephemeral
            if to_device:
                body[TO_DEVICE_KEY] = to_device
        if not body["events"] and len(body) == 1:
            return None
        return body

    # -- BackoffWriter ------------------------------------------------------------------------------

    def backoff_started(self, dest: AppServiceDestination, failure_ts: int, retry_last_ts: int, retry_interval: int) -> None:
        name = dest.name
        self._writes.write(lambda: self._store.set_backoff(name, failure_ts, retry_last_ts, retry_interval))

    def backoff_ended(self, dest: AppServiceDestination, now_ms: int) -> None:
        name = dest.name
        self._writes.write(lambda: self._store.set_backoff(name, None, None, 0, now_ms))

    def _gauges(self, dest: AppServiceDestination) -> None:
        metrics.APPSERVICE_QUEUE.labels(dest.name).set(dest.queued)
        metrics.APPSERVICE_BACKING_OFF.labels(dest.name).set(1 if dest.retry_interval > 0 else 0)
        if dest.last_success_ts is not None:
            metrics.APPSERVICE_LAST_SUCCESS.labels(dest.name).set(dest.last_success_ts / 1000)
