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
* anything in ``routes`` (exact path as bytes -> ``(code, body)`` or a callable taking the
  request, as for :class:`~tests.harness.network.ScriptedServer`), which wins over the above.

Every request is recorded in ``requests``. Requests *to* the server under test are signed
as the remote with :meth:`FakeRemote.auth_header`; :class:`InboundTestCase` is the test case
for a homeserver federating with such remotes.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import treq
from twisted.internet import reactor
from twisted.web import server

from mxserver.api.http import render_json
from mxserver.crypto.keys import generate_signing_key, key_id
from mxserver.crypto.signing import sign_json
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.rooms.auth import auth_types_for_event
from mxserver.rooms.local_events import EventSpec
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.storage.events import StoredEventInfo
from tests.harness.client import TestUser
from tests.harness.network import ScriptedServer, key_response, listen_tls, make_cert, temp_dir
from tests.harness.server import HomeserverTestCase

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


class FakeRemote(ScriptedServer):
    """A remote homeserver (see the module docstring): serves its key and rooms, and signs requests as itself."""

    def __init__(self, key_id: str = "fake1") -> None:
        super().__init__()
        self.signing_key = generate_signing_key(key_id)
        self.server_name = ""
        self.rooms: dict[str, FakeRoom] = {}
        #: paths (prefixes) answered 404, to test a remote that does not serve something
        self.refuse: set[str] = set()
        self.port: Any = None
        #: bodies of the transactions sent to us
        self.received: list[dict[str, Any]] = []

    # The names the inbound tests use for the same things.
    @property
    def name(self) -> str:
        return self.server_name

    @property
    def key(self) -> Any:
        return self.signing_key

    def listen(self, test: Any, cert: tuple[str, str] | str) -> str:
        """Serve on a random loopback TLS port (stopped by ``test``'s cleanup, if given); the server name.

        ``cert`` is ``(cert path, key path)`` or a directory to make a self-signed one in.
        """
        cert_path, key_path = make_cert(cert) if isinstance(cert, str) else cert
        self.port = listen_tls(server.Site(self), cert_path, key_path)
        if test is not None:
            test.addCleanup(self.port.stopListening)
        self.server_name = f"127.0.0.1:{self.port.getHost().port}"
        return self.server_name

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def new_room(self, creator: str = "bob", version: str = "12") -> FakeRoom:
        room = FakeRoom(self, self.user(creator), version)
        self.rooms[room.room_id] = room
        return room

    def count(self, prefix: str) -> int:
        """How many requests had a path starting with ``prefix``."""
        return sum(1 for r in self.requests if r.path.decode().startswith(prefix))

    def auth_header(
        self, method: str, uri: str, destination: str, content: Any = None, key: Any = None, origin: str | None = None
    ) -> str:
        """The X-Matrix ``Authorization`` of a request from this server (or ``origin``, signed with ``key``)."""
        origin = origin or self.server_name
        signing_key = key or self.signing_key
        signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
        if content is not None:
            signed["content"] = content
        sign_json(signed, origin, signing_key)
        sig = signed["signatures"][origin][key_id(signing_key)]
        return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id(signing_key)}",sig="{sig}"'

    # -- serving -----------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        recorded = self.record(request)
        parts = urlsplit(request.uri.decode())
        path = parts.path
        route = self.routes.get(request.path)
        if route is not None:
            return self.answer(request, route)
        if any(path.startswith(p) for p in self.refuse):
            return render_json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "refused (fake)"})
        try:
            code, body = self._answer(request, path, parse_qs(parts.query), recorded.body)
        except KeyError:
            code, body = 404, {"errcode": "M_NOT_FOUND", "error": "not found (fake)"}
        return render_json(request, code, body)

    def _answer(self, request: Any, path: str, args: dict[str, list[str]], content: bytes) -> tuple[int, Any]:
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
            body = json.loads(content or b"{}")
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
                txn = json.loads(content or b"{}")
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


LOOPBACK = {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}


class InboundTestCase(HomeserverTestCase):
    """A homeserver "test" federating on loopback with fake remotes."""

    config_overrides = {"federation": LOOPBACK}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.cert = make_cert(temp_dir(self))
        self.remote = self.new_remote()
        self.alice: TestUser = await self.register("alice")
        self._ts = int(reactor.seconds() * 1000) - 60_000

    def new_remote(self, key_version: str = "r1") -> FakeRemote:
        """Another remote server, listening until the test ends."""
        remote = FakeRemote(key_version)
        remote.listen(self, self.cert)
        return remote

    # -- requests to the server under test, signed as a remote -------------------------------

    async def fed(
        self, method: str, path: str, body: Any = None, remote: FakeRemote | None = None, *, key: Any = None,
        origin: str | None = None, raw: bytes | None = None,
    ) -> tuple[int, Any]:
        remote = remote or self.remote
        header = remote.auth_header(method, path, self.hs.server_name, body, key=key, origin=origin)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = await treq.request(
            method, self.base_url + path, data=data, headers={"Authorization": [header]}, pool=self.pool,
            reactor=reactor,
        )
        content = await resp.content()
        try:
            return resp.code, json.loads(content)
        except ValueError:
            return resp.code, content

    async def send_txn(self, txn_id: str, pdus: Sequence[Any] = (), edus: Sequence[Any] = (),
                       remote: FakeRemote | None = None) -> tuple[int, Any]:
        remote = remote or self.remote
        body = {"origin": remote.name, "origin_server_ts": self._now(), "pdus": list(pdus), "edus": list(edus)}
        return await self.fed("PUT", f"/_matrix/federation/v1/send/{txn_id}", body, remote)

    def _now(self) -> int:
        return int(reactor.seconds() * 1000)

    # -- rooms and remote events ------------------------------------------------------------------

    async def room(self, version: str = "12", visibility: str = "shared", extra: Sequence[EventSpec] = ()) -> str:
        rv = get_room_version(version)
        assert rv is not None
        user = self.alice.user_id
        initial = [
            EventSpec("m.room.member", {"membership": "join"}, user, user),
            EventSpec("m.room.power_levels", default_power_levels_content(rv, user), "", user),
            EventSpec("m.room.join_rules", {"join_rule": "public"}, "", user),
            EventSpec("m.room.history_visibility", {"history_visibility": visibility}, "", user),
            *extra,
        ]
        room_id, _ = await self.hs.room_server.create_room(user, rv, {}, initial)
        return room_id

    async def remote_event(
        self,
        room_id: str,
        etype: str,
        content: dict[str, Any],
        *,
        sender: str | None = None,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
        auth_ids: Sequence[str] | None = None,
        depth: int | None = None,
        remote: FakeRemote | None = None,
        state: dict[Any, str] | None = None,
        redacts: str | None = None,
    ) -> Event:
        """An event built and signed by ``remote`` on ``prev`` (default: the room's forward
        extremities), with the auth events picked from ``state`` (default: the current state)."""
        remote = remote or self.remote
        sender = sender or remote.user("bob")
        rs = self.hs.room_server
        head = await rs.get_head(room_id)
        rv = head.room.room_version
        prev_ids = list(head.extremities if prev is None else prev)
        if auth_ids is None:
            st = dict(head.state if state is None else state)
            wanted = auth_types_for_event(rv, etype, sender, state_key, content)
            auth_ids = [st[k] for k in sorted(wanted) if k in st]
        if depth is None:
            known = await self.hs.event_store.get_events(prev_ids)
            depth = max((e.depth for e in known.values()), default=head.depth) + 1
        self._ts += 1
        return build_event(
            rv,
            type=etype,
            sender=sender,
            content=content,
            room_id=room_id,
            state_key=state_key,
            prev_event_ids=prev_ids,
            auth_event_ids=list(auth_ids),
            depth=depth,
            origin_server_ts=self._ts,
            server_name=remote.name,
            signing_key=remote.key,
            redacts=redacts,
        )

    async def join_remote_user(self, room_id: str, remote: FakeRemote | None = None, localpart: str = "bob") -> Event:
        remote = remote or self.remote
        user = remote.user(localpart)
        join = await self.remote_event(room_id, "m.room.member", {"membership": "join"}, sender=user,
                                       state_key=user, remote=remote)
        result = await self.hs.room_server.receive_event(join)
        self.assertTrue(result.accepted, result)
        return join

    async def local_message(self, room_id: str, body: str = "hi") -> Event:
        return await self.hs.room_server.send(
            room_id, EventSpec("m.room.message", {"msgtype": "m.text", "body": body}, None, self.alice.user_id)
        )

    async def event_info(self, event_id: str) -> StoredEventInfo | None:
        """Where the server stored the event (timeline position, verdicts), or None if it did not."""
        return await self.hs.event_store.get_event_info(event_id)
