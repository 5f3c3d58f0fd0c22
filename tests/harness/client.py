"""A Matrix client for tests: HTTP verbs and the room actions tests repeat, all over the client API.

:class:`ClientHttp` talks to one server's client listener (``base_url``) the
way a client does; every test server in the harness (the single
:class:`~tests.harness.server.HomeserverTestCase` and each server of a
:class:`~tests.harness.two_servers.TwoServerTestCase`) is one. The room
actions (``create_room``, ``join``, ``send_message``, ...) go through the real
endpoints, so a test exercises what a client would, and each checks the
request succeeded (use the verbs directly to test a refusal).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import attrs
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

C = "/_matrix/client/v3"

T = TypeVar("T")

#: seconds :meth:`ClientHttp.sync_until` long-polls before it fails the test
SYNC_UNTIL_TIMEOUT = 30.0

_txn = itertools.count()


def q(segment: str) -> str:
    """One path segment, percent-encoded (room IDs, aliases and user IDs hold ``!#@:/$+``)."""
    return quote(segment, safe="")


@attrs.frozen
class TestUser:
    user_id: str
    access_token: str
    device_id: str
    password: str


def _user_id(user: TestUser | str) -> str:
    return user if isinstance(user, str) else user.user_id


class RequestFailed(AssertionError):
    """A room action's request did not succeed; trial reports it as a test failure."""


def _ok(code: int, body: Any, what: str) -> Any:
    if code != 200:
        raise RequestFailed(f"{what}: {code} {body!r}")
    return body


class ClientHttp:
    """A client of the server at ``self.base_url`` (requests over ``self.pool``)."""

    base_url: str
    pool: HTTPConnectionPool
    last_headers: Any = None

    # -- HTTP ---------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | TestUser | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON or raw bytes)`` of a request to the server at ``base_url``."""
        hdrs = dict(headers or {})
        if isinstance(token, TestUser):
            token = token.access_token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        resp = await treq.request(
            method,
            self.base_url + path,
            data=data,
            headers={k: [v] for k, v in hdrs.items()},
            pool=self.pool,
            reactor=reactor,
        )
        content = await resp.content()
        self.last_headers = resp.headers
        ctype = resp.headers.getRawHeaders("content-type", [""])[0]
        if ctype.startswith("application/json"):
            return resp.code, json.loads(content)
        return resp.code, content

    async def get(self, path: str, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("GET", path, token=token)

    async def post(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("POST", path, body if body is not None else {}, token=token)

    async def put(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("PUT", path, body if body is not None else {}, token=token)

    async def delete(self, path: str, body: Any = None, token: str | TestUser | None = None) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, token=token)

    # -- accounts -----------------------------------------------------------------------------

    async def register(self, localpart: str, password: str = "correct horse", device_id: str | None = None) -> TestUser:
        """Register through the client API (``m.login.dummy``) and return the session."""
        body: dict[str, Any] = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        if device_id:
            body["device_id"] = device_id
        resp = _ok(*await self.post(f"{C}/register", body), f"register {localpart}")
        return TestUser(resp["user_id"], resp["access_token"], resp["device_id"], password)

    async def set_profile(self, user: TestUser, displayname: str | None = None, avatar_url: str | None = None) -> None:
        """Set the user's display name and/or avatar (each field given)."""
        base = f"{C}/profile/{q(user.user_id)}"
        if displayname is not None:
            _ok(*await self.put(f"{base}/displayname", {"displayname": displayname}, user), "set displayname")
        if avatar_url is not None:
            _ok(*await self.put(f"{base}/avatar_url", {"avatar_url": avatar_url}, user), "set avatar_url")

    async def sync(self, user: TestUser, since: str | None = None, timeout_ms: int = 0, **params: Any) -> dict[str, Any]:
        """One ``/sync`` of ``user`` (no long poll unless ``timeout_ms``)."""
        query = {"timeout": timeout_ms, **({"since": since} if since else {}), **params}
        return _ok(*await self.get(f"{C}/sync?{urlencode(query)}", user), "sync")

    async def sync_until(
        self,
        user: TestUser,
        found: Callable[[dict[str, Any]], T],
        what: str,
        since: str | None = None,
        timeout: float = SYNC_UNTIL_TIMEOUT,
        **params: Any,
    ) -> T:
        """Long-poll ``/sync`` as a client would until ``found(response)`` is truthy; that answer.

        Each response is handed to ``found`` once, then the next ``/sync`` starts from its
        ``next_batch`` (``found`` accumulates across responses itself where it needs to: to-device
        messages, for one, come only once). Without ``since`` the first ``/sync`` is an initial one.
        The server holds each request until something is new for ``user``: no polling interval.
        Fails the test (AssertionError naming ``what``) after ``timeout`` seconds.
        """
        deadline = reactor.seconds() + timeout
        while True:
            remaining_ms = int((deadline - reactor.seconds()) * 1000)
            sync = await self.sync(user, since, timeout_ms=max(0, remaining_ms) if since else 0, **params)
            result = found(sync)
            if result:
                return result
            if remaining_ms <= 0 or reactor.seconds() >= deadline:
                raise AssertionError(f"timed out after {timeout:g} s of /sync waiting for {what}")
            since = sync["next_batch"]

    # -- rooms --------------------------------------------------------------------------------

    def _before_create_room(self) -> None:
        """Hook run before each ``createRoom`` (a fake clock moves on here)."""

    async def create_room(
        self, user: TestUser, body: dict[str, Any] | None = None, *, history_visibility: str | None = None, **fields: Any
    ) -> str:
        """``POST /createRoom`` as ``user`` with ``body`` and ``fields`` merged; the room ID.

        Without a ``preset`` the server's default applies (``private_chat``: invite only).
        ``history_visibility`` adds that state event to ``initial_state``.
        """
        request = {**(body or {}), **fields}
        if history_visibility is not None:
            request["initial_state"] = [
                *request.get("initial_state", []),
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": history_visibility}},
            ]
        self._before_create_room()
        return _ok(*await self.post(f"{C}/createRoom", request, user), "createRoom")["room_id"]

    async def join(self, user: TestUser, room: str, via: tuple[str, ...] | list[str] = (), **body: Any) -> str:
        """``POST /join/{roomIdOrAlias}`` (through ``via`` servers); the room ID."""
        query = ("?" + urlencode([("server_name", s) for s in via])) if via else ""
        return _ok(*await self.post(f"{C}/join/{q(room)}{query}", body, user), f"join {room}")["room_id"]

    async def leave(self, user: TestUser, room: str) -> None:
        _ok(*await self.post(f"{C}/rooms/{q(room)}/leave", {}, user), f"leave {room}")

    async def invite(self, inviter: TestUser, room: str, invitee: TestUser | str) -> None:
        body = {"user_id": _user_id(invitee)}
        _ok(*await self.post(f"{C}/rooms/{q(room)}/invite", body, inviter), f"invite to {room}")

    async def invite_and_join(self, inviter: TestUser, room: str, user: TestUser) -> None:
        await self.invite(inviter, room, user)
        await self.join(user, room)

    async def shared_room(self, a: TestUser, b: TestUser, preset: str = "private_chat") -> str:
        """A room ``a`` created and ``b`` joined on invitation."""
        room = await self.create_room(a, preset=preset)
        await self.invite_and_join(a, room, b)
        return room

    async def set_state(
        self, user: TestUser, room: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        """``PUT /rooms/{roomId}/state/{type}/{stateKey}``; the event ID."""
        path = f"{C}/rooms/{q(room)}/state/{q(event_type)}/{q(state_key)}"
        return _ok(*await self.put(path, content, user), f"state {event_type} in {room}")["event_id"]

    async def set_membership(self, actor: TestUser, room: str, target: TestUser | str, membership: str, **extra: Any) -> str:
        """The member event of ``target``, sent as state by ``actor``; the event ID."""
        return await self.set_state(actor, room, "m.room.member", {"membership": membership, **extra}, _user_id(target))

    async def state_content(self, user: TestUser, room: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """The content of a current state event as ``user`` sees it, or None if there is none."""
        code, body = await self.get(f"{C}/rooms/{q(room)}/state/{q(event_type)}/{q(state_key)}", user)
        if code == 404:
            return None
        return _ok(code, body, f"state {event_type} of {room}")

    async def set_power(self, admin: TestUser, room: str, user_id: str, level: int) -> str:
        pl = dict(await self.state_content(admin, room, "m.room.power_levels") or {})
        pl["users"] = {**pl.get("users", {}), user_id: level}
        return await self.set_state(admin, room, "m.room.power_levels", pl)

    async def send_message(
        self, user: TestUser, room: str, body: str = "hello", event_type: str = "m.room.message", **extra: Any
    ) -> str:
        """An ``m.text`` message (or ``event_type`` with the same content); the event ID."""
        path = f"{C}/rooms/{q(room)}/send/{q(event_type)}/t{next(_txn)}"
        content = {"msgtype": "m.text", "body": body, **extra}
        return _ok(*await self.put(path, content, user), f"send to {room}")["event_id"]

    async def messages(self, user: TestUser, room: str, **params: Any) -> tuple[int, Any]:
        """``GET /rooms/{roomId}/messages`` with ``params`` (dicts, e.g. a filter, JSON-encoded)."""
        query = urlencode(
            {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in params.items() if v is not None}
        )
        return await self.get(f"{C}/rooms/{q(room)}/messages?{query}", user)

    async def room_events(self, user: TestUser, room: str) -> list[dict[str, Any]]:
        """Every event of the room ``user`` may see, oldest first (paging ``/messages`` forwards)."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = _ok(*await self.messages(user, room, dir="f", limit=100, **{"from": token}), "messages")
            events += page["chunk"]
            token = page.get("end")
            if token is None or not page["chunk"]:
                return events

    async def visible_bodies(self, user: TestUser, room: str) -> Any:
        """Bodies of the messages ``user`` sees paging back from the end (oldest first), or (status, error)."""
        bodies: list[str] = []
        token = None
        while True:
            code, resp = await self.messages(user, room, dir="b", limit=50, **{"from": token})
            if code != 200:
                return (code, resp)
            bodies += [
                ev["content"]["body"]
                for ev in resp["chunk"]
                if ev["type"] == "m.room.message" and "body" in ev.get("content", {})
            ]
            token = resp.get("end")
            if token is None:
                return list(reversed(bodies))
