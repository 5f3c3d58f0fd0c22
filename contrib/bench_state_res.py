#!/usr/bin/env python
"""Benchmark state resolution on a synthetic room with two long forks.

Builds a room (create, admin join, power levels, public join rules, N member
joins), then two forks from the same point that each send ``--per-fork``
state events: display-name changes, custom state (one key per event, so
nearly every event ends up conflicted), topic changes, and every
so often a power-levels change or a kick/ban (power events). Every event is
checked against its fork's state with the real auth rules while building.
It then times :func:`resolve_state_sync` on the two forks' states with the
default (real) auth checker and prints the figures.

Usage::

    PYTHONPATH=. .venv/bin/python contrib/bench_state_res.py [--version 11] [--per-fork 640]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.rooms.auth import auth_types_for_event, check_auth_rules
from mxserver.rooms.state_resolution import StateKey, resolve_state_sync


class SyntheticRoom:
    def __init__(self, rv: RoomVersion, n_users: int) -> None:
        self.rv = rv
        self.events: dict[str, Event] = {}
        self.ts = 1_700_000_000_000
        self.counter = 0
        self.admin = "@admin:bench.test"
        self.users = [f"@user{i}:bench{i % 7}.test" for i in range(n_users)]
        self.mods = self.users[: max(1, n_users // 10)]
        self.room_id = "!create" if rv.hydra else "!bench:bench.test"
        content: dict[str, Any] = {"room_version": rv.identifier}
        if not rv.implicit_room_creator:
            content["creator"] = self.admin
        state: dict[StateKey, str] = {}
        self.create = self.send(state, "m.room.create", self.admin, content, "", event_id="$create")
        self.send(state, "m.room.member", self.admin, {"membership": "join"}, self.admin)
        self.send(state, "m.room.power_levels", self.admin, self.levels({u: 50 for u in self.mods}), "")
        self.send(state, "m.room.join_rules", self.admin, {"join_rule": "public"}, "")
        for user in self.users:
            self.send(state, "m.room.member", user, {"membership": "join"}, user)
        self.base = state

    def levels(self, users: dict[str, int]) -> dict[str, Any]:
        if not self.rv.hydra:
            users = {self.admin: 100, **users}
        return {"users": users, "events": {"m.room.power_levels": 100, "m.room.topic": 50}, "state_default": 50}

    def send(
        self,
        state: dict[StateKey, str],
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        event_id: str | None = None,
    ) -> str:
        self.counter += 1
        self.ts += 1
        event_id = event_id or f"$e{self.counter}"
        keys = auth_types_for_event(self.rv, type, sender, state_key, content)
        auth = sorted(state[k] for k in keys if k in state)
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "depth": self.counter,
            "origin_server_ts": self.ts,
            "prev_events": [],
            "auth_events": auth,
        }
        if type == "m.room.create":
            if self.rv.hydra:
                del pdu["room_id"]
        else:
            pdu["prev_events"] = ["$create"]  # not used by state resolution
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_id_in_pdu:
            pdu["event_id"] = event_id
        ev = Event(pdu, self.rv, event_id=event_id)
        check_auth_rules(
            ev,
            {self.events[a].state_tuple(): self.events[a] for a in auth},
            create_event=self.events.get("$create") if self.rv.hydra else None,
        )
        self.events[event_id] = ev
        if state_key is not None:
            state[(type, state_key)] = event_id
        return event_id

    def fork(self, name: str, n: int, offset: int) -> dict[StateKey, str]:
        state = dict(self.base)
        members = [u for u in self.users if u not in self.mods]
        gone: set[str] = set()
        for i in range(n):
            j = i + offset
            if i % 50 == 25:
                # Power event: the admin changes a member's level.
                promoted = {members[(j * 7) % len(members)]: 10}
                self.send(
                    state,
                    "m.room.power_levels",
                    self.admin,
                    self.levels({**{u: 50 for u in self.mods}, **promoted}),
                    "",
                )
            elif i % 25 == 10:
                # Power event: a moderator kicks, or the admin bans, a member.
                target = members[(j * 13) % len(members)]
                if target in gone:
                    continue
                gone.add(target)
                if i % 2:
                    self.send(state, "m.room.member", self.admin, {"membership": "ban"}, target)
                else:
                    mod = self.mods[j % len(self.mods)]
                    self.send(state, "m.room.member", mod, {"membership": "leave"}, target)
            elif i % 3 == 0:
                user = members[(j * 3) % len(members)]
                if user in gone:
                    continue
                self.send(state, "m.room.member", user, {"membership": "join", "displayname": f"{name}{i}"}, user)
            elif i % 50 == 40:
                mod = self.mods[j % len(self.mods)]
                self.send(state, "m.room.topic", mod, {"topic": f"{name} {i}"}, "")
            else:
                mod = self.mods[j % len(self.mods)]
                self.send(state, "org.example.bench", mod, {"i": i}, f"{name}-{i}")
        return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="append", help="room version(s) (default: 11 and 12)")
    parser.add_argument("--per-fork", type=int, default=640, help="state events per fork")
    parser.add_argument("--users", type=int, default=400, help="members in the room before the fork")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs")
    args = parser.parse_args(argv)

    for version in args.version or ["11", "12"]:
        rv = get_room_version(version)
        if rv is None:
            print(f"unknown room version {version}", file=sys.stderr)
            return 2
        room = SyntheticRoom(rv, args.users)
        a = room.fork("a", args.per_fork, 0)
        b = room.fork("b", args.per_fork, 1)
        conflicted = {v for key in set(a) | set(b) if a.get(key) != b.get(key) for v in (a.get(key), b.get(key)) if v}
        times = []
        result = {}
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = resolve_state_sync(rv, [a, b], room.events)
            times.append(time.perf_counter() - start)
        print(
            f"room v{version}: {len(room.events)} events, {len(set(a) | set(b))} state keys, "
            f"{len(conflicted)} conflicted events -> {len(result)} keys resolved; "
            f"median {statistics.median(times) * 1000:.1f} ms, best {min(times) * 1000:.1f} ms "
            f"over {args.repeat} runs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
