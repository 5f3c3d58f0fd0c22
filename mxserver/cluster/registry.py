"""The worker registry (issue 19): every process records itself in the database, so the admin
API and console can list a cluster's processes and tell the live ones from the dead.

A process writes its row when it starts and refreshes ``last_seen_ts`` every
:data:`HEARTBEAT_INTERVAL` seconds on the reactor clock; a process not seen for
:data:`ALIVE_WITHIN` seconds counts as down.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mxserver.storage.workers import WorkerStore

log = Logger()

#: seconds between two heartbeats of a process
HEARTBEAT_INTERVAL = 10.0
#: a process seen within this many seconds is alive
ALIVE_WITHIN = 30.0


class WorkerRegistry:
    """This process's row in the registry, and the list of every process's."""

    def __init__(self, store: WorkerStore, clock: IReactorTime, name: str, role: str, pid: int) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.role = role
        self.pid = pid
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = clock
        self._writing: Deferred[None] | None = None

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def start(self) -> None:
        """Record this process (at start-up, after migrations) and begin the heartbeats."""
        await self.store.record_start(self.name, self.role, self.pid, self._now_ms())
        self._beat.start(HEARTBEAT_INTERVAL, now=False).addErrback(
            lambda f: log.failure("worker heartbeats stopped", failure=f)
        )

    async def stop(self) -> None:
        """No more heartbeats; fires once the one being written (if any) is done, before the
        database closes."""
        if self._beat.running:
            self._beat.stop()
        if self._writing is not None:
            await self._writing

    def _heartbeat(self) -> Deferred[None]:
        d = self.store.heartbeat(self.name, self.pid, self._now_ms())
        # A missed heartbeat (database briefly away) is no reason to stop beating.
        d.addErrback(lambda f: log.warn("worker heartbeat failed: {reason}", reason=f.getErrorMessage()))
        self._writing = d

        def written(result: None) -> None:
            if self._writing is d:
                self._writing = None

        d.addCallback(written)
        return d

    async def list_workers(self) -> list[dict[str, Any]]:
        """Every process recorded: name, role, pid, started_ts, last_seen_ts and ``alive``."""
        now = self._now_ms()
        return [
            {
                "name": row.name,
                "role": row.role,
                "pid": row.pid,
                "started_ts": row.started_ts,
                "last_seen_ts": row.last_seen_ts,
                "alive": now - row.last_seen_ts <= ALIVE_WITHIN * 1000,
            }
            for row in await self.store.list_workers()
        ]
