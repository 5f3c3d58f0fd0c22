"""What the federation read endpoints answer (server-server-api §Retrieving events,
§Backfilling and retrieving missing events, §Retrieving event authorisation
information). The routes in ``mxserver/api/federation/events.py`` authenticate and call one method each.

Every method takes the authenticated ``origin`` and checks, before reading:
the room is known (404), its server ACL allows the origin and the origin has a
joined member (403 M_FORBIDDEN, events.yaml / §Server Access Control Lists),
and the events returned are ones the origin may see
(:mod:`mxserver.federation.room_access`: others come back redacted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from mxserver.errors import MatrixError, forbidden, not_found
from mxserver.events.model import Event
from mxserver.federation.room_access import RoomAccess, pdus
from mxserver.storage.events import EventStore, RoomRecord

if TYPE_CHECKING:
    from mxserver.storage.federation_txns import FederationTxnStore
    from mxserver.storage.state import StateStore

#: backfill.yaml has no maximum; we serve at most this many per request
MAX_BACKFILL = 100
#: get_missing_events: a larger limit is lowered to this
MAX_MISSING_EVENTS = 50


class FederationEventsHandler:
    """Answers the federation read endpoints, after the access checks of :class:`RoomAccess`."""

    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        store: EventStore,
        state_store: StateStore,
        access: RoomAccess,
        txns: FederationTxnStore,
    ) -> None:
        self.server_name = server_name
        self.clock = clock
        self.store = store
        self.state_store = state_store
        self.access = access
        self.txns = txns

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _transaction(self, events: Iterable[Event]) -> dict[str, Any]:
        return {"origin": self.server_name, "origin_server_ts": self._now_ms(), "pdus": pdus(events)}

    async def _event_in_room(self, room: RoomRecord, event_id: str, *, need_state: bool = False) -> Event:
        ev = await self.store.get_event(event_id)
        if ev is None or ev.room_id != room.room_id or ev.rejected:
            raise not_found(f"Could not find event {event_id}")
        if need_state and (ev.metadata.outlier or ev.metadata.state_before is None and ev.type != "m.room.create"):
            raise not_found(f"The state at {event_id} is not known here")
        return ev

    # -- single events -----------------------------------------------------------------------

    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        """GET /event/{eventId}: a transaction holding the one PDU."""
        ev = await self.store.get_event(event_id)
        if ev is None or ev.rejected:
            # A rejected event is not part of the room: we do not hand it on.
            raise not_found(f"Could not find event {event_id}")
        room_id = ev.room_id
        if not await self.access.acl_allows(room_id, origin):
            raise forbidden(f"Server {origin} is denied by the room's server ACL")
        if not await self.access.server_in_room(room_id, origin):
            raise forbidden(f"Server {origin} is not in the room of {event_id}")
        if not await self.access.visible_to_server(origin, ev):
            raise forbidden(f"Server {origin} may not see {event_id}")
        # as the server may have it (an erased user's event comes redacted)
        return self._transaction(await self.access.filter_events_for_server(origin, [ev]))

    # -- state ----------------------------------------------------------------------------------

    async def _state_before(self, origin: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        room = await self.access.require_room_access(origin, room_id)
        ev = await self._event_in_room(room, event_id, need_state=True)
        if not await self.access.visible_to_server(origin, ev):
            raise forbidden(f"Server {origin} may not see the state at {event_id}")
        # events.yaml: "prior to considering any state changes induced by the requested event"
        state = await self.state_store.get_state(ev.metadata.state_before)
        state_ids = sorted(state.values())
        chain = await self.store.get_auth_chain_ids(state_ids)
        return state_ids, sorted(chain)

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /state_ids/{roomId}?event_id="""
        state_ids, chain = await self._state_before(origin, room_id, event_id)
        return {"pdu_ids": state_ids, "auth_chain_ids": chain}

    async def state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /state/{roomId}?event_id="""
        state_ids, chain = await self._state_before(origin, room_id, event_id)
        events = await self.store.get_events([*state_ids, *chain])
        return {
            "pdus": pdus(events[e] for e in state_ids if e in events),
            "auth_chain": pdus(events[e] for e in chain if e in events),
        }

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /event_auth/{roomId}/{eventId}: the event's full auth chain."""
        room = await self.access.require_room_access(origin, room_id)
        ev = await self._event_in_room(room, event_id)
        if not await self.access.visible_to_server(origin, ev):
            raise forbidden(f"Server {origin} may not see {event_id}")
        chain = await self.store.get_auth_chain_ids([event_id])
        events = await self.store.get_events(chain)
        return {"auth_chain": pdus(sorted(events.values(), key=lambda e: (e.depth, e.event_id)))}

    # -- walking the DAG -----------------------------------------------------------------------------

    async def backfill(self, origin: str, room_id: str, starts: Sequence[str], limit: int) -> dict[str, Any]:
        """GET /backfill/{roomId}?v=&limit=: the events in ``v`` and before them, newest first."""
        room = await self.access.require_room_access(origin, room_id)
        limit = max(0, min(limit, MAX_BACKFILL))
        seen: set[str] = set()
        found: list[Event] = []
        frontier = list(dict.fromkeys(starts))
        # Breadth-first over prev_events, the deepest events first at each step.
        while frontier and len(found) < limit:
            events = await self.store.get_events([e for e in frontier if e not in seen])
            seen.update(frontier)
            batch = sorted(
                (ev for ev in events.values() if ev.room_id == room.room_id and not ev.metadata.outlier and not ev.rejected),
                key=lambda e: (-e.depth, e.event_id),
            )
            nxt: list[str] = []
            for ev in batch:
                if len(found) >= limit:
                    break
                found.append(ev)
                nxt.extend(p for p in ev.prev_event_ids if p not in seen)
            frontier = list(dict.fromkeys(nxt))
        found.sort(key=lambda e: (-e.depth, e.event_id))
        return self._transaction(await self.access.filter_events_for_server(origin, found))

    async def get_missing_events(
        self, origin: str, room_id: str, earliest: Sequence[str], latest: Sequence[str], limit: int, min_depth: int
    ) -> dict[str, Any]:
        """POST /get_missing_events/{roomId}: a breadth-first walk of the prev events of
        ``latest``, not entering ``earliest``, at most ``limit`` events of depth >= ``min_depth``."""
        room = await self.access.require_room_access(origin, room_id)
        limit = max(0, min(limit, MAX_MISSING_EVENTS))
        stop = set(earliest)
        seen: set[str] = set(latest) | stop
        starts = await self.store.get_events(latest)
        frontier = [p for ev in starts.values() if ev.room_id == room.room_id for p in ev.prev_event_ids]
        found: list[Event] = []
        while frontier and len(found) < limit:
            frontier = [e for e in dict.fromkeys(frontier) if e not in seen]
            seen.update(frontier)
            events = await self.store.get_events(frontier)
            nxt: list[str] = []
            for event_id in frontier:
                ev = events.get(event_id)
                if ev is None or ev.room_id != room.room_id or ev.depth < min_depth or ev.rejected:
                    continue
                if len(found) >= limit:
                    break
                found.append(ev)
                nxt.extend(ev.prev_event_ids)
            frontier = nxt
        found.sort(key=lambda e: (e.depth, e.event_id))
        return {"events": pdus(await self.access.filter_events_for_server(origin, found))}

    # -- timestamps -----------------------------------------------------------------------------------

    async def timestamp_to_event(self, origin: str, room_id: str, ts: int, direction: str) -> dict[str, Any]:
        """GET /timestamp_to_event/{roomId}?ts=&dir=: the closest event at or after (f) / before (b) ``ts``."""
        room = await self.access.require_room_access(origin, room_id)
        forward = direction == "f"
        row = await self.txns.closest_event_by_ts(room.room_nid, ts, forward)
        if row is None:
            raise MatrixError(
                404, "M_NOT_FOUND", f"Unable to find event from {ts} in {'forward' if forward else 'backward'} direction"
            )
        ev = await self.store.get_event(row[0])
        if ev is None or not await self.access.visible_to_server(origin, ev):
            raise not_found(f"Unable to find event from {ts}")
        return {"event_id": row[0], "origin_server_ts": row[1]}
