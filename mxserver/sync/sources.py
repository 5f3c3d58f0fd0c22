"""What /sync reads: one interface for every stream (room events, typing, receipts, ...).

A :class:`SyncSource` names its stream (one of :data:`~mxserver.sync.tokens.STREAMS`),
reports its current position, and says what changed for a user between two
positions as a :class:`SyncSection`. Sources are registered with one
:class:`SyncSources` registry; the notifier builds the current token from it,
the /sync handler merges the sections of all of them, and sliding sync, push
counts and workers reuse the same sources.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import attrs

from mxserver.storage.sync import MembershipRow
from mxserver.sync.tokens import STREAMS, StreamToken

JsonDict = dict[str, Any]


@attrs.frozen
class SyncRequest:
    """The sync being built, as a source sees it."""

    user_id: str
    device_id: str | None
    #: every membership of the user (joined, invited, left, ...), from the room stream
    memberships: Sequence[MembershipRow]
    joined_room_ids: Sequence[str]
    sync_filter: Any
    #: None on an initial sync
    since: StreamToken | None
    #: the token this sync answers up to
    now: StreamToken
    full_state: bool = False

    def since_position(self, stream: str) -> int | None:
        return None if self.since is None else getattr(self.since, stream)

    def now_position(self, stream: str) -> int:
        return int(getattr(self.now, stream))


@attrs.define
class SyncSection:
    """One source's part of a /sync answer."""

    #: room ID -> events for ``rooms.join.{room}.ephemeral``
    room_ephemeral: dict[str, list[JsonDict]] = attrs.Factory(dict)
    #: room ID -> events for ``rooms.*.{room}.account_data``
    room_account_data: dict[str, list[JsonDict]] = attrs.Factory(dict)
    #: top-level keys of the answer (``presence``, ``to_device``, ``device_lists``, ...)
    top_level: JsonDict = attrs.Factory(dict)
    #: the position to put in ``next_batch`` for this stream, when it is not ``now``'s
    next_position: int | None = None
    #: whether anything here is worth returning an incremental sync early for
    has_data: bool = False


class SyncSource(Protocol):
    """A stream /sync reads."""

    @property
    def name(self) -> str:
        """The stream's name in the sync token."""

    def current_position(self) -> int:
        """The latest position whose changes are readable."""

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        """What changed for ``request.user_id`` after ``request.since`` up to ``request.now``."""


class SyncSources:
    """The registered sources, in token order."""

    def __init__(self) -> None:
        self._sources: dict[str, SyncSource] = {}

    def register(self, source: SyncSource) -> None:
        if source.name not in STREAMS:
            raise ValueError(f"unknown sync stream {source.name!r}")
        if source.name in self._sources:
            raise ValueError(f"sync stream {source.name!r} registered twice")
        self._sources[source.name] = source

    def current_token(self) -> StreamToken:
        return StreamToken(**{name: src.current_position() for name, src in self._sources.items()})

    def __iter__(self) -> Iterator[SyncSource]:
        return iter(sorted(self._sources.values(), key=lambda s: STREAMS.index(s.name)))

    def get(self, name: str) -> SyncSource | None:
        return self._sources.get(name)
