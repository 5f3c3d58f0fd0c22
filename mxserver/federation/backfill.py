"""Outbound backfill: history from before this server was in a room (server-server-api
§Backfilling and retrieving missing events).

When a client's ``/messages`` (``dir=b``) reaches the start of our local
history and the earliest events cite prev events we never received (we
joined over federation), :meth:`Backfiller.backfill` asks other servers in
the room (``GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=``):

1. each PDU goes through :func:`~mxserver.federation.pdu_checks.check_pdu`
   (format, signatures, content hash); bad ones are dropped;
2. the batch is ordered parents first (prev events, then depth);
3. the state before each event is the state after its prev events when we
   know them (resolved if several), else the remote's ``/state_ids`` at the
   event, with the state events we lack fetched by ``/event`` and stored as
   outliers (if the remote cannot say, the state before our earliest event
   stands in: it only decides visibility of history nobody here saw);
4. each event is auth checked against its auth events and the state before
   it; a failing one is stored *rejected* (never shown, §Rejection);
5. the accepted ones get stream positions *below* every position we have
   (negative, decreasing going back, in DAG order), so /messages shows them
   in order before everything else, while /sync -- whose tokens are never
   negative -- never shows them as new. They are not published on the room
   stream, never become forward extremities and never change the current state.

Writes take the room's lock in the room server (:meth:`RoomServer.run_locked`),
so an event arriving by ``/send`` meanwhile is stored once: whichever comes
second finds it known (a duplicate).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
from twisted.internet.defer import DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.federation.client import FederationClient, FederationError
from mxserver.federation.destinations import RoomServers, user_server
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu
from mxserver.federation.responses import SharedCalls
from mxserver.rooms.auth import AuthError, auth_types_for, check_auth_rules
from mxserver.rooms.power_levels import redaction_may_be_applied
from mxserver.rooms.room_server import EventStoreStateSource, RoomHead
from mxserver.rooms.state_resolution import resolve_state
from mxserver.storage.backfill import BackfillStore, TimelinePlacement
from mxserver.storage.events import PersistItem
from mxserver.storage.state import NewSnapshot, StateKey, StateMap

if TYPE_CHECKING:
    from mxserver.config import FederationConfig
    from mxserver.federation.keyring import Keyring
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import EventStore
    from mxserver.storage.state import StateStore

log = Logger()

#: PDUs asked for per /backfill request
BACKFILL_LIMIT = 100
#: prev events named in one request (``v``)
MAX_V = 20
#: servers tried per backfill before giving up
MAX_SERVERS = 5
#: a room whose backfill found nothing new is not asked again for this long (same extremities)
RETRY_AFTER_S = 60.0
#: state events fetched one by one (``/event``) for one event's state; more and ``/state`` is used
MAX_SINGLE_FETCHES = 50
FETCH_CONCURRENCY = 10
#: the most PDUs accepted from one answer (a remote may not flood us)
MAX_PDUS = 2 * BACKFILL_LIMIT


@attrs.define
class _Item:
    """One backfilled event on its way to the database."""

    event: Event
    #: already stored as an outlier: placed in the timeline rather than inserted
    outlier: bool
    before: StateMap = attrs.field(factory=dict)
    #: the stored snapshot of ``before``, when it is one already (else planned at write time)
    before_nid: int | None = None
    has_before_nid: bool = False
    reason: str | None = None
    #: ``before`` and ``after`` are known (its children in the batch may use them)
    ready: bool = False
    #: the state after the event (``before`` itself, the same object, if it changes nothing)
    after: StateMap = attrs.field(factory=dict)

    def settle(self) -> None:
        ev = self.event
        if ev.is_state() and self.reason is None:
            self.after = {**self.before, ev.state_tuple(): ev.event_id}
        else:
            self.after = self.before
        self.ready = True


class Backfiller:
    """Fetches a room's older history from other servers (``hs.backfiller``, for /messages)."""

    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        config: FederationConfig,
        rooms: FederationRooms,
        events: EventStore,
        state: StateStore,
        store: BackfillStore,
        client: FederationClient,
        keyring: Keyring,
        room_servers: RoomServers,
    ) -> None:
        self.server_name = server_name
        self.clock = clock
        self.config = config
        self.room_server = rooms
        self.events = events
        self.state = state
        self.store = store
        self.client = client
        self.keyring = keyring
        self.room_servers = room_servers
        self._running = SharedCalls()
        #: room -> (extremities tried, monotonic time before which they are not tried again)
        self._fruitless: dict[str, tuple[frozenset[str], float]] = {}
        #: the room's create event, for the batch being fetched (one batch per room at a time)
        self._create: dict[str, Event | None] = {}
        #: the lowest stream position handed out (positions below it are free)
        self._low: int | None = None

    # -- entry point -------------------------------------------------------------------

    async def backfill(self, room_id: str) -> int:
        """Fetch history older than our earliest event of ``room_id``; how many events joined the
        timeline (0 if there is nothing to fetch, or no server had more). Never raises for
        remote failures: history simply ends where ours does."""
        return await self._running.run(room_id, lambda: self._backfill_safely(room_id))

    async def may_have_more(self, room_id: str) -> bool:
        """Whether our history of ``room_id`` starts at events whose prev events other servers may
        have (cheap: no federation request)."""
        room = await self.room_server.get_room(room_id)
        if room is None or not self.config.enabled:
            return False
        extremities = await self.store.backward_extremities(room.room_nid)
        if not extremities:
            return False
        tried = self._fruitless.get(room_id)
        key = frozenset(x.event_id for x in extremities)
        return not (tried is not None and tried[0] == key and self.clock.seconds() < tried[1])

    async def _backfill_safely(self, room_id: str) -> int:
        # A client's /messages must not fail because another server sent something odd.
        try:
            return await self._backfill(room_id)
        except Exception:
            log.failure("backfill of {room_id} failed", room_id=room_id)
            return 0
        finally:
            self._create.pop(room_id, None)

    async def _backfill(self, room_id: str) -> int:
        room = await self.room_server.get_room(room_id)
        if room is None or not self.config.enabled:
            return 0
        extremities = await self.store.backward_extremities(room.room_nid)
        if not extremities:
            return 0
        key = frozenset(x.event_id for x in extremities)
        tried = self._fruitless.get(room_id)
        if tried is not None and tried[0] == key and self.clock.seconds() < tried[1]:
            return 0
        wanted = sorted(key)[:MAX_V]
        for server in await self._servers(room_id, [x.cited_by_sender for x in extremities]):
            try:
                answer = await self.client.get_json(
                    server,
                    f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
                    {"v": wanted, "limit": BACKFILL_LIMIT},
                )
            except FederationError as e:
                log.info("backfill of {room_id} from {server} failed: {e}", room_id=room_id, server=server, e=e)
                continue
            pdus = answer.get("pdus")
            if not isinstance(pdus, list):
                log.info("backfill of {room_id} from {server}: no pdus list", room_id=room_id, server=server)
                continue
            events = await self._checked(pdus[:MAX_PDUS], room.room_version, room_id)
            added = await self._store_batch(room_id, room.room_version, events, server) if events else 0
            if added:
                self._fruitless.pop(room_id, None)
                return added
        self._fruitless[room_id] = (key, self.clock.seconds() + RETRY_AFTER_S)
        return 0

    async def _servers(self, room_id: str, senders: Sequence[str]) -> list[str]:
        """Who to ask: the servers of the senders of our earliest events first (they were there
        before us), then the other servers in the room, never ourselves."""
        ordered: list[str] = []
        for sender in senders:
            server = user_server(sender)
            if server:
                ordered.append(server)
        ordered += sorted(await self.room_servers.servers_in_room(room_id))
        own = self.server_name
        return [s for s in dict.fromkeys(ordered) if s != own][:MAX_SERVERS]

    async def _checked(self, pdus: Iterable[Any], rv: RoomVersion, room_id: str) -> list[Event]:
        """The valid events of ``room_id`` among ``pdus`` (server-server-api §Checks steps 1-3)."""
        out: dict[str, Event] = {}
        for pdu in pdus:
            if not isinstance(pdu, dict):
                continue
            try:
                event = await check_pdu(self.keyring, pdu, rv)
            except InvalidPdu as e:
                log.info("backfill: dropping a PDU: {reason}", reason=e.reason)
                continue
            if event.room_id != room_id:
                continue
            out.setdefault(event.event_id, event)
        return list(out.values())

    # -- state and auth ----------------------------------------------------------------------

    async def _store_batch(self, room_id: str, rv: RoomVersion, events: list[Event], origin: str) -> int:
        known = await self.events.get_events([e.event_id for e in events])
        items: dict[str, _Item] = {}
        for ev in events:
            have = known.get(ev.event_id)
            if have is None:
                items[ev.event_id] = _Item(ev, outlier=False)
            elif have.metadata.outlier:
                items[ev.event_id] = _Item(have, outlier=True)
        if not items:
            return 0
        order = _parents_first(list(items.values()))
        fetched: dict[str, Event] = {}  # state events fetched as outliers for this batch
        head = await self.room_server.get_head(room_id)
        create_id = head.state.get(("m.room.create", ""))
        create = (await self.events.get_events([create_id])).get(create_id) if create_id else None
        self._create[room_id] = create
        done: list[_Item] = []
        for item in order:
            await self._state_before(item, items, fetched, rv, origin, head)
            item.reason = await self._auth_failure(item, items, fetched, create, origin, rv)
            item.settle()
            done.append(item)
        if not done:
            return 0
        return await self.room_server.run_locked(room_id, lambda h: self._write(h, done, fetched))

    async def _state_before(
        self, item: _Item, items: Mapping[str, _Item], fetched: dict[str, Event], rv: RoomVersion, origin: str,
        head: RoomHead,
    ) -> None:
        """Work out ``item.before``."""
        ev = item.event
        prev_ids = list(dict.fromkeys(ev.prev_event_ids))
        if not prev_ids:
            item.before, item.before_nid, item.has_before_nid = {}, None, True
            return
        stored = await self.events.get_events([p for p in prev_ids if p not in items])
        maps: list[StateMap] = []
        nids: list[int | None] = []
        for p in prev_ids:
            batch_prev = items.get(p)
            if batch_prev is not None:
                if not batch_prev.ready:
                    maps = []
                    break
                maps.append(batch_prev.after)
                # A prev that changed nothing: its children share its stored snapshot.
                same = batch_prev.after is batch_prev.before and batch_prev.has_before_nid
                nids.append(batch_prev.before_nid if same else None)
                continue
            prev = stored.get(p)
            if prev is None or prev.metadata.outlier:
                maps = []
                break
            maps.append(await self.state.get_state(prev.metadata.state_after))
            nids.append(prev.metadata.state_after)
        if maps:
            if len({tuple(sorted(m.items())) for m in maps}) == 1:
                item.before = maps[0]
                if nids[0] is not None:
                    item.before_nid, item.has_before_nid = nids[0], True
                return
            extra = {i.event.event_id: i.event for i in items.values()} | fetched
            item.before = await resolve_state(rv, maps, EventStoreStateSource(self.events, extra))
            return
        # Prev events unknown: the remote's view of the state at the event.
        remote = await self._remote_state(ev, rv, origin, items, fetched)
        if remote is not None:
            item.before = remote
            return
        nid = await self.store.earliest_state_before(head.room.room_nid)
        item.before = await self.state.get_state(nid)
        item.before_nid, item.has_before_nid = nid, True
        log.info("backfill: no state from {origin} at {event_id}; using our earliest", origin=origin,
                 event_id=ev.event_id)

    async def _remote_state(
        self, ev: Event, rv: RoomVersion, origin: str, items: Mapping[str, _Item], fetched: dict[str, Event]
    ) -> dict[StateKey, str] | None:
        """The state before ``ev`` by ``/state_ids`` on ``origin``, its events at hand; None if unavailable."""
        room_q = quote(ev.room_id, safe="")
        try:
            answer = await self.client.get_json(
                origin, f"/_matrix/federation/v1/state_ids/{room_q}", {"event_id": ev.event_id}
            )
        except FederationError as e:
            log.info("backfill: /state_ids at {event_id} from {origin} failed: {e}", event_id=ev.event_id,
                     origin=origin, e=e)
            return None
        ids = answer.get("pdu_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return None
        have = {i for i in ids if i in items or i in fetched}
        stored = await self.events.get_events([i for i in ids if i not in have])
        missing = [i for i in ids if i not in have and i not in stored]
        if missing:
            await self._fetch_outliers(missing, rv, origin, ev, fetched)
        state: dict[StateKey, str] = {}
        for event_id in ids:
            found = items[event_id].event if event_id in items else fetched.get(event_id) or stored.get(event_id)
            if found is None or not found.is_state() or found.rejected:
                continue  # not available, rejected, or not state: left out rather than guessed
            state[found.state_tuple()] = event_id
        return state

    async def _fetch_outliers(
        self, missing: list[str], rv: RoomVersion, origin: str, at: Event, fetched: dict[str, Event]
    ) -> None:
        """Fetch the events ``missing`` from the state at ``at`` (``/event`` each, or ``/state``)."""
        pdus: list[Any] = []
        if len(missing) > MAX_SINGLE_FETCHES:
            try:
                answer = await self.client.get_json(
                    origin, f"/_matrix/federation/v1/state/{quote(at.room_id, safe='')}", {"event_id": at.event_id}
                )
                for name in ("pdus", "auth_chain"):
                    if isinstance(answer.get(name), list):
                        pdus += answer[name]
            except FederationError as e:
                log.info("backfill: /state from {origin} failed: {e}", origin=origin, e=e)
        else:
            sem = DeferredSemaphore(FETCH_CONCURRENCY)

            async def one(event_id: str) -> list[Any]:
                try:
                    answer = await self.client.get_json(
                        origin, f"/_matrix/federation/v1/event/{quote(event_id, safe='')}"
                    )
                except FederationError:
                    return []
                got = answer.get("pdus")
                return got[:1] if isinstance(got, list) else []

            for got in await gatherResults([sem.run(one, i) for i in missing], consumeErrors=True):
                pdus += got
        wanted = set(missing)
        new = [e for e in await self._checked(pdus, rv, at.room_id) if e.event_id not in fetched]
        new = [e for e in new if e.event_id in wanted or e.is_state()]
        for event in new:
            fetched[event.event_id] = event
        await self._auth_outliers(new, fetched, at.room_id)

    async def _auth_outliers(self, new: list[Event], fetched: Mapping[str, Event], room_id: str) -> None:
        """Auth check fetched state events against their own auth events (§Checks 4): a failing one,
        or one whose auth events are not at hand, is stored rejected and left out of any state."""
        create = self._create.get(room_id)
        for ev in sorted(new, key=lambda e: e.depth):
            if ev.type == "m.room.create":
                if create is not None and create.event_id != ev.event_id:
                    ev.metadata.rejected_reason = "a second m.room.create event"
                continue
            auth_ids = list(ev.auth_event_ids)
            auth = {i: fetched[i] for i in auth_ids if i in fetched}
            auth.update(await self.events.get_events([i for i in auth_ids if i not in auth]))
            if any(i not in auth for i in auth_ids):
                ev.metadata.rejected_reason = "auth events unavailable"
            elif any(auth[i].rejected for i in auth_ids):
                ev.metadata.rejected_reason = "an auth event was rejected"
            else:
                ev.metadata.rejected_reason = _check(ev, [auth[i] for i in auth_ids], create, selection=True)

    async def _auth_failure(
        self, item: _Item, items: Mapping[str, _Item], fetched: dict[str, Event], create: Event | None,
        origin: str, rv: RoomVersion,
    ) -> str | None:
        """Why the event fails auth (§Checks 4 and 5: its auth events, the state before it), or None."""
        ev = item.event
        if ev.type == "m.room.create":
            return None if create is None or create.event_id == ev.event_id else "a second m.room.create event"
        auth_ids = list(ev.auth_event_ids)
        local = {i: (items[i].event if i in items else fetched[i]) for i in auth_ids if i in items or i in fetched}
        stored = await self.events.get_events([i for i in auth_ids if i not in local])
        missing = [i for i in auth_ids if i not in local and i not in stored]
        if missing:
            await self._fetch_outliers(missing, rv, origin, ev, fetched)
            local.update({i: fetched[i] for i in missing if i in fetched})
            missing = [i for i in missing if i not in local]
        if missing:
            return f"auth events unavailable: {', '.join(missing)}"
        auth_events = [local[i] if i in local else stored[i] for i in auth_ids]
        for a in auth_events:
            batch = items.get(a.event_id)
            if batch is not None and batch.reason is not None:
                return f"auth event {a.event_id} was rejected"
        reason = _check(ev, auth_events, create, selection=True)
        if reason is not None:
            return reason
        keys = [k for k in auth_types_for(ev) if k in item.before]
        state_ids = [item.before[k] for k in keys]
        found = {i: items[i].event for i in state_ids if i in items} | {i: fetched[i] for i in state_ids if i in fetched}
        found.update(await self.events.get_events([i for i in state_ids if i not in found]))
        state = {k: found[item.before[k]] for k in keys if item.before[k] in found}
        return _check(ev, state, create, selection=False)

    # -- writing (the room lock is held) --------------------------------------------------------

    async def _early_redactions(self, room_nid: int, targets: Mapping[str, Event]) -> dict[str, str]:
        """event ID -> redaction ID for redactions we hold of ``targets`` (they came first, e.g.
        after our join), where the redaction may be applied (v3+ §Handling redactions: the same
        server's sender, or the redact power level at the redaction)."""
        if not targets:
            return {}
        out: dict[str, str] = {}
        for redaction in await self.store.redactions_in_room(room_nid):
            target = targets.get(redaction.redacts or "")
            if target is None or target.event_id in out:
                continue
            state = await self.state.get_state(redaction.metadata.state_before)
            keys = [k for k in (("m.room.power_levels", ""), ("m.room.create", "")) if k in state]
            events = await self.events.get_events([state[k] for k in keys])
            auth = {k: events[state[k]] for k in keys if state[k] in events}
            if redaction_may_be_applied(redaction, target, auth, create_event=auth.get(("m.room.create", ""))):
                out[target.event_id] = redaction.event_id
        return out

    def _allocate_positions(self, n: int) -> int:
        """The first of ``n`` consecutive stream positions below every position in use."""
        low = min(self._low if self._low is not None else 0, self.events.min_stream)
        self._low = low - n
        return self._low

    async def _write(self, head: RoomHead, done: list[_Item], fetched: Mapping[str, Event]) -> int:
        # Anything stored meanwhile (a /send, an earlier batch) is not stored again.
        ids = [i.event.event_id for i in done] + list(fetched)
        now_known = await self.events.get_events(ids)
        room = head.room
        store = self.events
        snapshots: list[NewSnapshot] = []
        inserts: list[PersistItem] = []
        placements: list[TimelinePlacement] = []
        for event_id, ev in fetched.items():
            if event_id in now_known or any(i.event.event_id == event_id for i in done):
                continue
            ev.metadata.outlier = True
            inserts.append(PersistItem(event=ev, room=room, event_nid=_next_nid(store), stream_ordering=None,
                                       state_before=None, state_after=None))
        timeline = [
            i for i in done
            if (i.event.event_id not in now_known and not i.outlier)
            # An outlier (e.g. state from the join) joins the timeline only if it passes auth: one
            # that fails here is left as it was, rather than rejected under the state it may be in.
            or (i.outlier and i.reason is None and now_known.get(i.event.event_id) is not None
                and now_known[i.event.event_id].metadata.outlier)
        ]
        accepted = [i for i in timeline if i.reason is None]
        base = self._allocate_positions(len(accepted))
        positions = {i.event.event_id: base + n for n, i in enumerate(accepted)}
        # A snapshot per distinct state: events of the batch with the same state share one.
        by_state: dict[tuple[Any, ...], int] = {}
        for item in timeline:
            ev = item.event
            if item.has_before_nid:
                before_nid = item.before_nid
            else:
                before_nid = _snapshot_for(self.state, room.room_nid, head, item.before, by_state, snapshots)
            after_nid, replaces = before_nid, None
            if ev.is_state() and item.reason is None:
                key = ev.state_tuple()
                replaces = item.before.get(key)
                after_nid = _snapshot_for(self.state, room.room_nid, head, item.after, by_state, snapshots)
            stream = positions.get(ev.event_id)
            if item.outlier:
                placements.append(TimelinePlacement(ev.event_id, stream, before_nid, after_nid, replaces, item.reason))
                continue
            ev.metadata.rejected_reason = item.reason
            ev.metadata.stream_ordering = stream
            inserts.append(PersistItem(event=ev, room=room, event_nid=_next_nid(store), stream_ordering=stream,
                                       state_before=before_nid, state_after=after_nid, replaces_state=replaces))
        if not inserts and not placements:
            return 0
        shown = {i.event.event_id: i.event for i in timeline if i.reason is None}
        redactions = await self._early_redactions(room.room_nid, shown)
        try:
            await self.store.persist(
                inserts, placements, snapshots, int(self.clock.seconds() * 1000), list(redactions.items())
            )
        except Exception:
            self.state.invalidate_planned()
            raise
        for event_id, redaction_id in redactions.items():
            shown[event_id].metadata.redacted_by = redaction_id
        store.persisted(inserts)
        for snap in snapshots:
            self.state.written(snap)
        for p in placements:
            store.invalidate_event(p.event_id)
        if positions:
            store.min_stream = min(store.min_stream, min(positions.values()))
        log.info("backfilled {n} events in {room_id}", n=len(accepted), room_id=room.room_id)
        return len(accepted)


def _next_nid(store: Any) -> int:
    nid = store.next_event_nid
    store.next_event_nid += 1
    return nid


def _snapshot_for(
    state: Any, room_nid: int, head: RoomHead, wanted: StateMap, by_state: dict[tuple[Any, ...], int],
    out: list[NewSnapshot],
) -> int:
    # Runs of events that change nothing share one map object: no need to compare contents.
    nid = by_state.get(("id", id(wanted)))
    if nid is not None:
        return nid
    key = tuple(sorted(wanted.items()))
    nid = by_state.get(key)
    if nid is None:
        if out:
            snap = state.plan_from_map(room_nid, out[-1].snapshot_nid, out[-1].full_map, wanted)
        else:
            snap = state.plan_from_map(room_nid, head.snapshot_nid, head.state, wanted)
        out.append(snap)
        nid = by_state[key] = snap.snapshot_nid
    by_state[("id", id(wanted))] = nid
    return nid


def _parents_first(items: list[_Item]) -> list[_Item]:
    """``items`` in DAG order: every event after the prev events of it that are in the batch;
    among the ready ones, lower depth first, then origin_server_ts and event ID (deterministic)."""
    by_id = {i.event.event_id: i for i in items}
    waiting: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for item in items:
        prevs = [p for p in dict.fromkeys(item.event.prev_event_ids) if p in by_id]
        waiting[item.event.event_id] = len(prevs)
        for p in prevs:
            children.setdefault(p, []).append(item.event.event_id)

    def rank(event_id: str) -> tuple[int, int, str]:
        ev = by_id[event_id].event
        return ev.depth, ev.origin_server_ts, event_id

    ready = [rank(e) for e, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[_Item] = []
    while ready:
        _, _, event_id = heapq.heappop(ready)
        out.append(by_id[event_id])
        for child in children.get(event_id, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, rank(child))
    return out  # events in a prev cycle (impossible with hashed IDs) are left out


def _check(event: Event, auth_events: Any, create: Event | None, *, selection: bool) -> str | None:
    try:
        check_auth_rules(event, auth_events, check_auth_event_selection=selection, create_event=create)
    except AuthError as e:
        return e.reason
    return None
