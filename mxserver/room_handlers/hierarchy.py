"""The space hierarchy (client-server-api §Spaces, ``GET /rooms/{roomId}/hierarchy``;
server-server-api §Spaces, ``GET /hierarchy/{roomId}``).

A space's children are its ``m.space.child`` state events with a non-empty
``via`` list. The client walk is depth-first, pre-order (a child space's rooms
follow it directly), children ordered as §Ordering of children within a space
says: a valid ``order`` first (by code point), then the child event's
``origin_server_ts``, then the room ID. A room seen twice (a loop, or a room in
two spaces) is returned once.

Pagination keeps the rest of the walk server-side, in memory, under an opaque
random token bound to the user, the root and the walk's parameters (the spec:
``suggested_only`` and ``max_depth`` may not change; a token of another query
is 400 ``M_INVALID_PARAM``). Tokens expire after :data:`SESSION_TTL_S`.

Rooms this server is not in are asked for over federation, of a server from
the ``via`` list (:class:`RemoteHierarchy`: bounded calls per page, answers
cached briefly). Local data wins over a remote's (spaces.md §Server behaviour).

Summaries reuse the public room list's chunk builder (``room_handlers/directory.py``)
and add the room_summary.yaml fields (room_version, encryption,
allowed_room_ids) and ``children_state``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from functools import partial
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.errors import forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.versions import get_room_version
from mxserver.federation.client import FederationClient, FederationError
from mxserver.federation.destinations import user_server
from mxserver.federation.responses import SharedCalls
from mxserver.federation.room_access import acl_allows
from mxserver.ids import is_valid_room_id, is_valid_server_name
from mxserver.room_handlers.directory import room_summary_chunk
from mxserver.room_handlers.membership import ServersInRoom
from mxserver.rooms.api import ClientRooms
from mxserver.storage.directory import SUMMARY_STATE_TYPES, PublishedRoom
from mxserver.storage.memberships import MembershipStore

log = Logger()

SPACE_CHILD = "m.space.child"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 10
MAX_MAX_DEPTH = 50
#: how long a pagination token lives, and how many live at once
SESSION_TTL_S = 300.0
MAX_SESSIONS = 1000
#: remote calls one page may make (each via tried counts one)
MAX_REMOTE_CALLS_PER_PAGE = 5
#: servers of a via list tried for one room
MAX_VIAS_PER_ROOM = 3
REMOTE_TIMEOUT_S = 10.0
REMOTE_CACHE_S = 60.0
REMOTE_CACHE_SIZE = 1000
MAX_REMOTE_SIZE = 4 * 1024 * 1024
#: children a space may contribute to a walk (a huge space must not exhaust memory)
MAX_CHILDREN = 1000

_SUMMARY_TYPES = (*SUMMARY_STATE_TYPES, "m.room.encryption")
#: join rules under which anyone may knock, and so see the room (spec: "knockable")
_KNOCKABLE = ("knock", "knock_restricted")
_RESTRICTED = ("restricted", "knock_restricted")


def _content_as_seen(event: Event) -> dict[str, Any]:
    if event.metadata.redacted_by:
        content = redact_pdu(event.get_pdu_json(), event.room_version).get("content", {})
        return content if isinstance(content, dict) else {}
    return dict(event.content)


def valid_via(content: Any) -> list[str] | None:
    """The ``via`` servers of an m.space.child content, or None if the link is not valid."""
    via = content.get("via") if isinstance(content, dict) else None
    if not isinstance(via, list) or not via:
        return None
    servers = [s for s in via if isinstance(s, str) and is_valid_server_name(s)]
    return servers or None


def _valid_order(order: Any) -> str | None:
    # m.space.child: order is at most 50 characters in the range \x20-\x7E.
    if isinstance(order, str) and len(order) <= 50 and all(0x20 <= ord(c) <= 0x7E for c in order):
        return order
    return None


def child_sort_key(child: dict[str, Any]) -> tuple[int, str, int, str]:
    """§Ordering of children within a space, for a stripped m.space.child event."""
    content = child.get("content") or {}
    order = _valid_order(content.get("order"))
    ts = child.get("origin_server_ts")
    ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
    return (0 if order is not None else 1, order or "", ts, str(child.get("state_key")))


def ordered_children(children_state: list[dict[str, Any]], suggested_only: bool) -> list[dict[str, Any]]:
    wanted = [
        c for c in children_state if not suggested_only or (c.get("content") or {}).get("suggested") is True
    ]
    return sorted(wanted, key=child_sort_key)


def join_rule_of(summary: dict[str, Any]) -> str:
    """The room's effective join rule: knock and restricted rules count only in room versions
    that have them (space_hierarchy.yaml: "in a room version that supports those settings")."""
    rule = summary.get("join_rule")
    if not isinstance(rule, str):
        return "public"
    version = summary.get("room_version")
    rv = get_room_version(version) if isinstance(version, str) else None
    if rv is not None:
        if rule == "knock" and not rv.knock_join_rule:
            return "invite"
        if rule == "restricted" and not rv.restricted_join_rule:
            return "invite"
        if rule == "knock_restricted" and not rv.knock_restricted_join_rule:
            return "invite"
    return rule


@attrs.define
class _Entry:
    """A room still to visit in a walk."""

    room_id: str
    depth: int
    via: list[str]
    #: what a remote said about this room as a child of its space, if anything
    remote: dict[str, Any] | None = None


@attrs.define
class _Session:
    user_id: str
    root: str
    suggested_only: bool
    max_depth: int
    expires: float
    #: a stack: the next room to visit is last
    queue: list[_Entry]
    processed: set[str]


class HierarchyHandler:
    """The client walk and the federation answer."""

    def __init__(
        self,
        room_server: ClientRooms,
        memberships: MembershipStore,
        room_servers: ServersInRoom,
        remote: RemoteHierarchy,
        clock: IReactorTime,
        server_name: str,
    ) -> None:
        self.room_server = room_server
        self.memberships = memberships
        self.room_servers = room_servers
        self.remote = remote
        self.clock = clock
        self.server_name = server_name
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    # -- local rooms ------------------------------------------------------------------------

    async def is_local(self, room_id: str) -> bool:
        """Whether this server is in the room (so its state here is current)."""
        if await self.room_server.get_room(room_id) is None:
            return False
        return self.server_name in await self.room_servers.servers_in_room(room_id)

    async def local_summary(self, room_id: str) -> dict[str, Any]:
        """room_summary.yaml plus ``children_state`` for a room this server knows."""
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        # Only the summary's state and the child links: a big room's member events stay unread.
        wanted = [
            (etype, sk)
            for etype, sk in await self.room_server.current_state_ids(room_id)
            if (sk == "" and etype in _SUMMARY_TYPES) or etype == SPACE_CHILD
        ]
        events = await self.room_server.current_state_events(room_id, wanted)
        state: dict[str, dict[str, Any]] = {}
        children: list[dict[str, Any]] = []
        for (etype, state_key), ev in events.items():
            if state_key == "" and etype in _SUMMARY_TYPES:
                state[etype] = _content_as_seen(ev)
            elif etype == SPACE_CHILD and is_valid_room_id(state_key):
                content = _content_as_seen(ev)
                if valid_via(content) is not None:
                    children.append(
                        {
                            "type": SPACE_CHILD,
                            "state_key": state_key,
                            "content": content,
                            "sender": ev.sender,
                            "origin_server_ts": ev.origin_server_ts,
                        }
                    )
        joined = await self.memberships.get_joined_users(room.room_nid)
        entry = room_summary_chunk(PublishedRoom(room_id, state, len(joined)))
        entry.pop("_search", None)
        entry["room_version"] = room.room_version.identifier
        algorithm = state.get("m.room.encryption", {}).get("algorithm")
        if isinstance(algorithm, str):
            entry["encryption"] = algorithm
        join_rules = state.get("m.room.join_rules", {})
        if join_rules.get("join_rule") in _RESTRICTED:
            entry["allowed_room_ids"] = _allowed_room_ids(join_rules)
        entry["children_state"] = sorted(children, key=child_sort_key)
        return entry

    # -- who may see a room -------------------------------------------------------------------

    async def _local_membership(self, room_id: str, user_id: str) -> str | None:
        if await self.room_server.get_room(room_id) is None:
            return None
        return await self.room_server.membership(room_id, user_id)

    async def user_may_see(self, user_id: str, summary: dict[str, Any]) -> bool:
        """The hierarchy response's room conditions (space_hierarchy.yaml ``rooms``) for a user."""
        membership = await self._local_membership(summary["room_id"], user_id)
        if membership in ("join", "invite"):
            return True
        if membership == "ban":
            return False
        if summary.get("world_readable") is True:
            return True
        rule = join_rule_of(summary)
        if rule == "public" or rule in _KNOCKABLE:
            return True
        if rule == "restricted":
            for allowed in summary.get("allowed_room_ids") or []:
                if await self._local_membership(allowed, user_id) == "join":
                    return True
        return False

    async def server_may_see(self, origin: str, summary: dict[str, Any]) -> bool:
        """Whether ``origin`` could feasibly peek or join the (local) room (federation hierarchy)."""
        room_id = summary["room_id"]
        if not await acl_allows(self.room_server, room_id, origin):
            return False
        if summary.get("world_readable") is True:
            return True
        rule = join_rule_of(summary)
        if rule == "public" or rule in _KNOCKABLE:
            return True
        if origin in await self.room_servers.servers_in_room(room_id):
            return True
        members = [
            (etype, sk)
            for etype, sk in await self.room_server.current_state_ids(room_id)
            if etype == "m.room.member" and user_server(sk) == origin
        ]
        events = await self.room_server.current_state_events(room_id, members)
        if any(ev.membership == "invite" for ev in events.values()):
            return True
        if rule == "restricted":
            # The requesting server checks its own users against allowed_room_ids.
            for allowed in summary.get("allowed_room_ids") or []:
                if origin in await self.room_servers.servers_in_room(allowed):
                    return True
        return False

    # -- the federation answer ----------------------------------------------------------------

    async def federation_hierarchy(self, origin: str, room_id: str, suggested_only: bool) -> dict[str, Any]:
        """space_hierarchy.yaml (server-server): the room, its children ``origin`` may see, and the rest."""
        if not await self.is_local(room_id):
            raise not_found("Room does not exist.")
        if not await acl_allows(self.room_server, room_id, origin):
            raise forbidden(f"Server {origin} is denied by the room's server ACL")
        room = await self.local_summary(room_id)
        if not await self.server_may_see(origin, room):
            raise not_found("Room does not exist.")
        children: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child in ordered_children(room["children_state"], suggested_only)[:MAX_CHILDREN]:
            child_id = child["state_key"]
            if child_id == room_id or not await self.is_local(child_id):
                continue  # rooms we cannot tell about are left out (space_hierarchy.yaml)
            summary = await self.local_summary(child_id)
            if await self.server_may_see(origin, summary):
                children.append(summary)
            else:
                inaccessible.append(child_id)
        return {"room": room, "children": children, "inaccessible_children": inaccessible}

    # -- the client walk ------------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _take_session(self, token: str, user_id: str, root: str, suggested_only: bool, max_depth: int) -> _Session:
        now = self._now()
        session = self._sessions.get(token)
        if session is None or session.expires <= now:
            raise invalid_param("Unknown or expired 'from' token")
        if (session.user_id, session.root) != (user_id, root):
            raise invalid_param("The 'from' token belongs to another request")
        if (session.suggested_only, session.max_depth) != (suggested_only, max_depth):
            raise invalid_param("suggested_only and max_depth cannot change on paginated requests")
        # A copy: the same token may be sent again (a retry) and must give the same page.
        return attrs.evolve(
            session, queue=[attrs.evolve(e, via=list(e.via)) for e in session.queue], processed=set(session.processed)
        )

    def _store_session(self, session: _Session) -> str:
        now = self._now()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(18)
        session.expires = now + SESSION_TTL_S
        self._sessions[token] = session
        return token

    async def client_hierarchy(
        self,
        user_id: str,
        room_id: str,
        *,
        suggested_only: bool = False,
        limit: int | None = None,
        max_depth: int | None = None,
        from_token: str | None = None,
    ) -> dict[str, Any]:
        """space_hierarchy.yaml (client-server): one page of the walk from ``room_id``."""
        if not is_valid_room_id(room_id):
            raise invalid_param(f"Invalid room ID {room_id!r}")
        if limit is not None and limit <= 0:
            raise invalid_param("'limit' must be an integer greater than zero")
        if max_depth is not None and max_depth < 0:
            raise invalid_param("'max_depth' must be a non-negative integer")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        depth_cap = min(DEFAULT_MAX_DEPTH if max_depth is None else max_depth, MAX_MAX_DEPTH)
        if from_token is not None:
            session = self._take_session(from_token, user_id, room_id, suggested_only, depth_cap)
            rooms: list[dict[str, Any]] = []
        else:
            entry = _Entry(room_id, 0, _root_via(room_id))
            found = await self._room_for_user(user_id, entry, suggested_only, None)
            if found is None:
                raise forbidden("You are not allowed to view this room.")
            session = _Session(user_id, room_id, suggested_only, depth_cap, 0.0, [], {room_id})
            rooms = [self._visit(session, entry, found)]
        await self._walk(session, rooms, limit)
        body: dict[str, Any] = {"rooms": rooms}
        if session.queue:
            body["next_batch"] = self._store_session(session)
        return body

    def _visit(self, session: _Session, entry: _Entry, found: _Found) -> dict[str, Any]:
        """Take a visible room into the page and queue its children (if the depth allows)."""
        if entry.depth < session.max_depth:
            children = ordered_children(found.summary.get("children_state") or [], session.suggested_only)
            for child in reversed(children[:MAX_CHILDREN]):
                child_id = child["state_key"]
                if child_id in session.processed or child_id in found.inaccessible:
                    continue
                via = valid_via(child.get("content")) or []
                session.queue.append(_Entry(child_id, entry.depth + 1, via, found.children.get(child_id)))
        return found.summary

    async def _walk(self, session: _Session, rooms: list[dict[str, Any]], limit: int) -> None:
        """Fill the page ``rooms`` up to ``limit`` from the session's queue."""
        budget = [MAX_REMOTE_CALLS_PER_PAGE]
        while session.queue and len(rooms) < limit:
            entry = session.queue[-1]
            if entry.room_id in session.processed:
                session.queue.pop()
                continue
            found = await self._room_for_user(session.user_id, entry, session.suggested_only, budget)
            if found is _OUT_OF_BUDGET:
                if rooms:
                    break  # the next page goes on from here with a fresh budget
                budget[0] = 1
                found = await self._room_for_user(session.user_id, entry, session.suggested_only, budget)
            session.queue.pop()
            session.processed.add(entry.room_id)
            if isinstance(found, _Found):
                rooms.append(self._visit(session, entry, found))

    async def _room_for_user(
        self, user_id: str, entry: _Entry, suggested_only: bool, budget: list[int] | None
    ) -> Any:
        """A :class:`_Found` if the user may see the room, else None; :data:`_OUT_OF_BUDGET`
        when only a remote call could tell and none is left this page."""
        children: dict[str, dict[str, Any]] = {}
        inaccessible: frozenset[str] = frozenset()
        if await self.is_local(entry.room_id):
            summary = await self.local_summary(entry.room_id)
        else:
            given = entry.remote
            if given is not None and given.get("room_type") == "m.space" and "children_state" not in given:
                given = None  # a space must be asked for its children
            if given is None:
                if budget is not None and budget[0] <= 0:
                    return _OUT_OF_BUDGET
                answer = await self.remote.fetch(entry.room_id, entry.via, suggested_only, budget)
                if answer is None or answer is _OUT_OF_BUDGET:
                    return answer
                given = answer["room"]
                children = {c["room_id"]: c for c in answer["children"]}
                inaccessible = frozenset(answer["inaccessible_children"])
            summary = {"children_state": [], **given}
        if not await self.user_may_see(user_id, summary):
            return None
        return _Found(summary, children, inaccessible)


@attrs.frozen
class _Found:
    """A room the user may see: its summary, and what a remote said about its children."""

    summary: dict[str, Any]
    children: dict[str, dict[str, Any]]
    inaccessible: frozenset[str]


_OUT_OF_BUDGET: Any = object()


def _root_via(room_id: str) -> list[str]:
    # A remote root has no via list: the room ID's server part (before room v12) is the best guess.
    _, sep, server = room_id.partition(":")
    return [server] if sep and is_valid_server_name(server) else []


def _allowed_room_ids(join_rules: dict[str, Any]) -> list[str]:
    allow = join_rules.get("allow")
    return [
        c["room_id"]
        for c in (allow if isinstance(allow, list) else [])
        if isinstance(c, dict) and c.get("type") == "m.room_membership" and is_valid_room_id(c.get("room_id"))
    ]


# -- asking other servers -------------------------------------------------------------------------

_STR_FIELDS = ("name", "topic", "canonical_alias", "avatar_url", "join_rule", "room_type", "room_version", "encryption")
_BOOL_FIELDS = ("world_readable", "guest_can_join")


def clean_summary(raw: Any) -> dict[str, Any] | None:
    """A remote's room summary, reduced to the fields we know with the right types (None if unusable)."""
    if not isinstance(raw, dict) or not is_valid_room_id(raw.get("room_id")):
        return None
    out: dict[str, Any] = {"room_id": raw["room_id"]}
    for key in _STR_FIELDS:
        if isinstance(raw.get(key), str) and len(raw[key]) <= 4096:
            out[key] = raw[key]
    for key in _BOOL_FIELDS:
        out[key] = raw.get(key) is True
    members = raw.get("num_joined_members")
    out["num_joined_members"] = members if isinstance(members, int) and not isinstance(members, bool) else 0
    allowed = raw.get("allowed_room_ids")
    if isinstance(allowed, list):
        out["allowed_room_ids"] = [r for r in allowed if is_valid_room_id(r)]
    if "children_state" in raw:
        state = raw["children_state"]
        out["children_state"] = [
            {k: c[k] for k in ("type", "state_key", "content", "sender", "origin_server_ts") if k in c}
            for c in (state if isinstance(state, list) else [])[:MAX_CHILDREN]
            if isinstance(c, dict)
            and c.get("type") == SPACE_CHILD
            and is_valid_room_id(c.get("state_key"))
            and valid_via(c.get("content")) is not None
        ]
    return out


def _clean_answer(room_id: str, raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    room = clean_summary(raw.get("room"))
    if room is None or room["room_id"] != room_id:
        return None
    room.setdefault("children_state", [])
    children = raw.get("children")
    inaccessible = raw.get("inaccessible_children")
    return {
        "room": room,
        "children": [c for c in map(clean_summary, children if isinstance(children, list) else []) if c is not None],
        "inaccessible_children": [r for r in (inaccessible if isinstance(inaccessible, list) else []) if isinstance(r, str)],
    }


class RemoteHierarchy:
    """``GET /_matrix/federation/v1/hierarchy/{roomId}`` on other servers, cached briefly
    (space_hierarchy.yaml: "Responses to this endpoint should be cached for a period of time")."""

    def __init__(self, federation_client: FederationClient, clock: IReactorTime, server_name: str) -> None:
        self.federation_client = federation_client
        self.clock = clock
        self.server_name = server_name
        self._cache: OrderedDict[tuple[str, bool], tuple[float, dict[str, Any] | None]] = OrderedDict()
        #: (server, room ID) -> until when that server is not asked again (it failed or did not know)
        self._failed: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._fetching = SharedCalls()

    async def fetch(self, room_id: str, via: list[str], suggested_only: bool, budget: list[int] | None = None) -> Any:
        """The remote answer for ``room_id`` from the first ``via`` server that gives one (None: none did).

        ``budget`` (a one-item list) counts the calls left; each server asked takes one. When it
        runs out before every server was asked, :data:`_OUT_OF_BUDGET` (the walk retries later).
        """
        key = (room_id, suggested_only)
        now = self.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        servers = [s for s in dict.fromkeys(via) if s != self.server_name][:MAX_VIAS_PER_ROOM]
        for server in servers:
            failed_until = self._failed.get((server, room_id))
            if failed_until is not None and failed_until > now:
                continue  # it could not tell a moment ago
            if budget is not None:
                if budget[0] <= 0:
                    return _OUT_OF_BUDGET
                budget[0] -= 1
            answer = await self._fetching.run((server, *key), partial(self._ask, server, room_id, suggested_only))
            if answer is not None:
                self._remember(key, answer)
                return answer
            self._failed[(server, room_id)] = self.clock.seconds() + REMOTE_CACHE_S
            self._failed.move_to_end((server, room_id))
            while len(self._failed) > REMOTE_CACHE_SIZE:
                self._failed.popitem(last=False)
        return None

    async def _ask(self, server: str, room_id: str, suggested_only: bool) -> dict[str, Any] | None:
        path = f"/_matrix/federation/v1/hierarchy/{quote(room_id, safe='')}"
        try:
            raw = await self.federation_client.get_json(
                server,
                path,
                {"suggested_only": "true" if suggested_only else "false"},
                timeout=REMOTE_TIMEOUT_S,
                max_size=MAX_REMOTE_SIZE,
            )
        except FederationError as e:
            log.info("hierarchy of {room_id} from {server} failed: {error}", room_id=room_id, server=server, error=e)
            return None
        except Exception as e:  # a remote's failure never fails our client's walk
            log.info("hierarchy of {room_id} from {server} failed: {error!r}", room_id=room_id, server=server, error=e)
            return None
        answer = _clean_answer(room_id, raw)
        if answer is None:
            log.info("hierarchy of {room_id} from {server}: malformed answer", room_id=room_id, server=server)
        return answer

    def _remember(self, key: tuple[str, bool], answer: dict[str, Any] | None) -> None:
        self._cache[key] = (self.clock.seconds() + REMOTE_CACHE_S, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > REMOTE_CACHE_SIZE:
            self._cache.popitem(last=False)
