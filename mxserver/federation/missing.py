"""Filling gaps in a room's DAG when a received event cites events we do not have.

server-server-api §Backfilling and retrieving missing events: first
``POST /get_missing_events`` to the sending server (earliest = our forward
extremities, latest = the event, ``limit`` 10, ``min_depth``); what comes
back is received oldest first. If a gap remains before a fetched event (it
still cites unknown events), the state before it is fetched instead:
``GET /state_ids`` at each of its prev events, the events we lack with
``GET /event`` (or ``GET /state`` when many are missing), stored as outliers,
and the event is received with that state as its state before. A pushed
event whose own prev events its sender does not give us is dropped.

Every outbound request has a timeout, so a slow or broken peer only delays
its own events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import quote

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu
from mxserver.rooms.room_server import EventStoreStateSource, MissingEventsError, MissingStateError, ReceiveResult
from mxserver.rooms.state_resolution import resolve_state
from mxserver.storage.events import RoomRecord
from mxserver.storage.state import StateKey

if TYPE_CHECKING:
    from mxserver.federation.client import FederationClient
    from mxserver.federation.keyring import Keyring
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import EventStore
    from mxserver.storage.state import StateStore

log = Logger()

#: get_missing_events.yaml: "Defaults to 10"; what we ask for
MISSING_EVENTS_LIMIT = 10
#: seconds allowed for each outbound request of the gap filling, unless configured otherwise
FETCH_TIMEOUT_S = 20.0
#: above this many unknown state/auth events, one /state request beats many /event requests
MAX_EVENT_FETCHES = 20
#: how many /event requests run at once
FETCH_CONCURRENCY = 5
#: a state_ids answer naming more events than this is refused (a peer must not make us fetch forever)
MAX_STATE_IDS = 20_000
#: after /state, at most this many events are still fetched one by one
MAX_SINGLE_FETCHES = 100
#: a rejoin's gap (the events sent while we were out of the room): at most this many are fetched
#: (``federation.rejoin_gap_max_events``)
REJOIN_GAP_MAX_EVENTS = 300
#: ... asked for this many per get_missing_events round (a server may answer fewer: Synapse gives 20)
REJOIN_GAP_ROUND_LIMIT = 100
#: ... in at most this many rounds
REJOIN_GAP_MAX_ROUNDS = 20
#: ... and at most this many of its oldest events are given a fetched state (/state_ids)
REJOIN_GAP_STATE_FETCHES = 3
#: ... and no new round starts after this many seconds (the user's join request is waiting)
REJOIN_GAP_DEADLINE_S = 30.0


class GapFillError(Exception):
    """The missing events or state could not be fetched or made sense of."""


def _q(value: str) -> str:
    return quote(value, safe="")


class GapFiller:
    """Fetches what a received event needs from its origin and receives it (``hs.federation_gaps``)."""

    def __init__(
        self,
        clock: IReactorTime,
        rooms: FederationRooms,
        events: EventStore,
        state: StateStore,
        client: FederationClient,
        keyring: Keyring,
        timeout: float = FETCH_TIMEOUT_S,
        rejoin_max_events: int = REJOIN_GAP_MAX_EVENTS,
    ) -> None:
        self.clock = clock
        self.client = client
        self.room_server = rooms
        self.store = events
        self.state = state
        self.keyring = keyring
        #: seconds allowed per outbound request (``federation.gap_fetch_timeout_ms``)
        self.timeout = timeout
        #: the most events a rejoin's gap fill fetches (``federation.rejoin_gap_max_events``)
        self.rejoin_max_events = rejoin_max_events

    async def receive(self, origin: str, room: RoomRecord, event: Event) -> ReceiveResult:
        """Receive ``event`` (already through check_pdu), filling gaps from ``origin`` as needed."""
        try:
            return await self.room_server.receive_event(event)
        except MissingEventsError:
            pass
        except MissingStateError:
            return await self.receive_with_fetched_state(origin, room, event)
        await self.fetch_missing_events(origin, room, event)
        try:
            return await self.room_server.receive_event(event)
        except MissingEventsError as e:
            undivulged = set(e.missing) & set(event.prev_event_ids)
            if undivulged:
                # The event was pushed to us (/send) and its sender would not give us its
                # prev events. Taking the state at them from the sender instead would let
                # that event become our only forward extremity with state we cannot check,
                # so it is dropped, as Synapse does (SyTest "Federation rejects inbound
                # events where the prev_events cannot be found": no /state_ids at them).
                # Events *pulled* by get_missing_events are still given their state (above).
                raise GapFillError(
                    f"{origin} did not divulge the prev events of {event.event_id}: {', '.join(sorted(undivulged))}"
                ) from None
            return await self.receive_with_fetched_state(origin, room, event)
        except MissingStateError:
            return await self.receive_with_fetched_state(origin, room, event)

    # -- get_missing_events -----------------------------------------------------------------

    async def fetch_missing_events(self, origin: str, room: RoomRecord, event: Event) -> None:
        """Ask ``origin`` for the events between our forward extremities and ``event``; receive them."""
        head = await self.room_server.get_head(room.room_id)
        min_depth = max(0, min((e.depth for e in (await self.store.get_events(head.extremities)).values()), default=0))
        body = {
            "earliest_events": list(head.extremities),
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min_depth,
        }
        try:
            answer = await self.client.post_json(
                origin, f"/_matrix/federation/v1/get_missing_events/{_q(room.room_id)}", body, timeout=self.timeout
            )
        except Exception as e:
            log.info("get_missing_events from {origin} failed: {e}", origin=origin, e=str(e))
            return
        raw = answer.get("events")
        if not isinstance(raw, list):
            return
        fetched: list[Event] = []
        for pdu in raw[: MISSING_EVENTS_LIMIT * 2]:
            ev = await self._checked(pdu, room)
            if ev is not None and ev.event_id != event.event_id:
                fetched.append(ev)
        # Oldest first: by depth, then timestamp (get_missing_events gives no order guarantee).
        fetched.sort(key=lambda e: (e.depth, e.origin_server_ts))
        for ev in fetched:
            try:
                await self.room_server.receive_event(ev)
            except (MissingEventsError, MissingStateError):
                # The oldest fetched event still has a gap behind it: give it its state.
                try:
                    await self.receive_with_fetched_state(origin, room, ev)
                except Exception as e:
                    log.info("could not fill the gap before {event_id}: {e}", event_id=ev.event_id, e=str(e))
            except Exception:
                log.failure("receiving fetched event {event_id} failed", event_id=ev.event_id)

    async def fill_gap_before(
        self,
        origin: str,
        room: RoomRecord,
        event: Event,
        max_events: int | None = None,
        round_limit: int = REJOIN_GAP_ROUND_LIMIT,
    ) -> int:
        """Fetch and receive, oldest first, the events between our forward extremities and
        ``event`` (not received itself): our rejoin of a room we had left, whose events sent
        while we were out never reached us. How many were received.

        get_missing_events rounds (server-server-api §Backfilling and retrieving missing events): each walks back from
        the fetched events whose prev events we still lack, not entering what we have. At most
        ``max_events`` are fetched; if the gap is longer, the older rest is left out (the oldest
        fetched events are received with their state fetched from ``origin``, so our history of
        the room jumps from our leave to them; backfill only extends the *start* of history).
        """
        if max_events is None:
            max_events = self.rejoin_max_events
        if max_events <= 0:
            return 0
        head = await self.room_server.get_head(room.room_id)
        earliest = list(head.extremities)
        if not earliest:
            return 0
        ours = await self.store.get_events(earliest)
        min_depth = max(0, min((e.depth for e in ours.values()), default=0))
        path = f"/_matrix/federation/v1/get_missing_events/{_q(room.room_id)}"
        fetched: dict[str, Event] = {}
        latest = [event.event_id]
        deadline = self.clock.seconds() + REJOIN_GAP_DEADLINE_S
        for _ in range(REJOIN_GAP_MAX_ROUNDS):
            room_left = max_events - len(fetched)
            if not latest or room_left <= 0 or self.clock.seconds() > deadline:
                break
            body = {
                # What we hold (stored, or fetched in an earlier round): the walk stops there.
                "earliest_events": [*earliest, *fetched],
                "latest_events": latest,
                "limit": min(round_limit, room_left),
                "min_depth": min_depth,
            }
            try:
                answer = await self.client.post_json(origin, path, body, timeout=self.timeout)
            except Exception as e:
                log.info("get_missing_events from {origin} failed: {e}", origin=origin, e=str(e))
                break
            raw = answer.get("events")
            if not isinstance(raw, list):
                break
            new = 0
            for pdu in raw[: round_limit * 2]:
                ev = await self._checked(pdu, room)
                if ev is None or ev.event_id == event.event_id or ev.event_id in fetched:
                    continue
                if len(fetched) >= max_events:
                    break
                fetched[ev.event_id] = ev
                new += 1
            if not new:
                break
            cited = {p for ev in [event, *fetched.values()] for p in ev.prev_event_ids} - fetched.keys()
            unknown = cited - (await self.store.get_events(cited)).keys()
            latest = [e.event_id for e in [event, *fetched.values()] if any(p in unknown for p in e.prev_event_ids)]
        received = 0
        state_fetches = 0
        for ev in sorted(fetched.values(), key=lambda e: (e.depth, e.origin_server_ts, e.event_id)):
            try:
                await self.room_server.receive_event(ev)
                received += 1
            except (MissingEventsError, MissingStateError):
                # Beyond the bound (or a hole the other server would not fill): its state from origin.
                if state_fetches >= REJOIN_GAP_STATE_FETCHES:
                    log.info("rejoin gap of {room}: leaving out {event_id}", room=room.room_id, event_id=ev.event_id)
                    continue
                state_fetches += 1
                try:
                    await self.receive_with_fetched_state(origin, room, ev)
                    received += 1
                except Exception as e:
                    log.info("could not fill the gap before {event_id}: {e}", event_id=ev.event_id, e=str(e))
            except Exception:
                log.failure("receiving fetched event {event_id} failed", event_id=ev.event_id)
        return received

    async def _checked(self, pdu: Any, room: RoomRecord, expected_id: str | None = None) -> Event | None:
        if not isinstance(pdu, dict):
            return None
        if pdu.get("room_id") != room.room_id and not (pdu.get("type") == "m.room.create" and "room_id" not in pdu):
            return None  # checked cheaply first; a v12 create event has no room_id (checked below)
        try:
            ev = await check_pdu(self.keyring, pdu, room.room_version)
        except InvalidPdu as e:
            log.info("dropping a fetched PDU: {reason}", reason=e.reason)
            return None
        if ev.room_id != room.room_id:
            return None
        if expected_id is not None and ev.event_id != expected_id:
            return None
        return ev

    # -- state at the event -------------------------------------------------------------------

    async def receive_with_fetched_state(self, origin: str, room: RoomRecord, event: Event) -> ReceiveResult:
        """Receive ``event`` with the state before it computed from ``origin``'s state at its prev events."""
        state = await self.state_before(origin, room, event)
        await self._ensure_auth_events(origin, room, event)
        return await self.room_server.receive_event(event, state_before=state)

    async def state_before(self, origin: str, room: RoomRecord, event: Event) -> dict[StateKey, str]:
        """The state before ``event``: the (resolved) state after each of its prev events."""
        prev_ids = list(dict.fromkeys(event.prev_event_ids))
        known = await self.store.get_events(prev_ids)
        maps: list[dict[StateKey, str]] = []
        for prev_id in prev_ids:
            prev = known.get(prev_id)
            if prev is not None and not prev.metadata.outlier and prev.metadata.state_after is not None:
                maps.append(dict(await self.state.get_state(prev.metadata.state_after)))
                continue
            maps.append(await self._remote_state_after(origin, room, prev_id, prev))
        if not maps:
            raise GapFillError(f"event {event.event_id} has no prev events")
        if len(maps) == 1:
            return maps[0]
        return dict(await resolve_state(room.room_version, maps, EventStoreStateSource(self.store)))

    async def _remote_state_after(
        self, origin: str, room: RoomRecord, prev_id: str, prev: Event | None
    ) -> dict[StateKey, str]:
        path = f"/_matrix/federation/v1/state_ids/{_q(room.room_id)}"
        try:
            answer = await self.client.get_json(origin, path, {"event_id": prev_id}, timeout=self.timeout)
        except Exception as e:
            raise GapFillError(f"state_ids at {prev_id} from {origin} failed: {e}") from None
        pdu_ids = answer.get("pdu_ids")
        chain_ids = answer.get("auth_chain_ids")
        if not _id_list(pdu_ids) or not _id_list(chain_ids):
            raise GapFillError(f"bad state_ids answer from {origin}")
        if len(pdu_ids) + len(chain_ids) > MAX_STATE_IDS:
            raise GapFillError(f"state_ids answer from {origin} names too many events")
        wanted = list(dict.fromkeys([*pdu_ids, *chain_ids, *([] if prev is not None else [prev_id])]))
        events = await self.fetch_events(origin, room, wanted, state_at=prev_id)
        if prev is None:
            prev = events.get(prev_id)
        state: dict[StateKey, str] = {}
        for event_id in pdu_ids:
            ev = events.get(event_id)
            if ev is None or not ev.is_state():
                raise GapFillError(f"state event {event_id} at {prev_id} could not be fetched")
            if ev.rejected:
                continue  # failed the auth rules against its own auth events: not state
            state[ev.state_tuple()] = event_id
        # state_ids is the state *before* prev_id: the state after adds it, if it is state.
        if prev is not None and prev.is_state() and not prev.rejected:
            state[prev.state_tuple()] = prev_id
        return state

    async def fetch_events(
        self, origin: str, room: RoomRecord, event_ids: Sequence[str], state_at: str | None = None
    ) -> dict[str, Event]:
        """The events among ``event_ids``: stored ones, plus the others fetched from ``origin``
        and stored as outliers."""
        have = await self.store.get_events(event_ids)
        lacking = [e for e in event_ids if e not in have]
        if not lacking:
            return have
        fetched: dict[str, Event] = {}
        if len(lacking) > MAX_EVENT_FETCHES and state_at is not None:
            fetched = await self._fetch_state(origin, room, state_at, set(lacking))
        still = [e for e in lacking if e not in fetched]
        if len(still) > MAX_SINGLE_FETCHES:
            raise GapFillError(f"{len(still)} events would have to be fetched one by one from {origin}")
        for i in range(0, len(still), FETCH_CONCURRENCY):
            chunk = still[i : i + FETCH_CONCURRENCY]
            results = await gatherResults([self._fetch_one(origin, room, e) for e in chunk])
            for ev in results:
                if ev is not None:
                    fetched[ev.event_id] = ev
        # Their auth events, if we lack those too, come along (the chain must be complete to check them).
        chain_missing = {a for ev in fetched.values() for a in ev.auth_event_ids} - set(fetched) - set(have)
        if chain_missing:
            stored_chain = await self.store.get_events(chain_missing)
            for a in sorted(chain_missing - set(stored_chain))[:MAX_SINGLE_FETCHES]:
                ev = await self._fetch_one(origin, room, a)
                if ev is not None:
                    fetched[ev.event_id] = ev
        if fetched:
            await self.room_server.store_outliers(room.room_id, list(fetched.values()))
        return {**have, **(await self.store.get_events(list(fetched)))}

    def _fetch_one(self, origin: str, room: RoomRecord, event_id: str) -> Any:
        return ensureDeferred(self._fetch_event(origin, room, event_id))

    async def _fetch_event(self, origin: str, room: RoomRecord, event_id: str) -> Event | None:
        try:
            answer = await self.client.get_json(origin, f"/_matrix/federation/v1/event/{_q(event_id)}", timeout=self.timeout)
        except Exception as e:
            log.info("fetching {event_id} from {origin} failed: {e}", event_id=event_id, origin=origin, e=str(e))
            return None
        pdus = answer.get("pdus")
        if not isinstance(pdus, list) or len(pdus) != 1:
            return None
        return await self._checked(pdus[0], room, event_id)

    async def _fetch_state(self, origin: str, room: RoomRecord, event_id: str, wanted: set[str]) -> dict[str, Event]:
        path = f"/_matrix/federation/v1/state/{_q(room.room_id)}"
        try:
            answer = await self.client.get_json(origin, path, {"event_id": event_id}, timeout=self.timeout)
        except Exception as e:
            log.info("state at {event_id} from {origin} failed: {e}", event_id=event_id, origin=origin, e=str(e))
            return {}
        out: dict[str, Event] = {}
        for key in ("pdus", "auth_chain"):
            items = answer.get(key)
            if not isinstance(items, list):
                continue
            for pdu in items:
                ev = await self._checked(pdu, room)
                if ev is not None and ev.event_id in wanted:
                    out[ev.event_id] = ev
        return out

    async def _ensure_auth_events(self, origin: str, room: RoomRecord, event: Event) -> None:
        await self.fetch_events(origin, room, list(dict.fromkeys(event.auth_event_ids)))


def _id_list(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) and v.startswith("$") for v in value)
