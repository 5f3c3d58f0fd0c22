"""Scratch check for issue 16: a real appservice framework (mautrix-python's ``AppService``)
registers a puppet, joins, sends and receives through mxserver.

    python check.py BASE_URL SERVER_NAME AS_PORT REGISTRATION_YAML    (normally through ./run)

The bridge's puppet, driven by mautrix's intent API, registers itself
(``m.login.application_service``) and sets a display name; a human user (plain HTTP) makes a
room and invites it; the puppet joins and sends a message the human's ``/sync`` must show. The human answers, and mautrix's
transaction endpoint must receive that message. Exits 1 on the first step that does not
happen within the timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from typing import Any

import yaml
from mautrix.appservice import AppService
from mautrix.types import Event, EventType

TIMEOUT = 20.0


def http(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


async def wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {TIMEOUT:.0f}s: {what}")


async def main(base: str, server_name: str, as_port: int, registration_path: str) -> None:
    reg = yaml.safe_load(open(registration_path))
    received: list[Event] = []
    az = AppService(
        server=base,
        domain=server_name,
        as_token=reg["as_token"],
        hs_token=reg["hs_token"],
        bot_localpart=reg["sender_localpart"],
        id=reg["id"],
    )
    async def on_event(event: Event) -> None:
        received.append(event)

    az.matrix_event_handler(on_event)
    await az.start(host="127.0.0.1", port=as_port)
    try:
        # The human: plain HTTP.
        body = {"username": f"human{int(time.time())}", "password": "a long enough password", "auth": {"type": "m.login.dummy"}}
        code, human = http(base, "POST", "/_matrix/client/v3/register", body)
        assert code == 200, (code, human)
        token = human["access_token"]
        # The puppet, through mautrix's intent API: registered as a bridge does before it
        # invites or is invited (m.login.application_service), and named.
        puppet_id = f"@scratchpuppet_alice:{server_name}"
        intent = az.intent.user(puppet_id)
        await intent.ensure_registered()
        await intent.set_displayname("Alice (bridged)")
        code, room = http(base, "POST", "/_matrix/client/v3/createRoom", {"name": "bridged", "invite": [puppet_id]}, token)
        assert code == 200, (code, room)
        room_id = room["room_id"]
        print(f"{human['user_id']} made {room_id} and invited {puppet_id}")
        await intent.join_room(room_id)
        event_id = await intent.send_text(room_id, "hello from the bridge")
        print(f"puppet registered, named, joined, sent {event_id}")
        bot_id = az.intent.mxid
        whoami = await az.intent.whoami()
        assert whoami.user_id == bot_id, whoami
        print(f"the bridge bot is {bot_id}")

        def human_sees_it() -> bool:
            code, sync = http(base, "GET", "/_matrix/client/v3/sync?timeout=0", token=token)
            events = sync.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
            return any(e.get("event_id") == event_id and e.get("sender") == puppet_id for e in events)

        await wait_for("the human's /sync shows the puppet's message", human_sees_it)
        code, profile = http(base, "GET", f"/_matrix/client/v3/profile/{puppet_id}", token=token)
        assert profile.get("displayname") == "Alice (bridged)", profile
        print("the human's /sync shows the puppet's message; the puppet's profile has its name")

        # The human answers: mautrix's transaction endpoint receives it.
        code, sent = http(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi bridge"}, token)
        assert code == 200, (code, sent)

        def bridge_got_it() -> bool:
            return any(str(e.event_id) == sent["event_id"] and e.type == EventType.ROOM_MESSAGE for e in received)

        await wait_for("the bridge receives the human's message in a transaction", bridge_got_it)
        kinds = sorted({str(e.type) for e in received})
        print(f"the bridge received {len(received)} events through transactions ({', '.join(kinds)})")
    finally:
        await az.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    except AssertionError as e:
        print(f"FAIL: {e}")
        sys.exit(1)
    print("PASS: mautrix's AppService registers a puppet, joins, sends and receives through mxserver")
