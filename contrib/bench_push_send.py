#!/usr/bin/env python
"""Push benchmark (issue 13): sending into a 1,000-member room with push rules evaluated
for every member, mxserver vs Synapse, and mxserver's 1,000-member send vs its 100-member one.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_push_send.py                             # both servers, 1000 members, 200 sends
    .venv/bin/python contrib/bench_push_send.py --server mxserver           # mxserver only (1000 and 100 members)
    .venv/bin/python contrib/bench_push_send.py --members 50 --sends 20     # a quick check that it all works

Options: ``--server mxserver|synapse`` (repeatable; default both), ``--members N`` members
of the measured room, the sender included (default 1000), ``--baseline-members B`` an
extra mxserver run with a B-member room for the ratio (default 100; 0 skips it),
``--sends M`` timed sends (default 200), ``--warmup W`` untimed sends before them
(default 5), ``--pushers P`` members with an HTTP pusher (default 10; 0: none),
``--workers K`` concurrent requests while registering and joining (default 20),
``--timeout S`` how long to wait for the counts and pushes after the last send (default
30), ``--pause S`` waits S seconds between timed sends (default 0: back to back; with a
pause, background work a send causes is done before the next one, so the latency is the
send path alone), ``--json FILE`` also writes the figures as JSON, ``--keep`` keeps the data
directories (logs) in the temp folder.

What it does, for every server (and room size) asked, one after the other, each on a
fresh server process (``contrib/bench_processes.py``: ``tests/interop/harness.py``'s
launcher, SQLite, rate limits off, bcrypt cost 4, logging at WARNING; mxserver with
``push.allow_http_gateways: true`` and loopback allowed by its outbound IP filter, Synapse
with loopback off its IP blocklist):

1. Setup, not timed: registers N users (``--workers`` requests in flight), makes a public
   room and joins them all (``--workers`` joins in flight). One member, the *reader*, has
   its mentions counted; ``--pushers`` other members (the *quiet* one among
   them) set an HTTP pusher to a push gateway stub this script runs on 127.0.0.1 (a
   separate process answering ``{"rejected": []}``). Everyone keeps the default push rules.
2. ``--warmup`` untimed messages, then a wait until the reader's count includes them: the
   server's push work for the joins is done before the clock starts (mxserver evaluates in
   a background reader; 1,000 member events to 1,000 members is a backlog).
3. ``--sends`` timed sends, one after the other, by the room creator: ``PUT
   /rooms/{roomId}/send/m.room.message/{txnId}``, request to answer. Every tenth message
   names the reader by localpart in its body, without ``m.mentions``
   (``.m.rule.contains_user_name``, which both servers keep), every tenth another one
   mentions the reader's user ID in ``m.mentions`` (``.m.rule.is_user_mention``); the rest
   are plain text with no ``m.mentions``. Display names are left alone: mxserver follows
   the spec's v1.17 rules and has no ``.m.rule.contains_display_name`` (MSC4210), Synapse
   1.163 still has it, so a display-name mention would count differently.
4. The check, which fails the run when it does not hold within ``--timeout``: the
   reader's and the quiet member's ``/sync`` (``unread_notifications`` of the room) count
   every message (warm-up included) as a notification, highlights only for the reader's
   mentions; and the gateway stub has received one push per message for each pusher.
   ``push lag`` is the time from the last send's answer until a ``/sync`` of both members
   (polled back to back) first showed the right counts; ``delivery lag`` until the gateway
   had every push. mxserver's ``/sync`` waits (up to 10 s) for its push reader to reach the
   events it shows, so there the first poll is usually already right and the lag includes
   that wait.

The table shows per-send latency (p50, p90, mean, ms), sends per second over the timed
phase, both lags, and the p50 ratios mxserver N / mxserver B (issue 13: at most 2) and
mxserver N / Synapse N (issue 13: at most 0.1). Figures are printed, never asserted; only
wrong counts fail. The servers, the gateway stub and this client share the machine:
compare servers of the same run and repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrib.bench_processes import (  # noqa: E402
    NAMES,
    finish,
    fmt,
    interrupted,
    percentile,
    start_server,
    stop_all,
    stop_all_at_exit,
    stop_server,
)
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"
NOTIFY_PATH = "/_matrix/push/v1/notify"
APP_ID = "org.mxserver.bench.push"

#: /sync of one room, as little as possible besides its unread counts
SYNC_FILTER = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "timeline": {"limit": 1},
        "state": {"lazy_load_members": True},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
}


# -- the push gateway stub (a separate process: its work stays off this client's GIL) -------


def gateway_stub_main() -> int:
    """``--gateway-stub``: answer every notify with ``{"rejected": []}``, count the
    distinct event IDs pushed per pushkey, serve the counts at ``GET /counts``; print the
    port on stdout, run until stdin closes."""
    lock = threading.Lock()
    events: dict[str, set[str]] = {}
    other = {"requests": 0, "without_event": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle on, a kept-alive connection waits
        # for the client's delayed ACK (~40 ms) before the body (real gateways set TCP_NODELAY).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != NOTIFY_PATH:
                self._answer(404, {"errcode": "M_UNRECOGNIZED"})
                return
            try:
                note = json.loads(raw)["notification"]
            except (ValueError, KeyError, TypeError):
                self._answer(400, {"errcode": "M_BAD_JSON"})
                return
            with lock:
                other["requests"] += 1
                event_id = note.get("event_id")
                if not event_id:
                    other["without_event"] += 1  # badge updates
                for device in note.get("devices", []):
                    if event_id:
                        events.setdefault(str(device.get("pushkey")), set()).add(event_id)
            self._answer(200, {"rejected": []})

        def do_GET(self) -> None:
            with lock:
                body = {"by_pushkey": {k: len(v) for k, v in events.items()}, **other}
            self._answer(200, body)

    class Server(ThreadingHTTPServer):
        # socketserver's default listen backlog is 5: ten pushers connecting at once overflow
        # it, and a dropped SYN is retried after a second (delivery lag 1 s that is ours).
        request_queue_size = 128
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.shutdown()
    return 0


class GatewayStub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--gateway-stub"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}{NOTIFY_PATH}"

    def counts(self) -> dict[str, Any]:
        code, body = harness.http("GET", f"http://127.0.0.1:{self.port}/counts", timeout=10)
        if code != 200 or not isinstance(body, dict):
            raise AssertionError(f"gateway stub: /counts -> {code} {body!r:.200}")
        return body

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- setup --------------------------------------------------------------------------------------


def register_many(server: harness.ServerProcess, n: int, workers: int) -> list[harness.User]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: server.register(f"m{i}x"), range(n)))


def join_all(users: list[harness.User], room_id: str, workers: int) -> None:
    path = f"{C}/join/{harness.quote(room_id)}"
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda u: u.ok("POST", path, {}, timeout=120), users))


def set_pusher(user: harness.User, pushkey: str, url: str) -> None:
    user.ok(
        "POST",
        f"{C}/pushers/set",
        {
            "kind": "http",
            "app_id": APP_ID,
            "pushkey": pushkey,
            "app_display_name": "push bench",
            "device_display_name": "bench device",
            "lang": "en",
            "data": {"url": url},
        },
    )


# -- messages and their expected counts -----------------------------------------------------------


def message(i: int, reader_id: str) -> tuple[dict[str, Any], bool]:
    """The content of message ``i`` (warm-up and timed ones numbered together) and whether
    it should highlight for the reader."""
    if i % 10 == 4:
        localpart = reader_id[1:].split(":", 1)[0]
        return {"msgtype": "m.text", "body": f"{localpart}, could you look at item {i}?"}, True
    if i % 10 == 8:
        body = f"{reader_id}: item {i} is yours"
        return {"msgtype": "m.text", "body": body, "m.mentions": {"user_ids": [reader_id]}}, True
    return {"msgtype": "m.text", "body": f"bench message {i}: nothing for anyone in particular"}, False


def send(user: harness.User, room_id: str, content: dict[str, Any]) -> str:
    path = f"{C}/rooms/{harness.quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
    return str(user.ok("PUT", path, content, timeout=120)["event_id"])


#: a different ``timeout`` for every poll: Synapse answers a repeated initial /sync (same
#: user, filter, timeout) from its response cache for 2 minutes, stale counts included; an
#: initial /sync never waits, so the value changes nothing else (on either server)
_poll_timeouts = itertools.count()


def unread(user: harness.User, room_id: str) -> tuple[int, int]:
    """(notification_count, highlight_count) of the room in the user's initial /sync."""
    flt = dict(SYNC_FILTER, room=dict(SYNC_FILTER["room"], rooms=[room_id]))
    query = f"?timeout={next(_poll_timeouts)}&filter={harness.quote(json.dumps(flt))}"
    resp = user.ok("GET", f"{C}/sync{query}", timeout=60)
    counts = resp.get("rooms", {}).get("join", {}).get(room_id, {}).get("unread_notifications", {})
    return int(counts.get("notification_count", 0)), int(counts.get("highlight_count", 0))


def wait_counts(
    checks: list[tuple[str, harness.User, tuple[int, int]]], room_id: str, timeout: float, t0: float
) -> tuple[float, dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """Polls each member's /sync until every one shows its expected (notifications,
    highlights); (seconds from ``t0`` until then, counts of the first poll, the last)."""
    deadline = time.perf_counter() + timeout
    first: dict[str, tuple[int, int]] | None = None
    while True:
        seen = {name: unread(user, room_id) for name, user, _ in checks}
        now = time.perf_counter()
        if first is None:
            first = seen
        if all(seen[name] == want for name, _, want in checks):
            return now - t0, first, seen
        if now >= deadline:
            wants = ", ".join(f"{name} {seen[name]} (want {want})" for name, _, want in checks)
            raise AssertionError(f"unread counts (notifications, highlights) still wrong after {timeout:.0f}s: {wants}")
        time.sleep(0.05)


def wait_pushes(gateway: GatewayStub, pushkeys: list[str], want: int, timeout: float, t0: float) -> float:
    """Seconds from ``t0`` until the gateway had ``want`` distinct events for every pushkey."""
    deadline = time.perf_counter() + timeout
    while True:
        got = gateway.counts()["by_pushkey"]
        now = time.perf_counter()
        if all(got.get(k, 0) >= want for k in pushkeys):
            return now - t0
        if now >= deadline:
            short = {k[-8:]: got.get(k, 0) for k in pushkeys if got.get(k, 0) < want}
            raise AssertionError(
                f"pushes still missing after {timeout:.0f}s: {len(short)} of {len(pushkeys)} pushers got"
                f" fewer than {want} events (pushkey tail: events): {short}"
            )
        time.sleep(0.1)


# -- one run ---------------------------------------------------------------------------------------




def run_one(kind: str, members: int, root: Path, gateway: GatewayStub | None, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": kind,
        "members": members,
        "sends": args.sends,
        "warmup": args.warmup,
        "pause_s": args.pause,
    }
    label = f"{NAMES[kind]} {members}"
    extra = {"push": {"allow_http_gateways": True}} if kind == "mxserver" else {}
    t = time.perf_counter()
    server = start_server(kind, root / f"{kind}-{members}", extra)
    out["startup_s"] = time.perf_counter() - t
    print(f"[{label}] server up in {out['startup_s']:.1f}s", flush=True)
    try:
        t = time.perf_counter()
        sender = server.register("sender")
        users = register_many(server, members - 1, args.workers)
        out["register_s"] = time.perf_counter() - t
        reader, quiet = users[0], users[1]
        room_id = sender.create_room(preset="public_chat", name=f"push bench {members}")
        t = time.perf_counter()
        join_all(users, room_id, args.workers)
        out["join_s"] = time.perf_counter() - t
        joined = sender.ok("GET", f"{C}/rooms/{harness.quote(room_id)}/joined_members", timeout=120)["joined"]
        if len(joined) != members:
            raise AssertionError(f"the room has {len(joined)} joined members, not {members}")
        pushkeys: list[str] = []
        if gateway is not None and args.pushers:
            for user in users[1 : 1 + args.pushers]:  # the quiet member first; never the sender or reader
                pushkey = f"bench-{kind}-{members}-{uuid.uuid4().hex}"
                set_pusher(user, pushkey, gateway.url)
                pushkeys.append(pushkey)
        print(
            f"[{label}] setup: {members} users registered in {out['register_s']:.1f}s, joined in"
            f" {out['join_s']:.1f}s ({args.workers} at a time), {len(pushkeys)} pushers",
            flush=True,
        )

        def expected(n_sent: int) -> list[tuple[str, harness.User, tuple[int, int]]]:
            highlights = sum(message(i, reader.user_id)[1] for i in range(n_sent))
            return [("reader", reader, (n_sent, highlights)), ("quiet", quiet, (n_sent, 0))]

        # Warm-up, then wait until its messages are counted: the push work of the joins is
        # behind us (evaluation is in order) before the clock starts.
        t = time.perf_counter()
        for i in range(args.warmup):
            send(sender, room_id, message(i, reader.user_id)[0])
        if args.no_counts:  # a server without push: nothing to wait for, just let it settle
            out["drain_s"] = 0.0
        else:
            out["drain_s"], _, _ = wait_counts(expected(args.warmup), room_id, args.drain_timeout, t)
        print(f"[{label}] warm-up of {args.warmup} sends counted after {out['drain_s']:.1f}s; timing ...", flush=True)
        time.sleep(args.settle)

        out["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
        latencies = []
        paused = 0.0
        t_start = time.perf_counter()
        for i in range(args.warmup, args.warmup + args.sends):
            content = message(i, reader.user_id)[0]
            if args.pause and i > args.warmup:
                t = time.perf_counter()
                time.sleep(args.pause)
                paused += time.perf_counter() - t
            t = time.perf_counter()
            send(sender, room_id, content)
            latencies.append(time.perf_counter() - t)
        t_end = time.perf_counter()
        total = args.warmup + args.sends
        if args.no_counts:
            out["push_lag_s"], first, last = float("nan"), {}, {}
        else:
            out["push_lag_s"], first, last = wait_counts(expected(total), room_id, args.timeout, t_end)
        out["counts_first_poll"] = {k: list(v) for k, v in first.items()}
        out["counts"] = {k: list(v) for k, v in last.items()}
        out["pushers"] = len(pushkeys)
        if pushkeys and gateway is not None:
            out["delivery_lag_s"] = wait_pushes(gateway, pushkeys, total, args.timeout, t_end)
        lat = sorted(x * 1000 for x in latencies)
        out.update(
            {
                "p50_ms": percentile(lat, 0.5),
                "p90_ms": percentile(lat, 0.9),
                "mean_ms": statistics.fmean(lat),
                "max_ms": lat[-1],
                "sends_per_s": args.sends / (t_end - t_start - paused),
                "latencies_ms": [round(x * 1000, 3) for x in latencies],
            }
        )
        print(
            f"[{label}] p50 {out['p50_ms']:.1f} ms, p90 {out['p90_ms']:.1f} ms, {out['sends_per_s']:.1f} sends/s,"
            f" push lag {out['push_lag_s']:.2f}s (first poll: {first}),"
            f" delivery lag {out.get('delivery_lag_s', float('nan')):.2f}s",
            flush=True,
        )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"[{label}] FAILED: {out['error'][:2000]}", file=sys.stderr, flush=True)
        print(server.tails(lines=25), file=sys.stderr)
    finally:
        out["log_problems"] = log_problems(server)
        stop_server(server)
    return out


def log_problems(server: harness.ServerProcess) -> list[str]:
    """Warning and error lines of the server's logs (the first 50), for the report; not
    Synapse's start-up banner, which it logs at WARNING."""
    lines: list[str] = []
    for path in server.log_paths():
        if path.exists():
            for ln in path.read_text(errors="replace").splitlines():
                if "synapse.config.logger" in ln:
                    continue
                if any(w in ln for w in ("ERROR", "Traceback", "CRITICAL", "[error]", "[critical]", "WARN")):
                    lines.append(ln[:300])
    return lines[:50]


# -- the run and the report ---------------------------------------------------------------------------


def plan(args: Any) -> list[tuple[str, int]]:
    runs = []
    for kind in args.server:
        if kind == "mxserver" and args.baseline_members:
            runs.append((kind, args.baseline_members))
        runs.append((kind, args.members))
    return runs


def run(root: Path, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"args": {k: v for k, v in vars(args).items()}, "runs": []}
    gateway = GatewayStub() if args.pushers else None
    try:
        for kind, members in plan(args):
            out["runs"].append(run_one(kind, members, root, gateway, args))
        if gateway is not None:
            out["gateway"] = gateway.counts()
    finally:
        if gateway is not None:
            gateway.stop()
        stop_all()
    return out




def find(out: dict[str, Any], kind: str, members: int) -> dict[str, Any] | None:
    for r in out["runs"]:
        if r["server"] == kind and r["members"] == members and "error" not in r:
            return r
    return None


def report(out: dict[str, Any], args: Any) -> None:
    print()
    print(
        f"Sending m.room.message into an N-member room with push rules on ({args.sends} timed sends after"
        f" {args.warmup} warm-up, one at a time{f', {args.pause} s apart' if args.pause else ''};"
        f" {args.pushers} members with an HTTP pusher)"
    )
    head = (
        f"{'server':<9} {'members':>7} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8} {'sends/s':>8}"
        f" {'push lag s':>10} {'delivery s':>10}  check"
    )
    print(head)
    print("-" * len(head))
    for r in out["runs"]:
        print(
            f"{NAMES[r['server']]:<9} {r['members']:>7} {fmt(r.get('p50_ms'), '8.2f')} {fmt(r.get('p90_ms'), '8.2f')}"
            f" {fmt(r.get('mean_ms'), '8.2f')} {fmt(r.get('sends_per_s'), '8.1f')}"
            f" {fmt(r.get('push_lag_s'), '10.2f')} {fmt(r.get('delivery_lag_s'), '10.2f')}"
            f"  {'FAILED' if 'error' in r else 'counts ok'}"
        )
    ratios: dict[str, float] = {}
    mx_n = find(out, "mxserver", args.members)
    mx_b = find(out, "mxserver", args.baseline_members) if args.baseline_members else None
    syn_n = find(out, "synapse", args.members)
    if mx_n and mx_b:
        ratios[f"mxserver{args.members}/mxserver{args.baseline_members}"] = mx_n["p50_ms"] / mx_b["p50_ms"]
    if mx_n and syn_n:
        ratios[f"mxserver{args.members}/synapse{args.members}"] = mx_n["p50_ms"] / syn_n["p50_ms"]
    out["p50_ratios"] = ratios
    if ratios:
        print("p50 ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        print("   (issue 13 asks mxserver1000/mxserver100 <= 2 and mxserver1000/synapse1000 <= 0.1)")
    for r in out["runs"]:
        if r.get("log_problems"):
            print(f"{NAMES[r['server']]} {r['members']}: {len(r['log_problems'])} warning/error lines in its log, e.g.")
            for ln in r["log_problems"][:3]:
                print(f"   {ln}")
    print(
        "p50/p90/mean: latency of PUT /send, request to answer; sends/s: timed sends over the timed phase (pauses not counted);"
        " push lag: last answer until both checked members' /sync showed every notification and highlight;"
        " delivery: until the gateway stub had one push per message for every pusher."
    )


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--server",
        action="append",
        choices=["mxserver", "synapse"],
        help="server to measure (repeatable; default both)",
    )
    p.add_argument("--members", type=int, default=1000, help="members of the room, sender included (default 1000)")
    p.add_argument(
        "--baseline-members", type=int, default=100, help="mxserver's comparison room size (default 100; 0: none)"
    )
    p.add_argument("--sends", type=int, default=200, help="timed sends (default 200)")
    p.add_argument("--warmup", type=int, default=5, help="untimed sends before them (default 5)")
    p.add_argument("--pushers", type=int, default=10, help="members with an HTTP pusher (default 10)")
    p.add_argument("--workers", type=int, default=20, help="requests in flight while registering/joining (default 20)")
    p.add_argument("--timeout", type=float, default=30.0, help="wait for counts and pushes after the sends, s")
    p.add_argument(
        "--drain-timeout", type=float, default=600.0, help="wait for the warm-up to be counted (setup backlog), s"
    )
    p.add_argument("--pause", type=float, default=0.0, help="seconds between timed sends (default 0: back to back)")
    p.add_argument("--settle", type=float, default=2.0, help="quiet seconds before the timed sends (default 2)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument(
        "--no-counts",
        action="store_true",
        help="do not check unread counts (a checkout from before push, for its send latency; use --pushers 0)",
    )
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["mxserver", "synapse"]))
    if args.members < 3 or args.sends < 1 or args.warmup < 1 or args.workers < 1:
        p.error("--members must be at least 3, --sends, --warmup and --workers at least 1")
    if args.baseline_members and args.baseline_members < 3:
        p.error("--baseline-members must be 0 or at least 3")
    if args.pushers < 0 or args.pushers > args.members - 2:
        p.error("--pushers must be between 0 and --members - 2 (neither the sender nor the reader has one)")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--gateway-stub"]:
        return gateway_stub_main()
    args = parse_args(argv)
    missing = harness.shared_missing_reason()
    if missing and "synapse" in args.server:
        print(missing, file=sys.stderr)
        return 2
    stop_all_at_exit()
    root = Path(tempfile.mkdtemp(prefix="mxserver-bench-push-"))
    try:
        out = run(root, args)
    except (KeyboardInterrupt, SystemExit):
        interrupted(root)
        raise
    report(out, args)
    failed = [r for r in out["runs"] if "error" in r]
    for r in failed:
        print(f"FAILED ({NAMES[r['server']]} {r['members']}): {r['error'][:2000]}")
    return finish(root, out, args.json, args.keep, bool(failed))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
