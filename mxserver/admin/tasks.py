"""Admin work that runs in the background after the request is answered (room deletions,
history purges), with its status kept in the database (``admin_room_tasks``).

A restart does not lose a status: a task a stop interrupted is marked ``failed`` at the
next start (its work is not resumed; the admin may ask again). Outcomes stay readable for
a day after they finish, as Synapse's do.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.errors import MatrixError
from mxserver.storage.admin_rooms import ACTIVE, COMPLETE, FAILED, SCHEDULED, RoomTask, RoomTaskStore

log = Logger()

#: how long the outcome of a finished task stays readable (ms)
TASK_RETENTION_MS = 24 * 3600 * 1000


def _observe(d: Deferred[None]) -> Deferred[None]:
    """A Deferred that fires when ``d`` does, leaving ``d``'s own result alone."""
    out: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out


class RoomTaskRunner:
    """Schedules background room tasks and records their status."""

    def __init__(self, store: RoomTaskStore, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[str, IDelayedCall] = {}
        self._running: dict[str, Deferred[None]] = {}

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def start(self) -> None:
        """At start-up: the tasks a stop interrupted have failed."""
        await self.store.fail_interrupted(self.now_ms())

    async def settle(self) -> None:
        """At stop: tasks not started yet are dropped (marked failed at the next start), those
        running finish before the database closes."""
        for task_id, call in list(self._pending.items()):
            if call.active():
                call.cancel()
            self._finished(task_id)
        await self.idle()

    async def idle(self) -> None:
        """Return once every task scheduled so far has finished."""
        while self._running:
            for done in list(self._running.values()):
                await _observe(done)

    async def busy_with(self, kind: str, room_id: str) -> bool:
        """Whether a task of ``kind`` for the room is scheduled or running."""
        return any(t.status in (SCHEDULED, ACTIVE) for t in await self.store.for_room(kind, room_id))

    async def schedule(
        self, kind: str, room_id: str, work: Callable[[str], Awaitable[dict[str, Any] | None]]
    ) -> str:
        """Record a new task and run ``work(task_id)`` on the next turn of the reactor (the
        request is answered first); its ID. ``work`` returns the task's result (or None); a
        :class:`MatrixError` it raises is the task's error."""
        task_id = secrets.token_urlsafe(12)
        await self.store.add(task_id, kind, room_id, self.now_ms())
        self._running[task_id] = Deferred()
        self._pending[task_id] = self.clock.callLater(0, self._run, task_id, work)
        return task_id

    def _run(self, task_id: str, work: Callable[[str], Awaitable[dict[str, Any] | None]]) -> None:
        self._pending.pop(task_id, None)
        d = ensureDeferred(self._execute(task_id, work))
        d.addErrback(lambda f: log.failure("admin task {id} failed", f, id=task_id))
        d.addBoth(lambda _: self._finished(task_id))

    async def _execute(self, task_id: str, work: Callable[[str], Awaitable[dict[str, Any] | None]]) -> None:
        await self.store.update(task_id, ACTIVE, self.now_ms())
        try:
            result = await work(task_id)
        except Exception as e:
            if isinstance(e, MatrixError):
                error = e.msg
            else:
                log.failure("admin task {id} failed", id=task_id)
                error = "Internal error"
            await self.store.update(task_id, FAILED, self.now_ms(), error=error)
            return
        await self.store.update(task_id, COMPLETE, self.now_ms(), result=result)

    def _finished(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        done = self._running.pop(task_id, None)
        if done is not None and not done.called:
            done.callback(None)

    async def progress(self, task_id: str, result: dict[str, Any]) -> None:
        """Record a running task's result so far."""
        await self.store.update(task_id, ACTIVE, self.now_ms(), result=result)

    async def get(self, task_id: str, kind: str) -> RoomTask | None:
        await self.store.forget_finished_before(self.now_ms() - TASK_RETENTION_MS)
        task = await self.store.get(task_id)
        return task if task is not None and task.kind == kind else None

    async def for_room(self, kind: str, room_id: str) -> list[RoomTask]:
        await self.store.forget_finished_before(self.now_ms() - TASK_RETENTION_MS)
        return await self.store.for_room(kind, room_id)
