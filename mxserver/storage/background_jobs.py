"""One-time jobs over data stored before a migration, run in the background after start-up.

A migration whose data step would take too long to run inside it (reading the
JSON of every stored event, say) inserts a row into ``background_jobs``
instead: the job's name, a position of the job's own (where it has got to)
and a target (where it ends). :class:`BackgroundJobs` runs each pending job in
batches once the server is up, one database transaction per batch: the job's
step does the batch's work and the new position is written in the same
transaction, so a restart resumes where the last committed batch ended and
no batch is done twice. The work runs in adbapi's thread pool, never on the
reactor thread, and other transactions queued meanwhile run between batches.
A job that is done deletes its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.background import BackgroundTasks
from mxserver.storage.database import Database, Txn

log = Logger()

#: ``step(txn, position, target, limit)``: do up to ``limit`` units of work after ``position``
#: (up to ``target``) and return the new position, or None when the job is done
JobStep = Callable[[Txn, int, int, int], int | None]

#: units of work (events, for the search index) per transaction
BATCH_SIZE = 500
#: progress is logged at most this often, besides each job's start and end
PROGRESS_INTERVAL_SECONDS = 10.0


class BackgroundJobs:
    """Runs the pending jobs of ``background_jobs`` with the steps registered by name."""

    def __init__(
        self, db: Database, steps: Mapping[str, JobStep], clock: IReactorTime, batch_size: int = BATCH_SIZE
    ) -> None:
        self.db = db
        self.steps = dict(steps)
        self.clock = clock
        self.batch_size = batch_size
        self._tasks = BackgroundTasks("background job")
        self._stopping = False

    def start(self) -> None:
        """Start running the pending jobs, one after the other (not waited for)."""
        self._stopping = False
        self._tasks.run(self._run())

    async def stop(self) -> None:
        """Stop after the batch in flight (its work and position are committed together)."""
        self._stopping = True
        await self._tasks.settle()

    async def settle(self) -> None:
        """Wait until the jobs started have finished (or stopped)."""
        await self._tasks.settle()

    async def pending(self) -> list[str]:
        rows = await self.db.select("background_jobs", "SELECT name FROM background_jobs ORDER BY name")
        return [r[0] for r in rows]

    async def _run(self) -> None:
        for name in await self.pending():
            if name not in self.steps:
                log.warn("background job {job}: no step registered for it, skipped", job=name)
                continue
            await self._run_job(name)
            if self._stopping:
                return

    async def _run_job(self, name: str) -> None:
        log.info("background job {job}: started", job=name)
        last_log = self.clock.seconds()
        while not self._stopping:
            progress = await self.run_batch(name)
            if progress is None:
                log.info("background job {job}: done", job=name)
                return
            position, target = progress
            now = self.clock.seconds()
            if now - last_log >= PROGRESS_INTERVAL_SECONDS:
                last_log = now
                log.info(
                    "background job {job}: at {position} of {target} ({percent:.0f}%)",
                    job=name,
                    position=position,
                    target=target,
                    percent=100.0 * position / max(target, 1),
                )
        log.info("background job {job}: stopped, resumes at the next start", job=name)

    async def run_batch(self, name: str) -> tuple[int, int] | None:
        """Run one batch of job ``name``: ``(new position, target)``, or None when it is done
        (or not pending)."""
        return await self.db.run_interaction(f"background_job_{name}", self._batch_txn, name, self.steps[name])

    def _batch_txn(self, txn: Txn, name: str, step: JobStep) -> tuple[int, int] | None:
        row = txn.query_one("SELECT position, target FROM background_jobs WHERE name = ?", (name,))
        if row is None:
            return None
        position, target = row
        new_position = step(txn, position, target, self.batch_size)
        if new_position is None:
            txn.execute("DELETE FROM background_jobs WHERE name = ?", (name,))
            return None
        txn.execute("UPDATE background_jobs SET position = ? WHERE name = ?", (new_position, name))
        return new_position, target
