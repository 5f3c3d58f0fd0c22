"""The push reader: evaluates push rules for every new room event and records who it notifies.

A reader of the room event stream like sync and the federation sender (never a writer
of room state). For each timeline event it works out the local users who can see it
(the room's joined local members, and the invitee of an invite), shares the event's
facts across them (:class:`~mxserver.push.evaluator.EventFacts`), runs each user's
compiled rules, and stores the results with its stream position: by exception, one
default per event for the members who share the most common result and a row for each
user who differs (:mod:`mxserver.storage.push_actions`), so a message into a big room
costs one row, not one per member. After a restart it catches up from that position, so an event persisted
just before a crash is still evaluated, once.

/sync asks :meth:`NotificationReader.wait_for` before counting, so the counts it shows
always include the events it shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.batched_cache import BatchedCache
from mxserver.events.model import Event
from mxserver.push.evaluator import (
    CompiledRules,
    EventFacts,
    evaluate_groups,
    needs_display_names,
    notifies,
    outcome_for_shape,
    verdict,
)
from mxserver.rooms.power_levels import get_user_power_level
from mxserver.storage.push_actions import MAIN_THREAD, PushActionRow, PushActionsStore, PushDefault, UnreadCounts
from mxserver.stream_reader import EventSource as StoredEvents
from mxserver.stream_reader import StreamReader
from mxserver.streams import RoomEventStream

log = Logger()

#: the reader's name in ``stream_readers``
READER_NAME = "push"

#: how long published events wait to be evaluated together (unless a /sync waits for them):
#: each batch is one write, and a write per few sends cost a busy room a fifth of its sends
#: (bench W1); a push gateway hears of a message this much later
BATCH_WINDOW_S = 0.1
#: compiled rulesets kept in memory (users whose rules have not changed since)
RULES_CACHE_SIZE = 50_000

StateKey = tuple[str, str]

#: the user the server's default rules are compiled for (any ID with a plain localpart would do)
_TEMPLATE_USER = "@push-rules-template:invalid"

#: the actions stored for a user the event's default would notify but who is not notified
_NO_ACTIONS: list[Any] = []


class RoomState(Protocol):
    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]: ...


class PushRules(Protocol):
    """The users' rulesets (the push rules handler)."""

    async def get_rulesets(self, user_ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]: ...

    async def users_with_own_rules(self, user_ids: Sequence[str]) -> set[str]: ...

    def default_ruleset(self, user_id: str) -> Mapping[str, Any]: ...


class EventSource(StoredEvents, Protocol):
    async def get_room(self, room_id: str) -> Any: ...


@attrs.define
class _RoomContext:
    """What the events of one room in a batch share: read once per batch (and again after a
    state event of the room)."""

    room: Any
    #: joined members (room_member_count)
    member_count: int
    #: the joined local members, sorted, and as a set
    local: list[str]
    local_set: frozenset[str]
    #: the create event (v12 creators)
    state: Mapping[StateKey, Event]
    #: the auth events of the batch's events (most share their power levels)
    auth_events: dict[str, Event] = attrs.Factory(dict)
    #: compiled rules and ignored users of the recipients met so far
    compiled: dict[str, CompiledRules] = attrs.Factory(dict)
    ignored: dict[str, frozenset[str]] = attrs.Factory(dict)


def thread_of(event: Event) -> str:
    """The thread an event belongs to for counts: its root for ``m.thread`` relations, else main."""
    relates = event.content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str):
            return root
    return MAIN_THREAD


class NotificationReader(StreamReader):
    """Push-rule evaluation for every local recipient of every new timeline event."""

    def __init__(
        self,
        server_name: str,
        store: PushActionsStore,
        stream: RoomEventStream,
        events: EventSource,
        members: Callable[[str], Awaitable[Collection[str]]],
        room_state: RoomState,
        rules: PushRules,
        ignored_users: Callable[[Sequence[str]], Awaitable[Mapping[str, frozenset[str]]]],
        current_position: Callable[[], int],
        clock: IReactorTime,
        reactor: IReactorTime,
    ) -> None:
        self._server_name = server_name
        self._suffix = ":" + server_name
        self._store = store
        #: events and rooms (the base class reads events through it too)
        self._event_source = events
        self._members = members
        self._room_state = room_state
        self._push_rules = rules
        #: the server's default rules, compiled once: an event they decide alike for everyone
        #: and notify nobody with is evaluated only for the users with rules of their own
        self._defaults = CompiledRules.from_ruleset(rules.default_ruleset(_TEMPLATE_USER), _TEMPLATE_USER)
        self._ignored_users = ignored_users
        #: compiled rules by user (rules read across a change are used once, not kept)
        self._rules: BatchedCache[str, CompiledRules] = BatchedCache(self._read_rules, RULES_CACHE_SIZE)
        self._listeners: list[Callable[[set[str]], None]] = []
        # Evaluated a moment later, not inside the publish: the sender's answer and the woken
        # /syncs go first, and the sends of that moment are evaluated and stored together (one
        # transaction, not one per send). A /sync that counts does not wait the moment out:
        # wait_for starts the evaluation at once. The reactor runs evaluation (the real one even
        # where tests give a fake clock: nothing would advance a fake one for it).
        super().__init__(READER_NAME, stream, events, current_position, reactor, BATCH_WINDOW_S, clock)

    def on_recorded(self, fn: Callable[[set[str]], None]) -> None:
        """Call ``fn(user_ids)`` after notifications for these users are stored (pushers listen:
        they read the rows themselves, from their own persisted positions)."""
        self._listeners.append(fn)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the persisted position (a start hook, after migrations) and catch up from it."""
        stored = await self._store.reader_position(READER_NAME)
        await self._start_from(stored, lambda position: self._store.record(READER_NAME, position, []))

    async def stop(self) -> None:
        """Finish the batch being evaluated and take no more (before the database closes).

        What is left is evaluated after the next start, from the persisted position; those
        waiting count without it."""
        await self._halt()

    def rules_changed(self, user_id: str) -> None:
        """The user's push rules changed: compile them again on their next event."""
        self._rules.invalidate(user_id)

    async def _process(self, events: Sequence[Event], upto: int) -> None:
        rows: list[PushActionRow] = []
        defaults: list[PushDefault] = []
        users: set[str] = set()
        # What every event of a room in this batch shares (members, rules, power levels), read
        # once; a state event may change it, so the next event of its room reads it again.
        rooms: dict[str, _RoomContext | None] = {}
        for event in events:
            await self._share_reactor()
            try:
                if event.room_id not in rooms:
                    rooms[event.room_id] = await self._room_context(event.room_id)
                context = rooms[event.room_id]
                if context is None:
                    continue
                event_rows, default, notified = await self._evaluate(event, context)
            except Exception:
                # One bad event must not stop every later notification.
                log.failure("push evaluation of {event_id} failed", event_id=event.event_id)
                continue
            finally:
                if event.state_key is not None:
                    rooms.pop(event.room_id, None)
            rows.extend(event_rows)
            if default is not None:
                defaults.append(default)
            users.update(notified)
        if rows or defaults or self._persist_due(upto):
            await self._store.record(READER_NAME, upto, rows, defaults)
            self._persisted = upto
            if users:
                for fn in self._listeners:
                    try:
                        fn(users)
                    except Exception:
                        log.failure("a notification listener failed")
        # Else no write: evaluating those events again after a restart finds the same
        # nothing (rows are keyed by user and position, so a repeat adds none either).
        self._advance(upto)

    # -- evaluation ------------------------------------------------------------------------------

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._suffix)

    async def _room_context(self, room_id: str) -> _RoomContext | None:
        room = await self._event_source.get_room(room_id)
        if room is None:
            return None
        members = await self._members(room_id)
        local = sorted(u for u in members if self._is_local(u))
        state = await self._room_state.current_state_events(room_id, [("m.room.create", "")])
        return _RoomContext(room, len(members), local, frozenset(local), state)

    def _recipients(self, event: Event, context: _RoomContext) -> list[str]:
        """The local users the event may notify: the joined local members and an invitee, but
        its sender (own events never notify, §Push Rules)."""
        recipients = context.local
        if event.type == "m.room.member" and event.content.get("membership") == "invite":
            target = event.state_key
            if isinstance(target, str) and self._is_local(target) and target not in context.local_set:
                recipients = sorted([*recipients, target])
        sender = event.sender
        return [u for u in recipients if u != sender]

    async def _compiled(self, user_ids: Sequence[str], context: _RoomContext) -> dict[str, CompiledRules]:
        """Every user's compiled rules; those not in memory read in one transaction (and kept in
        ``context`` for the batch's other events of the room)."""
        known = context.compiled
        missing = [u for u in user_ids if u not in known]
        if missing:
            known.update(await self._rules.get_many(missing))
        return known

    async def _auth_state(self, event: Event, context: _RoomContext) -> dict[StateKey, Event]:
        """The power levels the event was sent under (its auth event: the room's state before
        it, not now, when a later change may be in the same batch) and the create event."""
        state = dict(context.state)
        wanted = [e for e in event.auth_event_ids if e not in context.auth_events]
        if wanted:
            context.auth_events.update(await self._event_source.get_events(wanted))
        for event_id in event.auth_event_ids:
            auth = context.auth_events.get(event_id)
            if auth is not None and auth.type == "m.room.power_levels" and auth.state_key == "":
                state[("m.room.power_levels", "")] = auth
        return state

    async def _ignored(self, user_ids: Sequence[str], context: _RoomContext) -> Mapping[str, frozenset[str]]:
        known = context.ignored
        missing = [u for u in user_ids if u not in known]
        if missing:
            known.update(await self._ignored_users(missing))
        return known

    async def _read_rules(self, user_ids: Sequence[str]) -> dict[str, CompiledRules]:
        # Most users never changed a rule: theirs are the server's defaults, compiled once, with
        # only the rules that name the user compiled again (a message into a room of a thousand
        # new readers compiles a few rules each, not whole rulesets).
        own = await self._push_rules.users_with_own_rules(user_ids)
        out: dict[str, CompiledRules] = {}
        for user_id in user_ids:
            if user_id not in own and (rules := self._defaults.retarget(user_id)) is not None:
                out[user_id] = rules
        rest = [u for u in user_ids if u not in out]
        if rest:
            rulesets = await self._push_rules.get_rulesets(rest)
            out.update((u, CompiledRules.from_ruleset(ruleset, u)) for u, ruleset in rulesets.items())
        return out

    async def _evaluate(
        self, event: Event, context: _RoomContext
    ) -> tuple[list[PushActionRow], PushDefault | None, Collection[str]]:
        """The event's stored results (own rows, and the default if most members share one)
        and the users it notifies."""
        nothing: tuple[list[PushActionRow], PushDefault | None, Collection[str]] = ([], None, ())
        meta = event.metadata
        if meta.stream_ordering is None or meta.stream_ordering <= 0 or meta.rejected_reason or meta.soft_failed:
            return nothing
        recipients = self._recipients(event, context)
        if recipients and event.get("state_key") is None:
            # modules/ignore_users.md: an ignored sender's events do not reach the client (state
            # events do), so they must not count or push either.
            ignored = await self._ignored(recipients, context)
            sender = event.sender
            recipients = [u for u in recipients if sender not in ignored.get(u, ())]
        if not recipients:
            return nothing
        room = context.room
        sender_power, notification_levels = _sender_power(event, await self._auth_state(event, context))
        facts = EventFacts(event.get_pdu_json(), context.member_count, sender_power, notification_levels)
        decided, actions = outcome_for_shape(self._defaults, facts)
        if decided and not notifies(actions):
            # Nobody on the default rules is notified (a join into a big room): only the users
            # whose own rules might say otherwise are evaluated, and nobody's rules compiled
            # for nothing.
            recipients = sorted(await self._push_rules.users_with_own_rules(recipients))
            if not recipients:
                return nothing
        compiled = await self._compiled(recipients, context)
        wants_names = needs_display_names(compiled, facts, recipients)
        if wants_names:
            facts.display_name = (await self._display_names(event.room_id, wants_names)).get
        thread = thread_of(event)
        ts = int(event.get("origin_server_ts", 0) or 0)
        # Users share action lists (one per matching rule): each list is judged once, and the
        # notified users grouped by what their actions say (equal lists from different rules too).
        judged: dict[int, tuple[bool, bool, str]] = {}
        groups: dict[str, tuple[list[Any], list[str]]] = {}
        notified: list[str] = []
        for actions, users in evaluate_groups(compiled, facts, recipients):
            said = judged[id(actions)] = verdict(actions)
            if said[0]:
                same = groups.get(said[2])
                if same is None:
                    groups[said[2]] = (actions, list(users))
                else:
                    same[1].extend(users)
                notified.extend(users)
        if not notified:
            return nothing
        order = meta.stream_ordering

        def row(user_id: str, actions: list[Any], notify: bool = True) -> PushActionRow:
            highlight = judged[id(actions)][1] if notify else False
            return PushActionRow(user_id, room.room_nid, order, event.event_id, thread, highlight, actions, ts, notify)

        # The default covers the joined local members (its sender aside): the largest group
        # among them, if it is most of them. Everyone who differs gets a row of their own.
        local_members = context.local_set - {event.sender}
        key, (actions, group) = max(groups.items(), key=lambda g: len(g[1][1]))
        if len(groups) == 1 and len(group) == len(local_members) and local_members.issuperset(group):
            # every joined local member shares one result (a message into a quiet room): the
            # default alone says it
            default = PushDefault(
                room.room_nid, order, event.event_id, event.sender, thread, judged[id(actions)][1], actions, ts
            )
            return [], default, notified
        in_group = set(group) & local_members
        if 2 * len(in_group) <= len(local_members):
            return [row(u, a) for a, users in groups.values() for u in users], None, notified
        rows = [row(u, a) for k, (a, users) in groups.items() if k != key for u in users]
        rows += [row(u, actions) for u in group if u not in local_members]  # an invitee
        rows += [row(u, _NO_ACTIONS, notify=False) for u in sorted(local_members.difference(notified))]
        default = PushDefault(
            room.room_nid, order, event.event_id, event.sender, thread, judged[id(actions)][1], actions, ts
        )
        return rows, default, notified

    async def _display_names(self, room_id: str, user_ids: list[str]) -> dict[str, str]:
        """The users' display names in the room (contains_display_name), read only for the
        users whose rules may ask: a join into a big room needs none."""
        state = await self._room_state.current_state_events(room_id, [("m.room.member", u) for u in user_ids])
        names: dict[str, str] = {}
        for user_id in user_ids:
            member = state.get(("m.room.member", user_id))
            name = member.content.get("displayname") if member is not None else None
            if isinstance(name, str) and name:
                names[user_id] = name
        return names

    # -- counts ---------------------------------------------------------------------------------

    async def unread_counts(
        self, user_id: str, rooms: Sequence[tuple[int, int]], upto: int
    ) -> dict[int, dict[str, UnreadCounts]]:
        """Per room and thread, the user's notifications not yet read (``rooms``: ``(room_nid,
        joined_at)``), with every event up to ``upto`` evaluated first."""
        if not rooms:
            return {}
        await self.wait_for(upto)
        return await self._store.unread_counts(user_id, rooms)


def _sender_power(event: Event, state: Mapping[StateKey, Event]) -> tuple[float, Mapping[str, Any]]:
    """The sender's power level (v12 creators: infinite) and the power levels' ``notifications``."""
    level = get_user_power_level(event.sender, state, event.room_version)
    power_levels = state.get(("m.room.power_levels", ""))
    notifications = power_levels.content.get("notifications") if power_levels is not None else None
    return level, notifications if isinstance(notifications, dict) else {}
