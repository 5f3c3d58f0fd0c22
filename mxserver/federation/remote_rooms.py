"""Membership in rooms that live on other servers: the joining side of the federation handshakes.

server-server-api §Joining Rooms, §Knocking upon a room, §Inviting to a room,
§Leaving Rooms (Rejecting Invites). :class:`RemoteRooms` (``hs.remote_rooms``)
is what :mod:`mxserver.room_handlers.membership` calls when a request needs another
server:

* **join** a room this server is not in: ``make_join`` on a candidate
  server, fill in and sign the template, ``send_join``, then check what the
  resident answered -- every state and auth-chain PDU through
  :func:`~mxserver.federation.pdu_checks.check_pdu`, each event against the
  auth rules with its own auth events, our join against the returned state --
  and hand it to :meth:`RoomServer.persist_joined_state` (auth chain and state
  as outliers, the join accepted on that state). The joined members of the
  adopted state are published on :attr:`RemoteRooms.joined_state` (the member
  caches follow it: no member event per change reaches the room stream). From
  then on the room is like any other: new events come in through ``/send`` and
  ours go out through the federation sender.
* **knock** through another server (``make_knock``/``send_knock``) and
  **reject** an invite or retract a knock (``make_leave``/``send_leave``):
  the membership event is stored *out of band* (an outlier with a stream
  position, :meth:`RoomServer.persist_out_of_band_membership`), so /sync
  shows it, with the stripped state the other server sent in its
  ``unsigned`` (``invite_room_state`` / ``knock_room_state``).
* **invite** a user of another server: the event is built on our head, sent to
  the invitee's server to be co-signed (``PUT /v2/invite``), checked, and then
  received into the room like any event (it may have forked the DAG meanwhile).
* **aliases** of other servers are resolved with ``GET /query/directory``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
from signedjson.types import SigningKey
from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.crypto.canonical import CanonicalJSONError, check_strict_canonical_json
from mxserver.crypto.signing import SignatureError, signature_ids
from mxserver.errors import MatrixError, bad_json, forbidden, not_found
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.signing import verify_event_signature
from mxserver.events.stripped_state import STRIPPED_STATE_TYPES
from mxserver.events.validation import EventFormatError
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion
from mxserver.federation.client import FederationClient, FederationError
from mxserver.federation.destinations import RoomServers
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu
from mxserver.identifier_checks import server_of_alias, server_of_room_id, server_of_user
from mxserver.rooms.auth import AuthError, auth_types_for, check_auth_rules
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.state import StateKey
from mxserver.streams import Stream

if TYPE_CHECKING:
    from mxserver.federation.keyring import Keyring
    from mxserver.federation.missing import GapFiller
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import EventStore

log = Logger()

MEMBER = "m.room.member"
CREATE_KEY: StateKey = ("m.room.create", "")

_TEMPLATE_DROP = ("hashes", "signatures", "unsigned")


def q(value: str) -> str:
    """One percent-encoded path segment."""
    return quote(value, safe="")


def stripped(pdu: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stripped form (type, state_key, content, sender) of a state PDU, or None if it is not one."""
    etype, state_key, content, sender = (pdu.get(k) for k in ("type", "state_key", "content", "sender"))
    if not (isinstance(etype, str) and isinstance(state_key, str) and isinstance(content, dict) and isinstance(sender, str)):
        return None
    return {"type": etype, "state_key": state_key, "content": content, "sender": sender}


def event_template(event: Event, origin: str) -> dict[str, Any]:
    """A make_join/make_leave/make_knock answer's ``event``: the unsigned event for the other side to fill."""
    pdu = event.get_pdu_json()
    for key in _TEMPLATE_DROP:
        pdu.pop(key, None)
    if event.room_version.event_format is EventFormat.V1:
        pdu.pop("event_id", None)  # the joining server names the event (v1 event IDs are server-scoped)
    pdu["origin"] = origin
    return pdu


def check_auth_chain(events: Mapping[str, Event], stored: Mapping[str, Event], create: Event | None) -> dict[str, str | None]:
    """Each event of ``events`` checked against the auth rules with its own auth events (taken
    from ``events`` or, failing that, ``stored``): event ID -> rejection reason or None.

    Auth events are decided before the events citing them (the auth chain is a DAG);
    an event citing a rejected or unknown auth event is rejected (§Rejection).
    """
    out: dict[str, str | None] = {}
    pending = sorted(events.values(), key=lambda e: e.depth)
    while pending:
        rest: list[Event] = []
        for ev in pending:
            if any(a in events and a not in out for a in ev.auth_event_ids):
                rest.append(ev)
                continue
            out[ev.event_id] = _auth_chain_reason(ev, events, stored, out, create)
        if len(rest) == len(pending):
            for ev in rest:
                out[ev.event_id] = "auth events form a cycle"
            break
        pending = rest
    return out


def _auth_chain_reason(
    ev: Event, events: Mapping[str, Event], stored: Mapping[str, Event], out: Mapping[str, str | None], create: Event | None
) -> str | None:
    auth: list[Event] = []
    for a in ev.auth_event_ids:
        aev = events.get(a) or stored.get(a)
        if aev is None:
            return f"auth event {a} is unknown"
        if out.get(a) is not None or aev.rejected:
            return f"auth event {a} was rejected"
        auth.append(aev)
    try:
        check_auth_rules(ev, auth, create_event=create)
    except AuthError as e:
        return e.reason
    return None


@attrs.frozen
class JoinedStateAdopted:
    """A join over federation replaced ``room_id``'s state as a whole (committed):
    ``joined`` are its joined members now."""

    room_id: str
    joined: frozenset[str]


class RemoteRooms:
    """``hs.remote_rooms``: joins, knocks, leaves and invites that need another server."""

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        clock: IReactorTime,
        rooms: FederationRooms,
        events: EventStore,
        client: FederationClient,
        keyring: Keyring,
        room_servers: RoomServers,
        gaps: GapFiller,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.clock = clock
        self.room_server = rooms
        self.events = events
        self.client = client
        self.keyring = keyring
        self.room_servers = room_servers
        #: fills the gap of a rejoin (the events sent while we were out of the room)
        self.gaps = gaps
        #: the rooms whose state a join replaced, for the member caches
        self.joined_state: Stream[JoinedStateAdopted] = Stream("joined_state_adopted")
        # one handshake per room at a time: two joins racing would each adopt their own state
        self._locks: dict[str, DeferredLock] = {}

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- where we stand -------------------------------------------------------------------

    async def is_host_in_room(self, room_id: str) -> bool:
        """Whether one of our users is joined to the room (we follow its DAG)."""
        if await self.room_server.get_room(room_id) is None:
            return False
        return self.server_name in await self.room_servers.servers_in_room(room_id)

    async def local_membership(self, room_id: str, user_id: str) -> Event | None:
        """The latest membership event of a local user in a room, out-of-band ones included."""
        room = await self.room_server.get_room(room_id)
        if room is None:
            return None
        row = await self.events.get_membership(user_id, room.room_nid)
        if row is None:
            return None
        return await self.events.get_event(row[1])

    # -- aliases ------------------------------------------------------------------------------

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """``(room_id, servers)`` of another server's alias (federation query/directory)."""
        server = server_of_alias(alias)
        try:
            body = await self.client.get_json(server, "/_matrix/federation/v1/query/directory", {"room_alias": alias})
        except FederationError as e:
            if e.code == 404:
                raise not_found(f"Room alias {alias} not found.") from None
            raise e.to_matrix_error() from None
        room_id, servers = body.get("room_id"), body.get("servers")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered a malformed directory entry for {alias}")
        servers = [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else []
        return room_id, servers or [server]

    # -- shared handshake pieces ---------------------------------------------------------------

    def candidates(self, room_id: str, via: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
        """Servers to ask, in order, without our own: ``via``, ``extra``, the room ID's server."""
        ours = self.server_name
        found = [*via, *extra, server_of_room_id(room_id) or ""]
        return [s for s in dict.fromkeys(found) if s and s != ours]

    async def _make(
        self, server: str, kind: str, room_id: str, user_id: str, membership: str, versions: Sequence[str] | None
    ) -> tuple[RoomVersion, dict[str, Any]]:
        """``make_<kind>`` on ``server``: the room version and the checked template."""
        args = {"ver": list(versions)} if versions else None
        body = await self.client.get_json(server, f"/_matrix/federation/v1/make_{kind}/{q(room_id)}/{q(user_id)}", args)
        ver = body.get("room_version", "1")
        rv = KNOWN_ROOM_VERSIONS.get(ver) if isinstance(ver, str) else None
        if rv is None:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"{server} answered unsupported room version {str(ver)[:50]!r}",
                **({"room_version": ver[:100]} if isinstance(ver, str) else {}),
            )
        template: Any = body.get("event")
        # joins-v1.yaml and friends: the template MUST be checked before it is signed.
        ok = (
            isinstance(template, dict)
            and template.get("room_id") == room_id
            and template.get("sender") == user_id
            and template.get("state_key") == user_id
            and template.get("type") == MEMBER
            and isinstance(template.get("content"), dict)
            and template["content"].get("membership") == membership
            and isinstance(template.get("prev_events"), list)
            and isinstance(template.get("auth_events"), list)
            and isinstance(template.get("depth"), int)
        )
        if not ok:
            raise _BadAnswer(f"{server} answered a malformed make_{kind} template")
        return rv, template

    def _fill(self, rv: RoomVersion, template: Mapping[str, Any], content: Mapping[str, Any]) -> Event:
        """Our signed event from a template: its DAG position, our content, our timestamp."""
        merged = {**template["content"], **content, "membership": template["content"]["membership"]}

        def refs(key: str) -> list[str]:
            return [r[0] if isinstance(r, list) and r else r for r in template[key]]

        hashes: dict[str, Any] = {}
        if rv.event_format is EventFormat.V1:
            for key in ("prev_events", "auth_events"):
                for r in template[key]:
                    if isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and isinstance(r[1], dict):
                        hashes[r[0]] = r[1]
        try:
            return build_event(
                rv,
                type=MEMBER,
                sender=template["sender"],
                content=merged,
                room_id=template["room_id"],
                state_key=template["state_key"],
                prev_event_ids=refs("prev_events"),
                auth_event_ids=refs("auth_events"),
                depth=template["depth"],
                origin_server_ts=self._now_ms(),
                server_name=self.server_name,
                signing_key=self.signing_key,
                ref_hashes=hashes,
            )
        except (EventFormatError, ValueError, TypeError) as e:
            raise _BadAnswer(f"the template does not make a valid event: {e}") from None

    async def _handshake(
        self, kind: str, room_id: str, user_id: str, membership: str, servers: Sequence[str],
        content: Mapping[str, Any], versions: Sequence[str] | None,
    ) -> tuple[str, RoomVersion, Event, dict[str, Any]]:
        """make_<kind> then send_<kind> with the first server that takes part; the answer."""
        if not servers:
            raise not_found(f"Room {room_id} is not on this server and no server to ask was given")
        last: MatrixError | None = None
        for server in servers:
            try:
                rv, template = await self._make(server, kind, room_id, user_id, membership, versions)
                event = self._fill(rv, template, content)
                tail = f"/send_{kind}/{q(room_id)}/{q(event.event_id)}"
                if kind == "knock":  # knocks.yaml: there is only a v1
                    answer = await self.client.put_json(server, "/_matrix/federation/v1" + tail, event.get_pdu_json())
                else:
                    answer = await self._put_v2_or_v1(server, tail, event.get_pdu_json())
                return server, rv, event, answer
            except FederationError as e:
                log.info("{kind} of {room} through {server} failed: {e}", kind=kind, room=room_id, server=server, e=e)
                last = e.to_matrix_error()
                if e.errcode in ("M_MISSING_PARAM", "M_INVALID_PARAM"):
                    # joins-v2.yaml 400: these SHOULD fail the client's request with a 5xx.
                    last = MatrixError(502, "M_UNKNOWN", f"{server} refused our {kind} event: {e.msg}")
                if e.code == 403 or e.errcode in ("M_INCOMPATIBLE_ROOM_VERSION", "M_FORBIDDEN"):
                    raise last from None  # the room said no: another server would say the same
            except _BadAnswer as e:
                log.info("{kind} of {room} through {server}: {e}", kind=kind, room=room_id, server=server, e=e)
                last = MatrixError(502, "M_UNKNOWN", str(e))
            except MatrixError as e:
                last = e
        assert last is not None
        raise last

    async def _put_v2_or_v1(self, server: str, tail: str, body: Any) -> dict[str, Any]:
        """PUT ``/v2<tail>``, or ``/v1<tail>`` if ``server`` does not know the v2 endpoint.

        invites-v2.yaml: "Senders which receive a 400 or 404 response to this endpoint should
        retry using the v1 API as the server may be older"; servers predating the v2
        send_join/send_leave answer the same way. Like Synapse (which SyTest's "Outbound
        federation can query v1 /send_join" encodes), a 400 only counts when it is
        ``M_UNRECOGNIZED``: any other 400 is the server refusing our event, not the endpoint.
        """
        try:
            return await self.client.put_json(server, "/_matrix/federation/v2" + tail, body)
        except FederationError as e:
            if not _unknown_endpoint(e):
                raise
            log.info("{server} does not know /v2{tail}: trying v1", server=server, tail=tail)
        return await self.client.put_json_v1(server, "/_matrix/federation/v1" + tail, body)

    # -- joining ----------------------------------------------------------------------------------

    def _room_lock(self, room_id: str) -> DeferredLock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = DeferredLock()
        return lock

    async def _serialised(self, room_id: str, fn: Callable[[], Awaitable[Event]]) -> Event | None:
        """Run one handshake of the room at a time; None (without running it) if this server
        joined the room meanwhile: the caller then does it as a local membership change."""
        lock = self._room_lock(room_id)
        await lock.acquire()
        try:
            if await self.is_host_in_room(room_id):
                return None
            return await fn()
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(room_id, None)

    async def wait_for_handshake(self, room_id: str) -> None:
        """Return once no join or knock handshake of ``room_id`` is running.

        For the /send receiver: the resident may send the room's next events before our
        join's state is stored; waiting here (rather than dropping them as events of an
        unknown room) lets them in once it is.
        """
        lock = self._locks.get(room_id)
        if lock is not None and lock.locked:
            await lock.acquire()
            lock.release()

    async def wait_for_handshakes(self) -> None:
        """Return once the join and knock handshakes running now are done (of any room).

        For EDUs that name no room (m.presence): the resident sends our new fellow members'
        presence as soon as it accepts our join, which may be before its state is stored here.
        """
        for room_id in list(self._locks):
            await self.wait_for_handshake(room_id)

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> Event | None:
        """Join a room through one of ``servers``; our join event once stored, or None if this
        server is (now) in the room: then join it locally."""

        async def run() -> Event:
            versions = list(KNOWN_ROOM_VERSIONS)
            server, rv, event, answer = await self._handshake("join", room_id, user_id, "join", servers, content, versions)
            try:
                return await self._adopt_join(server, room_id, rv, event, answer)
            except _BadAnswer as e:
                log.warn("join of {room} through {server}: {e}", room=room_id, server=server, e=e)
                raise MatrixError(502, "M_UNKNOWN", f"Could not join through {server}: {e}") from None

        return await self._serialised(room_id, run)

    async def _adopt_join(
        self, server: str, room_id: str, rv: RoomVersion, event: Event, answer: Mapping[str, Any]
    ) -> Event:
        state_pdus, chain_pdus = answer.get("state"), answer.get("auth_chain")
        if not isinstance(state_pdus, list) or not isinstance(chain_pdus, list):
            raise _BadAnswer("the send_join answer has no state or auth_chain")
        returned = answer.get("event")
        if isinstance(returned, dict):
            # Restricted joins: the resident co-signed our event (joins-v2.yaml `event`).
            checked = await self._checked(returned, rv)
            if checked is None or checked.event_id != event.event_id:
                raise _BadAnswer("the send_join answer's event is not our join event")
            event = checked
        events: dict[str, Event] = {}
        state_ids: list[str] = []
        for i, pdu in enumerate([*state_pdus, *chain_pdus]):
            ev = await self._checked(pdu, rv)
            if ev is None or ev.room_id != room_id:
                continue
            events.setdefault(ev.event_id, ev)
            if i < len(state_pdus) and ev.is_state():
                state_ids.append(ev.event_id)
        events.pop(event.event_id, None)
        missing = {a for ev in [*events.values(), event] for a in ev.auth_event_ids if a not in events}
        stored = await self.events.get_events(missing)
        create = next((e for e in events.values() if e.type == "m.room.create" and e.state_key == ""), None)
        if create is None or create.room_id != room_id:
            raise _BadAnswer("the send_join answer has no m.room.create event of this room")
        verdicts = check_auth_chain(events, stored, create)
        for event_id, reason in verdicts.items():
            events[event_id].metadata.rejected_reason = reason
        state = {events[e].state_tuple(): e for e in state_ids if verdicts.get(e) is None}
        if state.get(CREATE_KEY) != create.event_id:
            raise _BadAnswer("the m.room.create event is not in the returned state")
        # Our join must pass against its own auth events and against the state before it.
        own_auth = [events.get(a) or stored.get(a) for a in event.auth_event_ids]
        if any(a is None or a.rejected for a in own_auth):
            raise _BadAnswer("the auth events of our join are missing or rejected")
        auth_state = {k: events[state[k]] for k in auth_types_for(event) if k in state}
        try:
            check_auth_rules(event, [a for a in own_auth if a is not None], create_event=create)
            check_auth_rules(event, auth_state, check_auth_event_selection=False, create_event=create)
        except AuthError as e:
            raise _BadAnswer(f"the returned state does not allow our join: {e.reason}") from None
        await self._fill_rejoin_gap(server, room_id, event)
        await self.room_server.persist_joined_state(room_id, rv, create.sender, list(events.values()), event, state)
        joined = [k[1] for k, e in state.items() if k[0] == MEMBER and events[e].membership == "join"]
        # The state's member events are outliers, not on the room stream: say who is in the room now.
        self.joined_state.publish(JoinedStateAdopted(room_id, frozenset([*joined, event.sender])))
        return event

    async def _fill_rejoin_gap(self, server: str, room_id: str, event: Event) -> None:
        """A rejoin of a room we had left: receive the events sent while we were out of it.

        They would otherwise never reach us (nobody sends them; backfill only extends the start
        of history), and /messages would jump from our join to our leave. They are received
        *before* our join is persisted -- against the old head, the state in which we were
        out -- so they get stream positions before it; persist_joined_state then replaces the
        head with the returned state. The handshake lock is held (``_serialised``), so /send
        events of the room wait (``wait_for_handshake``) and cannot interleave. Bounded (see
        :meth:`GapFiller.fill_gap_before`); a failure never fails the join, it only leaves
        the gap.
        """
        room = await self.room_server.get_room(room_id)
        if room is None:
            return  # a first join: no history of ours to join up with
        try:
            received = await self.gaps.fill_gap_before(server, room, event)
        except Exception:
            log.failure("filling the gap of {room} before our rejoin failed", room=room_id)
            return
        if received:
            log.info("rejoin of {room}: received {n} events sent while we were away", room=room_id, n=received)

    async def _checked(self, pdu: Any, rv: RoomVersion) -> Event | None:
        """The event of a PDU another server sent us, or None if it must be dropped."""
        if not isinstance(pdu, dict):
            return None
        try:
            return await check_pdu(self.keyring, pdu, rv)
        except InvalidPdu as e:
            log.info("dropping a PDU: {reason}", reason=e.reason)
            return None

    # -- knocking ------------------------------------------------------------------------------------

    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> Event | None:
        """Knock through one of ``servers``; the knock is stored out of band with ``knock_room_state``.
        None if this server is (now) in the room: then knock locally."""

        async def run() -> Event:
            versions = [v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.knock_join_rule]
            server, rv, event, answer = await self._handshake(
                "knock", room_id, user_id, "knock", servers, content, versions
            )
            given = answer.get("knock_room_state")
            state = [s for s in (stripped(p) for p in given if isinstance(p, dict)) if s] if isinstance(given, list) else []
            return await self._store_out_of_band(room_id, rv, event, {"knock_room_state": state})

        return await self._serialised(room_id, run)

    async def _store_out_of_band(
        self, room_id: str, rv: RoomVersion, event: Event, unsigned: Mapping[str, Any] | None = None
    ) -> Event:
        pdu = event.get_pdu_json()
        if unsigned:
            pdu["unsigned"] = {**event.unsigned, **unsigned}
        stored = Event(pdu, rv, event_id=event.event_id)
        state = pdu.get("unsigned", {}).get("invite_room_state") or pdu.get("unsigned", {}).get("knock_room_state") or []
        creator = next((s["sender"] for s in state if s.get("type") == "m.room.create"), event.sender)
        await self.room_server.persist_out_of_band_membership(room_id, rv, creator, stored)
        return stored

    # -- leaving (rejecting an invite, retracting a knock) --------------------------------------------

    async def leave_out_of_band(self, user_id: str, membership: Event, reason: str | None) -> Event:
        """Reject an invite or retract a knock of a room we are not in (make_leave/send_leave)."""
        room_id = membership.room_id
        rv = membership.room_version
        content: dict[str, Any] = {"membership": "leave"}
        if reason is not None:
            content["reason"] = reason
        inviter = server_of_user(membership.sender) if membership.sender != user_id else None
        # The servers of the given state's senders are (or were) in the room too.
        given = membership.unsigned.get("invite_room_state", membership.unsigned.get("knock_room_state"))
        senders = [s.get("sender") for s in given if isinstance(s, dict)] if isinstance(given, list) else []
        residents = [server_of_user(s) for s in senders if isinstance(s, str) and ":" in s]
        servers = self.candidates(room_id, [inviter] if inviter else [], residents)
        try:
            _, _, event, _ = await self._handshake("leave", room_id, user_id, "leave", servers, content, None)
        except MatrixError as e:
            # The other side is unreachable or no longer in the room: reject here all the same, so
            # the invite goes away for the user (the inviting server is not told).
            log.info("rejecting {room} only locally: {e}", room=room_id, e=e)
            event = build_event(
                rv,
                type=MEMBER,
                sender=user_id,
                content=content,
                room_id=room_id,
                state_key=user_id,
                prev_event_ids=[membership.event_id],
                auth_event_ids=[membership.event_id],
                depth=membership.depth + 1,
                origin_server_ts=self._now_ms(),
                server_name=self.server_name,
                signing_key=self.signing_key,
            )
        return await self._store_out_of_band(room_id, rv, event)

    async def receive_out_of_band(self, event: Event) -> bool:
        """For the federation receiver, after :func:`check_pdu`: a leave or ban of one of our
        users in a room we are not in, whose invite or knock we keep out of band (the invite
        withdrawn, the knock refused). It replaces that membership; True if it was taken so.

        We cannot auth-check it (we have no state of the room), so only the servers that told
        us of the room are believed: the inviting server, or the servers in the knock's state.
        """
        target = event.state_key
        if event.type != MEMBER or event.membership not in ("leave", "ban") or not isinstance(target, str):
            return False
        if ":" not in target or server_of_user(target) != self.server_name:
            return False
        if await self.is_host_in_room(event.room_id):
            return False
        current = await self.local_membership(event.room_id, target)
        if current is None or not current.metadata.outlier or current.membership not in ("invite", "knock"):
            return False
        trusted = {server_of_user(current.sender)} if current.membership == "invite" else set()
        given = current.unsigned.get("knock_room_state")
        for s in given if isinstance(given, list) else []:
            if isinstance(s, dict) and isinstance(s.get("sender"), str) and ":" in s["sender"]:
                trusted.add(server_of_user(s["sender"]))
        if server_of_user(event.sender) not in trusted - {self.server_name}:
            return False
        await self._store_out_of_band(event.room_id, current.room_version, event)
        return True

    # -- inviting users of other servers -------------------------------------------------------------

    async def invite_room_state(self, room_id: str, inviter: str | None = None) -> list[dict[str, Any]]:
        """The PDUs of the room's stripped-state events (create first), for invites and knocks;
        for an invite also the inviter's membership event (see ``mxserver.sync.handler.stripped_state``)."""
        keys = [(t, "") for t in STRIPPED_STATE_TYPES]
        if inviter is not None:
            keys.append((MEMBER, inviter))
        state = await self.room_server.current_state_events(room_id, keys)
        return [state[k].get_pdu_json() for k in keys if k in state]

    async def invite(self, room_id: str, sender: str, target: str, content: Mapping[str, Any]) -> Event:
        """Invite ``target`` (a user of another server): built here, co-signed there, then received."""
        event = await self.room_server.build_unpersisted(room_id, EventSpec(MEMBER, dict(content), target, sender))
        rv = event.room_version
        destination = server_of_user(target)
        body = {
            "room_version": rv.identifier,
            "event": event.get_pdu_json(),
            "invite_room_state": await self.invite_room_state(room_id, inviter=sender),
        }
        tail = f"/invite/{q(room_id)}/{q(event.event_id)}"
        try:
            try:
                answer = await self.client.put_json(destination, "/_matrix/federation/v2" + tail, body)
            except FederationError as e:
                # invites-v2.yaml: retry with v1 on a 400 or 404 "if the room version is 1 or
                # 2" (the v1 body is the bare event: it cannot say which version the room is).
                if rv.identifier not in ("1", "2") or not _unknown_endpoint(e):
                    raise
                log.info("{server} does not know /v2/invite: trying v1", server=destination)
                answer = await self.client.put_json_v1(
                    destination, "/_matrix/federation/v1" + tail, event.get_pdu_json()
                )
        except FederationError as e:
            raise e.to_matrix_error() from None
        signed = answer.get("event")
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{destination} answered the invite without an event")
        if rv.strict_canonicaljson:
            # rooms v6 "canonical JSON": floats and out-of-range integers are not JSON of the
            # room. The spec does not say what the inviter's client then sees; Synapse parses
            # the answer as an event of the room and gives 400 M_BAD_JSON (SyTest "Outbound
            # federation rejects invite response which include invalid JSON for room version 6").
            try:
                check_strict_canonical_json(signed)
            except CanonicalJSONError as e:
                raise bad_json(f"{destination} answered the invite with invalid JSON: {e}") from None
        ours = event.get_pdu_json()
        theirs = dict(signed)
        for pdu in (ours, theirs):
            pdu.pop("signatures", None)
            pdu.pop("unsigned", None)
        if ours != theirs:
            raise MatrixError(502, "M_UNKNOWN", f"{destination} changed the invite event it was asked to sign")
        await self._check_cosigned(destination, signed, rv)
        # Our event with their signature added (and nothing else of theirs).
        signatures = {k: dict(v) for k, v in event.signatures.items()}
        signatures[destination] = dict(signed["signatures"][destination])
        pdu = {**event.get_pdu_json(), "signatures": signatures}
        invite = Event(pdu, rv, event_id=event.event_id)
        result = await self.room_server.receive_event(invite)
        if not result.accepted:
            raise forbidden(f"The invite was not accepted into the room: {result.reason or result.status.value}")
        return invite

    async def _check_cosigned(self, server: str, pdu: Mapping[str, Any], rv: RoomVersion) -> None:
        ids = signature_ids(pdu, server)
        keys = await self.keyring.get_verify_keys(server, ids, 0) if ids else {}
        try:
            if not keys:
                raise SignatureError(f"no usable key of {server}")
            verify_event_signature(pdu, rv, server, keys)
        except SignatureError as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server} did not sign the invite: {e}") from None


def _unknown_endpoint(e: FederationError) -> bool:
    """Whether an error answer says the server does not have the endpoint (an older server).

    A 404 or 405 counts when it is ``M_UNRECOGNIZED`` or carries no Matrix error at all (older
    servers answered unknown paths with a bare 404): a 404 ``M_NOT_FOUND`` is the endpoint
    answering. Older Synapses answered unknown endpoints with 400 ``M_UNRECOGNIZED``.
    """
    if e.code in (404, 405):
        bare = not isinstance(e.body, dict) or not isinstance(e.body.get("errcode"), str)
        return bare or e.errcode == "M_UNRECOGNIZED"
    return e.code == 400 and e.errcode == "M_UNRECOGNIZED"


class _BadAnswer(Exception):
    """Another server's answer cannot be used (malformed, or failing our checks)."""
