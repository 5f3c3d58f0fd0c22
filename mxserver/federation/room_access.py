"""May another server touch a room? Server ACLs, membership and history visibility for servers.

* ACLs (server-server-api §Server Access Control Lists): the current
  ``m.room.server_acl`` of the room decides; a denied server gets 403
  ``M_FORBIDDEN`` on the protected endpoints, and its PDUs and room EDUs are
  ignored.
* "In the room": a server takes part in a room while one of its users is
  joined in the room's current state (events.yaml: 403 when "the requesting
  host is not in the room").
* History visibility for servers (client-server-api §Room History
  Visibility, applied per server as other homeservers do): an event is
  visible to a server when the room was ``world_readable`` or ``shared`` at
  the event, when one of the server's users was joined at the event, or --
  for ``invited`` -- invited or joined at the event. Events a server may not
  see are served *redacted* by backfill and get_missing_events (the DAG
  stays walkable) and refused by ``/event``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mxserver.errors import MatrixError, forbidden
from mxserver.events.model import Event
from mxserver.events.redaction import redact_event
from mxserver.federation.acl import server_matches_acl
from mxserver.ids import server_of
from mxserver.rooms.visibility import INVITED, JOINED, history_visibility_of
from mxserver.storage.state import StateKey

if TYPE_CHECKING:
    from mxserver.accounts.erasure import ErasedUsers
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.events import EventStore, RoomRecord
    from mxserver.storage.state import StateStore

ACL_KEY: StateKey = ("m.room.server_acl", "")
_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")


class AclRooms(Protocol):
    """What the ACL check reads of the room server (client-facing and federation callers alike)."""

    async def get_room(self, room_id: str) -> RoomRecord | None: ...

    async def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> Event | None: ...


class ServersInRoom(Protocol):
    """The servers with joined members in a room (``mxserver.federation.destinations.RoomServers``)."""

    async def servers_in_room(self, room_id: str) -> Collection[str]: ...


def _domain(user_id: Any) -> str | None:
    if not isinstance(user_id, str) or ":" not in user_id:
        return None
    return server_of(user_id)


async def acl_allows(rooms: AclRooms, room_id: str, server_name: str) -> bool:
    """Whether the room's current server ACL allows ``server_name`` (a room we do not know: True)."""
    if await rooms.get_room(room_id) is None:
        return True
    acl = await rooms.current_state_event(room_id, *ACL_KEY)
    return server_matches_acl(server_name, acl.content if acl is not None else None)


class RoomAccess:
    """What another server may read of a room: the checks of the federation read endpoints."""

    def __init__(
        self,
        rooms: FederationRooms,
        state_store: StateStore,
        event_store: EventStore,
        room_servers: ServersInRoom,
        erasure: ErasedUsers,
    ) -> None:
        self.rooms = rooms
        self.state_store = state_store
        self.event_store = event_store
        self.room_servers = room_servers
        self.erasure = erasure

    async def acl_allows(self, room_id: str, server_name: str) -> bool:
        """See :func:`acl_allows`."""
        return await acl_allows(self.rooms, room_id, server_name)

    async def server_in_room(self, room_id: str, server_name: str) -> bool:
        """Whether ``server_name`` has a joined member in the room's current state."""
        return server_name in await self.room_servers.servers_in_room(room_id)

    async def require_room_access(self, origin: str, room_id: str) -> RoomRecord:
        """For the protected read endpoints: 404 unknown room, 403 ACL-denied or not in the room.

        Returns the room's RoomRecord.
        """
        room = await self.rooms.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        if not await self.acl_allows(room_id, origin):
            raise forbidden(f"Server {origin} is denied by the room's server ACL")
        if not await self.server_in_room(room_id, origin):
            raise forbidden(f"Server {origin} is not in room {room_id}")
        return room

    async def _visible_at(self, server_name: str, event: Event, cache: dict[Any, bool]) -> bool:
        nid = event.metadata.state_before
        outlier = nid is None and event.type != "m.room.create"
        key: int | str | None = f"current:{event.room_id}" if outlier else nid
        if key in cache:
            return cache[key]
        if outlier:
            # An outlier (state and auth events of a room we joined): its state is not known here,
            # so the room's current state decides.
            head = await self.rooms.get_head(event.room_id)
            state = dict(head.state)
        else:
            state = await self.state_store.get_state(nid)
        vis_id = state.get(_VISIBILITY_KEY)
        vis_event = (await self.event_store.get_events([vis_id])).get(vis_id) if vis_id else None
        visibility = history_visibility_of(vis_event)
        if visibility not in (INVITED, JOINED):
            cache[key] = True  # shared, world_readable
            return True
        wanted = ("join", "invite") if visibility == INVITED else ("join",)
        member_ids = [
            eid for (etype, sk), eid in state.items() if etype == "m.room.member" and _domain(sk) == server_name
        ]
        members = await self.event_store.get_events(member_ids)
        allowed = any(m.membership in wanted for m in members.values())
        cache[key] = allowed
        return allowed

    async def visible_to_server(self, server_name: str, event: Event) -> bool:
        """Whether ``server_name`` may see ``event`` (its own events always)."""
        if _domain(event.sender) == server_name:
            return True
        return await self._visible_at(server_name, event, {})

    async def filter_events_for_server(self, server_name: str, events: Sequence[Event]) -> list[Event]:
        """``events`` as ``server_name`` may have them: the ones it may not see are redacted,
        and so are those of erased users (account_deactivation.yaml ``erase``: servers are
        "served redacted copies"; Synapse serves every server so, SyTest "Inbound federation
        redacts events from erased users")."""
        cache: dict[Any, bool] = {}
        out = []
        erased = await self.erasure.erased_among({ev.sender for ev in events})
        for ev in events:
            if ev.sender in erased:
                out.append(redact_event(ev))
            elif _domain(ev.sender) == server_name or await self._visible_at(server_name, ev, cache):
                out.append(ev)
            else:
                out.append(redact_event(ev))
        return out


def pdus(events: Iterable[Event]) -> list[dict[str, Any]]:
    """The federation form of ``events`` (the PDUs as signed)."""
    return [ev.get_pdu_json() for ev in events]
