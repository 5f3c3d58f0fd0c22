#!/usr/bin/env python
"""Inbound federation benchmark: how fast a homeserver accepts PDUs from another server,
and how long a ``send_join`` into a room with many members takes.

How to run it (from the checkout, with the project's venv)::

    .venv/bin/python contrib/bench_federation.py                      # mxserver (twistd subprocess)
    .venv/bin/python contrib/bench_federation.py --server synapse     # Synapse from shared/servers/synapse
    .venv/bin/python contrib/bench_federation.py --server both --pdus 2000 --members 1000

Options: ``--pdus N`` messages sent in transactions of ``--batch`` (50, the spec's maximum),
``--members N`` remote members in the send_join room, ``--joins N`` timed joins,
``--keep`` keeps the data directories (logs) in the temp folder.

What it does, against each server (a separate process, SQLite, rate limits off; its
client API on plain HTTP, its federation API on TLS, both on 127.0.0.1):

1. This script is a *fake remote server*: it has its own signing key and serves
   ``/_matrix/key/v2/server`` (and accepts the server's ``/send`` transactions) on a
   loopback HTTPS port; its server name is ``127.0.0.1:<port>``. Outbound requests are
   signed with X-Matrix by mxserver's own federation client.
2. A local user creates a public room; the fake server's user joins it
   (``make_join`` + ``send_join``).
3. The fake server signs ``--pdus`` messages (beforehand: signing is not timed), each on
   the previous one, and PUTs them in transactions of ``--batch``, one after the other.
   Reported: PDUs accepted per second, and when the last message is readable by the
   local user through the client API.
4. A second room gets ``--members`` members: the fake server's users join it through
   ``/send`` (reported as join PDUs/s). Then new fake users join it by ``make_join`` +
   ``send_join``, ``--joins`` times: reported are the times (median, max), the size of
   the answer and the state it carried.

Figures are printed, never asserted. The machine and everything else running on it
decide them: compare servers in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import defer, reactor, task  # noqa: E402

from contrib.bench_processes import new_server, synapse_python  # noqa: E402
from mxserver.config import FederationConfig  # noqa: E402
from mxserver.crypto.canonical import encode_canonical_json  # noqa: E402
from mxserver.events.builder import build_event  # noqa: E402
from mxserver.events.model import Event  # noqa: E402
from mxserver.events.versions import get_room_version  # noqa: E402
from mxserver.federation.client import FederationClient  # noqa: E402
from tests.harness import FakeRemote, FakeRoom  # noqa: E402
from tests.interop import harness  # noqa: E402

FED_V1 = "/_matrix/federation/v1"
C = "/_matrix/client/v3"
ALL_VERSIONS = [str(v) for v in range(1, 13)]


def q(value: str) -> str:
    return quote(value, safe="")


# -- the fake remote's side of the protocol ---------------------------------------------------


class Bench:
    def __init__(self, target: harness.ServerProcess, fake: FakeRemote, client: FederationClient, args: Any) -> None:
        self.target = target
        self.dest = target.server_name
        self.fake = fake
        self.fed = client
        self.args = args
        self.txn = 0
        self.results: dict[str, Any] = {"server": target.kind}

    async def client_api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        # The client API is blocking urllib in the harness: run it off the reactor thread.
        from twisted.internet.threads import deferToThread

        code, resp = await deferToThread(self.target.request, method, path, body, token)
        if code != 200:
            raise RuntimeError(f"{method} {path} -> {code} {resp}")
        return resp

    async def join(self, room_id: str, user_id: str) -> tuple[FakeRoom, float, float, int, int]:
        """make_join + send_join as ``user_id``; (room, make_join s, send_join s, answer bytes, state size)."""
        t0 = time.perf_counter()
        made = await self.fed.get_json(
            self.dest, f"{FED_V1}/make_join/{q(room_id)}/{q(user_id)}", {"ver": ALL_VERSIONS}
        )
        t1 = time.perf_counter()
        rv = get_room_version(made.get("room_version", "1"))
        assert rv is not None, made
        template = made["event"]
        event = build_event(
            rv,
            type="m.room.member",
            sender=user_id,
            content=template["content"],
            room_id=room_id,
            state_key=user_id,
            prev_event_ids=template["prev_events"],
            auth_event_ids=template["auth_events"],
            depth=template["depth"],
            origin_server_ts=int(time.time() * 1000),
            server_name=self.fake.server_name,
            signing_key=self.fake.signing_key,
        )
        t2 = time.perf_counter()
        answer = await self.fed.put_json(
            self.dest,
            f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event.event_id)}",
            event.get_pdu_json(),
            max_size=100 * 1024 * 1024,
            timeout=300,
        )
        t3 = time.perf_counter()
        size = len(encode_canonical_json(answer))
        # The fake remote now knows the room: it can answer the server's /event,
        # /get_missing_events and /backfill about the events it sends.
        pdus = [*answer.get("auth_chain", []), *answer.get("state", [])]
        room = FakeRoom.joined(self.fake, rv.identifier, room_id, pdus, event, int(time.time() * 1000))
        return room, t1 - t0, t3 - t2, size, len(answer.get("state", []))

    async def send_pdus(self, events: list[Event]) -> tuple[int, float]:
        """PUT ``events`` in transactions of --batch, one after the other; (accepted, seconds)."""
        accepted = 0
        start = time.perf_counter()
        batch = self.args.batch
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            self.txn += 1
            body = {
                "origin": self.fake.server_name,
                "origin_server_ts": int(time.time() * 1000),
                "pdus": [e.get_pdu_json() for e in chunk],
            }
            answer = await self.fed.put_json(
                self.dest, f"{FED_V1}/send/bench{int(start)}-{self.txn}", body, timeout=300
            )
            results = answer.get("pdus", {})
            for e in chunk:
                outcome = results.get(e.event_id, {})
                if isinstance(outcome, dict) and "error" not in outcome:
                    accepted += 1
        return accepted, time.perf_counter() - start

    async def wait_visible(self, room_id: str, event_id: str, token: str, timeout: float = 300.0) -> float:
        start = time.perf_counter()
        from twisted.internet.threads import deferToThread

        while time.perf_counter() - start < timeout:
            code, _ = await deferToThread(
                self.target.request, "GET", f"{C}/rooms/{q(room_id)}/event/{q(event_id)}", None, token
            )
            if code == 200:
                return time.perf_counter() - start
            await task.deferLater(reactor, 0.05, lambda: None)
        return float("nan")

    async def run(self) -> dict[str, Any]:
        args = self.args
        user = await defer_to_thread(self.target.register, "bench")
        token = user.token
        room_id = (await self.client_api("POST", f"{C}/createRoom", {"preset": "public_chat"}, token))["room_id"]
        room, _, _, _, _ = await self.join(room_id, self.fake.user("sender"))

        sender = self.fake.user("sender")
        events = [
            room.add("m.room.message", {"msgtype": "m.text", "body": f"bench {i}"}, None, sender)
            for i in range(args.pdus)
        ]
        accepted, seconds = await self.send_pdus(events)
        lag = await self.wait_visible(room_id, events[-1].event_id, token) if events else 0.0
        self.results["messages"] = {
            "sent": len(events), "accepted": accepted, "seconds": seconds,
            "pdus_per_s": accepted / seconds if seconds else 0.0, "last_visible_after_s": lag,
            # A server may answer /send before it has processed the PDUs (Synapse stages them):
            # the end-to-end rate counts until the last one is readable.
            "end_to_end_pdus_per_s": len(events) / (seconds + lag) if seconds + lag else 0.0,
        }

        # A room with --members remote members, joined through /send.
        big = (await self.client_api("POST", f"{C}/createRoom", {"preset": "public_chat"}, token))["room_id"]
        broom, _, _, _, _ = await self.join(big, self.fake.user("host"))
        joins = [
            broom.add("m.room.member", {"membership": "join"}, self.fake.user(f"m{i}"), self.fake.user(f"m{i}"))
            for i in range(args.members)
        ]
        accepted, seconds = await self.send_pdus(joins)
        lag = await self.wait_visible(big, joins[-1].event_id, token) if joins else 0.0
        self.results["member_joins"] = {
            "sent": len(joins), "accepted": accepted, "seconds": seconds,
            "pdus_per_s": accepted / seconds if seconds else 0.0, "last_visible_after_s": lag,
            "end_to_end_pdus_per_s": len(joins) / (seconds + lag) if seconds + lag else 0.0,
        }
        make_times, join_times, sizes, states = [], [], [], []
        for i in range(args.joins):
            _, made, joined, size, state = await self.join(big, self.fake.user(f"newcomer{i}"))
            make_times.append(made)
            join_times.append(joined)
            sizes.append(size)
            states.append(state)
        if join_times:
            self.results["send_join"] = {
                "members": args.members + 2,
                "make_join_ms_median": 1000 * statistics.median(make_times),
                "send_join_ms_median": 1000 * statistics.median(join_times),
                "send_join_ms_max": 1000 * max(join_times),
                "answer_bytes": statistics.median(sizes),
                "state_events": max(states),
            }
        return self.results


async def defer_to_thread(fn: Any, *a: Any) -> Any:
    from twisted.internet.threads import deferToThread

    return await deferToThread(fn, *a)


def report(results: list[dict[str, Any]]) -> None:
    print()
    for r in results:
        print(f"== {r['server']}")
        m = r.get("messages")
        if m:
            print(f"  messages      {m['accepted']}/{m['sent']} accepted in {m['seconds']:.2f} s:"
                  f" {m['pdus_per_s']:.0f} PDUs/s; the last readable {m['last_visible_after_s']:.2f} s later:"
                  f" {m['end_to_end_pdus_per_s']:.0f} PDUs/s end to end")
        j = r.get("member_joins")
        if j:
            print(f"  member joins  {j['accepted']}/{j['sent']} accepted in {j['seconds']:.2f} s: {j['pdus_per_s']:.0f} PDUs/s;"
                  f" the last readable {j['last_visible_after_s']:.2f} s later:"
                  f" {j['end_to_end_pdus_per_s']:.0f} PDUs/s end to end")
        s = r.get("send_join")
        if s:
            print(f"  send_join     room of {s['members']} members: median {s['send_join_ms_median']:.0f} ms,"
                  f" max {s['send_join_ms_max']:.0f} ms (make_join {s['make_join_ms_median']:.0f} ms);"
                  f" answer {s['answer_bytes'] / 1024:.0f} KiB, {s['state_events']} state events")
        if r.get("error"):
            print(f"  FAILED: {r['error']}")
    print()
    print(json.dumps(results, indent=1, default=str))


async def main(args: Any) -> int:
    root = Path(tempfile.mkdtemp(prefix="mxserver-bench-federation-"))
    fake = FakeRemote("bench1")
    fake.listen(None, str(root / "fake-tls"))
    client = FederationClient(
        reactor, reactor, FederationConfig(verify_tls=False, ip_range_whitelist=["127.0.0.0/8"]),
        fake.server_name, fake.signing_key,
    )
    client.startService()
    kinds = ["mxserver", "synapse"] if args.server == "both" else [args.server]
    results = []
    failed = False
    for kind in kinds:
        target: harness.ServerProcess
        if kind == "synapse":
            await defer_to_thread(synapse_python)  # installs it on first use: not on the reactor
        target = new_server(kind, root)
        print(f"starting {kind} ({target.server_name}) ...", flush=True)
        await defer_to_thread(target.start)
        fake.requests.clear()
        try:
            results.append(await Bench(target, fake, client, args).run())
            # What the server asked the fake remote (keys, sends, any gap filling it needed).
            asked: dict[str, int] = {}
            for req in fake.requests:
                key = f"{req.method.decode()} {'/'.join(req.path.decode().split('/')[:5])}"
                asked[key] = asked.get(key, 0) + 1
            results[-1]["requests_to_fake_remote"] = asked
        except Exception as e:
            failed = True
            results.append({"server": kind, "error": f"{type(e).__name__}: {e}"})
            print(target.tails(lines=30), file=sys.stderr)
        finally:
            await defer_to_thread(target.stop)
    await client.stopService()
    await fake.port.stopListening()
    report(results)
    if args.keep or failed:
        print(f"data and logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", choices=["mxserver", "synapse", "both"], default="mxserver")
    p.add_argument("--pdus", type=int, default=1000, help="messages sent (default 1000)")
    p.add_argument("--batch", type=int, default=50, help="PDUs per transaction (default 50, the maximum)")
    p.add_argument("--members", type=int, default=1000, help="remote members of the send_join room (default 1000)")
    p.add_argument("--joins", type=int, default=5, help="timed send_joins (default 5)")
    p.add_argument("--keep", action="store_true", help="keep data directories and logs")
    return p.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args(sys.argv[1:])
    code: list[int] = []

    async def _run() -> None:
        try:
            code.append(await main(parsed))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(_run()))
    reactor.run()
    sys.exit(code[0] if code else 1)
