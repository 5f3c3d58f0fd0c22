"""Reading outbound responses within bounds, and sharing one fetch among callers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

T = TypeVar("T")


class ResponseTooLarge(Exception):
    """The response body is larger than the caller allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body exceeds {limit} bytes")
        self.limit = limit


class _BoundedReader(Protocol):
    def __init__(self, done: Deferred[bytes], limit: int, length: int) -> None:
        self._done = done
        self._limit = limit
        self._length = length
        self._chunks: list[bytes] = []
        self._size = 0

    def connectionMade(self) -> None:
        if self._length is not UNKNOWN_LENGTH and self._length > self._limit:
            self._fail()

    def _fail(self) -> None:
        if not self._done.called:
            self._done.errback(ResponseTooLarge(self._limit))
        # Stop reading: the connection is dropped rather than drained.
        transport: Any = self.transport
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._chunks = []
            self._fail()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def read_body(response: IResponse, max_size: int) -> Deferred[bytes]:
    """The whole body of ``response``; :class:`ResponseTooLarge` (and the connection dropped) past ``max_size``.

    Cancelling the Deferred drops the connection too.
    """
    if response.length == 0:
        return succeed(b"")
    reader: list[_BoundedReader] = []

    def cancel(d: Deferred[bytes]) -> None:
        transport: Any = reader[0].transport if reader else None
        if transport is not None:
            transport.stopProducing()

    done: Deferred[bytes] = Deferred(canceller=cancel)
    reader.append(_BoundedReader(done, max_size, response.length))
    response.deliverBody(reader[0])
    return done


class SharedCalls:
    """Runs one call per key at a time; concurrent callers of a key share its result.

    Each caller gets its own Deferred, so cancelling one caller (its request
    timed out) neither cancels the shared work nor the other callers.
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[Deferred[Any]]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiting

    def run(self, key: Hashable, fn: Callable[[], Coroutine[Any, Any, T]]) -> Deferred[T]:
        waiter: Deferred[T] = Deferred()
        waiters = self._waiting.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiters = self._waiting[key] = [waiter]

        def fire(result: Any) -> None:
            del self._waiting[key]
            for w in waiters:
                if not w.called:
                    w.callback(result)
            # a failure was handed to every waiter; nothing is left unhandled here

        ensureDeferred(fn()).addBoth(fire)
        return waiter
