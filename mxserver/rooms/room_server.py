"""The room server: the only writer of room state, composed of parts with their own state.

* :class:`~mxserver.rooms.sequencer.RoomSequencer` keeps each room's *head* in memory
  (forward extremities, depth, current state map) with the lock its writers take,
  persists what they plan in batched transactions, answers them only once committed,
  then publishes the events on the room event stream.
* :class:`~mxserver.rooms.local_events.LocalEventBuilder` builds our users' events on the
  head, checks them against the auth rules and the modules' hooks, and deduplicates
  client transaction IDs.
* :class:`~mxserver.rooms.receive.InboundReceiver` takes events from other servers: auth at
  the event, before it and against the current state (rejection, soft failure), state
  resolution when the DAG forks.
* :class:`~mxserver.rooms.remote_membership.RemoteMembershipHooks` stores what joining,
  being invited to or knocking on rooms on other servers brings.

:class:`RoomServer` is the facade the homeserver builds and consumers hold; each kind of
consumer sees it through its own narrow interface (:mod:`mxserver.rooms.api`). The event
store allocates event NIDs and stream positions (``EventStore.allocate_ids``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from signedjson.types import SigningKey
from twisted.internet.interfaces import IReactorTime

from mxserver.errors import not_found
from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion
from mxserver.rooms.local_events import (  # noqa: F401 (re-exported: what callers build events from)
    MAX_PREV_EVENTS,
    TXN_RETENTION_MS,
    EventSpec,
    LocalEventBuilder,
    TxnKey,
)
from mxserver.rooms.policy_server import PolicyServerSigner
from mxserver.rooms.receive import (  # noqa: F401 (re-exported: the room server's receive API)
    EventStoreStateSource,
    InboundReceiver,
    MissingEventsError,
    MissingStateError,
    ReceiveResult,
    ReceiveStatus,
)
from mxserver.rooms.remote_membership import RemoteMembershipHooks
from mxserver.rooms.room_head import RoomHead
from mxserver.rooms.sequencer import MAX_BATCH, RoomSequencer  # noqa: F401 (re-exported)
from mxserver.storage.events import EventStore, RoomRecord
from mxserver.storage.state import StateKey, StateStore
from mxserver.streams import RoomEventStream

if TYPE_CHECKING:
    from mxserver.module_api import EventHooks

_T = TypeVar("_T")


class RoomServer:
    """Creates, authorises, sequences and persists room events; answers reads of current state.

    ``event_hooks`` is read at every local send (modules may add hooks after start-up):
    a hook's ``check_event_allowed(event, state)`` returning False refuses the event.
    """

    def __init__(
        self,
        store: EventStore,
        state: StateStore,
        stream: RoomEventStream,
        *,
        clock: IReactorTime,
        server_name: str,
        signing_key: SigningKey,
        event_hooks: EventHooks,
        policy_signer: PolicyServerSigner | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.sequencer = RoomSequencer(store, state, stream, clock)
        self.local = LocalEventBuilder(
            store,
            state,
            self.sequencer,
            clock=clock,
            server_name=server_name,
            signing_key=signing_key,
            event_hooks=event_hooks,
            policy_signer=policy_signer,
        )
        self.inbound = InboundReceiver(store, state, self.sequencer, policy_signer)
        self.remote_membership = RemoteMembershipHooks(store, state, self.sequencer)

    async def start(self) -> None:
        """Load the store's counters (after migrations)."""
        await self.sequencer.start()

    @property
    def current_position(self) -> int:
        """The highest room-stream position whose events (and all before) are persisted."""
        return self.store.max_stream

    # -- heads ----------------------------------------------------------------------------

    async def get_head(self, room_id: str) -> RoomHead:
        """The room's head: forward extremities, depth, current state (read it, don't change it)."""
        return await self.sequencer.get_head(room_id)

    async def run_locked(self, room_id: str, fn: Callable[[RoomHead], Awaitable[_T]]) -> _T:
        """Run ``fn(head)`` holding the room's lock, once every write queued before is committed
        (see :meth:`RoomSequencer.run_locked`)."""
        return await self.sequencer.run_locked(room_id, fn)

    def forget_room(self, room_id: str) -> None:
        """Drop what memory holds of a room whose rows were purged (admin API): its head and
        record; a reader of it next finds the room unknown. Call it holding the room's lock."""
        self.sequencer.forget_head(room_id)
        self.store.forget_room(room_id)

    # -- reads ------------------------------------------------------------------------------

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self.store.get_room(room_id)

    async def current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        """The room's current state map (a copy)."""
        return dict((await self.sequencer.get_head(room_id)).state)

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]:
        head = await self.sequencer.get_head(room_id)
        wanted = head.state if keys is None else {k: head.state[k] for k in keys if k in head.state}
        events = await self.store.get_events(wanted.values())
        return {k: events[e] for k, e in wanted.items() if e in events}

    async def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> Event | None:
        return (await self.current_state_events(room_id, [(etype, state_key)])).get((etype, state_key))

    async def membership(self, room_id: str, user_id: str) -> str | None:
        member = await self.current_state_event(room_id, "m.room.member", user_id)
        return member.membership if member is not None else None

    async def state_at_event(self, event_id: str, after: bool = True) -> dict[StateKey, str]:
        info = await self.store.get_event_info(event_id)
        if info is None:
            raise not_found("Unknown event")
        return dict(await self.state.get_state(info.state_after if after else info.state_before))

    # -- local writes ---------------------------------------------------------------------------

    async def create_room(
        self, creator: str, room_version: RoomVersion, create_content: Mapping[str, Any], initial: Sequence[EventSpec]
    ) -> tuple[str, list[Event]]:
        """Create a room: the create event, then ``initial`` events, persisted in one transaction."""
        return await self.local.create_room(creator, room_version, create_content, initial)

    async def replace_room(
        self,
        old_room_id: str,
        creator: str,
        room_version: RoomVersion,
        create_content: Mapping[str, Any],
        initial: Sequence[EventSpec],
        tombstone_content: Mapping[str, Any],
    ) -> tuple[str, Event]:
        """A room upgrade's replacement room and the old room's tombstone (see
        :meth:`LocalEventBuilder.replace_room`)."""
        return await self.local.replace_room(
            old_room_id, creator, room_version, create_content, initial, tombstone_content
        )

    async def send(self, room_id: str, spec: EventSpec, txn_key: TxnKey | None = None) -> Event:
        """Create, authorise and persist one local event; idempotent per ``txn_key``."""
        return await self.local.send(room_id, spec, txn_key)

    async def build_unpersisted(self, room_id: str, spec: EventSpec) -> Event:
        """Build, sign and auth-check an event on the room's head without storing it (403 if
        auth fails): membership handshake templates and invites to be co-signed."""
        return await self.local.build_unpersisted(room_id, spec)

    # -- events from other servers ---------------------------------------------------------------

    async def receive_event(self, event: Event, *, state_before: Mapping[StateKey, str] | None = None) -> ReceiveResult:
        """Accept, soft-fail or reject an event from another server (see
        :meth:`InboundReceiver.receive_event`)."""
        return await self.inbound.receive_event(event, state_before=state_before)

    async def store_outliers(self, room_id: str, events: Sequence[Event]) -> dict[str, str | None]:
        """Store events whose place in the DAG is not known as outliers (see
        :meth:`InboundReceiver.store_outliers`); event ID -> rejection reason or None."""
        return await self.inbound.store_outliers(room_id, events)

    async def persist_joined_state(
        self,
        room_id: str,
        room_version: RoomVersion,
        creator: str,
        outliers: Sequence[Event],
        event: Event,
        state_before: Mapping[StateKey, str],
    ) -> bool:
        """Adopt the room state another server answered to our join (see
        :meth:`RemoteMembershipHooks.persist_joined_state`)."""
        return await self.remote_membership.persist_joined_state(
            room_id, room_version, creator, outliers, event, state_before
        )

    async def persist_out_of_band_membership(
        self, room_id: str, room_version: RoomVersion, creator: str, event: Event
    ) -> bool:
        """Store a local user's membership of a room this server is not in (see
        :meth:`RemoteMembershipHooks.persist_out_of_band_membership`)."""
        return await self.remote_membership.persist_out_of_band_membership(room_id, room_version, creator, event)
