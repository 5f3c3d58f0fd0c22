"""The streams writers publish on and readers subscribe to.

The room server publishes every batch of newly persisted events on the
:class:`RoomEventStream`, in stream order. The ephemeral writers (typing,
receipts, presence, send-to-device, device lists) publish their changes on
:class:`EphemeralStreams` the same way. Readers (sync's caches and notifier,
the federation sender, module hooks) subscribe; no writer calls a reader, and
readers never call each other. This is the seam where mxserver can later fan
out across processes without changing readers.

Subscribers run in explicit :class:`Phase` order, and in registration order
within a phase: caches first (membership and room caches must have seen an
event before anything reads them), then readers that act on the change
(federation sender, modules), the notifier last (waking a long-polling
``/sync`` runs it inside the publish, so everything else must be done).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs
from twisted.logger import Logger

from mxserver.events.model import Event

log = Logger()

_T = TypeVar("_T")


class Phase(enum.IntEnum):
    """When a subscriber runs, relative to the others of the same stream."""

    #: in-memory state derived from the stream (members per room, latest position per room)
    CACHES = 0
    #: readers that act on a change (federation sender, module hooks, indexers)
    READERS = 1
    #: waking long-polls: last, so a woken /sync sees every cache up to date
    NOTIFY = 2


class Stream(Generic[_T]):
    """In-process publish/subscribe for one stream's changes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: list[tuple[Phase, int, Callable[[_T], Any]]] = []

    def subscribe(self, fn: Callable[[_T], Any], phase: Phase = Phase.READERS) -> None:
        """Call ``fn(item)`` for every item published from now on."""
        self._subscribers.append((phase, len(self._subscribers), fn))
        self._subscribers.sort(key=lambda s: (s[0], s[1]))

    def unsubscribe(self, fn: Callable[[_T], Any]) -> None:
        """Stop calling ``fn`` (a reader going away)."""
        self._subscribers = [s for s in self._subscribers if s[2] != fn]

    def publish(self, item: _T) -> None:
        """Hand ``item`` to every subscriber; one failing subscriber does not stop the others."""
        for _, _, fn in self._subscribers:
            try:
                fn(item)
            except Exception:
                log.failure("{stream} subscriber {fn!r} failed", stream=self.name, fn=fn)


class RoomEventStream(Stream[list[Event]]):
    """Batches of persisted room events, in stream order; ``position`` is the last published."""

    def __init__(self) -> None:
        super().__init__("room")
        self.position = 0

    def publish_events(self, events: list[Event], position: int) -> None:
        self.position = max(self.position, position)
        self.publish(events)


# -- ephemeral changes ------------------------------------------------------------------------
#
# Each record says what changed and whom it wakes (``user_ids``/``room_ids``): the
# notifier subscribes to every ephemeral stream in the NOTIFY phase and wakes those.


@attrs.frozen
class TypingChange:
    """Who is typing in a room changed; or, with ``refreshed``, nothing changed but that user
    said again they are typing (only other servers care: they time typing out themselves)."""

    room_id: str
    typing_now: frozenset[str]
    refreshed: str | None = None
    #: the typing stream's position of this change
    position: int = attrs.field(default=0, eq=False)

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        if self.refreshed is not None:
            return (), ()  # nothing new to show a client
        return (), (self.room_id,)


@attrs.frozen
class ReceiptChange:
    """A user's receipt moved (``receipt_type``: m.read, m.read.private, ...)."""

    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    thread_id: str | None
    ts: int

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        if self.receipt_type == "m.read.private":
            return (self.user_id,), ()
        return (), (self.room_id,)


@attrs.frozen
class PresenceChange:
    """A user's presence changed; ``notify_users`` are the local users who can see it."""

    user_id: str
    state: Mapping[str, Any]
    notify_users: frozenset[str] = frozenset()
    #: the presence stream's position of the user's latest change
    position: int = attrs.field(default=0, eq=False)

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        return self.notify_users, ()


@attrs.frozen
class ToDeviceSent:
    """A local user sent to-device messages (already deduplicated on the client's txn ID).

    ``messages`` is ``{user_id: {device_id or "*": content}}``; ``local_recipients`` the local users among them.
    """

    sender: str
    sender_device: str | None
    event_type: str
    txn_id: str
    messages: Mapping[str, Mapping[str, Any]]
    local_recipients: frozenset[str] = frozenset()

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        return self.local_recipients, ()


@attrs.frozen
class DeviceListChange:
    """A local user's devices, device keys or cross-signing keys changed.

    ``changes`` are ``(device_id or "" for cross-signing keys, stream_id, prev_stream_id)``;
    ``notify_users`` the local users sharing a room with the user (and the user).
    """

    user_id: str
    changes: tuple[tuple[str, int, int | None], ...]
    notify_users: frozenset[str] = frozenset()

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        return self.notify_users, ()


@attrs.frozen
class AccountDataChange:
    """A user's account data, room tags or push rules changed (the ``account_data`` stream)."""

    user_id: str

    @property
    def wakes(self) -> tuple[Iterable[str], Iterable[str]]:
        return (self.user_id,), ()


@attrs.frozen
class Invalidation:
    """Something held in memory changed other than through a stream (a token was revoked, a
    room purged): processes that hold it drop it. ``cache`` names what, ``keys`` which entries."""

    cache: str
    keys: tuple[str, ...]


@attrs.define
class EphemeralStreams:
    """One stream per kind of ephemeral change."""

    typing: Stream[TypingChange] = attrs.field(factory=lambda: Stream("typing"))
    receipts: Stream[ReceiptChange] = attrs.field(factory=lambda: Stream("receipts"))
    presence: Stream[PresenceChange] = attrs.field(factory=lambda: Stream("presence"))
    to_device: Stream[ToDeviceSent] = attrs.field(factory=lambda: Stream("to_device"))
    device_lists: Stream[DeviceListChange] = attrs.field(factory=lambda: Stream("device_lists"))
    account_data: Stream[AccountDataChange] = attrs.field(factory=lambda: Stream("account_data"))

    def all(self) -> list[Stream[Any]]:
        return [self.typing, self.receipts, self.presence, self.to_device, self.device_lists, self.account_data]
