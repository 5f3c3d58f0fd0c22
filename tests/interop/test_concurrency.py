"""Both servers writing at once: forks in the room DAG must converge to the same history and state.

Concurrent sends from the two sides make events with the same prev_events (forks);
concurrent state changes make conflicting state that each server resolves on its
own, so after the dust settles mxserver and Synapse must agree on the room's
state (state resolution v2 as in the spec, not just "something sensible").
Also: a room with many members joined by the other server (Synapse joins with
partial state and fetches the rest with /state_ids).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.interop import harness
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, User, quote


def run_concurrently(*jobs: Callable[[], Any], timeout: float = 120.0) -> list[Any]:
    """Run the jobs in threads at once; their results in order; the first exception is raised."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i: int, job: Callable[[], Any]) -> None:
        try:
            start.wait(30)
            results[i] = job()
        except BaseException as e:  # reported to the test below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, job), daemon=True) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"a concurrent job did not finish within {timeout:.0f}s")
    if errors:
        raise errors[0]
    return results


class _Concurrency(InteropTestCase):
    def _state_map(self, user: User, room_id: str) -> dict[tuple[str, str], str]:
        state = user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state")
        return {(ev["type"], ev["state_key"]): ev["event_id"] for ev in state}

    def _wait_for_event_ids(self, user: User, room_id: str, event_ids: set[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            have = {ev["event_id"] for ev in user.all_messages_backwards(room_id)}
            missing = event_ids - have
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{user.server.kind}: {len(missing)} of {len(event_ids)} events missing from /messages "
                    f"after {timeout:.0f}s: {sorted(missing)[:10]}"
                )
            time.sleep(2)

    def _settle(self, room_id: str, host_user: User, guest_user: User, host_sync: Any, guest_sync: Any) -> None:
        """Each side answers the other once, so both have seen every fork and merged the extremities."""
        host_user.send(room_id, f"settle host {self.tag}")
        guest_sync.wait_for_body(room_id, f"settle host {self.tag}", timeout=90)
        guest_user.send(room_id, f"settle guest {self.tag}")
        host_sync.wait_for_body(room_id, f"settle guest {self.tag}", timeout=90)

    def test_concurrent_messages_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        host_sent = [f"host says {i:02d}" for i in range(60)]
        guest_sent = [f"guest says {i:02d}" for i in range(60)]

        def send_all(user: User, bodies: list[str]) -> list[str]:
            return [user.send(room_id, b) for b in bodies]

        host_ids, guest_ids = run_concurrently(
            lambda: send_all(host_user, host_sent), lambda: send_all(guest_user, guest_sent)
        )
        for user in (host_user, guest_user):
            self._wait_for_event_ids(user, room_id, set(host_ids) | set(guest_ids))
            events = user.all_messages_backwards(room_id)
            # each sender's messages keep their order on both servers (each sender's events form a chain)
            self.assertEqual(harness.bodies(events, "host says"), host_sent)
            self.assertEqual(harness.bodies(events, "guest says"), guest_sent)
        self._settle(room_id, host_user, guest_user, host_sync, guest_sync)

    def test_concurrent_state_changes_converge(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        levels = host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels")
        levels.setdefault("users", {})[guest_user.user_id] = 100
        levels_id = host_user.send_state(room_id, "m.room.power_levels", levels)
        guest_sync.wait(
            lambda: any(ev.get("event_id") == levels_id for ev in guest_sync.timeline.get(room_id, [])),
            "the power levels that make the guest an admin",
        )

        def changes(user: User, who: str) -> list[str]:
            ids = []
            for i in range(8):
                ids.append(user.send_state(room_id, "m.room.topic", {"topic": f"{who} topic {i}"}))
                ids.append(user.send_state(room_id, "m.room.name", {"name": f"{who} name {i}"}))
                ids.append(user.send(room_id, f"{who} chat {i}"))
            return ids

        host_ids, guest_ids = run_concurrently(lambda: changes(host_user, "host"), lambda: changes(guest_user, "guest"))
        for user in (host_user, guest_user):
            self._wait_for_event_ids(user, room_id, set(host_ids) | set(guest_ids))
        self._settle(room_id, host_user, guest_user, host_sync, guest_sync)

        deadline = time.monotonic() + 30
        while True:
            host_state = self._state_map(host_user, room_id)
            guest_state = self._state_map(guest_user, room_id)
            if host_state == guest_state or time.monotonic() > deadline:
                break
            time.sleep(1)
        differing = {
            k: (host_state.get(k), guest_state.get(k))
            for k in set(host_state) | set(guest_state)
            if host_state.get(k) != guest_state.get(k)
        }
        self.assertEqual(differing, {}, f"current state differs ({self.host.kind}, {self.guest.kind})")
        topic = [
            user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.topic")
            for user in (host_user, guest_user)
        ]
        self.assertEqual(topic[0], topic[1])

    def test_many_members_joined_from_the_other_server(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="public_chat")
        locals_ = [self.host.register("member") for _ in range(8)]
        for member in locals_:
            member.join(room_id)
        host_sync = Sync(host_user)
        self.assertEqual(guest_user.join(room_id, via=[self.host.server_name]), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")
        expected = {host_user.user_id, guest_user.user_id} | {m.user_id for m in locals_}
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members"
        # Synapse joins with partial state and fetches the member list afterwards: allow it a moment
        deadline = time.monotonic() + 60
        while True:
            on_guest = guest_user.ok("GET", path, timeout=60)["joined"]
            if set(on_guest) == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        self.assertEqual(set(on_guest), expected)
        on_host = host_user.ok("GET", path)["joined"]

        # avatar_url is optional (Synapse sends null, mxserver leaves it out): compare what is set
        def names(joined: dict[str, Any]) -> dict[str, Any]:
            return {u: (v.get("display_name"), v.get("avatar_url")) for u, v in joined.items()}

        self.assertEqual(names(on_guest), names(on_host))
        members = guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/members?membership=join", timeout=60)
        self.assertEqual({ev["state_key"] for ev in members["chunk"]}, expected)
        # and a newcomer on the guest's side sees the others' messages
        guest_sync = Sync(guest_user)
        locals_[3].send(room_id, f"hello from a member {self.tag}")
        guest_sync.wait_for_body(room_id, f"hello from a member {self.tag}")


class MxserverHostsConcurrencyTests(_Concurrency):
    host_kind = "mxserver"


class SynapseHostsConcurrencyTests(_Concurrency):
    host_kind = "synapse"


del _Concurrency
