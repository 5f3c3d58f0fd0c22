"""BackgroundTasks: failures logged, settle waits for everything started, including what work starts."""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial import unittest

from mxserver.background import BackgroundTasks


class BackgroundTasksTests(unittest.TestCase):
    def setUp(self) -> None:
        self.logged: list[dict] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def failures(self) -> list[dict]:
        return [e for e in self.logged if "log_failure" in e]

    async def test_settle_waits_and_failures_are_logged(self) -> None:
        tasks = BackgroundTasks("test work")
        gate: Deferred[None] = Deferred()
        done: list[str] = []

        async def work() -> None:
            await gate
            done.append("work")
            tasks.run(more())

        async def more() -> None:
            done.append("more")
            raise ValueError("boom")

        tasks.run(work())
        settled = Deferred.fromCoroutine(tasks.settle())
        self.assertFalse(settled.called)
        gate.callback(None)
        await settled
        self.assertEqual(done, ["work", "more"])
        self.assertEqual(len(self.failures()), 1)
        self.flushLoggedErrors(ValueError)
