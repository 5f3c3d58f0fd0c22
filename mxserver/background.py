"""Work a stream subscriber starts and does not wait for, kept track of.

Subscribers run synchronously inside a publish; what they must do asynchronously
(a database read, a send) runs in the background. :class:`BackgroundTasks` logs a
failure instead of losing it, and :meth:`BackgroundTasks.settle` lets a caller (a test,
a shutdown) wait until everything started so far has finished.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class BackgroundTasks:
    """Coroutines started without waiting, with their failures logged under ``what``."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._pending: set[Deferred[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        d: Deferred[Any] = ensureDeferred(coro)
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("{what} failed", result, what=self._what)

        d.addBoth(done)

    async def settle(self) -> None:
        """Wait for the work started so far, and for what it starts in turn."""
        while self._pending:
            for d in list(self._pending):
                try:
                    await d
                except Exception:
                    pass  # logged by run()
