"""The search indexer: a reader of the room event stream that keeps the full-text index.

client-server-api §Server Side Search. Indexing is not part of persisting an event: the
indexer reads the room server's stream like the push and appservice readers
(:class:`~mxserver.stream_reader.StreamReader`), a moment after the events are published,
and indexes what arrived meanwhile in one transaction with its persisted position
(:meth:`~mxserver.storage.search.SearchStore.index`). A send does not wait for the index,
and a burst of sends is one index write (SQLite's FTS5 writes a new segment at every
commit that changes it). After a restart it catches up from its position.

A search waits for the indexer (:meth:`SearchIndexer.caught_up`): what a user sent before
searching is found.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from mxserver.events.model import Event
from mxserver.events.search import KEY_OF_TYPE
from mxserver.stream_reader import EventSource, StreamReader, in_timeline
from mxserver.streams import RoomEventStream

#: the reader's name in ``stream_readers``
READER_NAME = "search"

#: how long published events wait to be indexed together (unless a search waits for them):
#: each batch is one write
BATCH_WINDOW_S = 0.2


class SearchIndexStore(Protocol):
    def reader_position(self, reader: str) -> Awaitable[int | None]: ...

    def index(self, reader: str, position: int, events: Sequence[tuple[str, str, Any]]) -> Awaitable[None]: ...


class SearchIndexer(StreamReader):
    """Indexes the searchable text of every new timeline event (see the module docstring)."""

    def __init__(
        self,
        store: SearchIndexStore,
        stream: RoomEventStream,
        events: EventSource,
        current_position: Callable[[], int],
        reactor: IReactorTime,
        clock: IReactorTime | None = None,
    ) -> None:
        self._store = store
        super().__init__(READER_NAME, stream, events, current_position, reactor, BATCH_WINDOW_S, clock)

    async def start(self) -> None:
        """Load the persisted position (a start hook, after migrations) and catch up from it.

        Without one (a new database, or one whose events were indexed as they were stored,
        or by the start-up job) it starts at the stream's current position."""
        stored = await self._store.reader_position(READER_NAME)
        await self._start_from(stored, lambda position: self._store.index(READER_NAME, position, []))

    async def stop(self) -> None:
        """Finish the batch being indexed and take no more (before the database closes)."""
        await self._halt()

    def caught_up(self) -> Deferred[None]:
        """Fires once every event published so far is indexed (or the wait timed out)."""
        return self.wait_for(self._stream.position)

    async def _process(self, events: Sequence[Event], upto: int) -> None:
        docs = [(ev.event_id, ev.type, ev.content) for ev in events if ev.type in KEY_OF_TYPE and in_timeline(ev)]
        if docs or self._persist_due(upto):
            await self._store.index(READER_NAME, upto, docs)
            self._persisted = upto
        self._advance(upto)

