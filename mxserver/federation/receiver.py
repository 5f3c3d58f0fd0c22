"""The inbound half of ``PUT /_matrix/federation/v1/send/{txnId}`` (transactions.yaml).

A transaction from an (already authenticated) origin is processed once:

* idempotent per ``(origin, txnId)``: the answer is persisted, and a
  retransmission -- also one arriving while the first is still being
  processed -- gets the same answer without anything being done again;
* at most 50 PDUs and 100 EDUs (server-server-api §Transactions), else 400;
* each PDU: the room must be known here (its version decides the event
  format), the room's server ACL must allow the origin (§Server Access
  Control Lists: "ACLs MUST be applied to all PDUs on a per-PDU basis"),
  :func:`~mxserver.federation.pdu_checks.check_pdu`, then the room server,
  with gaps filled from the origin (:mod:`mxserver.federation.missing`);
* PDUs of different rooms are processed concurrently, one room's in order;
  an exception on one PDU becomes that PDU's error and nothing else;
* then every EDU through the :class:`~mxserver.federation.edus.EduRegistry`.

The answer is ``{"pdus": {event_id: {} | {"error": "..."}}}``. Rejected
events are stored (§Rejection) and reported with the reason; soft-failed
ones are accepted as far as the sender is concerned.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.errors import bad_json
from mxserver.events.hashing import EventIdError, compute_event_id
from mxserver.events.model import Event
from mxserver.federation.edus import EduRegistry
from mxserver.federation.missing import GapFiller, GapFillError
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu
from mxserver.federation.room_access import acl_allows
from mxserver.rooms.room_server import MissingEventsError, MissingStateError, ReceiveStatus
from mxserver.storage.federation_txns import FederationTxnStore

if TYPE_CHECKING:
    from mxserver.federation.keyring import Keyring
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import RoomRecord

log = Logger()

#: server-server-api §Transactions: "at most 50 PDUs and 100 EDUs"
MAX_PDUS = 50
MAX_EDUS = 100
MAX_TXN_ID_BYTES = 255

# No per-origin label: any server may send to us, so that would be unbounded.
TRANSACTIONS_RECEIVED = Counter(
    "mxserver_federation_transactions_received_total", "Inbound transactions, processed or replayed", ["result"]
)
PDUS_RECEIVED = Counter(
    "mxserver_federation_pdus_received_total",
    "Inbound PDUs by outcome (accepted, soft_failed, rejected, dropped, error)",
    ["outcome"],
)
EDUS_RECEIVED = Counter("mxserver_federation_edus_received_total", "Inbound EDUs by type (handled or ignored)", ["edu_type", "handled"])
_COUNTED_EDU_TYPES = frozenset({"m.typing", "m.receipt", "m.presence", "m.direct_to_device", "m.device_list_update",
                                "m.signing_key_update"})


class JoinHandshakes(Protocol):
    """What the receiver asks of the joining side (``mxserver.federation.remote_rooms.RemoteRooms``)."""

    async def wait_for_handshake(self, room_id: str) -> None: ...

    async def receive_out_of_band(self, event: Event) -> bool: ...


class TransactionReceiver:
    """Processes inbound transactions: PDUs to the room server (through the gap filler), EDUs to the registry."""

    def __init__(
        self,
        txns: FederationTxnStore,
        rooms: FederationRooms,
        keyring: Keyring,
        edus: EduRegistry,
        gaps: GapFiller,
        handshakes: JoinHandshakes,
        clock: IReactorTime,
    ) -> None:
        self.txns = txns
        self.rooms = rooms
        self.keyring = keyring
        self.edus = edus
        #: fills the gap before a received event from its origin (tests read it)
        self.gaps = gaps
        self.handshakes = handshakes
        self.clock = clock
        self._inflight: dict[tuple[str, str], list[Deferred[dict[str, Any]]]] = {}

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def on_send(self, origin: str, txn_id: str, body: Any) -> dict[str, Any]:
        """Process one transaction of ``origin`` (authenticated) and answer it."""
        if not txn_id or len(txn_id.encode("utf-8")) > MAX_TXN_ID_BYTES:
            raise bad_json("Invalid transaction ID")
        pdus, edus = _parse_transaction(origin, body)
        key = (origin, txn_id)
        waiters = self._inflight.get(key)
        if waiters is not None:
            d: Deferred[dict[str, Any]] = Deferred()
            waiters.append(d)
            return await d
        self._inflight[key] = []
        try:
            answer = await self.txns.get_response(origin, txn_id)
            if answer is None:
                answer = await self._process(origin, pdus, edus)
                await self.txns.store_response(origin, txn_id, answer, self._now_ms())
                TRANSACTIONS_RECEIVED.labels("processed").inc()
            else:
                TRANSACTIONS_RECEIVED.labels("replayed").inc()
        except BaseException as e:
            for waiter in self._inflight.pop(key):
                waiter.errback(e)
            raise
        for waiter in self._inflight.pop(key):
            waiter.callback(answer)
        return answer

    async def _process(self, origin: str, pdus: list[Any], edus: list[Any]) -> dict[str, Any]:
        results: dict[str, dict[str, Any]] = {}
        by_room: dict[Any, list[Any]] = defaultdict(list)
        for pdu in pdus:
            by_room[pdu.get("room_id") if isinstance(pdu, dict) else None].append(pdu)
        await gatherResults(
            [ensureDeferred(self._process_room(origin, room_id, room_pdus, results)) for room_id, room_pdus in by_room.items()]
        )
        for edu in edus:
            if isinstance(edu, dict):
                edu_type = edu.get("edu_type")
                handled = await self.edus.dispatch(origin, edu_type, edu.get("content"))
                label = edu_type if edu_type in _COUNTED_EDU_TYPES else "other"
                EDUS_RECEIVED.labels(label, "yes" if handled else "no").inc()
        return {"pdus": results}

    async def _process_room(self, origin: str, room_id: Any, pdus: list[Any], results: dict[str, dict[str, Any]]) -> None:
        if isinstance(room_id, str):
            # The resident server may send the room's next events before our own join's
            # state is stored: let them in once it is, rather than drop them as unknown.
            await self.handshakes.wait_for_handshake(room_id)
        room = await self.rooms.get_room(room_id) if isinstance(room_id, str) else None
        for pdu in pdus:
            if room is None:
                # Without the room we know neither its version nor, for v3+, the event ID.
                event_id = pdu.get("event_id") if isinstance(pdu, dict) else None
                if isinstance(event_id, str):
                    results[event_id] = {"error": f"Unknown room {room_id}"}
                log.info("dropping a PDU from {origin} for unknown room {room_id}", origin=origin, room_id=room_id)
                PDUS_RECEIVED.labels("dropped").inc()
                continue
            try:
                event_id = compute_event_id(pdu, room.room_version)
            except (EventIdError, TypeError, ValueError, AttributeError):
                log.info("dropping a PDU from {origin} without an event ID", origin=origin)
                continue
            try:
                error, outcome = await self._process_pdu(origin, room, pdu)
            except Exception as e:
                log.failure("processing {event_id} from {origin} failed", event_id=event_id, origin=origin)
                error, outcome = f"Could not process the event: {type(e).__name__}", "error"
            PDUS_RECEIVED.labels(outcome).inc()
            results[event_id] = {} if error is None else {"error": error}

    async def _process_pdu(self, origin: str, room: RoomRecord, pdu: dict[str, Any]) -> tuple[str | None, str]:
        """``(error for the sender or None, outcome)``; accepted, soft-failed and rejected (stored
        with their verdict) events have no error: only PDUs we could not handle do."""
        if not await acl_allows(self.rooms, room.room_id, origin):
            return f"Server {origin} is denied by the room's server ACL", "dropped"
        try:
            event = await check_pdu(self.keyring, pdu, room.room_version)
        except InvalidPdu as e:
            return e.reason, "dropped"
        if event.room_id != room.room_id:
            return "Event is not in the room it claims", "dropped"
        # An invite withdrawn or a knock refused in a room we are not in: there is no room state
        # to fill gaps from (the resident server answers /state_ids with 403), only our own
        # out-of-band membership to replace (mxserver/federation/remote_rooms.py).
        if await self.handshakes.receive_out_of_band(event):
            return None, ReceiveStatus.ACCEPTED.value
        try:
            result = await self.gaps.receive(origin, room, event)
        except GapFillError as e:
            log.info("{event_id} from {origin}: {e}", event_id=event.event_id, origin=origin, e=str(e))
            return f"Could not fetch the events or state it needs: {e}", "dropped"
        except (MissingEventsError, MissingStateError) as e:
            return f"Could not fill the gap before the event: {e}", "dropped"
        if result.status is ReceiveStatus.REJECTED:
            # Stored as rejected: the PDU was handled, and that verdict is final, so no error
            # (transactions.yaml: "If no error is present, the PDU can be considered
            # successfully handled"). Synapse answers so too, and SyTest's senders treat any
            # error as a failure to deliver (e.g. "/state returns M_NOT_FOUND for a rejected
            # message event"). The reason is logged and counted.
            log.info(
                "{event_id} from {origin} rejected: {reason}",
                event_id=event.event_id, origin=origin, reason=result.reason or "failed the auth rules",
            )
            return None, "rejected"
        return None, result.status.value


def _parse_transaction(origin: str, body: Any) -> tuple[list[Any], list[Any]]:
    """transactions.yaml: ``origin``, ``origin_server_ts``, ``pdus`` required; ``edus`` optional."""
    if not isinstance(body, dict):
        raise bad_json("The transaction must be an object")
    pdus = body.get("pdus")
    edus = body.get("edus", [])
    if not isinstance(pdus, list):
        raise bad_json("'pdus' must be a list")
    if edus is None:
        edus = []
    if not isinstance(edus, list):
        raise bad_json("'edus' must be a list")
    if len(pdus) > MAX_PDUS:
        raise bad_json(f"A transaction may hold at most {MAX_PDUS} PDUs")
    if len(edus) > MAX_EDUS:
        raise bad_json(f"A transaction may hold at most {MAX_EDUS} EDUs")
    ts = body.get("origin_server_ts")
    if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool)):
        raise bad_json("'origin_server_ts' must be an integer")
    claimed = body.get("origin")
    if claimed is not None and claimed != origin:
        raise bad_json(f"Transaction origin {claimed!r} is not the authenticated origin {origin!r}")
    return pdus, edus
