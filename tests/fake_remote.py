"""A fake remote homeserver for tests and benchmarks: its own signing key, rooms it builds and
signs itself, and the federation read endpoints a server calls back on.

:class:`FakeRemote` listens with TLS on 127.0.0.1 (server name ``127.0.0.1:<port>``, so it
is contacted directly) and serves:

* ``GET /_matrix/key/v2/server`` -- its key, self-signed (server-server-api §Retrieving server keys);
* ``GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`` -- the ``v`` events and their ancestors,
  newest first, from a :class:`FakeRoom`;
* ``GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`` -- the state before an event;
* ``GET /_matrix/federation/v1/state/{roomId}?event_id=`` -- the same as full PDUs;
* ``GET /_matrix/federation/v1/event/{eventId}``;
* ``POST /_matrix/federation/v1/get_missing_events/{roomId}``;
* ``PUT /_matrix/federation/v1/send/{txnId}`` -- accepted (200), its PDUs and EDUs kept in ``received``;
* anything in ``routes`` (exact path -> ``(code, body)`` or a callable taking the request).

Every request is recorded in ``requests`` as ``(method, path, query args)``.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet import reactor
from twisted.web import resource, server

from mxserver.api.http import render_json
from mxserver.crypto.keys import generate_signing_key
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.rooms.auth import auth_types_for_event
from mxserver.rooms.power_levels import default_power_levels_content
from tests.federation_helpers import key_response, listen_tls, make_cert

FED = "/_matrix/federation/v1"


class FakeRoom:
    """A room's DAG built and signed by a fake server: a single chain of events."""

    def __init__(
        self, remote: FakeRemote, creator: str, version: str = "12", ts: int = 1_700_000_000_000, *, create: bool = True
    ) -> None:
        rv = get_room_version(version)
        assert rv is not None
        self.remote = remote
        self.rv: RoomVersion = rv
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.order: list[str] = []
        self.state: dict[tuple[str, str], str] = {}
        self.state_before: dict[str, dict[tuple[str, str], str]] = {}
        self._ts = ts
        self.room_id = ""
        if create:
            self._create()

    @classmethod
    def joined(
        cls, remote: FakeRemote, version: str, room_id: str, pdus: Sequence[dict[str, Any]], join: Event, ts: int
    ) -> FakeRoom:
        """A room of another server that ``remote`` joined: what a send_join answer gave (the state
        before the join and its auth chain) and the join event, the latest event."""
        room = cls(remote, join.sender, version, ts, create=False)
        room.room_id = room_id
        for pdu in pdus:
            ev = Event(pdu, room.rv)
            room.events[ev.event_id] = ev
            if ev.is_state():
                room.state[ev.state_tuple()] = ev.event_id
        room.add_event(join)
        remote.rooms[room_id] = room
        return room

    def _create(self) -> None:
        rv, creator, remote = self.rv, self.creator, self.remote
        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = creator
        rand = "".join(secrets.choice(string.ascii_letters) for _ in range(12))
        create = self._build("m.room.create", content, "", creator, None if rv.hydra else f"!{rand}:{remote.server_name}")
        self.room_id = create.room_id
        self.add_event(create)
        self.add("m.room.member", {"membership": "join"}, creator)
        self.add("m.room.power_levels", default_power_levels_content(rv, creator), "")
        self.add("m.room.join_rules", {"join_rule": "public"}, "")
        self.add("m.room.history_visibility", {"history_visibility": "shared"}, "")

    @property
    def latest(self) -> Event:
        return self.events[self.order[-1]]

    def _build(
        self, etype: str, content: dict[str, Any], state_key: str | None, sender: str, room_id: str | None,
        server_name: str | None = None, signing_key: Any = None, redacts: str | None = None,
    ) -> Event:
        self._ts += 1
        wanted = auth_types_for_event(self.rv, etype, sender, state_key, content)
        latest = self.events[self.order[-1]] if self.order else None
        return build_event(
            self.rv,
            type=etype,
            sender=sender,
            content=content,
            room_id=room_id,
            state_key=state_key,
            prev_event_ids=[latest.event_id] if latest else [],
            auth_event_ids=[self.state[k] for k in sorted(wanted) if k in self.state],
            depth=(latest.depth + 1) if latest else 1,
            origin_server_ts=self._ts,
            server_name=server_name or self.remote.server_name,
            signing_key=signing_key or self.remote.signing_key,
            redacts=redacts,
        )

    def build(
        self, etype: str, content: dict[str, Any], state_key: str | None = None, sender: str | None = None,
        *, server_name: str | None = None, signing_key: Any = None, redacts: str | None = None,
    ) -> Event:
        """An event on the latest one (not added: see :meth:`add_event`), signed by the fake
        server unless ``server_name``/``signing_key`` say otherwise."""
        return self._build(
            etype, content, state_key, sender or self.creator, self.room_id, server_name, signing_key, redacts
        )

    def add(self, etype: str, content: dict[str, Any], state_key: str | None = None, sender: str | None = None) -> Event:
        event = self.build(etype, content, state_key, sender)
        self.add_event(event)
        return event

    def add_event(self, event: Event) -> None:
        self.events[event.event_id] = event
        self.order.append(event.event_id)
        self.state_before[event.event_id] = dict(self.state)
        if event.is_state():
            self.state[event.state_tuple()] = event.event_id

    def messages(self, n: int, sender: str | None = None, prefix: str = "message") -> list[Event]:
        return [self.add("m.room.message", {"msgtype": "m.text", "body": f"{prefix} {i}"}, None, sender) for i in range(n)]

    def auth_chain(self, event_ids: Sequence[str]) -> list[str]:
        seen: dict[str, None] = {}
        todo = list(event_ids)
        while todo:
            ev = self.events.get(todo.pop())
            if ev is None:
                continue
            for a in ev.auth_event_ids:
                if a not in seen:
                    seen[a] = None
                    todo.append(a)
        return list(seen)

    def missing_events(self, earliest: Sequence[str], latest: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """get_missing_events: ancestors of ``latest`` (not those events) down to ``earliest``, oldest first."""
        stop = set(earliest)
        seen = set(latest)
        out: list[str] = []
        frontier = [p for e in latest if e in self.events for p in self.events[e].prev_event_ids]
        while frontier and len(out) < limit:
            event_id = frontier.pop(0)
            if event_id in seen or event_id in stop or event_id not in self.events:
                continue
            seen.add(event_id)
            out.append(event_id)
            frontier.extend(self.events[event_id].prev_event_ids)
        out.sort(key=lambda e: self.events[e].depth)
        return [self.events[e].get_pdu_json() for e in out]

    def backfill(self, v: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """The ``v`` events and their ancestors, newest first, at most ``limit``."""
        out: list[str] = []
        frontier = [e for e in v if e in self.events]
        seen = set(frontier)
        while frontier and len(out) < limit:
            frontier.sort(key=lambda e: self.events[e].depth, reverse=True)
            event_id = frontier.pop(0)
            out.append(event_id)
            for p in self.events[event_id].prev_event_ids:
                if p not in seen:
                    seen.add(p)
                    frontier.append(p)
        return [self.events[e].get_pdu_json() for e in out]


class FakeRemote(resource.Resource):
    """The fake server's HTTPS resource (see the module docstring)."""

    isLeaf = True

    def __init__(self, key_id: str = "fake1") -> None:
        super().__init__()
        self.signing_key = generate_signing_key(key_id)
        self.server_name = ""
        self.rooms: dict[str, FakeRoom] = {}
        self.routes: dict[str, Any] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        #: paths (prefixes) answered 404, to test a remote that does not serve something
        self.refuse: set[str] = set()
        self.port: Any = None
        #: bodies of the transactions sent to us
        self.received: list[dict[str, Any]] = []

    def listen(self, cert_dir: str) -> str:
        cert_path, key_path = make_cert(cert_dir)
        self.port = listen_tls(server.Site(self), cert_path, key_path)
        self.server_name = f"127.0.0.1:{self.port.getHost().port}"
        return self.server_name

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def new_room(self, creator: str = "bob", version: str = "12") -> FakeRoom:
        room = FakeRoom(self, self.user(creator), version)
        self.rooms[room.room_id] = room
        return room

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r[1].startswith(prefix))

    # -- serving -----------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        raw = request.uri.decode()
        parts = urlsplit(raw)
        path = parts.path
        args = parse_qs(parts.query)
        self.requests.append((request.method.decode(), path, args))
        if any(path.startswith(p) for p in self.refuse):
            return render_json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "refused (fake)"})
        route = self.routes.get(path)
        if route is not None:
            code, body = route(request) if callable(route) else route
            return render_json(request, code, body)
        try:
            code, body = self._answer(request, path, args)
        except KeyError:
            code, body = 404, {"errcode": "M_NOT_FOUND", "error": "not found (fake)"}
        return render_json(request, code, body)

    def _answer(self, request: Any, path: str, args: dict[str, list[str]]) -> tuple[int, Any]:
        segments = [unquote(s) for s in path.split("/")]
        if path == "/_matrix/key/v2/server":
            valid = int((reactor.seconds() + 3600) * 1000)
            return 200, key_response(self.server_name, self.signing_key, valid)
        if path.startswith(FED + "/backfill/"):
            room = self.rooms[segments[5]]
            limit = int(args.get("limit", ["10"])[0])
            return 200, self._txn(room.backfill(args.get("v", []), limit))
        if path.startswith(FED + "/get_missing_events/"):
            room = self.rooms[segments[5]]
            body = json.loads(request.content.read() or b"{}")
            found = room.missing_events(body.get("earliest_events", []), body.get("latest_events", []),
                                        int(body.get("limit", 10)))
            return 200, {"events": found}
        if path.startswith(FED + "/state_ids/") or path.startswith(FED + "/state/"):
            room = self.rooms[segments[5]]
            event_id = args["event_id"][0]
            state = list(room.state_before[event_id].values())
            chain = room.auth_chain(state)
            if "/state_ids/" in path:
                return 200, {"pdu_ids": state, "auth_chain_ids": chain}
            return 200, {
                "pdus": [room.events[e].get_pdu_json() for e in state],
                "auth_chain": [room.events[e].get_pdu_json() for e in chain],
            }
        if path.startswith(FED + "/send/") and request.method == b"PUT":
            try:
                txn = json.loads(request.content.read() or b"{}")
            except ValueError:
                return 400, {"errcode": "M_NOT_JSON", "error": "not JSON"}
            self.received.append(txn)
            return 200, {"pdus": {p.get("event_id", ""): {} for p in txn.get("pdus", []) if isinstance(p, dict)}}
        if path.startswith(FED + "/event/"):
            event_id = segments[5]
            for room in self.rooms.values():
                if event_id in room.events:
                    return 200, self._txn([room.events[event_id].get_pdu_json()])
            raise KeyError(event_id)
        raise KeyError(path)

    def _txn(self, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        return {"origin": self.server_name, "origin_server_ts": int(reactor.seconds() * 1000), "pdus": pdus}
