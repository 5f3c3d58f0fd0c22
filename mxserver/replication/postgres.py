"""The replication bus on Postgres ``LISTEN/NOTIFY``: no service to run beside the database.

One dedicated autocommit connection per process, driven without blocking the reactor: it is
opened in a thread, then used through libpq's non-blocking calls (``send_query``, ``flush``,
``consume_input``, ``notifies``) with its socket watched by the reactor (``addReader``); no
polling loop. One query is in flight at a time, in order (``LISTEN`` and ``pg_notify``).
When the connection drops it is opened again with exponential backoff on the clock; once its
``LISTEN``\\ s are live again every :meth:`~IReplicationBus.on_reconnect` listener is told to
catch up from the database (hints sent meanwhile are lost).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from mxserver.replication.bus import MAX_PAYLOAD, IReplicationBus, JsonDict, _Subscribers, encode

log = Logger()

#: the first wait before opening a dropped connection again; doubled each failure up to the max
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0


class _Socket:
    """The connection's socket as the reactor sees it (IReadDescriptor, IWriteDescriptor).

    It watches a duplicate of libpq's descriptor, closed by :meth:`close`: libpq closes its own
    when it finds the connection gone, and the reactor must never watch a descriptor that was
    closed (and perhaps reused) under it."""

    def __init__(self, bus: PostgresBus, fd: int) -> None:
        self._bus, self._fd = bus, os.dup(fd)
        #: the reactor no longer watches it (it reported the socket lost)
        self.detached = False

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._bus._readable()

    def doWrite(self) -> None:
        self._bus._writable()

    def connectionLost(self, reason: Any) -> None:
        # The reactor has stopped watching the socket already.
        self.detached = True
        self._bus._lost(f"socket closed: {reason.getErrorMessage()}")

    def logPrefix(self) -> str:
        return "replication-bus"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(IReplicationBus)
class PostgresBus:
    """The bus on one Postgres database (``dsn``), see the module docstring."""

    def __init__(self, dsn: str, reactor: Any, clock: IReactorTime) -> None:
        self._dsn = dsn
        self._reactor = reactor
        self._clock = clock
        self._subs = _Subscribers()
        self._conn: Any = None
        self._pg: Any = None
        self._socket: _Socket | None = None
        self._writing = False
        #: queries waiting to be sent: (SQL, parameters, fired once its result is read)
        self._queue: list[tuple[bytes, list[bytes] | None, Deferred[None] | None]] = []
        self._in_flight: Deferred[None] | None = None
        self._in_flight_busy = False
        self._running = False
        self._backoff = RECONNECT_FIRST_S
        self._reconnect_call: IDelayedCall | None = None
        self._connecting = False
        #: the server process of the connection (tests end it with pg_terminate_backend)
        self.backend_pid: int | None = None
        #: how many times the connection was opened (tests follow reconnections)
        self.connections = 0

    # -- IReplicationBus ---------------------------------------------------------------------------

    def publish(self, channel: str, hint: JsonDict) -> None:
        payload = encode(hint).encode()
        if len(payload) >= MAX_PAYLOAD:
            raise ValueError(f"replication hint too large for {channel}")
        if self._pg is None:
            return  # down: the subscribers catch up from the database when it is back
        self._send(b"SELECT pg_notify($1, $2)", [channel.encode(), payload])

    def subscribe(self, channel: str, fn: Callable[[JsonDict], Any]) -> None:
        first = channel not in self._subs.channels
        self._subs.channels.setdefault(channel, []).append(fn)
        if first and self._pg is not None:
            self._send(_listen(channel))

    def on_reconnect(self, fn: Callable[[], Any]) -> None:
        self._subs.reconnect_listeners.append(fn)

    def start(self) -> Deferred[None]:
        self._running = True
        return self._connect()

    def stop(self) -> Deferred[None]:
        self._running = False
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._close()
        return succeed(None)

    # -- the connection ------------------------------------------------------------------------------

    def _connect(self) -> Deferred[None]:
        import psycopg

        self._connecting = True
        opened: Deferred[Any] = threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), psycopg.connect, self._dsn, autocommit=True
        )
        ready: Deferred[None] = Deferred()

        def connected(conn: Any) -> None:
            self._connecting = False
            if not self._running:
                conn.close()
                ready.callback(None)
                return
            self._conn, self._pg = conn, conn.pgconn
            self._pg.nonblocking = 1
            self.backend_pid = self._pg.backend_pid
            self.connections += 1
            self._socket = _Socket(self, self._pg.socket)
            self._reactor.addReader(self._socket)
            listening = [self._send(_listen(channel), want=True) for channel in self._subs.channels]
            done = listening[-1] if listening else succeed(None)

            def live(_: Any) -> None:
                self._backoff = RECONNECT_FIRST_S
                if not ready.called:
                    ready.callback(None)

            assert done is not None
            done.addCallback(live)

        def failed(failure: Any) -> None:
            self._connecting = False
            log.warn("replication bus: cannot connect ({reason}); retrying", reason=failure.getErrorMessage())
            self._schedule_reconnect()
            if not ready.called:
                ready.callback(None)  # start-up goes on; the bus catches up once connected

        opened.addCallbacks(connected, failed)
        return ready

    def _schedule_reconnect(self) -> None:
        if not self._running or self._connecting:
            return
        if self._reconnect_call is not None and self._reconnect_call.active():
            return
        delay, self._backoff = self._backoff, min(self._backoff * 2, RECONNECT_MAX_S)
        self._reconnect_call = self._clock.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        d = self._connect()

        def caught_up(_: Any) -> None:
            if self._pg is not None:
                self._subs.reconnected()

        d.addCallback(caught_up)

    def _close(self) -> None:
        if self._socket is not None:
            if not self._socket.detached:
                self._reactor.removeReader(self._socket)
                self._reactor.removeWriter(self._socket)
            self._socket.close()
            self._socket = None
        self._writing = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = self._pg = None
        queued, self._queue = self._queue, []
        in_flight, self._in_flight, self._in_flight_busy = self._in_flight, None, False
        for _, _, d in queued:
            if d is not None and not d.called:
                d.callback(None)
        if in_flight is not None and not in_flight.called:
            in_flight.callback(None)

    def _lost(self, why: str) -> None:
        if self._pg is None:
            return
        log.warn("replication bus: connection lost ({why}); reconnecting", why=why)
        # Stop watching the socket before the connection (and its file descriptor) is closed.
        socket = self._socket
        if socket is not None and not socket.detached:
            self._reactor.removeReader(socket)
            self._reactor.removeWriter(socket)
            socket.detached = True
        self._pg = None  # nothing more is sent on it; it is closed on the next turn
        self._reactor.callLater(0, self._closed_after_loss)

    def _closed_after_loss(self) -> None:
        self._close()
        self._schedule_reconnect()

    # -- queries, one in flight ------------------------------------------------------------------------

    def _send(self, sql: bytes, params: list[bytes] | None = None, want: bool = False) -> Deferred[None] | None:
        d: Deferred[None] | None = Deferred() if want else None
        self._queue.append((sql, params, d))
        self._next()
        return d

    def _next(self) -> None:
        if self._pg is None or self._in_flight_busy or not self._queue:
            return
        sql, params, d = self._queue.pop(0)
        try:
            if params is None:
                self._pg.send_query(sql)
            else:
                self._pg.send_query_params(sql, params)
        except Exception as e:
            if d is not None:
                d.callback(None)
            self._lost(str(e))
            return
        self._in_flight, self._in_flight_busy = d, True
        self._writable()

    def _writable(self) -> None:
        if self._pg is None:
            return
        try:
            pending = self._pg.flush()
        except Exception as e:
            self._lost(str(e))
            return
        if pending and not self._writing and self._socket is not None:
            self._reactor.addWriter(self._socket)
            self._writing = True
        elif not pending and self._writing and self._socket is not None:
            self._reactor.removeWriter(self._socket)
            self._writing = False

    def _readable(self) -> None:
        from psycopg import pq

        pg = self._pg
        if pg is None:
            return
        try:
            pg.consume_input()
        except Exception as e:
            self._lost(str(e))
            return
        while (note := pg.notifies()) is not None:
            try:
                hint = json.loads(note.extra)
            except ValueError:
                log.warn("replication bus: a hint that is not JSON on {channel}", channel=note.relname)
                continue
            self._subs.deliver(note.relname.decode(), hint)
            if self._pg is not pg:
                return  # a subscriber stopped the bus
        while self._in_flight_busy and not pg.is_busy():
            result = pg.get_result()
            if result is None:
                done, self._in_flight, self._in_flight_busy = self._in_flight, None, False
                if done is not None and not done.called:
                    done.callback(None)
                break
            if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                log.warn("replication bus: {error}", error=(result.error_message or b"").decode(errors="replace"))
        if pg.status == pq.ConnStatus.BAD:
            self._lost("connection is bad")
            return
        self._next()


def _listen(channel: str) -> bytes:
    return b'LISTEN "' + channel.replace('"', '""').encode() + b'"'
