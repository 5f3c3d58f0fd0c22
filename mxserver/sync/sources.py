"""What /sync reads: one interface for every stream (room events, typing, receipts, ...).

A :class:`SyncSource` names its stream (one of :data:`~mxserver.sync.tokens.STREAMS`),
reports its current position, and says what changed for a user between two
positions as a :class:`SyncSection`. Sources are registered with one
:class:`SyncSources` registry; the notifier builds the current token from it,
the /sync handler merges the sections of all of them, and sliding sync, push
counts and workers reuse the same sources.

The adapters over today's handlers are in :mod:`mxserver.sync.source_adapters`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from mxserver.storage.sync import MembershipRow
from mxserver.sync.tokens import STREAMS, StreamToken

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.sync.filtering import Filter

JsonDict = dict[str, Any]


@attrs.frozen
class SyncRequest:
    """The sync being built, as a source sees it."""

    requester: Requester
    #: every membership of the user (joined, invited, left, ...), from the room stream, unfiltered
    memberships: Sequence[MembershipRow]
    #: the joined rooms the sync's filter lets through
    joined_room_ids: Sequence[str]
    sync_filter: Filter
    #: None on an initial sync
    since: StreamToken | None
    #: the token this sync answers up to
    now: StreamToken
    full_state: bool = False

    @property
    def user_id(self) -> str:
        return self.requester.user_id

    @property
    def device_id(self) -> str | None:
        return self.requester.device_id

    def since_position(self, stream: str) -> int | None:
        """The client's position on ``stream``; None on an initial sync."""
        return None if self.since is None else int(getattr(self.since, stream))

    def now_position(self, stream: str) -> int:
        return int(getattr(self.now, stream))


@attrs.define
class SyncSection:
    """One source's part of a /sync answer."""

    #: room ID -> events for ``rooms.join.{room}.ephemeral`` (a joined room listed here is in the answer)
    room_ephemeral: dict[str, list[JsonDict]] = attrs.Factory(dict)
    #: room ID -> events for ``rooms.*.{room}.account_data`` (a joined room listed here is in the answer)
    room_account_data: dict[str, list[JsonDict]] = attrs.Factory(dict)
    #: top-level keys of the answer (``presence``, ``to_device``, ``device_lists``, ...), in answer order
    top_level: JsonDict = attrs.Factory(dict)
    #: the position to put in ``next_batch`` for this stream, when it is not ``now``'s
    next_position: int | None = None
    #: whether ``top_level`` holds news worth ending a long-poll for (rooms count by being in the answer)
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
        # Kept ready-made: the token is read several times by every /sync wake-up.
        self._ordered: tuple[SyncSource, ...] = ()
        self._positions: tuple[tuple[str, Callable[[], int]], ...] = ()

    def register(self, source: SyncSource) -> None:
        if source.name not in STREAMS:
            raise ValueError(f"unknown sync stream {source.name!r}")
        if source.name in self._sources:
            raise ValueError(f"sync stream {source.name!r} registered twice")
        self._sources[source.name] = source
        self._ordered = tuple(sorted(self._sources.values(), key=lambda s: STREAMS.index(s.name)))
        self._positions = tuple((s.name, s.current_position) for s in self._ordered)

    def current_token(self) -> StreamToken:
        """Every registered stream at its current position (unregistered ones at 0)."""
        return StreamToken(**{name: position() for name, position in self._positions})

    def __iter__(self) -> Iterator[SyncSource]:
        return iter(self._ordered)

    def get(self, name: str) -> SyncSource | None:
        return self._sources.get(name)
