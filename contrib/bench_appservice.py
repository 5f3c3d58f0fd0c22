#!/usr/bin/env python
"""Application service benchmark (issue 16): how long until a burst of events reaches a bridge.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_appservice.py                              # both servers: 100 rooms, 1,000 events
    .venv/bin/python contrib/bench_appservice.py --server mxserver            # mxserver only
    .venv/bin/python contrib/bench_appservice.py --server mxserver --rooms 5 --events 50   # a quick check

Options: ``--server mxserver|synapse`` (repeatable; default both), ``--rooms N`` bridged rooms
(default 100), ``--events M`` events in the burst (default 1000), ``--warmup W`` untimed
messages per room before it (default 1), ``--timeout S`` how long to wait for delivery after the
last send (default 120), ``--json FILE`` also writes the figures as JSON, ``--keep`` keeps the
data directories (logs) in the temp folder.

What it does, for every server asked, one after the other, each a fresh process
(``contrib/bench_processes.py``: SQLite, rate limits off, logging at WARNING) registered with
one application service (``app_service_config_files``; mxserver also gets
``app_service_ip_range_whitelist: [127.0.0.0/8]``, Synapse does not filter appservice
addresses). The service is a stub this script runs on 127.0.0.1 in a separate process: it
answers every ``PUT /_matrix/app/v1/transactions/{txnId}`` with 200 ``{}`` at once and
records, per transaction ID, the events and when they arrived (a repeated ID counts once).

1. Setup, not timed: registers a user, who creates N public rooms; the service's sender user
   (its as_token, no ``user_id``) joins each one: N bridged rooms. ``--warmup`` messages per
   room, then a wait until the stub had them all.
2. The burst, timed: the user sends M messages one after the other, round-robin over the
   rooms (``PUT /rooms/{roomId}/send``, request to answer).
3. The check, which fails the run when it does not hold within ``--timeout``: the stub got
   every message of the burst exactly once (no event in two transactions), in the order sent
   (the servers' stream order is the send order here: one sender, one request at a time).

The table shows the time from the first send until the stub had the last event (``all
delivered``), the send phase alone, the lag after the last send's answer, the number of
transactions, and events per transaction. Figures are printed, never asserted; only a wrong
delivery fails. The servers, the stub and this client share the machine: compare servers of
the same run and repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrib.bench_processes import (  # noqa: E402
    NAMES,
    fmt,
    run_benchmark,
    start_server,
    stop_server,
)
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"
TXN_PREFIX = "/_matrix/app/v1/transactions/"
AS_TOKEN = "bench-as-token-" + uuid.uuid4().hex
HS_TOKEN = "bench-hs-token-" + uuid.uuid4().hex
BURST = "burst"


# -- the application service stub (a separate process: its work stays off this client's GIL) ----


def stub_main(hs_token: str) -> int:
    """``--stub``: answer every transaction with 200 ``{}``; record what arrived; serve the record
    at ``GET /stats`` (``POST /reset`` forgets it); print the port, run until stdin closes."""
    lock = threading.Lock()
    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(txns=set(), repeated=0, bad_auth=0, events=0, burst=[], last_burst_at=None, warmup=0)

    reset()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
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

        def do_PUT(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.monotonic()
            if not self.path.startswith(TXN_PREFIX):
                self._answer(404, {"errcode": "M_UNRECOGNIZED"})
                return
            if self.headers.get("Authorization") != f"Bearer {hs_token}":
                with lock:
                    state["bad_auth"] += 1
                self._answer(403, {"errcode": "M_FORBIDDEN"})
                return
            txn_id = self.path[len(TXN_PREFIX) :].split("?", 1)[0]
            events = json.loads(raw).get("events", [])
            with lock:
                if txn_id in state["txns"]:
                    state["repeated"] += 1
                else:
                    state["txns"].add(txn_id)
                    for event in events:
                        state["events"] += 1
                        body = (event.get("content") or {}).get("body")
                        if isinstance(body, str) and body.startswith(BURST + " "):
                            state["burst"].append(int(body.split()[1]))
                            state["last_burst_at"] = now
                        elif isinstance(body, str) and body.startswith("warmup"):
                            state["warmup"] += 1
            self._answer(200, {})

        def do_GET(self) -> None:
            if self.path.startswith("/stats"):
                with lock:
                    body = {k: (len(v) if k == "txns" else v) for k, v in state.items()}
                self._answer(200, body)
            else:  # user and alias queries: nothing exists
                self._answer(404, {"errcode": "M_NOT_FOUND"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/reset":
                with lock:
                    reset()
            self._answer(200, {})

    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()
    return 0


class Stub:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--stub", HS_TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        code, body = harness.http("GET", self.url + "/stats", timeout=10)
        if code != 200 or not isinstance(body, dict):
            raise AssertionError(f"stub: /stats -> {code} {body!r:.200}")
        return body

    def reset(self) -> None:
        harness.http("POST", self.url + "/reset", {}, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def registration(url: str) -> dict[str, Any]:
    return {
        "id": "bench-bridge",
        "url": url,
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "_bench_bot",
        "namespaces": {"users": [{"exclusive": True, "regex": "@_bench_.*"}], "aliases": [], "rooms": []},
        "rate_limited": False,
    }


def wait_for(stub: Stub, check: Any, what: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = stub.stats()
        if stats["bad_auth"]:
            raise AssertionError(f"the server sent {stats['bad_auth']} requests without the hs_token")
        if check(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {stats}")
        time.sleep(0.05)


# -- one run ----------------------------------------------------------------------------------------


def run_one(kind: str, root: Path, stub: Stub, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"server": kind, "rooms": args.rooms, "events": args.events}
    label = NAMES[kind]
    reg_path = root / f"{kind}-registration.yaml"
    reg_path.write_text(json.dumps(registration(stub.url)))  # JSON is YAML
    extra: dict[str, Any] = {"app_service_config_files": [str(reg_path)]}
    if kind == "mxserver":
        extra["app_service_ip_range_whitelist"] = ["127.0.0.0/8"]
    stub.reset()
    t = time.perf_counter()
    server = start_server(kind, root / kind, extra)
    out["startup_s"] = time.perf_counter() - t
    print(f"[{label}] server up in {out['startup_s']:.1f}s", flush=True)
    try:
        user = server.register("sender")
        bot = harness.User(server, f"@_bench_bot:{server.server_name}", AS_TOKEN, "")
        t = time.perf_counter()
        rooms = []
        for i in range(args.rooms):
            room_id = user.create_room(preset="public_chat", name=f"bridged {i}")
            bot.ok("POST", f"{C}/join/{harness.quote(room_id)}", {}, timeout=60)
            rooms.append(room_id)
        for i, room_id in enumerate(rooms):
            for w in range(args.warmup):
                user.send(room_id, f"warmup {i}.{w}")
        want = args.rooms * args.warmup
        wait_for(stub, lambda s: s["warmup"] >= want, f"{want} warm-up messages", args.timeout)
        out["setup_s"] = time.perf_counter() - t
        print(f"[{label}] {args.rooms} bridged rooms, warm-up delivered; setup {out['setup_s']:.1f}s; the burst ...", flush=True)
        stub.reset()
        time.sleep(args.settle)

        t0 = time.monotonic()
        for i in range(args.events):
            user.send(rooms[i % len(rooms)], f"{BURST} {i}")
        t_sent = time.monotonic()
        stats = wait_for(stub, lambda s: len(s["burst"]) >= args.events, f"{args.events} events", args.timeout)
        time.sleep(0.5)  # anything sent twice or late would show up now
        stats = stub.stats()
        got: list[int] = stats["burst"]
        duplicates = len(got) - len(set(got))
        out_of_order = sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        missing = sorted(set(range(args.events)) - set(got))
        if duplicates or out_of_order or missing or stats["bad_auth"]:
            raise AssertionError(
                f"delivery wrong: {duplicates} duplicates, {out_of_order} out of order, {len(missing)} missing,"
                f" {stats['bad_auth']} requests without the hs_token"
            )
        out.update(
            {
                "delivered_s": stats["last_burst_at"] - t0,
                "send_s": t_sent - t0,
                "lag_s": stats["last_burst_at"] - t_sent,
                "sends_per_s": args.events / (t_sent - t0),
                "transactions": stats["txns"],
                "repeated_txns": stats["repeated"],
                "events_per_txn": stats["events"] / max(1, stats["txns"]),
            }
        )
        print(
            f"[{label}] all {args.events} delivered after {out['delivered_s']:.2f}s (sends {out['send_s']:.2f}s,"
            f" lag {out['lag_s']:.2f}s), {out['transactions']} transactions ({out['events_per_txn']:.1f} events each)",
            flush=True,
        )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"[{label}] FAILED: {out['error'][:2000]}", file=sys.stderr, flush=True)
        print(server.tails(lines=25), file=sys.stderr)
    finally:
        stop_server(server)
    return out




def report(out: dict[str, Any], args: Any) -> None:
    print()
    print(f"A burst of {args.events} messages into {args.rooms} bridged rooms, one send at a time, to one application service")
    head = f"{'server':<9} {'all delivered s':>15} {'sends s':>8} {'lag s':>6} {'sends/s':>8} {'txns':>6} {'ev/txn':>7}  check"
    print(head)
    print("-" * len(head))
    for r in out["runs"]:
        print(
            f"{NAMES[r['server']]:<9} {fmt(r.get('delivered_s'), '15.2f')} {fmt(r.get('send_s'), '8.2f')}"
            f" {fmt(r.get('lag_s'), '6.2f')} {fmt(r.get('sends_per_s'), '8.1f')} {fmt(r.get('transactions'), '6d')}"
            f" {fmt(r.get('events_per_txn'), '7.1f')}  {'FAILED' if 'error' in r else 'in order, once'}"
        )
    print(
        "all delivered: first send until the stub had the last event; sends: the send phase; lag: last send's"
        " answer until the last event arrived; ev/txn: events per transaction."
    )


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--server", action="append", choices=["mxserver", "synapse"], help="server to measure (repeatable; default both)")
    p.add_argument("--rooms", type=int, default=100, help="bridged rooms (default 100)")
    p.add_argument("--events", type=int, default=1000, help="messages in the burst (default 1000)")
    p.add_argument("--warmup", type=int, default=1, help="untimed messages per room first (default 1)")
    p.add_argument("--timeout", type=float, default=120.0, help="wait for delivery, s (default 120)")
    p.add_argument("--settle", type=float, default=2.0, help="quiet seconds before the burst (default 2)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["mxserver", "synapse"]))
    if args.rooms < 1 or args.events < 1 or args.warmup < 1:
        p.error("--rooms, --events and --warmup must be at least 1")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--stub"]:
        return stub_main(argv[1])
    args = parse_args(argv)

    def runs(root: Path) -> Iterator[dict[str, Any]]:
        stub = Stub()
        try:
            for kind in args.server:
                yield run_one(kind, root, stub, args)
        finally:
            stub.stop()

    return run_benchmark("appservice", args, runs, report)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
