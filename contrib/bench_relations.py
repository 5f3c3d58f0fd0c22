#!/usr/bin/env python
"""Relations benchmark (issue 14): ``/messages`` of 50 events that each carry bundled
aggregations (a thread and an edit), mxserver vs Synapse.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_relations.py                      # both servers
    .venv/bin/python contrib/bench_relations.py --server mxserver    # mxserver only
    .venv/bin/python contrib/bench_relations.py --roots 10 --queries 5   # a quick check

Options: ``--server mxserver|synapse`` (repeatable; default both), ``--roots N`` thread
roots, the page size (default 50), ``--replies R`` thread replies per root (default 3),
``--queries Q`` timed requests (default 20), ``--new-connections`` (below), ``--json FILE`` also writes the figures,
``--keep`` keeps the data directories (logs).

What it does, for each server, on a fresh process (``contrib/bench_processes.py``: SQLite,
rate limits off, logging at WARNING):

1. Setup, not timed: one user makes a room and takes a ``/sync`` token; sends ``N`` roots;
   then, for each root, ``R`` replies in its thread (``m.thread``), an edit of the root
   (``m.replace`` with ``m.new_content``) and a reply that references it (``m.reference``).
2. ``Q`` timed ``GET /rooms/{roomId}/messages?dir=f&from=<token>&limit=N``: the page is the
   ``N`` roots, each with ``unsigned["m.relations"]`` holding ``m.thread`` (latest reply,
   count, participation) and ``m.replace``.
3. The check, which fails the run: the page is the roots in order, and each root's bundle
   has the thread's count and latest reply and the edit.

The timed requests go over one keep-alive HTTP/1.1 connection per server (``http.client``),
the same for both servers, so the figure measures the servers and not TCP setup: a new
connection per request (``urllib``, as the setup's requests make) adds about 2 ms to each
request of either server. A request is timed until its body is read, not parsed: parsing
the page (some 80 kB) is the client's work, about 1 ms whichever server sent it.
``--new-connections`` times each request on a new connection, through the harness's
client, parsing included: the figures as they were measured before.

The table shows the median, p90 and mean request time (ms) and the ratio mxserver/Synapse
of the medians (issue 14 asks at most 0.2). Figures are printed, never asserted.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrib.bench_processes import (  # noqa: E402
    NAMES,
    run_benchmark,
    start_server,
    stop_server,
)
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"


def send(user: harness.User, room_id: str, content: dict[str, Any]) -> str:
    path = f"{C}/rooms/{harness.quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
    return str(user.ok("PUT", path, content, timeout=60)["event_id"])


def check_page(chunk: list[dict[str, Any]], roots: list[str], edits: dict[str, str], replies: int) -> None:
    got = [e["event_id"] for e in chunk]
    if got != roots:
        raise AssertionError(f"the page is not the {len(roots)} roots in order: {got[:5]}...")
    for event in chunk:
        bundle = event.get("unsigned", {}).get("m.relations", {})
        thread = bundle.get("m.thread") or {}
        if thread.get("count") != replies or not isinstance(thread.get("latest_event"), dict):
            raise AssertionError(f"{event['event_id']}: thread bundle {json.dumps(thread)[:300]}")
        if thread.get("current_user_participated") is not True:
            raise AssertionError(f"{event['event_id']}: current_user_participated {thread.get('current_user_participated')!r}")
        replace = bundle.get("m.replace") or {}
        if replace.get("event_id") != edits[event["event_id"]]:
            raise AssertionError(f"{event['event_id']}: m.replace {json.dumps(replace)[:300]}")


class KeepAlive:
    """GET requests as ``user`` over one persistent connection to its server (``--new-connections``:
    a fresh connection each time, through the harness's urllib client)."""

    def __init__(self, user: harness.User, new_connections: bool) -> None:
        self.user = user
        self.new_connections = new_connections
        self.conn: http.client.HTTPConnection | None = None
        if not new_connections:
            host_port = user.server.base_url.removeprefix("http://")
            self.conn = http.client.HTTPConnection(host_port, timeout=60)

    def get(self, path: str) -> Any:
        """The parsed answer of a GET that must succeed."""
        if self.conn is None:
            return self.user.ok("GET", path, timeout=60)
        code, body = self._get_raw(self.conn, path)
        if code != 200:
            raise AssertionError(f"GET {path} -> {code} {body[:2000]!r}")
        return json.loads(body)

    def timed(self, path: str) -> float:
        """The time (ms) of a GET that must succeed: until its body is read (and, on new
        connections, parsed: the harness's client does both)."""
        t = time.perf_counter()
        if self.conn is None:
            self.user.ok("GET", path, timeout=60)
            return (time.perf_counter() - t) * 1000
        code, body = self._get_raw(self.conn, path)
        elapsed = (time.perf_counter() - t) * 1000
        if code != 200:
            raise AssertionError(f"GET {path} -> {code} {body[:2000]!r}")
        return elapsed

    def _get_raw(self, conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.user.token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_one(kind: str, root: Path, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": kind,
        "roots": args.roots,
        "replies": args.replies,
        "queries": args.queries,
        "connections": "new per request" if args.new_connections else "one keep-alive",
    }
    server = start_server(kind, root / kind)
    try:
        user = server.register("rel")
        room_id = user.create_room(preset="private_chat", name="relations bench")
        token = user.ok("GET", f"{C}/sync?timeout=0", timeout=60)["next_batch"]
        # The /messages token of the room's present: a /sync token serves as a from token.
        t = time.perf_counter()
        roots = [send(user, room_id, {"msgtype": "m.text", "body": f"root {i}"}) for i in range(args.roots)]
        edits: dict[str, str] = {}
        for i, root_id in enumerate(roots):
            for j in range(args.replies):
                thread = {"rel_type": "m.thread", "event_id": root_id, "is_falling_back": True, "m.in_reply_to": {"event_id": root_id}}
                send(user, room_id, {"msgtype": "m.text", "body": f"reply {i}.{j}", "m.relates_to": thread})
            edits[root_id] = send(
                user,
                room_id,
                {
                    "msgtype": "m.text",
                    "body": f"* root {i} (edited)",
                    "m.new_content": {"msgtype": "m.text", "body": f"root {i} (edited)"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": root_id},
                },
            )
            send(user, room_id, {"msgtype": "m.text", "body": f"see {i}", "m.relates_to": {"rel_type": "m.reference", "event_id": root_id}})
        out["setup_s"] = time.perf_counter() - t
        path = f"{C}/rooms/{harness.quote(room_id)}/messages?dir=f&limit={args.roots}&from={harness.quote(token)}"
        client = KeepAlive(user, args.new_connections)
        try:
            chunk = client.get(path)["chunk"]  # warm-up (and the connection), and the check
            check_page(chunk, roots, edits, args.replies)
            times = [client.timed(path) for _ in range(args.queries)]
        finally:
            client.close()
        times.sort()
        out.update(
            {
                "median_ms": statistics.median(times),
                "p90_ms": times[int(0.9 * (len(times) - 1))],
                "mean_ms": statistics.fmean(times),
                "times_ms": [round(x, 3) for x in times],
            }
        )
        print(f"[{NAMES[kind]}] median {out['median_ms']:.1f} ms (setup {out['setup_s']:.1f}s)", flush=True)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"[{NAMES[kind]}] FAILED: {out['error'][:2000]}", file=sys.stderr, flush=True)
        print(server.tails(lines=25), file=sys.stderr)
    finally:
        stop_server(server)
    return out


def report(out: dict[str, Any], args: Any) -> None:
    print()
    how = "a new connection each" if args.new_connections else "over one keep-alive connection"
    print(
        f"GET /messages of {args.roots} thread roots, each with {args.replies} replies, an edit and a reference"
        f" ({args.queries} requests, {how})"
    )
    print(f"{'server':<9} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8}  check")
    medians: dict[str, float] = {}
    for r in out["runs"]:
        ok = "error" not in r
        if ok:
            medians[r["server"]] = r["median_ms"]
        print(
            f"{NAMES[r['server']]:<9} {r.get('median_ms', float('nan')):>10.2f} {r.get('p90_ms', float('nan')):>8.2f}"
            f" {r.get('mean_ms', float('nan')):>8.2f}  {'bundles ok' if ok else 'FAILED'}"
        )
    if "mxserver" in medians and "synapse" in medians:
        out["ratio"] = medians["mxserver"] / medians["synapse"]
        print(f"median ratio mxserver/Synapse {out['ratio']:.3f} (issue 14 asks at most 0.2)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--server", action="append", choices=["mxserver", "synapse"], help="repeatable; default both")
    p.add_argument("--roots", type=int, default=50, help="thread roots, the page size (default 50)")
    p.add_argument("--replies", type=int, default=3, help="thread replies per root (default 3)")
    p.add_argument("--queries", type=int, default=20, help="timed requests (default 20)")
    p.add_argument(
        "--new-connections", action="store_true", help="time each request on a new connection (urllib), not one keep-alive"
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["mxserver", "synapse"]))
    if args.roots < 1 or args.replies < 1 or args.queries < 1:
        p.error("--roots, --replies and --queries must be at least 1")

    def runs(root: Path) -> Iterator[dict[str, Any]]:
        for kind in args.server:
            yield run_one(kind, root, args)

    return run_benchmark("relations", args, runs, report)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
