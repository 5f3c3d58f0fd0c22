#!/usr/bin/env python
"""Sliding sync benchmark (issue 15): the first response for an account with N rooms, and an
incremental response after one new message, mxserver vs Synapse.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_sliding_sync.py                          # both servers, 100 and 1000 rooms
    .venv/bin/python contrib/bench_sliding_sync.py --server mxserver        # mxserver only
    .venv/bin/python contrib/bench_sliding_sync.py --rooms 50 --repeats 3   # a quick check that it all works

Options: ``--server mxserver|synapse`` (repeatable; default both), ``--rooms N`` (repeatable;
default 100 and 1000) the account's room count, ``--range-end E`` the list's window
``[0, E]`` (default 19), ``--timeline-limit T`` (default 1), ``--repeats R`` timed requests of
each kind (default 10), ``--workers K`` requests in flight while creating rooms (default 8),
``--no-restart`` skips the measurement after a server restart, ``--json FILE`` also writes the
figures as JSON, ``--keep`` keeps the data directories (logs) in the temp folder.

What it does, for every server and room count asked, each on a fresh server process
(``contrib/bench_processes.py``: ``tests/interop/harness.py``'s launcher, SQLite, rate limits
off, logging at WARNING):

1. Setup, not timed: one user creates N rooms (``--workers`` at a time), each with a name
   and one message; another user, in every room too, is the sender of the later messages.
2. *first*: ``--repeats`` initial requests (no ``pos``), each on a new ``conn_id``, of one list
   ``{"ranges": [[0, E]], "timeline_limit": T, "required_state": ...}`` with the
   ``required_state`` Element X asks for its room list (name, avatar, encryption, create,
   power levels, the user's own membership, lazy-loaded members). Checked: the list's
   ``count`` is N and the response holds E+1 rooms (N if fewer).
3. *incremental*: on one connection, ``--repeats`` times: the other user sends a message to a
   room outside the window (the least recently active one), then the timed request with the
   previous ``pos`` (``timeout`` 0). Checked: that room is in the response with that message.
4. *first after restart* (unless ``--no-restart``): the server is restarted on the same data,
   then one initial request is timed (caches cold), and ``--repeats`` more.

Every timed request goes over one keep-alive HTTP/1.1 connection per server (``KeepAlive``,
``http.client``), the same for both servers, opened before the first timed request and again
after a restart: the figures are the servers' answers, not the client's connection setup
(``urllib`` builds a new connection, and a new opener, for every request). Setup requests and
the sender's messages use the interop client as before; they are not timed.

The table shows, per server and N, the median and p90 (ms) of each kind, and the ratios
mxserver/Synapse and first(1000)/first(100) per server. Figures are printed, never asserted;
only a wrong response fails the run. The servers and this client share the machine: compare
servers of the same run, and repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

#: the room list's required_state of Element X (matrix-rust-sdk's room list service)
REQUIRED_STATE = [
    ["m.room.name", ""],
    ["m.room.avatar", ""],
    ["m.room.encryption", ""],
    ["m.room.create", ""],
    ["m.room.power_levels", ""],
    ["m.room.canonical_alias", ""],
    ["m.room.join_rules", ""],
    ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"],
]


def request_body(args: Any, conn_id: str) -> dict[str, Any]:
    return {
        "conn_id": conn_id,
        "lists": {
            "all": {
                "ranges": [[0, args.range_end]],
                "timeline_limit": args.timeline_limit,
                "required_state": REQUIRED_STATE,
            }
        },
    }


class KeepAlive:
    """One user's requests to one server over a single persistent HTTP/1.1 connection (reopened
    when the server closed it, e.g. after a restart). Both servers are timed through it alike."""

    def __init__(self, user: harness.User) -> None:
        self.user = user
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            host, _, port = self.user.server.base_url.removeprefix("http://").partition(":")
            self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
            self.conn.connect()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """(seconds from sending the request to having parsed the answer, the answer); not 200 raises."""
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.user.token}", "Content-Type": "application/json"}
        for attempt in (0, 1):
            conn = self._connection()
            t = time.perf_counter()
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()  # closed by the server between requests: once more on a new one
                if attempt:
                    raise
                continue
            answer = json.loads(raw) if raw else {}
            took = time.perf_counter() - t
            if resp.status != 200:
                raise AssertionError(f"{self.user.server.kind} POST {path} -> {resp.status} {answer!r:.2000}")
            return took, answer
        raise AssertionError("unreachable")


def sliding_sync(client: KeepAlive, body: dict[str, Any], pos: str | None = None) -> tuple[float, dict[str, Any]]:
    """One request: (seconds from request to answer, the answer)."""
    query = f"?pos={harness.quote(pos)}&timeout=0" if pos else ""
    return client.post(SS + query, body)


def check_first(resp: dict[str, Any], rooms: int, args: Any) -> None:
    count = resp.get("lists", {}).get("all", {}).get("count")
    if count != rooms:
        raise AssertionError(f"list count {count}, not {rooms}")
    want = min(rooms, args.range_end + 1)
    if len(resp.get("rooms", {})) != want:
        raise AssertionError(f"{len(resp.get('rooms', {}))} rooms in the response, not {want}")


def setup(server: harness.ServerProcess, rooms: int, workers: int) -> tuple[harness.User, harness.User, list[str]]:
    owner = server.register("owner")
    sender = server.register("sender")

    def make(i: int) -> str:
        room_id = owner.create_room(preset="public_chat", name=f"bench room {i}")
        sender.join(room_id)
        owner.send(room_id, f"first message of room {i}")
        return room_id

    with ThreadPoolExecutor(max_workers=workers) as pool:
        room_ids = list(pool.map(make, range(rooms)))
    return owner, sender, room_ids


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return {"median_ms": statistics.median(ms), "p90_ms": p90, "min_ms": ms[0], "samples": len(ms)}


def run_one(kind: str, rooms: int, root: Path, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"server": kind, "rooms": rooms}
    label = f"{NAMES[kind]} {rooms}"
    server = start_server(kind, root / f"{kind}-{rooms}")
    client: KeepAlive | None = None
    try:
        t = time.perf_counter()
        owner, sender, room_ids = setup(server, rooms, args.workers)
        out["setup_s"] = time.perf_counter() - t
        print(f"[{label}] {rooms} rooms created in {out['setup_s']:.1f}s", flush=True)
        time.sleep(args.settle)

        client = KeepAlive(owner)
        first = []
        for i in range(args.repeats):
            took, resp = sliding_sync(client, request_body(args, f"first-{i}-{uuid.uuid4().hex[:6]}"))
            check_first(resp, rooms, args)
            first.append(took)
        out["first"] = summary(first)
        out["first_cold_ms"] = first[0] * 1000

        body = request_body(args, "incremental")
        _, resp = sliding_sync(client, body)
        pos = resp["pos"]
        incremental = []
        for i in range(args.repeats):
            # the least recently active room: outside the window until the message arrives
            room_id = room_ids[i % len(room_ids)]
            text = f"incremental {i}"
            sender.send(room_id, text)
            took, resp = sliding_sync(client, body, pos)
            got = resp.get("rooms", {}).get(room_id, {})
            if text not in [e.get("content", {}).get("body") for e in got.get("timeline", [])]:
                raise AssertionError(f"incremental {i}: {room_id} not in the response with its message: {got!r:.500}")
            pos = resp["pos"]
            incremental.append(took)
        out["incremental"] = summary(incremental)

        if not args.no_restart:
            client.close()
            server.stop(timeout=30)
            server.start()
            after = []
            for i in range(args.repeats + 1):
                took, resp = sliding_sync(client, request_body(args, f"restart-{i}"))
                check_first(resp, rooms, args)
                after.append(took)
            out["first_after_restart_cold_ms"] = after[0] * 1000
            out["first_after_restart"] = summary(after[1:])
        print(
            f"[{label}] first {out['first']['median_ms']:.1f} ms (cold {out['first_cold_ms']:.1f}),"
            f" incremental {out['incremental']['median_ms']:.1f} ms"
            + (
                f", after restart {out['first_after_restart_cold_ms']:.1f} ms cold"
                f" / {out['first_after_restart']['median_ms']:.1f} ms"
                if "first_after_restart" in out
                else ""
            ),
            flush=True,
        )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"[{label}] FAILED: {out['error'][:2000]}", file=sys.stderr, flush=True)
        print(server.tails(lines=25), file=sys.stderr)
    finally:
        if client is not None:
            client.close()
        stop_server(server)
    return out




def find(out: dict[str, Any], kind: str, rooms: int) -> dict[str, Any] | None:
    for r in out["runs"]:
        if r["server"] == kind and r["rooms"] == rooms and "error" not in r:
            return r
    return None


def report(out: dict[str, Any], args: Any) -> None:
    print()
    print(
        f"Sliding sync, one list [0, {args.range_end}] with timeline_limit {args.timeline_limit}"
        f" ({args.repeats} timed requests of each kind; ms)"
    )
    head = (
        f"{'server':<9} {'rooms':>6} {'first p50':>10} {'p90':>8} {'cold':>8} {'incr p50':>9} {'p90':>8}"
        f" {'restart cold':>12} {'restart p50':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in out["runs"]:
        if "error" in r:
            print(f"{NAMES[r['server']]:<9} {r['rooms']:>6}  FAILED")
            continue
        restart = r.get("first_after_restart", {})
        print(
            f"{NAMES[r['server']]:<9} {r['rooms']:>6} {fmt(r['first']['median_ms'], '10.1f')}"
            f" {fmt(r['first']['p90_ms'], '8.1f')} {fmt(r['first_cold_ms'], '8.1f')}"
            f" {fmt(r['incremental']['median_ms'], '9.1f')} {fmt(r['incremental']['p90_ms'], '8.1f')}"
            f" {fmt(r.get('first_after_restart_cold_ms'), '12.1f')} {fmt(restart.get('median_ms'), '11.1f')}"
        )
    ratios: dict[str, float] = {}
    sizes = sorted(set(args.rooms))
    for kind in args.server:
        if len(sizes) >= 2:
            small, big = find(out, kind, sizes[0]), find(out, kind, sizes[-1])
            if small and big:
                ratios[f"{kind} first {sizes[-1]}/{sizes[0]}"] = big["first"]["median_ms"] / small["first"]["median_ms"]
    for n in sizes:
        mx, syn = find(out, "mxserver", n), find(out, "synapse", n)
        if mx and syn:
            ratios[f"first mxserver/synapse {n}"] = mx["first"]["median_ms"] / syn["first"]["median_ms"]
            ratios[f"incremental mxserver/synapse {n}"] = mx["incremental"]["median_ms"] / syn["incremental"]["median_ms"]
    out["ratios"] = ratios
    if ratios:
        print("ratios of medians: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(
        "first: initial request on a new connection (cold: the first of them after setup);"
        " incremental: the request after one new message in a room outside the window;"
        " restart: initial requests after a server restart (cold: the first)."
    )


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--server", action="append", choices=["mxserver", "synapse"], help="repeatable; default both")
    p.add_argument("--rooms", action="append", type=int, help="rooms of the account (repeatable; default 100, 1000)")
    p.add_argument("--range-end", type=int, default=19, help="the window is [0, E] (default 19)")
    p.add_argument("--timeline-limit", type=int, default=1, help="timeline_limit of the list (default 1)")
    p.add_argument("--repeats", type=int, default=10, help="timed requests of each kind (default 10)")
    p.add_argument("--workers", type=int, default=8, help="requests in flight while creating rooms (default 8)")
    p.add_argument("--settle", type=float, default=2.0, help="quiet seconds after setup (default 2)")
    p.add_argument("--no-restart", action="store_true", help="skip the measurement after a restart")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["mxserver", "synapse"]))
    args.rooms = list(dict.fromkeys(args.rooms or [100, 1000]))
    if min(args.rooms) < 1 or args.repeats < 1 or args.workers < 1 or args.range_end < 0:
        p.error("--rooms, --repeats and --workers must be at least 1, --range-end at least 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def runs(root: Path) -> Iterator[dict[str, Any]]:
        for kind in args.server:
            for rooms in args.rooms:
                yield run_one(kind, rooms, root, args)

    return run_benchmark("ss", args, runs, report, label=lambda r: f"{NAMES[r['server']]} {r['rooms']}")


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
