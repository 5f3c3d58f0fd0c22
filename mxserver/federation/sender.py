"""The outbound federation sender: per-destination transaction queues (``hs.federation_sender``).

Every event created by this server (server-server-api §PDUs) and every EDU
the ephemeral features hand over (:meth:`FederationSender.send_edu`) is queued
per destination and sent in transactions (``PUT /_matrix/federation/v1/send/{txnId}``,
§Transactions) with these rules:

- **One transaction in flight per destination.** The spec says to wait for a
  200 before sending a transaction with a different ID; queued PDUs and EDUs
  go into the next one, at most 50 PDUs and 100 EDUs each, PDUs in stream order.
- **Stable transaction IDs.** A failed transaction is resent as it was, with
  its ID, so a server that processed it but whose answer was lost can dedupe.
  IDs are a per-start random prefix and a per-destination counter.
- **Backoff.** A transport failure, a timeout, a 5xx (and 401/408/429) start
  or lengthen the destination's backoff: exponential with jitter, from
  :data:`MIN_RETRY_INTERVAL_MS` to :data:`MAX_RETRY_INTERVAL_MS`, on
  the server's clock, persisted so a restart does not hammer a dead server. Other
  4xx answers to the whole transaction drop it (retrying would not help, and
  the server is evidently up); per-PDU errors in a 200 answer are only logged.
  A request from the destination (:meth:`destination_is_up`) ends its backoff.
- **Catch-up instead of unbounded queues.** While a destination backs off (or
  its queue passes :data:`MAX_PENDING_PDUS`) its PDUs are not kept in memory.
  For every event queued, the latest event per (destination, room) is stored;
  when the destination can be tried again -- also after a restart -- the
  latest event of each room it missed is sent (oldest first, in transactions),
  and the destination fetches the gaps before them itself (/get_missing_events,
  /backfill). Queued EDUs are bounded per destination (the oldest are dropped).
- **Independence.** Each destination has its own loop: a dead server delays
  nobody else.

Where events go: to every other server with a joined member in the room
(:mod:`mxserver.federation.destinations`), plus the target's server of a
membership event about a remote user other than an invite (a kick, ban or
leave must reach the user's server even when nobody else of it is joined;
invites go through /invite), minus the servers the room's ``m.room.server_acl``
denies. Never to ourselves, nothing when ``federation.enabled`` is false.

The joined servers are read when the event is routed, right after it is
published: exact when the room's members are in memory (the room-members cache),
otherwise as of the database read that loads them, which may already include
a membership change published just after the event.

EDUs sent with ``persistent=True`` (send-to-device messages) are stored until
delivered (:mod:`mxserver.federation.outbox`); other queued EDUs (typing,
receipts, presence) live in memory only and do not survive a restart.

Transactions go out through a :data:`Transport`: ``PUT /send`` over the federation
client by default; an embedding application may hand in its own
(``Homeserver(config, federation_transport=...)``), e.g. to relay through a proxy
or to record traffic.

Wiring (``homeserver.py``): the sender is a reader of the room stream
(:meth:`FederationSender.on_room_events`, READERS phase: after the member
caches) and is told by the X-Matrix check when a server talks to us
(:meth:`FederationSender.destination_is_up`); both only when federation is enabled.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Hashable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.delivery.destinations import DeliveryLoops, RetryPolicy
from mxserver.errors import MatrixError
from mxserver.events.model import Event
from mxserver.federation import sender_metrics as sm
from mxserver.federation.acl import server_matches_acl
from mxserver.federation.client import FederationClient, FederationError
from mxserver.federation.destinations import RoomServers, user_server
from mxserver.federation.outbound_edus import merge_presence
from mxserver.federation.outbox import OUTBOX, Outbox
from mxserver.federation.sender_state import Destination, Transaction
from mxserver.storage.federation_sender import DestinationRow, FederationSenderStore, OrderedWrites, QueuedRoom
from mxserver.streams import Stream

if TYPE_CHECKING:
    from mxserver.config import FederationConfig
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import EventStore

log = Logger()

#: ``transport(destination, txn_id, body)``: sends one transaction, fires with the answer's body;
#: fails with :class:`~mxserver.federation.client.FederationError` for an error answer (a 4xx
#: other than 401/408/429 drops the transaction) and with any other exception for a transport
#: failure (the destination backs off)
Transport = Callable[[str, str, dict[str, Any]], "Coroutine[Any, Any, Any] | Deferred[Any]"]

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
#: PDUs kept in memory per destination; past this the destination catches up from the store
MAX_PENDING_PDUS = 500
#: EDUs kept per destination (the oldest are dropped past this)
MAX_PENDING_EDUS = 1000
MIN_RETRY_INTERVAL_MS = 10_000
MAX_RETRY_INTERVAL_MS = 24 * 3600 * 1000
RETRY_MULTIPLIER = 2
#: a request from a backing-off destination allows a new attempt, but not sooner than this after the last
INBOUND_RETRY_GAP_MS = 1_000
#: each interval is multiplied by a random factor in [1 - JITTER, 1 + JITTER]
RETRY_JITTER = 0.2
#: answers that mean "try again later" rather than "this transaction is refused"
RETRYABLE_4XX = (401, 408, 429)
TXN_TIMEOUT_S = 60.0

class FederationSender(service.Service):
    """Queues PDUs and EDUs per destination and sends them in transactions."""

    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        config: FederationConfig,
        store: FederationSenderStore,
        room_servers: RoomServers,
        rooms: FederationRooms,
        events: EventStore,
        client: FederationClient,
        transport: Transport | None = None,
    ) -> None:
        self.clock = clock
        self.server_name = server_name
        self.enabled: bool = config.enabled
        self.store = store
        self._rooms = rooms
        self._events = events
        self._client = client
        # Sends one transaction: PUT /send over ``client`` unless the composition root hands in
        # another transport (see ``Homeserver(federation_transport=...)``).
        self._transport: Transport = transport or self._put_transaction
        self.setName("federation_sender")
        self._dests: dict[str, Destination] = {}
        self._txn_prefix = secrets.token_hex(4)
        self._edu_seq = 0
        #: the shared destination mechanism (mxserver.delivery): backoff, retry timer, one loop each
        self._loops: DeliveryLoops[Destination] = DeliveryLoops(
            clock,
            RetryPolicy(MIN_RETRY_INTERVAL_MS, MAX_RETRY_INTERVAL_MS, RETRY_MULTIPLIER, RETRY_JITTER),
            self._has_work,
            self._run,
            self,
            on_stopped=lambda dest: self.status_changes.publish(dest.name),
            kind="federation sender",
        )
        # local events waiting for their destinations to be worked out, in stream order
        self._incoming: list[tuple[list[Event], frozenset[str]]] = []
        self._routing = False
        # fired (and cleared) when the routing loop has nothing left: see routed()
        self._routed_waiters: list[Deferred[None]] = []
        # store writes run one at a time, in order (catch-up positions must not overtake each other)
        self._writer = OrderedWrites()
        self.outbox = Outbox(self.store, self._writer)
        self._pending_rows: dict[tuple[str, str], QueuedRoom] = {}
        self._room_servers = room_servers
        #: the name of a destination whose :meth:`destinations_status` entry may just have changed:
        #: published after each transaction attempt (sent, refused, or failed and backing off) and
        #: when its loop stops (nothing left to send, or waiting out a backoff). Nothing in the
        #: server reads it; it lets an observer (a test, an admin tool) wait for the sender to go
        #: idle instead of polling :meth:`destinations_status`.
        self.status_changes: Stream[str] = Stream("federation_sender_status")

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def _started(self) -> bool:
        return self._loops.started

    @_started.setter
    def _started(self, value: bool) -> None:
        self._loops.started = value

    @property
    def random(self) -> Any:
        """The backoff's jitter source (a test may seed it)."""
        return self._loops.random

    async def start(self) -> None:
        """Load persisted backoff and catch-up state (a start hook, after migrations)."""
        if not self.enabled:
            return
        for row in await self.store.load_destinations():
            dest = self._dest(row.destination)
            self._load_row(dest, row)
        for name in await self.outbox.load():
            if name != self.server_name:
                self._dest(name).outbox_in_store = True
        for name in await self.store.destinations_behind():
            if name != self.server_name:
                self._dest(name).catching_up = True
        self._started = True
        for dest in list(self._dests.values()):
            self._kick(dest)

    def _load_row(self, dest: Destination, row: DestinationRow) -> None:
        self._loops.load(dest, row.failure_ts, row.retry_last_ts, row.retry_interval)
        dest.last_success_ts = row.last_success_ts
        dest.last_stream = max(dest.last_stream, row.last_successful_stream)
        self._update_gauges(dest)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped = self._loops.stop(self._dests.values())
        # Events still being routed record their rooms' catch-up positions when routed, and
        # loops record what their last request achieved: let both, so those writes are queued
        # before the final flush (and before the database closes).
        d = stopped.addCallback(lambda _: self.routed())
        d.addCallback(lambda _: self.flush_writes())
        return d

    # -- the API ------------------------------------------------------------------------------

    def send_edu(
        self,
        destination: str,
        edu_type: str,
        content: dict[str, Any],
        key: Hashable | None = None,
        *,
        persistent: bool = False,
    ) -> None:
        """Queue an EDU; one with the same ``(edu_type, key)`` already queued is replaced.

        ``persistent``: stored until delivered, across outages and restarts (send-to-device);
        such EDUs are never coalesced.
        """
        if not self.enabled or destination == self.server_name:
            return
        dest = self._dest(destination)
        edu = {"edu_type": edu_type, "content": content}
        if persistent:
            slot: Hashable = self.outbox.add(destination, edu, self._now_ms())
            if dest.outbox_in_store:
                self._kick(dest)  # read back from the store in order with the others
                return
        elif key is None:
            self._edu_seq += 1
            slot = ("", self._edu_seq)
        else:
            slot = (edu_type, key)
            dest.edus.pop(slot, None)  # the replacement goes to the back: it is the newest
        dest.edus[slot] = edu
        while len(dest.edus) > MAX_PENDING_EDUS:
            dropped, _ = dest.edus.popitem(last=False)
            if isinstance(dropped, tuple) and dropped[0] == OUTBOX:
                dest.outbox_in_store = True  # not lost: it is read back from the store later
            else:
                sm.EDUS_DROPPED.labels(destination).inc()
        sm.PENDING_EDUS.labels(destination).set(len(dest.edus))
        self._kick(dest)

    def send_edu_to_room(
        self, room_id: str, edu_type: str, content: dict[str, Any], key: Hashable | None = None
    ) -> Deferred[None]:
        """Queue an EDU for every other server with a joined member in ``room_id`` (ACL permitting)."""
        if not self.enabled:
            return succeed(None)

        async def run() -> None:
            for server in await self.servers_in_room(room_id):
                self.send_edu(server, edu_type, content, key)

        return ensureDeferred(run())

    async def servers_in_room(self, room_id: str) -> set[str]:
        """The other servers with joined members in ``room_id`` that its ACL allows (never ourselves)."""
        servers = set(await self._room_servers.servers_in_room(room_id))
        servers.discard(self.server_name)
        return await self._acl_allowed(room_id, servers)

    def destination_is_up(self, destination: str) -> None:
        """``destination`` just talked to us: end its backoff and send what is waiting."""
        dest = self._dests.get(destination)
        if dest is None:
            return
        # One attempt soon; should it fail, the backoff grows from where it was. A server that
        # reaches us but cannot be reached still gets at most one attempt per INBOUND_RETRY_GAP_MS.
        self._loops.retry_soon(dest, INBOUND_RETRY_GAP_MS)

    def routed(self) -> Deferred[None]:
        """Fires once every event handed to the sender so far has been routed: queued for its
        destinations (or recorded for their catch-up), so :meth:`destinations_status` shows it.

        Routing reads each room's servers from the database, so it runs behind the room stream;
        stopping the service waits for it, and so may anyone who needs the queues up to date.
        """
        if not self._routing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._routed_waiters.append(d)
        return d

    def destinations(self) -> list[Destination]:
        """Every destination known since start-up or stored, by name: what the admin APIs show
        (mxserver's view and Synapse's). Read them, do not change them."""
        return sorted(self._dests.values(), key=lambda d: d.name)

    def destination(self, name: str) -> Destination | None:
        """The destination ``name``, if the sender knows it (read it, do not change it)."""
        return self._dests.get(name)

    def destinations_status(self) -> list[dict[str, Any]]:
        """What mxserver's admin API shows: one entry per destination known since start-up or stored."""
        return [dest.status() for dest in self.destinations()]

    def reset_backoff(self, destination: str) -> bool:
        """An admin ends the destination's backoff (Synapse's reset_connection): the next attempt
        goes at once. False if it was not backing off."""
        dest = self._dests.get(destination)
        if dest is None or dest.retry_interval <= 0:
            return False
        self._loops.cancel_timer(dest)
        self._loops.load(dest, None, None, 0)
        dest.retry_allowed = False
        self._update_gauges(dest)
        self._write(lambda: self.store.clear_backoff(destination))
        self._kick(dest)
        return True

    # -- events from the room stream --------------------------------------------------------------

    def on_room_events(self, events: list[Event]) -> None:
        """Room-stream subscriber: our own new events go to the other servers in their rooms."""
        ours = [
            e
            for e in events
            if user_server(e.sender) == self.server_name
            and (e.metadata.stream_ordering or 0) > 0  # backfilled history sits below 0: never new
            and not e.rejected
            and not e.metadata.soft_failed
            and not e.metadata.outlier
        ]
        if not ours:
            return
        self._enqueue_routing(ours, frozenset())

    def send_pdu(self, event: Event, exclude: Iterable[str] = ()) -> None:
        """Send another server's event to the room's other servers, as a resident server must
        after ``send_join``, ``send_leave`` and ``send_knock`` (server-server-api §Joining Rooms,
        §Leaving Rooms). ``exclude``: servers that have it already (its origin)."""
        if not self.enabled or (event.metadata.stream_ordering or 0) <= 0 or event.rejected:
            return
        self._enqueue_routing([event], frozenset(exclude))

    def _enqueue_routing(self, events: list[Event], exclude: frozenset[str]) -> None:
        self._incoming.append((events, exclude))
        if not self._routing:
            d = ensureDeferred(self._route())
            d.addErrback(lambda f: log.failure("routing events to destinations failed", f))

    async def _route(self) -> None:
        # One batch at a time, in stream order: the destinations' queues stay in stream order.
        self._routing = True
        try:
            while self._incoming:
                batch, exclude = self._incoming.pop(0)
                routed: list[tuple[Event, set[str]]] = []
                try:
                    for event in batch:
                        routed.append((event, await self._destinations_for(event) - exclude))
                except Exception:
                    # A failed membership read: the stored positions of these events' rooms are
                    # not written, so their servers only see them once a later event is sent.
                    log.failure("working out the destinations of {n} events failed", n=len(batch))
                    continue
                self._queue_pdus(routed)
        finally:
            self._routing = False
            waiters, self._routed_waiters = self._routed_waiters, []
            for d in waiters:
                d.callback(None)

    async def _destinations_for(self, event: Event) -> set[str]:
        servers = set(await self._room_servers.servers_in_room(event.room_id))
        if event.type == "m.room.member" and event.state_key is not None and event.membership != "invite":
            # Its subject's server must hear of a kick, ban or leave even if none of its users
            # remain joined (the membership is already applied to the joined set).
            target = user_server(event.state_key)
            if target is not None:
                servers.add(target)
        servers.discard(self.server_name)
        return await self._acl_allowed(event.room_id, servers)

    async def _acl_allowed(self, room_id: str, servers: set[str]) -> set[str]:
        """``servers`` without those the room's server ACL denies: they may not take part
        (server-server-api §Server Access Control Lists), so nothing is sent to them."""
        if not servers:
            return servers
        try:
            acl = await self._rooms.current_state_event(room_id, "m.room.server_acl", "")
        except MatrixError:
            return servers  # a room we have no head for: no ACL known
        if acl is None:
            return servers
        return {s for s in servers if server_matches_acl(s, acl.content)}

    def _queue_pdus(self, routed: Iterable[tuple[Event, set[str]]]) -> None:
        rows: dict[tuple[str, str], QueuedRoom] = {}
        for event, servers in routed:
            stream = event.metadata.stream_ordering
            assert stream is not None
            for server in servers:
                rows[(server, event.room_id)] = QueuedRoom(server, event.room_id, stream, event.event_id)
                dest = self._dest(server)
                if stream <= dest.last_stream:
                    continue
                if dest.retry_interval > 0 or len(dest.pdus) >= MAX_PENDING_PDUS:
                    # Backing off or too far behind: the stored latest event of the room will do.
                    if dest.pdus:
                        sm.PDUS_DEFERRED.labels(server).inc(len(dest.pdus))
                        dest.pdus.clear()
                    dest.catching_up = True
                    sm.PDUS_DEFERRED.labels(server).inc()
                else:
                    dest.pdus.append(event)
                sm.PENDING_PDUS.labels(server).set(len(dest.pdus))
        if rows:
            # Coalesced: rows queued while an earlier batch's are still waiting go in the same write.
            first = not self._pending_rows
            self._pending_rows.update(rows)
            if first:
                self._write(self._write_rows)
        for server in {s for _, servers in routed for s in servers}:
            self._kick(self._dests[server])

    # -- the per-destination loop ---------------------------------------------------------------

    def _dest(self, name: str) -> Destination:
        dest = self._dests.get(name)
        if dest is None:
            dest = self._dests[name] = Destination(name)
        return dest

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _has_work(self, dest: Destination) -> bool:
        return bool(dest.pdus or dest.edus or dest.retry or dest.catching_up or dest.outbox_in_store)

    def _kick(self, dest: Destination) -> None:
        """Start the destination's loop unless it runs, backs off, or the sender is not started."""
        self._loops.kick(dest)

    async def _run(self, dest: Destination) -> None:
        while self._started:
            txn = await self._next_transaction(dest)
            if txn is None:
                return
            dest.in_flight = txn
            try:
                outcome = await self._attempt(dest, txn)
            finally:
                dest.in_flight = None
            self.status_changes.publish(dest.name)
            if not self._started or outcome == "failed":
                return

    async def _next_transaction(self, dest: Destination) -> Transaction | None:
        if dest.retry is not None:
            return dest.retry
        stored = await self.outbox.take(dest, MAX_EDUS_PER_TXN) if dest.outbox_in_store else []
        pdus: list[Event] = []
        if dest.catching_up:
            # Everything queued before now must be in the store before it is read.
            await self.flush_writes()
            rows = await self.store.rooms_behind(dest.name, dest.last_stream, MAX_PDUS_PER_TXN)
            if rows:
                found = await self._events.get_events([r.event_id for r in rows])
                pdus = [found[r.event_id] for r in rows if r.event_id in found]
                stream = rows[-1].stream_ordering
                if not pdus:
                    # Nothing loadable (should not happen): move past these rows.
                    dest.last_stream = max(dest.last_stream, stream)
                    if not stored:
                        return await self._next_transaction(dest)
                return self._make_transaction(dest, pdus, stream, stored)
            dest.catching_up = False
            dest.pdus = [e for e in dest.pdus if (e.metadata.stream_ordering or 0) > dest.last_stream]
        pdus = dest.pdus[:MAX_PDUS_PER_TXN]
        del dest.pdus[: len(pdus)]
        sm.PENDING_PDUS.labels(dest.name).set(len(dest.pdus))
        stream = max((e.metadata.stream_ordering or 0 for e in pdus), default=0)
        if not pdus and not dest.edus and not stored:
            return None
        return self._make_transaction(dest, pdus, stream, stored)

    def _make_transaction(
        self, dest: Destination, pdus: list[Event], stream: int, stored: list[tuple[int, dict[str, Any]]]
    ) -> Transaction:
        edus: list[dict[str, Any]] = [edu for _, edu in stored]
        outbox = [seq for seq, _ in stored]
        count = len(edus)
        presence = False
        while dest.edus and count < MAX_EDUS_PER_TXN:
            slot, edu = dest.edus.popitem(last=False)
            if isinstance(slot, tuple) and slot[0] == OUTBOX:
                outbox.append(slot[1])
            edus.append(edu)
            # m.presence EDUs are merged into one per transaction (§Presence: a "push" list)
            if edu["edu_type"] != "m.presence":
                count += 1
            elif not presence:
                presence = True
                count += 1
        if presence:
            edus = merge_presence(edus)
        sm.PENDING_EDUS.labels(dest.name).set(len(dest.edus))
        dest.txn_counter += 1
        dest.outbox_after = max([dest.outbox_after, *outbox])
        return Transaction(
            txn_id=f"{self._txn_prefix}_{dest.txn_counter}",
            pdus=[e.get_pdu_json() for e in pdus],
            edus=edus,
            stream=stream,
            origin_server_ts=self._now_ms(),
            outbox=outbox,
        )

    async def _attempt(self, dest: Destination, txn: Transaction) -> str:
        """Send one transaction; "sent", "refused" (dropped) or "failed" (backing off)."""
        body: dict[str, Any] = {
            "origin": self.server_name,
            "origin_server_ts": txn.origin_server_ts,
            "pdus": txn.pdus,
        }
        if txn.edus:
            body["edus"] = txn.edus
        d = ensureDeferred(self._transport(dest.name, txn.txn_id, body))
        dest.request = d
        try:
            response = await d
        except CancelledError:
            if not self._started:
                return "failed"  # shutting down: no verdict on the destination
            self._failed(dest, txn, "cancelled")
            return "failed"
        except FederationError as e:
            if 400 <= e.code < 500 and e.code not in RETRYABLE_4XX:
                log.warn(
                    "{dest} refused transaction {txn_id}: {code} {errcode} {msg}; dropping it",
                    dest=dest.name, txn_id=txn.txn_id, code=e.code, errcode=e.errcode, msg=e.msg,
                )
                sm.TRANSACTIONS.labels(dest.name, "refused").inc()
                self._succeeded(dest, txn)
                return "refused"
            self._failed(dest, txn, str(e))
            return "failed"
        except Exception as e:
            log.failure("sending transaction {txn_id} to {dest} failed unexpectedly", txn_id=txn.txn_id, dest=dest.name)
            self._failed(dest, txn, repr(e))
            return "failed"
        finally:
            dest.request = None
        self._log_pdu_errors(dest, txn, response)
        sm.TRANSACTIONS.labels(dest.name, "sent").inc()
        sm.PDUS_SENT.labels(dest.name).inc(len(txn.pdus))
        sm.EDUS_SENT.labels(dest.name).inc(len(txn.edus))
        self._succeeded(dest, txn)
        return "sent"

    def _log_pdu_errors(self, dest: Destination, txn: Transaction, response: Any) -> None:
        # §Transactions: per-PDU errors are the remote's verdict on that PDU, not a reason to retry.
        results = response.get("pdus") if isinstance(response, dict) else None
        if not isinstance(results, dict):
            return
        for event_id, result in results.items():
            if isinstance(result, dict) and result.get("error"):
                log.info(
                    "{dest} did not accept {event_id}: {error}", dest=dest.name, event_id=event_id, error=result["error"]
                )

    def _succeeded(self, dest: Destination, txn: Transaction) -> None:
        dest.retry = None
        dest.last_stream = max(dest.last_stream, txn.stream)
        # backoff_ended (below) persists the delivered position with the end of a backoff
        if not self._loops.succeeded(dest) and txn.pdus:
            self.backoff_ended(dest, dest.last_success_ts or self._now_ms())
        if txn.outbox:
            self.outbox.delivered(dest.name, txn.outbox)
        self._update_gauges(dest)

    def _failed(self, dest: Destination, txn: Transaction, reason: str) -> None:
        sm.TRANSACTIONS.labels(dest.name, "failed").inc()
        dest.retry = txn
        self._loops.failed(dest, reason)  # the backoff grows (persisted) and a retry is scheduled
        # Stop holding PDUs in memory: the catch-up sends each room's latest one later.
        if dest.pdus:
            sm.PDUS_DEFERRED.labels(dest.name).inc(len(dest.pdus))
            dest.pdus.clear()
            dest.catching_up = True
        self._update_gauges(dest)
        log.info(
            "transaction {txn_id} to {dest} failed ({reason}); retrying in {secs:.0f}s",
            txn_id=txn.txn_id, dest=dest.name, reason=reason, secs=dest.retry_interval / 1000,
        )

    # -- persisting backoff (the BackoffWriter of the shared loops) ----------------------------------

    def backoff_started(self, dest: Destination, failure_ts: int, retry_last_ts: int, retry_interval: int) -> None:
        name = dest.name
        self._write(lambda: self.store.set_backoff(name, failure_ts, retry_last_ts, retry_interval))

    def backoff_ended(self, dest: Destination, now_ms: int) -> None:
        name, stream = dest.name, dest.last_stream
        self._write(lambda: self.store.set_success(name, now_ms, stream))

    def _update_gauges(self, dest: Destination) -> None:
        sm.BACKING_OFF.labels(dest.name).set(1 if dest.retry_interval > 0 else 0)
        sm.RETRY_INTERVAL.labels(dest.name).set(dest.retry_interval / 1000)
        sm.PENDING_PDUS.labels(dest.name).set(len(dest.pdus))
        sm.PENDING_EDUS.labels(dest.name).set(len(dest.edus))

    # -- the transport ------------------------------------------------------------------------------

    async def _put_transaction(self, destination: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}"
        return await self._client.put_json(destination, path, body, timeout=TXN_TIMEOUT_S)

    # -- store writes -------------------------------------------------------------------------------

    async def _write_rows(self) -> None:
        rows, self._pending_rows = self._pending_rows, {}
        if rows:
            await self.store.record_queued(list(rows.values()))

    def _write(self, fn: Any) -> None:
        self._writer.write(fn)

    def flush_writes(self) -> Deferred[None]:
        """Fires once every store write queued so far has finished (later ones are not waited for)."""
        return self._writer.flush()
