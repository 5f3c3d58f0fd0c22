#!/usr/bin/env python3
"""Fuzz every Client-Server API operation of the spec against a fresh mxserver: no 5xx allowed.

    fuzz_client_api.py [--spec DIR] [--max-examples N] [--only NAME ...] [--keep]

Starts ``twistd -n mxserver`` on a temporary config (SQLite, open registration, no rate
limits), registers a user and creates a room, then runs schemathesis
(examples/coverage/fuzzing phases) over each OpenAPI file of ``--spec`` (default
../shared/spec/api/client-server) with that user's access token. Prints, per file, the
operations and requests made and the server errors found; exit status 1 if any response was
a server error or the server logged an unhandled error. A 502/504 Matrix error for a request
that needs another server (no remote server resolves here) is counted, not failed: it is the
right answer when the remote cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, body: object = None, token: str | None = None) -> dict:
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    config = work / "homeserver.yaml"
    config.write_text(
        json.dumps(
            {
                "server_name": "fuzz.test",
                "data_dir": str(work / "data"),
                "listeners": [{"host": "127.0.0.1", "port": port, "resources": ["client", "media"]}],
                "registration": {"enabled": True},
                "password": {"scheme": "bcrypt", "bcrypt_rounds": 4},
                "rate_limits": {"enabled": False},
                "log": {"level": "WARNING"},
            }
        )
    )
    log = work / "server.log"
    proc = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "mxserver", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            call(base, "GET", "/_matrix/client/versions")
            return proc, base, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not start; see {log}")


def _responses(ndjson: Path) -> list[tuple[int, bytes, str]]:
    """``(status, body, request line)`` of every response schemathesis recorded."""
    out = []
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        for interaction in (scenario.get("recorder") or {}).get("interactions", {}).values():
            response = interaction.get("response") or {}
            if "status_code" not in response:
                continue
            content = response.get("content") or {}
            body = base64.b64decode(content["$base64"]) if "$base64" in content else b""
            request = interaction.get("request") or {}
            out.append((response["status_code"], body, f"{request.get('method', '?')} {request.get('uri', '?')}"))
    return out


def is_upstream_failure(status: int, body: bytes) -> bool:
    """A 502/504 Matrix error: another server could not be reached (none resolves in this sandbox).

    That is the right answer for a request that needs a remote server (a remote profile, alias,
    media, room); a crash is a 500, or a 5xx without a Matrix error body.
    """
    if status not in (502, 504):
        return False
    try:
        error = json.loads(body)
    except ValueError:
        return False
    return isinstance(error, dict) and isinstance(error.get("errcode"), str) and isinstance(error.get("error"), str)


def run_file(
    spec: Path, base: str, token: str, max_examples: int, report_dir: Path, config: Path | None
) -> tuple[int, int, int, list[str]]:
    """Schemathesis over one OpenAPI file: (operations, requests, upstream failures, server errors)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(BIN / "schemathesis"), "--no-color", *(["--config-file", str(config)] if config else []), "run", str(spec),
        "--origin", base,
        "-H", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(max_examples),
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--report", "ndjson",
        "--report-dir", str(report_dir),
    ]
    # In the work dir: schemathesis keeps its cache (.schemathesis/) in the current directory.
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=report_dir.parent)
    (report_dir / f"{spec.stem}.out").write_text(out.stdout + out.stderr)
    requests = upstream = 0
    errors: list[str] = []
    for ndjson in report_dir.glob("ndjson-*.ndjson"):
        for status, body, request in _responses(ndjson):
            requests += 1
            if status >= 500:
                if is_upstream_failure(status, body):
                    upstream += 1
                else:
                    errors.append(f"{status} {request}: {body[:200]!r}")
        ndjson.rename(ndjson.with_name(spec.stem + ".ndjson"))
    m = re.search(r"Tested: (\d+)", out.stdout)
    operations = int(m.group(1)) if m else 0
    if out.returncode not in (0, 1):
        errors.append(f"schemathesis exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return operations, requests, upstream, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=ROOT.parent / "shared" / "spec" / "api" / "client-server")
    ap.add_argument("--max-examples", type=int, default=20)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--keep", action="store_true", help="keep the work dir (server log, reports)")
    a = ap.parse_args()
    a.spec = a.spec.resolve()  # schemathesis runs in the work dir: a relative path would not be found
    files = sorted(p for p in a.spec.glob("*.yaml") if not a.only or p.stem in a.only)
    if not files:
        sys.exit(f"no OpenAPI files in {a.spec}")
    work = Path(tempfile.mkdtemp(prefix="mxserver-fuzz-"))
    proc, base, log = start_server(work)
    failed = False
    try:
        user = call(base, "POST", "/_matrix/client/v3/register",
                    {"username": "fuzzer", "password": "fuzz pass", "auth": {"type": "m.login.dummy"}})
        token = user["access_token"]
        room = call(base, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token)["room_id"]
        event = call(base, "PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/fuzz1",
                     {"msgtype": "m.text", "body": "hello"}, token)["event_id"]
        # Second pass: the path parameters name things that exist (the room, its event, the
        # user, its device), so the fuzzed bodies and queries reach the handlers behind the lookups.
        real = work / "schemathesis-real-ids.toml"
        real.write_text(
            "[parameters]\n"
            + "".join(
                f'"path.{name}" = {json.dumps(value)}\n'
                for name, value in {
                    "roomId": room, "roomIdOrAlias": room, "eventId": event, "userId": user["user_id"],
                    "deviceId": user["device_id"],
                }.items()
            )
        )
        total_ops = total_reqs = total_upstream = 0
        for spec, config in [(f, c) for c in (None, real) for f in files]:
            ops, reqs, upstream, failures = run_file(spec, base, token, a.max_examples, work / "reports", config)
            total_ops += ops
            total_reqs += reqs
            total_upstream += upstream
            status = "ok" if not failures else "SERVER ERRORS"
            label = spec.stem + (" (real ids)" if config else "")
            print(f"{label:40} operations={ops:3} requests={reqs:6} unreachable-remote={upstream:3} {status}", flush=True)
            for f in failures[:20]:
                print(f"    {f}")
            failed |= bool(failures)
            if proc.poll() is not None:
                print("the server died", file=sys.stderr)
                failed = True
                break
        unhandled = [ln for ln in log.read_text(errors="replace").splitlines() if "Unhandled" in ln or "Traceback" in ln]
        if unhandled:
            failed = True
            print(f"server log: {len(unhandled)} unhandled errors (see {log})")
        print(f"fuzz: {len(files)} files in 2 passes, {total_ops} operation runs, {total_reqs} requests"
              f" ({total_upstream} answered 502/504 for an unreachable remote server), "
              f"{'server errors found' if failed else 'no server errors'}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if not a.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work dir kept: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
