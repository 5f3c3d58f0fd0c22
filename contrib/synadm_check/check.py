"""Scratch check for issue 17: synadm (the Synapse admin CLI, from PyPI) against mxserver.

    python check.py SYNADM BASE_URL SERVER_NAME DATA_DIR    (normally through ./run)

Registers an admin through shared-secret registration (as admin tooling does), writes a synadm
config for them, then drives synadm's own commands and checks each answer, and what a client
then sees: the server version; users (create, list, details, make admin, deactivate: the user
can no longer log in); rooms (list, details, members, delete with the v2 API and its status:
the room's members are gone); media (quarantine: the download is refused); registration tokens
(new, list, delete); event reports (listed through ``synadm raw``, synadm has no command for
them). Exits 1 at the first step that does not hold.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SECRET = "synadm-check-secret"
PASSWORD = "a long enough password"


def http(base: str, method: str, path: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, method=method, data=data)
    req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            payload = res.read()
            return res.status, json.loads(payload) if res.headers.get_content_type() == "application/json" else payload
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def register_admin(base: str, username: str) -> dict[str, Any]:
    code, nonce = http(base, "GET", "/_synapse/admin/v1/register")
    assert code == 200, (code, nonce)
    mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
    mac.update("\x00".join([nonce["nonce"], username, PASSWORD, "admin"]).encode())
    body = {"nonce": nonce["nonce"], "username": username, "password": PASSWORD, "admin": True, "mac": mac.hexdigest()}
    code, reg = http(base, "POST", "/_synapse/admin/v1/register", body)
    assert code == 200, (code, reg)
    return reg


def register(base: str, username: str) -> dict[str, Any]:
    body = {"username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    code, reg = http(base, "POST", "/_matrix/client/v3/register", body)
    assert code == 200, (code, reg)
    return reg


class Synadm:
    def __init__(self, exe: str, config: Path) -> None:
        self.exe = exe
        self.config = config

    def __call__(self, *args: str) -> Any:
        cmd = [self.exe, "-c", str(self.config), "--batch", "-o", "minified", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        print("$ synadm " + " ".join(args))
        if done.returncode != 0:
            raise AssertionError(f"synadm {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
        out = done.stdout.strip()
        print("  " + out[:300])
        try:
            return json.loads(out.splitlines()[-1]) if out else None
        except json.JSONDecodeError:
            return out


def main(exe: str, base: str, server_name: str, data_dir: str) -> None:
    stamp = str(int(time.time()))
    admin = register_admin(base, f"admin{stamp}")
    config = Path(data_dir) / "synadm.yaml"
    config.write_text(json.dumps({
        "user": admin["user_id"], "token": admin["access_token"], "base_url": base,
        "admin_path": "/_synapse/admin", "matrix_path": "/_matrix", "timeout": 30,
        "format": "minified", "ssl_verify": False, "homeserver": server_name,
    }))
    synadm = Synadm(exe, config)
    token = admin["access_token"]

    version = synadm("version")
    assert "mxserver" in json.dumps(version), version

    # Users: create, list, details, make admin, deactivate.
    alice = f"@alice{stamp}:{server_name}"
    synadm("user", "modify", alice, "--password", PASSWORD, "--display-name", "Alice")
    code, _ = http(base, "POST", "/_matrix/client/v3/login",
                   {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice}, "password": PASSWORD})
    assert code == 200, "the user synadm created cannot log in"
    listed = synadm("user", "list")
    assert alice in json.dumps(listed), listed
    details = synadm("user", "details", alice)
    assert details.get("displayname") == "Alice", details
    synadm("user", "modify", alice, "--admin")
    assert synadm("user", "details", alice).get("admin") in (True, 1), "not made admin"
    synadm("user", "deactivate", alice)
    assert synadm("user", "details", alice).get("deactivated") in (True, 1), "not deactivated"
    code, _ = http(base, "POST", "/_matrix/client/v3/login",
                   {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice}, "password": PASSWORD})
    assert code == 403, f"a deactivated user logged in ({code})"

    # Rooms: a user's room, listed, detailed, its members, deleted (v2) with its status.
    bob = register(base, f"bob{stamp}")
    code, room = http(base, "POST", "/_matrix/client/v3/createRoom", {"name": "synadm check room"}, bob["access_token"])
    assert code == 200, (code, room)
    room_id = room["room_id"]
    rooms = synadm("room", "list")
    assert room_id in json.dumps(rooms), rooms
    assert synadm("room", "details", room_id).get("name") == "synadm check room"
    assert bob["user_id"] in json.dumps(synadm("room", "members", room_id))

    # Reports: bob's message reported by bob, listed through synadm raw.
    code, sent = http(base, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/t1",
                      {"msgtype": "m.text", "body": "report me"}, bob["access_token"])
    assert code == 200, (code, sent)
    code, _ = http(base, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/report/{urllib.parse.quote(sent['event_id'])}",
                   {"reason": "synadm check"}, bob["access_token"])
    assert code == 200, code
    reports = synadm("raw", "v1/event_reports")
    assert sent["event_id"] in json.dumps(reports), reports

    # Media: bob uploads, synadm quarantines, the download is refused.
    code, up = http(base, "POST", "/_matrix/media/v3/upload?filename=a.txt", raw=b"quarantine me",
                    token=bob["access_token"], content_type="text/plain")
    assert code == 200, (code, up)
    media_id = up["content_uri"].rsplit("/", 1)[1]
    code, _ = http(base, "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}", token=token)
    assert code == 200, f"the upload cannot be downloaded before quarantine ({code})"
    synadm("media", "quarantine", "--server-name", server_name, "--media-id", media_id)
    code, _ = http(base, "GET", f"/_matrix/client/v1/media/download/{server_name}/{media_id}", token=token)
    assert code == 404, f"quarantined media was served ({code})"

    # Registration tokens: new, list, delete.
    new = synadm("regtok", "new", "--token", f"tok{stamp}", "--uses-allowed", "3")
    assert new.get("token") == f"tok{stamp}", new
    assert f"tok{stamp}" in json.dumps(synadm("regtok", "list"))
    synadm("regtok", "delete", f"tok{stamp}")
    assert f"tok{stamp}" not in json.dumps(synadm("regtok", "list"))

    # Room deletion (v2): answered at once, complete soon after; bob is no longer in the room.
    synadm("room", "delete", room_id)
    deadline = time.monotonic() + 30
    while True:
        status = synadm("room", "delete-status", "--room-id", room_id)
        text = json.dumps(status)
        if "complete" in text:
            break
        assert "failed" not in text and time.monotonic() < deadline, status
        time.sleep(0.5)
    code, joined = http(base, "GET", "/_matrix/client/v3/joined_rooms", token=bob["access_token"])
    assert code == 200 and room_id not in joined["joined_rooms"], joined
    print("synadm_check: every step held")


if __name__ == "__main__":
    main(*sys.argv[1:5])
