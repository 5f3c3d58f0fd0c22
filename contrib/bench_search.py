#!/usr/bin/env python
"""Search benchmark (issue 14): POST /search over a room of N messages, mxserver vs Synapse.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_search.py                                  # both servers, 50,000 messages
    .venv/bin/python contrib/bench_search.py --server mxserver --messages 2000  # a quick check that it all works

Options: ``--server mxserver|synapse`` (repeatable; default both), ``--messages N`` messages
in the room (default 50000), ``--queries Q`` timed queries per kind (default 20),
``--workers K`` sends in flight while filling the room (default 8), ``--json FILE`` also
writes the figures as JSON, ``--keep`` keeps the data directories (logs) in the temp folder.

What it does, for every server asked, one after the other, each a fresh process started by
``contrib/bench_processes.py`` (``tests/interop/harness.py``'s launcher; Synapse through the
shared adapter ``shared/servers/synapse``), SQLite, rate limits off, logging at WARNING:

1. Setup, not timed: registers a user, creates a public room and sends N ``m.text``
   messages into it over the client API (``--workers`` in flight). Message ``i`` holds
   filler words and, by ``i``: ``alpha`` (every 2nd message), ``delta`` (every 4th),
   ``bravo`` (every 5th), ``charlie`` (every 10th): the *common* words; and every 100th
   message a word of its own, ``zulu`` and ``i`` in six digits: the *rare* words, each in
   exactly one message (no rare word is the start of another, so word-prefix matching
   finds only that one on either server).
2. One untimed search, then ``--queries`` timed searches of each kind, one after the other:
   common words in ``rank`` and in ``recent`` order, rare words in ``rank`` and in
   ``recent`` order (the words taken in turn). Each is ``POST /search`` with the word as
   ``search_term`` and nothing else set (10 results), request to answer.
3. The check: every rare-word search returns exactly its one message, every common-word
   search a full page of messages holding the word. A wrong answer is counted and shown
   (the check column names the kinds that had any); the timing is still reported.

The table shows the median (and p90) latency per kind in ms. Figures are printed, never
asserted. The server and this client share the machine: compare servers of the same run and
repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import random
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
    percentile,
    run_benchmark,
    start_server,
    stop_server,
)
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"
#: the common words and how often they come: message i has the word when i % every == 0
COMMON = {"alpha": 2, "delta": 4, "bravo": 5, "charlie": 10}
#: every RARE_EVERY-th message has a word of its own
RARE_EVERY = 100
#: filler words: none starts with a common or rare word
FILLER = [f"lorem{n}" for n in range(500)] + ["ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing"]
KINDS = [("common", "rank"), ("common", "recent"), ("rare", "rank"), ("rare", "recent")]


def rare_word(i: int) -> str:
    return f"zulu{i:06d}"


def body_of(i: int) -> str:
    """The text of message ``i``: filler, its common words, maybe its rare word."""
    rng = random.Random(i)
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))]
    words += [w for w, every in COMMON.items() if i % every == 0]
    if i % RARE_EVERY == 7:
        words.append(rare_word(i))
    rng.shuffle(words)
    return f"message {i}: " + " ".join(words)


def fill_room(user: harness.User, room_id: str, n: int, workers: int) -> dict[str, str]:
    """Sends the N messages; the rare words' event IDs."""
    rare: dict[str, str] = {}

    def send(i: int) -> None:
        path = f"{C}/rooms/{harness.quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
        event_id = user.ok("PUT", path, {"msgtype": "m.text", "body": body_of(i)}, timeout=120)["event_id"]
        if i % RARE_EVERY == 7:
            rare[rare_word(i)] = event_id

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(send, range(n)))
    return rare


def search(user: harness.User, term: str, order: str) -> tuple[float, Any]:
    """(seconds from request to answer, the room_events category)."""
    body = {"search_categories": {"room_events": {"search_term": term, "order_by": order}}}
    t = time.perf_counter()
    resp = user.ok("POST", f"{C}/search", body, timeout=300)
    return time.perf_counter() - t, resp["search_categories"]["room_events"]


def check(kind: str, term: str, answer: dict[str, Any], rare: dict[str, str]) -> str | None:
    """What is wrong with an answer (None: nothing)."""
    results = [r["result"] for r in answer.get("results", [])]
    if kind == "rare":
        if [r["event_id"] for r in results] != [rare[term]]:
            return f"search for {term!r} returned {len(results)} events, want only [{rare[term]}]"
        return None
    if len(results) != 10:
        return f"search for {term!r} returned {len(results)} results, want a page of 10"
    for r in results:
        if term not in r["content"]["body"].split():
            return f"search for {term!r} returned {r['content']['body']!r}"
    return None




def run_one(kind: str, root: Path, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"server": kind, "messages": args.messages, "queries": args.queries}
    label = NAMES[kind]
    t = time.perf_counter()
    server = start_server(kind, root / kind)
    out["startup_s"] = time.perf_counter() - t
    print(f"[{label}] server up in {out['startup_s']:.1f}s", flush=True)
    try:
        user = server.register("searcher")
        room_id = user.create_room(preset="public_chat", name="search bench")
        t = time.perf_counter()
        rare = fill_room(user, room_id, args.messages, args.workers)
        out["fill_s"] = time.perf_counter() - t
        print(
            f"[{label}] {args.messages} messages sent in {out['fill_s']:.1f}s"
            f" ({args.messages / out['fill_s']:.0f}/s, {args.workers} in flight); searching ...",
            flush=True,
        )
        if not rare:
            raise AssertionError(f"--messages {args.messages} is too few for a rare word (one every {RARE_EVERY})")
        search(user, "alpha", "rank")  # untimed: caches, connections
        words = {"common": list(COMMON), "rare": sorted(rare)}
        for what, order in KINDS:
            latencies = []
            wrong = []
            for i in range(args.queries):
                term = words[what][i % len(words[what])]
                seconds, answer = search(user, term, order)
                problem = check(what, term, answer, rare)
                if problem is not None:
                    wrong.append(problem)
                latencies.append(seconds * 1000)
            lat = sorted(latencies)
            out[f"{what}_{order}"] = {
                "median_ms": statistics.median(lat),
                "p90_ms": percentile(lat, 0.9),
                "latencies_ms": [round(x, 3) for x in latencies],
                "wrong": len(wrong),
            }
            print(
                f"[{label}] {what} words, {order}: median {statistics.median(lat):.1f} ms,"
                f" p90 {percentile(lat, 0.9):.1f} ms" + (f"; {len(wrong)} wrong answers, e.g. {wrong[0]}" if wrong else ""),
                flush=True,
            )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"[{label}] FAILED: {out['error'][:2000]}", file=sys.stderr, flush=True)
        print(server.tails(lines=25), file=sys.stderr)
    finally:
        stop_server(server)
    return out


def fmt(v: Any) -> str:
    return f"{v:9.1f}" if isinstance(v, (int, float)) else f"{'-':>9}"


def report(out: dict[str, Any], args: Any) -> None:
    print()
    print(f"POST /search in a room of {args.messages} messages: median (p90) ms of {args.queries} queries per kind")
    head = f"{'server':<9} " + " ".join(f"{what + ' ' + order:>21}" for what, order in KINDS) + "  check"
    print(head)
    print("-" * len(head))
    for r in out["runs"]:
        cells = []
        for what, order in KINDS:
            fig = r.get(f"{what}_{order}", {})
            cells.append(f"{fmt(fig.get('median_ms'))} ({fmt(fig.get('p90_ms')).strip():>8})")
        wrong = [f"{what} {order}" for what, order in KINDS if r.get(f"{what}_{order}", {}).get("wrong")]
        verdict = "FAILED" if "error" in r else ("wrong: " + ", ".join(wrong) if wrong else "ok")
        print(f"{NAMES[r['server']]:<9} " + " ".join(f"{c:>21}" for c in cells) + f"  {verdict}")
    by_kind = {r["server"]: r for r in out["runs"]}
    if "mxserver" in by_kind and "synapse" in by_kind:
        ratios = []
        for what, order in KINDS:
            a = by_kind["mxserver"].get(f"{what}_{order}", {}).get("median_ms")
            b = by_kind["synapse"].get(f"{what}_{order}", {}).get("median_ms")
            ratios.append(f"{a / b:21.3f}" if a and b else f"{'-':>21}")
        print(f"{'ratio':<9} " + " ".join(ratios) + "  (mxserver/Synapse medians; issue 14 asks at most 0.2)")
    print(
        "common: alpha, delta, bravo, charlie (in 50%, 25%, 20%, 10% of the messages); rare: a word in one message;"
        " rank/recent: order_by; a page is 10 results; latency is request to answer."
    )


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--server", action="append", choices=["mxserver", "synapse"], help="server to measure (repeatable; default both)"
    )
    p.add_argument("--messages", type=int, default=50_000, help="messages in the room (default 50000)")
    p.add_argument("--queries", type=int, default=20, help="timed queries per kind (default 20)")
    p.add_argument("--workers", type=int, default=8, help="sends in flight while filling the room (default 8)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    args.server = list(dict.fromkeys(args.server or ["mxserver", "synapse"]))
    if args.messages < RARE_EVERY or args.queries < 1 or args.workers < 1:
        p.error(f"--messages must be at least {RARE_EVERY}, --queries and --workers at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def runs(root: Path) -> Iterator[dict[str, Any]]:
        for kind in args.server:
            yield run_one(kind, root, args)

    return run_benchmark("search", args, runs, report)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
