#!/usr/bin/env python
"""Joining-side federation benchmark: joining a 1,000-member room, mxserver vs Synapse
joining the same kind of room on the same resident server.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_federation_join.py                       # Synapse resident, 1000 members, 3 rounds
    .venv/bin/python contrib/bench_federation_join.py --resident mxserver
    .venv/bin/python contrib/bench_federation_join.py --members 300 --rounds 5 --keep

Options: ``--resident synapse|mxserver`` the server that holds the room (default
synapse), ``--members N`` members of the room on the resident, its creator included
(default 1000), ``--rounds R`` timed joins per joiner (default 3), ``--workers K``
concurrent client requests while filling rooms (default 4), ``--timeout S`` bound on
each join and on each wait for the full member list (default 600), ``--settle S`` quiet
seconds before each timed join (default 3), ``--json FILE`` also writes the figures as
JSON, ``--keep`` keeps the data directories (logs) in the temp folder.

What it does:

1. Starts three fresh server processes with ``tests/interop/harness.py`` (the interop
   tests' launcher), each with SQLite, its client API on plain HTTP and its federation
   API on TLS with a self-signed certificate, all on 127.0.0.1, server names
   ``127.0.0.1:<federation port>``, rate limits off, bcrypt cost 4, logging at WARNING
   (the benchmark policy of ``shared/servers/README.md``): the resident R, and two
   joiners, an mxserver M and a Synapse S.
2. Setup (timed and printed, not part of the figures): registers ``--members - 1``
   users on R, ``--workers`` registrations at a time. Each joiner first joins a small
   warm-up room on R, so that fetching R's signing key and opening the first
   connections are not in the timed joins.
3. For every timed join, a FRESH room is made on R: a public room (``public_chat``)
   with a name, a topic, an alias and a custom state event, filled to ``--members``
   joined members by the same registered users (``--workers`` joins at a time through
   R's client API), and a few messages. A new user of the joiner then joins it with
   ``POST /_matrix/client/v3/join/{roomId}?server_name=R``. Measured from that request:

   - ``join answered``: when the joiner's client API answered the join;
   - ``full member list``: when the joiner's ``GET /rooms/{roomId}/joined_members``
     (polled every ``--poll`` s) first listed every member (``--members`` + the joiner).

   Synapse joins in partial-state mode (``send_join`` with ``omit_members``) and fetches
   the room's full state afterwards, so its two figures differ; mxserver joins with the
   full state, so its member list is complete when the join is answered (or soon after).
   ``at answer`` is how many members the first ``joined_members``, asked right after the
   answer, listed. Synapse (1.163) holds that request until its partial-state resync is
   done, so for Synapse the first list is already complete and ``full member list`` is when
   that held request was answered; the figure is the same either way: when a client of the
   joiner can first read the whole member list. An mxserver resident always answers
   ``send_join`` with the full state (``members_omitted: false``), so there Synapse joins
   with full state too and its two figures nearly coincide.

With the defaults a run takes about 6-7 minutes on two cores, nearly all of it filling
the six rooms on the resident (about 20-25 joins/s on a Synapse resident;
with ``--resident mxserver`` about 1.5 minutes).

Why a fresh room for every join: a room the joiner has already been in (a user leaving
and a new one joining) is not a cold join: the joiner already holds its state and events
and would only catch up. Fresh joiner servers per round would also restart their caches
and key fetches, which is not what is measured either. So each joiner server lives for
the whole run (warmed up once), and every timed join is the first contact of that server
with a room of exactly ``--members`` members whose history is identical in shape (one
room per joiner per round, ``2 x --rounds`` rooms in all). The order of the two joiners
alternates from round to round, and a join starts only after the previous joiner had
its full member list and ``--settle`` quiet seconds, so neither joiner's background work
(Synapse's state resync) overlaps the other's clock.

Figures are printed, never asserted; the table shows medians (with min and max over the
rounds) and mxserver/Synapse ratios (above 1: mxserver slower). The machine and whatever
else runs on it decide them (this script drives all three servers and the clients from
one machine): compare joiners of the same run, and repeat a run before trusting a small
difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrib.bench_processes import NAMES, finish, interrupted, start_server, stop_all, stop_all_at_exit  # noqa: E402
from tests.interop import harness  # noqa: E402

C = "/_matrix/client/v3"


# -- setup on the resident -------------------------------------------------------------------


def register_many(server: harness.ServerProcess, n: int, workers: int) -> list[harness.User]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: server.register(f"m{i}x"), range(n)))


def joined_count(user: harness.User, room_id: str, timeout: float = 120.0) -> int:
    resp = user.ok("GET", f"{C}/rooms/{harness.quote(room_id)}/joined_members", timeout=timeout)
    return len(resp.get("joined", {}))


def make_room(creator: harness.User, members: list[harness.User], workers: int, label: str) -> tuple[str, float]:
    """A public room with a few state events, filled to ``len(members) + 1`` members;
    (room id, seconds the fill took)."""
    t = time.perf_counter()
    alias = f"join-bench-{label}-{uuid.uuid4().hex[:6]}"
    room_id = creator.create_room(
        preset="public_chat",
        name=f"join bench {label}",
        topic="a room to join over federation",
        room_alias_name=alias,
    )
    creator.send_state(room_id, "org.mxserver.bench", {"label": label, "members": len(members) + 1})
    path = f"{C}/join/{harness.quote(room_id)}"

    def join(user: harness.User) -> None:
        user.ok("POST", path, {}, timeout=120)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(join, members))
    for i in range(3):
        creator.send(room_id, f"welcome {i}")
    count = joined_count(creator, room_id)
    if count != len(members) + 1:
        raise AssertionError(f"room {room_id} has {count} members on the resident, not {len(members) + 1}")
    return room_id, time.perf_counter() - t


# -- one timed join --------------------------------------------------------------------------


def timed_join(
    joiner: harness.ServerProcess, resident: harness.ServerProcess, room_id: str, expected: int, args: Any
) -> dict[str, Any]:
    user = joiner.register("joiner")  # before the clock: registration is not the join
    query = f"?server_name={harness.quote(resident.server_name)}"
    t0 = time.perf_counter()
    code, resp = user.request("POST", f"{C}/join/{harness.quote(room_id)}{query}", {}, timeout=args.timeout)
    t_join = time.perf_counter() - t0
    if code != 200:
        raise AssertionError(f"{joiner.kind}: join {room_id} -> {code} {resp!r:.1000}")
    deadline = t0 + t_join + args.timeout
    at_answer: int | None = None
    first_list_s = float("nan")
    polls = 0
    while True:
        count = joined_count(user, room_id, timeout=max(1.0, min(120.0, deadline - time.perf_counter())))
        now = time.perf_counter()
        polls += 1
        if at_answer is None:
            # Synapse may hold this first answer until its partial-state resync is done.
            at_answer, first_list_s = count, now - t0
        if count >= expected:
            t_full = now - t0
            break
        if now >= deadline:
            raise TimeoutError(
                f"{joiner.kind}: joined_members still listed {count} of {expected} after {now - t0:.0f}s"
            )
        time.sleep(args.poll)
    return {
        "join_s": t_join,
        "full_s": t_full,
        "at_answer": at_answer,
        "first_list_s": first_list_s,
        "expected": expected,
        "polls": polls,
    }


# -- the run ---------------------------------------------------------------------------------


def run(root: Path, args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resident": args.resident, "members": args.members, "rounds": args.rounds, "joins": []}
    print(f"starting the resident ({NAMES[args.resident]}) and two joiners (mxserver, Synapse) ...", flush=True)
    t = time.perf_counter()
    resident = start_server(args.resident, root / "resident")
    joiners = {
        "mxserver": start_server("mxserver", root / "joiner-mxserver"),
        "synapse": start_server("synapse", root / "joiner-synapse"),
    }
    out["startup_s"] = time.perf_counter() - t
    print(f"   servers up in {out['startup_s']:.1f}s", flush=True)
    try:
        t = time.perf_counter()
        creator = resident.register("creator")
        users = register_many(resident, args.members - 1, args.workers)
        out["register_s"] = time.perf_counter() - t
        print(
            f"setup: registered {len(users) + 1} users on the resident in {out['register_s']:.1f}s"
            f" ({(len(users) + 1) / out['register_s']:.0f}/s, {args.workers} at a time)",
            flush=True,
        )
        # Warm-up: R's signing key, connections, each joiner's first federation contact.
        warm = creator.create_room(preset="public_chat", name="warm-up")
        for joiner in joiners.values():
            u = joiner.register("warm")
            u.ok(
                "POST",
                f"{C}/join/{harness.quote(warm)}?server_name={harness.quote(resident.server_name)}",
                {},
                timeout=args.timeout,
            )
        fills = []
        for rnd in range(args.rounds):
            order = ["mxserver", "synapse"] if rnd % 2 == 0 else ["synapse", "mxserver"]
            for kind in order:
                room_id, fill_s = make_room(creator, users, args.workers, f"r{rnd + 1}-{kind}")
                fills.append(fill_s)
                print(
                    f"round {rnd + 1}, {NAMES[kind]:<8}: room of {args.members} members made in {fill_s:.1f}s"
                    f" ({args.members / fill_s:.0f} joins/s); joining ...",
                    flush=True,
                )
                time.sleep(args.settle)
                load = os.getloadavg()[0]
                res = timed_join(joiners[kind], resident, room_id, args.members + 1, args)
                res.update(
                    {
                        "round": rnd + 1,
                        "joiner": kind,
                        "room_id": room_id,
                        "fill_s": fill_s,
                        "loadavg_1m_before": round(load, 2),
                    }
                )
                out["joins"].append(res)
                print(
                    f"   join answered {res['join_s']:.2f}s ({res['at_answer']} members listed then),"
                    f" full member list {res['full_s']:.2f}s",
                    flush=True,
                )
                time.sleep(args.settle)  # the joiner's aftermath stays out of the next clock
        out["fill_s_median"] = statistics.median(fills)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        for hs in (resident, *joiners.values()):
            print(hs.tails(lines=25), file=sys.stderr)
    finally:
        stop_all()
    return out


# -- report ----------------------------------------------------------------------------------


def summary(out: dict[str, Any], kind: str, key: str) -> tuple[float, float, float] | None:
    vals = [j[key] for j in out["joins"] if j["joiner"] == kind]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def report(out: dict[str, Any]) -> None:
    n = out["members"]
    print()
    print(
        f"Joining a {n}-member room on the {NAMES[out['resident']]} resident over federation"
        f" ({len(out['joins'])} timed joins; seconds, median [min-max])"
    )
    head = f"{'joiner':<10} {'join answered':>22} {'full member list':>22} {'at answer':>10}"
    print(head)
    print("-" * len(head))
    meds: dict[str, dict[str, float]] = {}
    for kind in ("mxserver", "synapse"):
        js = summary(out, kind, "join_s")
        fs = summary(out, kind, "full_s")
        if js is None or fs is None:
            print(f"{NAMES[kind]:<10} (no completed join)")
            continue
        meds[kind] = {"join_s": js[0], "full_s": fs[0]}
        at = statistics.median(j["at_answer"] for j in out["joins"] if j["joiner"] == kind)
        print(
            f"{NAMES[kind]:<10} {js[0]:>7.2f} [{js[1]:.2f}-{js[2]:.2f}]".ljust(33)
            + f" {fs[0]:>7.2f} [{fs[1]:.2f}-{fs[2]:.2f}]".ljust(23)
            + f" {at:>10.0f}"
        )
    if len(meds) == 2:
        r_join = meds["mxserver"]["join_s"] / meds["synapse"]["join_s"]
        r_full = meds["mxserver"]["full_s"] / meds["synapse"]["full_s"]
        print(f"{'mx/Syn':<10} {r_join:>7.2f}x".ljust(33) + f" {r_full:>7.2f}x")
    print()
    print("per join:")
    for j in out["joins"]:
        print(
            f"  round {j['round']} {NAMES[j['joiner']]:<8} answered {j['join_s']:7.2f}s  full {j['full_s']:7.2f}s"
            f"  first joined_members {j['first_list_s']:7.2f}s: {j['at_answer']:>5}/{j['expected']} members"
            f"  (load {j['loadavg_1m_before']})"
        )
    print(
        f"setup: servers {out.get('startup_s', 0):.1f}s, registering {n} users {out.get('register_s', 0):.1f}s,"
        f" filling a room to {n} members {out.get('fill_s_median', float('nan')):.1f}s (median)"
    )
    print(
        "join answered: POST /join/{roomId}?server_name=R on the joiner, request to response; full member list:"
        " from the same request until the joiner's joined_members listed all members; at answer: members"
        " listed by the first joined_members asked right after the answer (first joined_members: when that"
        " first list came; Synapse joins with partial state, mxserver with full state)."
    )


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--resident",
        choices=["synapse", "mxserver"],
        default="synapse",
        help="server holding the room (default synapse)",
    )
    p.add_argument("--members", type=int, default=1000, help="members of each room, creator included (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="timed joins per joiner (default 3)")
    p.add_argument("--workers", type=int, default=4, help="concurrent requests while filling (default 4)")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on each join and member-list wait, s")
    p.add_argument("--settle", type=float, default=3.0, help="quiet seconds around each timed join (default 3)")
    p.add_argument("--poll", type=float, default=0.2, help="joined_members poll interval, s (default 0.2)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    args = p.parse_args(argv)
    if args.members < 2 or args.rounds < 1 or args.workers < 1:
        p.error("--members must be at least 2, --rounds and --workers at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    missing = harness.shared_missing_reason()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    stop_all_at_exit()
    root = Path(tempfile.mkdtemp(prefix="mxserver-bench-join-"))
    try:
        out = run(root, args)
    except (KeyboardInterrupt, SystemExit):
        interrupted(root)
        raise
    finally:
        stop_all()
    report(out)
    if "error" in out:
        print(f"FAILED: {out['error'][:2000]}")
    return finish(root, out, args.json, args.keep, "error" in out)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
