"""Delivering notifications to push gateways: one destination per pusher.

Each HTTP pusher is a destination of the shared mechanism (:mod:`mxserver.delivery.destinations`,
DESIGN.md §Destinations): one request in flight, exponential backoff with jitter persisted
in its ``pushers`` row, a retry timer. What it sends comes from the database, not from
memory, so the backlog is bounded by nothing in RAM and survives restarts:

- the **queue** is the user's unread notifications
  (:func:`~mxserver.storage.push_actions.user_notifications_sql`) after the pusher's
  persisted position (``last_stream_ordering``), read a page at a time; the position
  moves past a notification once the gateway took it (or refused it for good);
- the **subscription** is :class:`~mxserver.push.notifications.NotificationReader`'s
  listener seam: when it records notifications for a user, that user's pushers are
  kicked; at start-up every pusher is kicked once and reads from its position;
- a read receipt of the user queues a **badge update** (counts only), so the app's
  badge goes down when the user reads elsewhere (push-gateway-api: ``counts``).

A notification the gateway failed to take is sent again after the backoff; a 4xx other
than 429 drops it (the gateway is up, retrying cannot help); a pusher whose pushkey the
gateway lists in ``rejected`` is removed (push-gateway-api: "the homeserver should
remove the pusher").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.delivery.destinations import DeliveryLoops, DestinationState, RetryPolicy
from mxserver.events.model import Event
from mxserver.push.gateway import GatewayRefused, GatewayUnavailable, PushGatewayClient, device_entry, tweaks_of
from mxserver.push.notifications import EventSource, RoomState
from mxserver.storage.federation_sender import OrderedWrites
from mxserver.storage.pushers import PendingNotification, PusherRow, PusherStore
from mxserver.streams import ReceiptChange

log = Logger()

PusherKey = tuple[str, str, str]  # (user_id, app_id, pushkey)

#: notifications read from the store per query
PAGE = 20
MIN_RETRY_INTERVAL_MS = 1_000
#: a notification an hour old is of little use; a dead gateway is tried at least this often
MAX_RETRY_INTERVAL_MS = 3600 * 1000
#: event types worth waking a device for (prio "high"), when they make a sound or highlight
_URGENT_TYPES = ("m.room.message", "m.room.encrypted", "m.call.invite")

@attrs.define(eq=False)
class Pusher(DestinationState):
    """One HTTP pusher as a destination."""

    row: PusherRow | None = None
    #: unread notifications may wait after ``row.last_stream_ordering``
    pending: bool = True
    #: a counts-only update is due (a read receipt)
    badge: bool = False
    #: deleted or replaced: its loop stops
    removed: bool = False

    @property
    def key(self) -> PusherKey:
        assert self.row is not None
        return (self.row.user_id, self.row.app_id, self.row.pushkey)


class PusherPool(service.Service):
    """Every HTTP pusher's delivery (see the module docstring)."""

    def __init__(
        self,
        store: PusherStore,
        gateway: PushGatewayClient,
        events: EventSource,
        room_state: RoomState,
        clock: IReactorTime,
    ) -> None:
        self.setName("pusher_pool")
        self._store = store
        self._gateway = gateway
        self._events = events
        self._room_state = room_state
        self._pushers: dict[PusherKey, Pusher] = {}
        self._by_user: dict[str, set[PusherKey]] = {}
        self._writes = OrderedWrites()
        self.loops: DeliveryLoops[Pusher] = DeliveryLoops(
            clock,
            RetryPolicy(MIN_RETRY_INTERVAL_MS, MAX_RETRY_INTERVAL_MS),
            lambda p: not p.removed and (p.pending or p.badge),
            self._run,
            self,
            kind="pusher",
        )
        #: observers of delivery outcomes (tests): called with the pusher's key after each attempt
        self._listeners: list[Callable[[PusherKey], Any]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every pusher and its backoff (a start hook); each catches up from its position."""
        for row in await self._store.all_pushers():
            self._add(row)
        self.loops.started = True
        for pusher in list(self._pushers.values()):
            self.loops.kick(pusher)

    def stopService(self) -> Deferred[None]:
        """No new attempts; requests in flight are cancelled; queued store writes finish first."""
        super().stopService()
        # The loops end first (an answer just received records its position on the way out),
        # then the queued writes are flushed.
        d = self.loops.stop(self._pushers.values())
        d.addCallback(lambda _: self._writes.flush())
        # Then close the connections kept open for the gateways; the flush's outcome stands.
        d.addBoth(lambda result: self._gateway.close().addCallback(lambda _: result))
        return d

    def on_attempt(self, fn: Callable[[PusherKey], Any]) -> None:
        self._listeners.append(fn)

    # -- changes to the set of pushers ----------------------------------------------------------

    def pusher_set(self, row: PusherRow) -> None:
        """A pusher was added or replaced (its new row is stored)."""
        self.pusher_removed([(row.user_id, row.app_id, row.pushkey)])
        if row.kind == "http":
            self.loops.kick(self._add(row))

    def pusher_removed(self, keys: Iterable[PusherKey]) -> None:
        for key in keys:
            pusher = self._pushers.pop(key, None)
            if pusher is None:
                continue
            pusher.removed = True
            self.loops.cancel_timer(pusher)
            users = self._by_user.get(key[0])
            if users is not None:
                users.discard(key)
                if not users:
                    del self._by_user[key[0]]

    def _add(self, row: PusherRow) -> Pusher:
        pusher = Pusher(name=f"{row.user_id}/{row.app_id}/{row.pushkey}", row=row)
        self.loops.load(pusher, row.failure_ts, row.retry_last_ts, row.retry_interval)
        pusher.last_success_ts = row.last_success_ts
        self._pushers[pusher.key] = pusher
        self._by_user.setdefault(row.user_id, set()).add(pusher.key)
        return pusher

    def pushers_of(self, user_id: str) -> list[Pusher]:
        return [self._pushers[k] for k in sorted(self._by_user.get(user_id, ()))]

    # -- what makes a pusher work -------------------------------------------------------------------

    def on_notifications(self, user_ids: Iterable[str]) -> None:
        """The push reader stored new notifications for these users (its listener seam)."""
        for user_id in user_ids:
            for pusher in self.pushers_of(user_id):
                pusher.pending = True
                self.loops.kick(pusher)

    def on_receipt(self, change: ReceiptChange) -> None:
        """Receipts stream subscriber: the user's badge may have gone down."""
        if change.receipt_type not in ("m.read", "m.read.private"):
            return
        for pusher in self.pushers_of(change.user_id):
            pusher.badge = True
            self.loops.kick(pusher)

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self, pusher: Pusher) -> None:
        while self.loops.started and not pusher.removed:
            row = pusher.row
            assert row is not None
            if pusher.pending:
                pusher.pending = False
                batch = await self._store.pending_notifications(row.user_id, row.last_stream_ordering, PAGE)
                if batch:
                    pusher.pending = True  # there may be more after this page
                for note in batch:
                    if not await self._attempt(pusher, self._notification(pusher, note)):
                        return
                    if pusher.removed:
                        return
                    row.last_stream_ordering = note.stream_ordering
                    key, position = pusher.key, note.stream_ordering
                    self._writes.write(partial(self._store.set_position, *key, position))
                continue
            if pusher.badge:
                pusher.badge = False
                if not await self._attempt(pusher, self._badge(pusher)):
                    pusher.badge = True
                    return
                continue
            return

    async def _attempt(self, pusher: Pusher, build: Awaitable[dict[str, Any] | None]) -> bool:
        """Build and send one request; False when the pusher now backs off."""
        row = pusher.row
        assert row is not None
        try:
            notification = await build
            if notification is None:
                return True  # nothing to send (the event is gone)
            request = ensureDeferred(self._gateway.notify(row.data["url"], notification))
            pusher.request = request  # cancelled by a stop
            try:
                rejected = await request
            finally:
                pusher.request = None
        except CancelledError:
            return False  # stopping: sent again after the next start (the position did not move)
        except GatewayUnavailable as e:
            self.loops.failed(pusher, str(e))
            log.info("push to {pusher} failed ({reason}); retrying in {secs:.0f}s",
                     pusher=pusher.name, reason=e, secs=pusher.retry_interval / 1000)
            self._attempted(pusher)
            return False
        except GatewayRefused as e:
            log.warn("push gateway of {pusher} refused a notification ({reason}); dropping it", pusher=pusher.name, reason=e)
            self.loops.succeeded(pusher)  # it answered: no backoff
            self._attempted(pusher)
            return True
        self.loops.succeeded(pusher)
        if row.pushkey in rejected:
            log.info("push gateway rejected {pusher}: removing the pusher", pusher=pusher.name)
            key = pusher.key
            self.pusher_removed([key])
            await self._store.delete_pusher(*key)
        self._attempted(pusher)
        return True

    def _attempted(self, pusher: Pusher) -> None:
        for fn in self._listeners:
            fn(pusher.key)

    # -- BackoffWriter ----------------------------------------------------------------------------

    def backoff_started(self, dest: Pusher, failure_ts: int, retry_last_ts: int, retry_interval: int) -> None:
        key = dest.key
        self._writes.write(lambda: self._store.set_backoff(key, failure_ts, retry_last_ts, retry_interval))

    def backoff_ended(self, dest: Pusher, now_ms: int) -> None:
        key = dest.key
        self._writes.write(lambda: self._store.set_backoff(key, None, None, 0, now_ms))

    # -- building requests (push-gateway-api §POST /_matrix/push/v1/notify) ---------------------------

    def _device(self, row: PusherRow, tweaks: dict[str, Any]) -> dict[str, Any]:
        return device_entry(row.app_id, row.pushkey, row.pushkey_ts, row.data, tweaks)

    async def _badge(self, pusher: Pusher) -> dict[str, Any]:
        row = pusher.row
        assert row is not None
        unread = await self._store.unread_total(row.user_id)
        return {"counts": {"unread": unread}, "devices": [self._device(row, {})]}

    async def _notification(self, pusher: Pusher, note: PendingNotification) -> dict[str, Any] | None:
        row = pusher.row
        assert row is not None
        found = await self._events.get_events([note.event_id], include_rejected=False)
        event = found.get(note.event_id)
        if event is None:
            return None
        tweaks = tweaks_of(note.actions)
        unread = await self._store.unread_total(row.user_id)
        urgent = event.type in _URGENT_TYPES and ("sound" in tweaks or bool(tweaks.get("highlight")))
        notification: dict[str, Any] = {
            "event_id": event.event_id,
            "room_id": event.room_id,
            "counts": {"unread": unread},
            "prio": "high" if urgent else "low",
            "devices": [self._device(row, tweaks)],
        }
        if row.data.get("format") == "event_id_only":
            return notification
        notification.update(
            # "id": the event ID under its pre-spec name, which SyTest and older gateways read
            id=event.event_id,
            type=event.type,
            sender=event.sender,
            content=event.content,
        )
        if event.type == "m.room.member":
            notification["membership"] = event.content.get("membership")
            notification["user_is_target"] = event.state_key == row.user_id
        notification.update(await self._room_facts(event))
        return notification

    async def _room_facts(self, event: Event) -> dict[str, Any]:
        """``sender_display_name``, ``room_name`` and ``room_alias`` from the room's current state
        (the room's name falls back to its canonical alias, as clients name rooms)."""
        keys = [("m.room.name", ""), ("m.room.canonical_alias", ""), ("m.room.member", event.sender)]
        try:
            state = await self._room_state.current_state_events(event.room_id, keys)
        except Exception:
            state = {}
        out: dict[str, Any] = {}
        member = state.get(("m.room.member", event.sender))
        if event.type == "m.room.member" and event.state_key == event.sender:
            member = event
        display = member.content.get("displayname") if member is not None else None
        if isinstance(display, str) and display:
            out["sender_display_name"] = display
        alias_event = state.get(("m.room.canonical_alias", ""))
        alias = alias_event.content.get("alias") if alias_event is not None else None
        name_event = state.get(("m.room.name", ""))
        name = name_event.content.get("name") if name_event is not None else None
        if not (isinstance(name, str) and name):
            name = _stripped_state_value(event, "m.room.name", "name")
        if isinstance(alias, str) and alias:
            out["room_alias"] = alias
        if isinstance(name, str) and name:
            out["room_name"] = name
        elif isinstance(alias, str) and alias:
            out["room_name"] = alias
        return out


def _stripped_state_value(event: Event, event_type: str, key: str) -> Any:
    """A value from an invite's stripped room state (a room we are not in has no state here)."""
    unsigned = event.get("unsigned") or {}
    for entry in unsigned.get("invite_room_state") or () if isinstance(unsigned, dict) else ():
        if isinstance(entry, dict) and entry.get("type") == event_type and isinstance(entry.get("content"), dict):
            return entry["content"].get(key)
    return None
