#!/usr/bin/env python
"""Message-burst benchmark between two real homeservers federating on loopback:
mxserver and Synapse in every sender/receiver combination, Synapse→Synapse as the yardstick.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_federation_burst.py                      # all four pairs, 200 messages
    .venv/bin/python contrib/bench_federation_burst.py --messages 1000 --concurrency 4
    .venv/bin/python contrib/bench_federation_burst.py --pairs mx-syn,syn-syn --keep

Options: ``--messages N`` messages in the burst (default 200), ``--concurrency K`` PUTs
in flight at once (default 1: one after the other), ``--pairs`` which ordered pairs to
run (``mx-syn,syn-mx,syn-syn,mx-mx``; sender first), ``--timeout S`` bound on waiting
for the burst to arrive (default 300), ``--json FILE`` also writes the figures as JSON,
``--keep`` keeps the data directories (logs) in the temp folder.

What it does, for each ordered pair (sender → receiver):

1. Starts two fresh server processes with ``tests/interop/harness.py`` (the interop
   tests' launcher): each with SQLite, its client API on plain HTTP and its federation
   API on TLS with a self-signed certificate, both on 127.0.0.1, server names
   ``127.0.0.1:<federation port>``, rate limits off, logging at WARNING (the benchmark
   policy of ``shared/servers/README.md``). Synapse is the one of
   ``shared/servers/synapse`` with the loopback federation settings of that README.
2. A sender-side user creates a public room; a receiver-side user joins it over
   federation. One warm-up message must reach the receiver (keys fetched, connections
   open, the join settled) before the clock starts.
3. The receiving user long-polls ``/sync`` (timeline limit above N, so nothing is cut
   off) in a thread of its own while the sending user PUTs N messages as fast as the
   client API takes them (``--concurrency`` at once).
4. Reported, from the first PUT: when the sender's API had acknowledged all N
   (``acked``); when the LAST of them (in the sender's order) showed up in the
   receiver's ``/sync`` (``last``); messages per second for both; when all N were
   readable by the receiver (``all``: in ``/sync``, or, when ``/sync`` answered a
   ``limited`` timeline and so left a gap, in ``/sync`` plus the receiver's
   ``/messages``, which is where a client pages back for the gap); how many came
   through ``/sync`` and whether ``/sync`` and ``/messages`` kept the sender's order.
   Ratios are time over the Synapse→Synapse time (above 1: slower than
   Synapse↔Synapse).

   A gap is the receiver's doing, not an error: Synapse, with 100 or more inbound
   events of one room queued, prunes the queue and fetches the missing events from
   the sender (``/get_missing_events``, ``/backfill``); those never show in ``/sync``.

Figures are printed, never asserted. The machine and whatever else runs on it decide
them (this script drives both servers and the client from one machine): compare pairs
of the same run, and repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrib.bench_processes import finish, interrupted, start_server, stop_all, stop_all_at_exit, stop_server  # noqa: E402
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"
PAIRS = {
    "mx-syn": ("mxserver", "synapse"),
    "syn-mx": ("synapse", "mxserver"),
    "syn-syn": ("synapse", "synapse"),
    "mx-mx": ("mxserver", "mxserver"),
}
BASELINE = "syn-syn"
ARROW = {"mxserver": "mxserver", "synapse": "Synapse"}


# -- the receiving user's /sync --------------------------------------------------------------


class Receiver(threading.Thread):
    """Long-polls /sync for one user and notes when each event of one room first appeared."""

    def __init__(self, user: harness.User, room_id: str, wanted: int, limit: int, deadline: float) -> None:
        super().__init__(daemon=True, name="receiver-sync")
        self.user = user
        self.room_id = room_id
        self.wanted = wanted  # how many burst messages end the wait
        #: the burst's last event (the sender's order), set by the main thread once known
        self.last_id: str | None = None
        self.deadline = deadline
        self.filter = json.dumps({"room": {"timeline": {"limit": limit}}, "presence": {"not_types": ["*"]}})
        self.since: str | None = None
        self.events: list[dict[str, Any]] = []  # burst messages, in /sync order
        self.seen_at: dict[str, float] = {}  # event_id -> perf_counter when first seen
        self.limited = 0  # syncs whose timeline of the room was cut off
        self.syncs = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.sync(0)  # the token the burst will be measured from

    def sync(self, timeout_ms: int) -> None:
        query = f"?timeout={timeout_ms}&filter={harness.quote(self.filter)}"
        if self.since:
            query += f"&since={harness.quote(self.since)}"
        resp = self.user.ok("GET", C + "/sync" + query, timeout=timeout_ms / 1000 + 60)
        now = time.perf_counter()
        self.syncs += 1
        self.since = resp["next_batch"]
        room = resp.get("rooms", {}).get("join", {}).get(self.room_id)
        if not room or self.since is None:
            return
        timeline = room.get("timeline", {})
        if timeline.get("limited") and self.syncs > 1:
            self.limited += 1
        for ev in timeline.get("events", []):
            body = ev.get("content", {}).get("body")
            if ev.get("type") == "m.room.message" and isinstance(body, str) and body.startswith("burst "):
                if ev["event_id"] not in self.seen_at:
                    self.seen_at[ev["event_id"]] = now
                    self.events.append(ev)

    def finished(self) -> bool:
        """All of the burst arrived; or its last message did after a gap (a ``limited``
        timeline: what is in the gap comes through /messages, never /sync)."""
        if len(self.seen_at) >= self.wanted:
            return True
        return bool(self.limited and self.last_id and self.last_id in self.seen_at)

    def run(self) -> None:
        try:
            while not self.finished():
                left = self.deadline - time.perf_counter()
                if left <= 0:
                    return
                self.sync(int(min(left, 10.0) * 1000))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e
        finally:
            self.done.set()


# -- one pair --------------------------------------------------------------------------------


def send_burst(user: harness.User, room_id: str, n: int, concurrency: int) -> list[tuple[int, str, float]]:
    """PUT ``n`` messages; [(index, event_id, perf_counter when acknowledged)] in ack order."""
    run = uuid.uuid4().hex[:6]

    def put(i: int) -> tuple[int, str, float]:
        path = f"{C}/rooms/{harness.quote(room_id)}/send/m.room.message/burst-{run}-{i}"
        resp = user.ok("PUT", path, {"msgtype": "m.text", "body": f"burst {i}"}, timeout=120)
        return i, str(resp["event_id"]), time.perf_counter()

    if concurrency <= 1:
        return [put(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return sorted(pool.map(put, range(n)), key=lambda r: r[2])


def ordered_burst_ids(events: list[dict[str, Any]]) -> list[str]:
    return [
        ev["event_id"]
        for ev in events
        if ev.get("type") == "m.room.message" and str(ev.get("content", {}).get("body", "")).startswith("burst ")
    ]


def run_pair(name: str, root: Path, args: Any) -> dict[str, Any]:
    sender_kind, receiver_kind = PAIRS[name]
    result: dict[str, Any] = {"pair": name, "sender": sender_kind, "receiver": receiver_kind}
    n = args.messages
    print(f"== {ARROW[sender_kind]} → {ARROW[receiver_kind]}: starting both servers ...", flush=True)
    t = time.perf_counter()
    sender_hs = start_server(sender_kind, root / "sender")
    receiver_hs = start_server(receiver_kind, root / "receiver")
    result["startup_s"] = time.perf_counter() - t
    try:
        alice = sender_hs.register("sender")
        bob = receiver_hs.register("receiver")
        room_id = alice.create_room(preset="public_chat", name="burst")
        bob.join(room_id, via=[sender_hs.server_name])
        alice_sync = harness.Sync(alice)
        alice_sync.wait_for_membership(room_id, bob.user_id, "join", timeout=90)
        # Warm-up: keys, connections and the join's aftermath (Synapse's partial-state
        # resync) are not part of the burst.
        bob_sync = harness.Sync(bob)
        alice.send(room_id, "warm-up")
        bob_sync.wait_for_body(room_id, "warm-up", timeout=90)
        time.sleep(args.settle)

        load = os.getloadavg()[0]
        receiver = Receiver(bob, room_id, n, max(n + 50, 100), time.perf_counter() + args.timeout)
        print(f"   burst of {n} messages (concurrency {args.concurrency}) ...", flush=True)
        t0 = time.perf_counter()
        receiver.start()
        acks = send_burst(alice, room_id, n, args.concurrency)
        t_acked = time.perf_counter() - t0
        if args.concurrency <= 1:
            receiver.last_id = acks[-1][1]
        else:
            # Which PUT the sender ordered last: the newest event of its room now.
            latest = alice.messages(room_id, limit=1)["chunk"]
            receiver.last_id = latest[0]["event_id"] if latest else None
        receiver.done.wait(args.timeout + 120)
        if receiver.error is not None:
            raise receiver.error
        if not receiver.done.is_set():
            raise TimeoutError("the receiver's /sync did not return in time")

        # The sender's order: with concurrency 1 the order of the PUTs; otherwise the
        # order the sender's own /messages gives.
        sent_ids = [eid for _, eid, _ in sorted(acks)] if args.concurrency <= 1 else []
        pages = n // 100 + 10
        sender_order = ordered_burst_ids(alice.all_messages_backwards(room_id, max_pages=pages))
        if not sent_ids:
            sent_ids = sender_order
        sync_ids = [ev["event_id"] for ev in receiver.events]
        # Concurrent PUTs fork the room's DAG: events of equal depth have no order both
        # servers share (each one's /messages and /sync follow its own arrival order), so
        # with --concurrency above 1 only completeness is checked, not order.
        exact = args.concurrency <= 1

        def complete(ids: list[str]) -> bool:
            return ids == sent_ids if exact else set(sent_ids) <= set(ids)

        # When /sync left a gap, all of the burst is readable once the receiver's
        # /messages (what a client pages back through) has every message.
        complete_at = max(receiver.seen_at.values()) if len(receiver.seen_at) >= n else None
        receiver_order = ordered_burst_ids(bob.all_messages_backwards(room_id, max_pages=pages))
        deadline = t0 + args.timeout
        while complete_at is None and not complete(receiver_order) and time.perf_counter() < deadline:
            time.sleep(0.25)
            receiver_order = ordered_burst_ids(bob.all_messages_backwards(room_id, max_pages=pages))
        if complete_at is None and complete(receiver_order):
            complete_at = time.perf_counter()
        last_at = receiver.seen_at.get(receiver.last_id or "")
        t_visible = last_at - t0 if last_at is not None else float("nan")
        t_complete = complete_at - t0 if complete_at is not None else float("nan")
        positions = [sent_ids.index(e) if e in sent_ids else -1 for e in sync_ids]
        result.update(
            {
                "messages": n,
                "concurrency": args.concurrency,
                "loadavg_1m_before": round(load, 2),
                "acked_s": t_acked,
                "acked_per_s": n / t_acked if t_acked else 0.0,
                # the last message (sender's order) in the receiver's /sync
                "visible_s": t_visible,
                "visible_per_s": n / t_visible if t_visible == t_visible and t_visible else 0.0,
                # time between the last acknowledgement and the last arrival
                "lag_after_ack_s": t_visible - t_acked,
                # every message readable by the receiver (/sync, plus /messages for a gap)
                "all_readable_s": t_complete,
                "arrived_in_sync": len(set(sync_ids) & set(sent_ids)),
                # what /sync delivered came in the sender's order (gaps allowed)
                "sync_in_order": (positions == sorted(positions) and -1 not in positions) if exact else None,
                "sync_limited_timelines": receiver.limited,
                "receiver_syncs": receiver.syncs,
                "messages_api_missing": len(set(sent_ids) - set(receiver_order)),
                "messages_api_in_order": receiver_order == sent_ids if exact else None,
                # positions (in the sender's order) of what /sync delivered, in /sync order
                "sync_positions": positions,
                "sender_messages_in_order": sender_order == sent_ids if exact else None,
            }
        )
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        for hs in (sender_hs, receiver_hs):
            print(hs.tails(lines=25), file=sys.stderr)
    finally:
        for hs in (receiver_hs, sender_hs):
            stop_server(hs)
    return result


# -- report ----------------------------------------------------------------------------------


def fmt_ratio(value: float, base: float | None) -> str:
    if base is None or not base or value != value or base != base:
        return "-"
    return f"{value / base:.2f}x"


def report(results: list[dict[str, Any]]) -> None:
    base = next((r for r in results if r["pair"] == BASELINE and "error" not in r), None)

    def ratio(r: dict[str, Any], key: str) -> str:
        return fmt_ratio(r[key], base[key] if base else None)

    head = (
        f"{'sender → receiver':<20} {'acked s':>7} {'msg/s':>6} {'last s':>7} {'msg/s':>6} {'lag s':>6}"
        f" {'all s':>7} {'in /sync':>8} {'gaps':>4} {'order':>5}   {'acked':>6} {'last':>6} {'all':>6}"
    )
    print()
    print(" " * 98 + "time / Synapse→Synapse")
    print(head)
    print("-" * len(head))
    for r in results:
        label = f"{ARROW[r['sender']]} → {ARROW[r['receiver']]}"
        if "error" in r:
            print(f"{label:<20} FAILED: {r['error'][:200]}")
            continue
        if r["sync_in_order"] is None:
            order = "n/a"
        else:
            order = "yes" if r["sync_in_order"] and r["messages_api_in_order"] else "NO"
        arrived = f"{r['arrived_in_sync']}/{r['messages']}"
        print(
            f"{label:<20} {r['acked_s']:>7.2f} {r['acked_per_s']:>6.0f} {r['visible_s']:>7.2f}"
            f" {r['visible_per_s']:>6.0f} {r['lag_after_ack_s']:>6.2f} {r['all_readable_s']:>7.2f}"
            f" {arrived:>8} {r['sync_limited_timelines']:>4} {order:>5}"
            f"   {ratio(r, 'acked_s'):>6} {ratio(r, 'visible_s'):>6} {ratio(r, 'all_readable_s'):>6}"
        )
    print()
    print(
        "Times from the first PUT. acked: the sender's API acknowledged all; last: the last message"
        " (sender's order) in the receiver's /sync; lag = last - acked; all: every message readable by"
        " the receiver (/sync, or /sync plus /messages when /sync left a gap); in /sync: messages /sync"
        " delivered; gaps: limited /sync timelines; order: /sync and the receiver's /messages keep the"
        " sender's order (n/a with --concurrency above 1: concurrent events have no common order)."
    )
    for r in results:
        if "error" in r:
            continue
        notes = []
        if r["sync_limited_timelines"]:
            notes.append(
                f"/sync skipped {r['messages'] - r['arrived_in_sync']} messages behind"
                f" {r['sync_limited_timelines']} limited timeline(s) (a client pages back"
                " for them through /messages)"
            )
        if r["messages_api_missing"]:
            notes.append(f"the receiver's /messages still lacked {r['messages_api_missing']} messages at the end")
        elif r["messages_api_in_order"] is False:
            notes.append("the receiver's /messages order differs from the sender's")
        if r["sender_messages_in_order"] is False:
            notes.append("the sender's /messages order differs from the PUT order")
        if notes:
            print(f"note {r['pair']}: " + "; ".join(notes))
    print(f"load average (1 min) before each burst: {[r.get('loadavg_1m_before') for r in results]}")


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--messages", type=int, default=200, help="messages in the burst (default 200)")
    p.add_argument("--concurrency", type=int, default=1, help="PUTs in flight at once (default 1)")
    p.add_argument(
        "--pairs",
        default=",".join(PAIRS),
        help=f"comma-separated ordered pairs, sender first (default {','.join(PAIRS)})",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="bound on the burst's arrival, s (default 300)")
    p.add_argument("--settle", type=float, default=2.0, help="quiet seconds after the warm-up (default 2)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.pair_list = [s.strip() for s in args.pairs.split(",") if s.strip()]
    unknown = [s for s in args.pair_list if s not in PAIRS]
    if unknown or not args.pair_list:
        p.error(f"unknown pairs {unknown}; choose from {', '.join(PAIRS)}")
    if args.messages < 1 or args.concurrency < 1:
        p.error("--messages and --concurrency must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    missing = harness.shared_missing_reason()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    stop_all_at_exit()
    root = Path(tempfile.mkdtemp(prefix="mxserver-bench-burst-"))
    results: list[dict[str, Any]] = []
    try:
        for i, name in enumerate(args.pair_list):
            results.append(run_pair(name, root / f"{i}-{name}", args))
    except (KeyboardInterrupt, SystemExit):
        interrupted(root)
        raise
    finally:
        stop_all()
    report(results)
    return finish(root, results, args.json, args.keep, any("error" in r for r in results))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
