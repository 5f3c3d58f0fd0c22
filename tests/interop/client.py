"""Blocking Matrix client helpers for the interop tests: HTTP, users, an accumulating /sync.

Every call has a timeout and every wait a deadline, so a test cannot hang.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import attrs

#: default bound for waiting on something to arrive over federation
ARRIVAL_TIMEOUT = 45.0
#: every test user's password
PASSWORD = "interop password"

# -- HTTP ------------------------------------------------------------------------------

_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """``(status, parsed JSON or raw bytes)``; connection failures raise OSError."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_INSECURE) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    if ctype.startswith("application/json"):
        try:
            return status, json.loads(raw)
        except ValueError:
            pass
    return status, raw


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")


# -- users and sync ---------------------------------------------------------------------


@attrs.define
class User:
    server: Any  # a harness.ServerProcess
    user_id: str
    token: str
    device_id: str

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        return self.server.request(method, path, body, self.token, timeout)

    def ok(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """The JSON answer of a request that must succeed."""
        code, resp = self.request(method, path, body, timeout)
        if code != 200:
            raise AssertionError(f"{self.server.kind} {method} {path} as {self.user_id} -> {code} {resp!r:.2000}")
        return resp

    def with_password_auth(self, method: str, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
        """A request behind user-interactive auth, completed with m.login.password when asked."""
        code, resp = self.request(method, path, body, timeout)
        if code == 401 and isinstance(resp, dict) and "flows" in resp:
            auth = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.user_id},
                "password": PASSWORD,
                "session": resp.get("session"),
            }
            code, resp = self.request(method, path, {**body, "auth": auth}, timeout)
        if code != 200:
            raise AssertionError(f"{self.server.kind} {method} {path} as {self.user_id} -> {code} {resp!r:.2000}")
        return resp

    def login_again(self) -> User:
        """A second session (new device) for the same account."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": PASSWORD,
        }
        code, resp = self.server.request("POST", "/_matrix/client/v3/login", body)
        if code != 200:
            raise AssertionError(f"{self.server.kind}: login {self.user_id} -> {code} {resp}")
        return User(self.server, resp["user_id"], resp["access_token"], resp["device_id"])

    def create_room(self, **body: Any) -> str:
        return str(self.ok("POST", "/_matrix/client/v3/createRoom", body)["room_id"])

    def send(self, room_id: str, body: str, msgtype: str = "m.text") -> str:
        txn = uuid.uuid4().hex
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}"
        return str(self.ok("PUT", path, {"msgtype": msgtype, "body": body})["event_id"])

    def send_state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}"
        return str(self.ok("PUT", path, content)["event_id"])

    def invite(self, room_id: str, user_id: str) -> None:
        self.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id}, timeout=60)

    def join(self, room_id_or_alias: str, via: list[str] | None = None) -> str:
        query = "?" + "&".join(f"via={quote(s)}" for s in via) if via else ""
        return str(
            self.ok("POST", f"/_matrix/client/v3/join/{quote(room_id_or_alias)}{query}", {}, timeout=90)["room_id"]
        )

    def messages(self, room_id: str, limit: int = 100, from_token: str | None = None, direction: str = "b") -> Any:
        query = f"?dir={direction}&limit={limit}"
        if from_token:
            query += f"&from={quote(from_token)}"
        return self.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages{query}", timeout=90)

    def all_messages_backwards(self, room_id: str, max_pages: int = 40) -> list[dict[str, Any]]:
        """Every event /messages gives, paging backwards to the start; returned oldest first."""
        events: list[dict[str, Any]] = []
        token = None
        for _ in range(max_pages):
            page = self.messages(room_id, 100, token)
            events.extend(page.get("chunk", []))
            token = page.get("end")
            if not page.get("chunk") or not token:
                return list(reversed(events))
        raise AssertionError(f"{self.server.kind}: /messages in {room_id} did not end after {max_pages} pages")


def bodies(events: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """Bodies of the m.room.message events (optionally only those starting with prefix), in order."""
    out = []
    for ev in events:
        if ev.get("type") == "m.room.message":
            body = ev.get("content", {}).get("body")
            if isinstance(body, str) and body.startswith(prefix):
                out.append(body)
    return out


class Sync:
    """Incremental /sync for one user, accumulating what arrived per room."""

    FILTER = json.dumps({"room": {"timeline": {"limit": 50}}})

    def __init__(self, user: User) -> None:
        self.user = user
        self.since: str | None = None
        self.timeline: dict[str, list[dict[str, Any]]] = {}
        self.ephemeral: dict[str, list[dict[str, Any]]] = {}
        self.invites: dict[str, list[dict[str, Any]]] = {}
        self.left: dict[str, list[dict[str, Any]]] = {}
        self.joined: set[str] = set()
        self.presence: list[dict[str, Any]] = []
        self.to_device: list[dict[str, Any]] = []
        self.knocks: dict[str, list[dict[str, Any]]] = {}
        #: device_lists.changed of every sync, in order (a user appears once per sync it changed in)
        self.device_lists_changed: list[str] = []
        self.once(0)

    def once(self, timeout_ms: int = 1000) -> None:
        query = f"?timeout={timeout_ms}&filter={quote(self.FILTER)}"
        if self.since:
            query += f"&since={quote(self.since)}"
        resp = self.user.ok("GET", "/_matrix/client/v3/sync" + query, timeout=timeout_ms / 1000 + 30)
        self.since = resp["next_batch"]
        self.presence.extend(resp.get("presence", {}).get("events", []))
        self.to_device.extend(resp.get("to_device", {}).get("events", []))
        self.device_lists_changed.extend(resp.get("device_lists", {}).get("changed", []))
        rooms = resp.get("rooms", {})
        for room_id, room in rooms.get("join", {}).items():
            self.joined.add(room_id)
            self.left.pop(room_id, None)
            self.invites.pop(room_id, None)
            self.knocks.pop(room_id, None)
            self.timeline.setdefault(room_id, []).extend(room.get("timeline", {}).get("events", []))
            self.ephemeral.setdefault(room_id, []).extend(room.get("ephemeral", {}).get("events", []))
        for room_id, room in rooms.get("invite", {}).items():
            self.invites[room_id] = room.get("invite_state", {}).get("events", [])
        for room_id, room in rooms.get("knock", {}).items():
            self.knocks[room_id] = room.get("knock_state", {}).get("events", [])
        for room_id, room in rooms.get("leave", {}).items():
            self.joined.discard(room_id)
            self.invites.pop(room_id, None)
            self.knocks.pop(room_id, None)
            evs = room.get("timeline", {}).get("events", [])
            self.left.setdefault(room_id, []).extend(evs)
            self.timeline.setdefault(room_id, []).extend(evs)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = ARRIVAL_TIMEOUT) -> Any:
        """Sync until predicate() is truthy; AssertionError naming `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.user.server.kind}: {self.user.user_id} did not see {what} within {timeout:.0f}s"
                )
            self.once(int(min(left, 2.0) * 1000))

    def timeline_bodies(self, room_id: str, prefix: str = "") -> list[str]:
        return bodies(self.timeline.get(room_id, []), prefix)

    def wait_for_body(self, room_id: str, body: str, timeout: float = ARRIVAL_TIMEOUT) -> dict[str, Any]:
        def found() -> Any:
            for ev in self.timeline.get(room_id, []):
                if ev.get("type") == "m.room.message" and ev.get("content", {}).get("body") == body:
                    return ev
            return None

        return self.wait(found, f"message {body!r} in {room_id}", timeout)

    def wait_for_membership(
        self, room_id: str, user_id: str, membership: str, timeout: float = ARRIVAL_TIMEOUT
    ) -> dict[str, Any]:
        def found() -> Any:
            for ev in self.timeline.get(room_id, []):
                if (
                    ev.get("type") == "m.room.member"
                    and ev.get("state_key") == user_id
                    and ev.get("content", {}).get("membership") == membership
                ):
                    return ev
            return None

        return self.wait(found, f"{user_id} {membership} in {room_id}", timeout)

    def wait_for_invite(self, room_id: str, timeout: float = ARRIVAL_TIMEOUT) -> list[dict[str, Any]]:
        return self.wait(lambda: self.invites.get(room_id), f"an invite to {room_id}", timeout)
