"""Test support for the inbound federation API: fake remote servers that sign requests and events.

A :class:`FakeRemote` is a server named ``127.0.0.1:PORT`` with its own signing key,
serving that key (and whatever routes a test scripts) over TLS on loopback, so the
homeserver under test fetches its keys and events for real. Requests *to* the
homeserver under test are signed with X-Matrix as the remote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import treq
from twisted.internet import reactor
from twisted.web import server

from mxserver.crypto.keys import generate_signing_key, key_id
from mxserver.crypto.signing import sign_json
from mxserver.events.builder import build_event
from mxserver.events.model import Event
from mxserver.events.versions import get_room_version
from mxserver.rooms.auth import auth_types_for_event
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import EventSpec
from tests.federation_helpers import ScriptedServer, key_response, listen_tls, make_cert, temp_dir
from tests.utils import HomeserverTestCase, TestUser

LOOPBACK = {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}
DAY_MS = 24 * 3600 * 1000


class FakeRemote:
    """A remote homeserver: a key, a scripted HTTPS server, and helpers to sign as it."""

    def __init__(self, test: Any, cert: tuple[str, str], key_version: str = "r1") -> None:
        self.key = generate_signing_key(key_version)
        self.scripted = ScriptedServer()
        site = server.Site(self.scripted)
        self.port = listen_tls(site, cert[0], cert[1])
        test.addCleanup(self.port.stopListening)
        self.name = f"127.0.0.1:{self.port.getHost().port}"
        now = int(reactor.seconds() * 1000)
        self.scripted.routes[b"/_matrix/key/v2/server"] = (200, key_response(self.name, self.key, now + DAY_MS))

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.name}"

    def auth_header(self, method: str, uri: str, destination: str, content: Any = None, key: Any = None,
                    origin: str | None = None) -> str:
        origin = origin or self.name
        signing_key = key or self.key
        signed: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
        if content is not None:
            signed["content"] = content
        sign_json(signed, origin, signing_key)
        sig = signed["signatures"][origin][key_id(signing_key)]
        return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id(signing_key)}",sig="{sig}"'


class InboundTestCase(HomeserverTestCase):
    """A homeserver "test" federating on loopback with fake remotes."""

    config_overrides = {"federation": LOOPBACK}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.cert = make_cert(temp_dir(self))
        self.remote = FakeRemote(self, self.cert)
        self.alice: TestUser = await self.register("alice")
        self._ts = int(reactor.seconds() * 1000) - 60_000

    def new_remote(self) -> FakeRemote:
        return FakeRemote(self, self.cert)

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

    async def row(self, event_id: str) -> tuple[Any, ...] | None:
        return await self.hs.db.select_one(
            "row", "SELECT stream_ordering, rejected_reason, soft_failed, outlier, json FROM events WHERE event_id = ?",
            event_id,
        )
