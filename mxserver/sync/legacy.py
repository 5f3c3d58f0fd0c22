"""The deprecated v1 sync APIs: ``GET /events``, ``GET /events/{eventId}``, ``GET /initialSync``
and ``GET /rooms/{roomId}/initialSync`` (client-server-api, old_sync.yaml and
room_initial_sync.yaml, deprecated since r0; SyTest still uses them as fixtures).

They are other readers of the same streams as /sync, not a second sync machinery:
tokens are :class:`~mxserver.sync.tokens.StreamToken` (a /events ``end`` is a valid
/sync ``since`` and /messages ``from``), the non-room streams are read through the
registered :class:`~mxserver.sync.sources.SyncSources` (typing, receipts, presence,
account data: the same sections /sync gets, flattened into one list), the room
stream through :class:`~mxserver.sync.source_adapters.RoomStreamSource` and the
room history store, and long-polls wait on the same :class:`Notifier`.

Where the spec is thin the shapes are Synapse's (what SyTest encodes): ephemeral
events and room account data carry ``room_id`` in the stream, ``m.presence``
events carry ``content.user_id``, the room initial syncs carry ``presence`` and
``receipts`` lists, and a room's account data lists ``m.tag`` first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IReactorTime

from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.sync.filtering import Filter
from mxserver.sync.notifier import Notifier
from mxserver.sync.source_adapters import RoomStreamSource
from mxserver.sync.sources import SyncRequest, SyncSources
from mxserver.sync.tokens import StreamToken, room_token

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.room_handlers.event_serializer import EventSerializer
    from mxserver.rooms.visibility import RoomAccess
    from mxserver.storage.events import EventStore

JsonDict = dict[str, Any]

#: the streams /events and /initialSync read besides the room stream (Synapse's event sources:
#: to-device messages and device lists exist only in /sync)
LEGACY_STREAMS = ("typing", "receipts", "presence", "account_data")

#: called when a user reads the event stream or an initial sync, as /sync does (presence's hook:
#: the user is online and active)
OnSync = Callable[[str, "str | None"], Awaitable[None]]

#: events per /events answer and messages per room of an initial sync when the client gives no limit
#: (Synapse's default)
DEFAULT_LIMIT = 10

_EVERYTHING = Filter()


class RoomReader(Protocol):
    """The read-side room APIs (:class:`~mxserver.room_handlers.history.HistoryHandler`): access
    rules, history visibility and pagination are theirs, not repeated here."""

    async def get_state(self, requester: Requester, room_id: str) -> list[JsonDict]: ...

    async def get_event(self, requester: Requester, room_id: str, event_id: str) -> JsonDict: ...

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
    ) -> JsonDict: ...


class TimelinePages(Protocol):
    """Forward pages of a room's timeline (:class:`~mxserver.storage.history.HistoryStore`)."""

    async def page(
        self, room_nid: int, from_pos: int, to_pos: int | None, backwards: bool, limit: int
    ) -> list[Event]: ...


class Visibility(Protocol):
    """History visibility (:class:`~mxserver.rooms.visibility.HistoryVisibility`)."""

    async def room_access(self, user_id: str, room_id: str) -> RoomAccess: ...

    async def filter_events_for_user(self, user_id: str, events: Sequence[Event]) -> list[Event]: ...


class RoomMemberLookup(Protocol):
    async def members(self, room_id: str) -> frozenset[str]: ...


class Published(Protocol):
    """Whether a room is in the room directory (the directory handler), for ``visibility``."""

    async def is_published(self, room_id: str) -> bool: ...


class PresenceLookup(Protocol):
    async def presence_for_users(self, user_ids: Iterable[str], since_pos: int | None) -> list[JsonDict]: ...


class LegacySyncHandler:
    """Answers the v1 event stream and initial syncs from the sync sources and the room readers."""

    def __init__(
        self,
        *,
        sources: SyncSources,
        room_source: RoomStreamSource,
        notifier: Notifier,
        rooms: RoomReader,
        timeline: TimelinePages,
        events: EventStore,
        serializer: EventSerializer,
        visibility: Visibility,
        members: RoomMemberLookup,
        presence: PresenceLookup,
        directory: Published,
        on_sync: OnSync | None,
        clock: IReactorTime,
    ) -> None:
        self._sources = sources
        self._room_source = room_source
        self._notifier = notifier
        self._rooms = rooms
        self._timeline = timeline
        self._events = events
        self._serializer = serializer
        self._visibility = visibility
        self._members = members
        self._presence = presence
        self._directory = directory
        self._on_sync = on_sync
        self._clock = clock

    # -- GET /events --------------------------------------------------------------------------

    async def get_stream(
        self,
        requester: Requester,
        from_token: StreamToken | None,
        timeout_ms: int,
        limit: int,
        room_id: str | None,
    ) -> JsonDict:
        """old_sync.yaml GET /events: what is new for the user after ``from_token`` (now if absent),
        waiting up to ``timeout_ms`` for something.

        With ``room_id`` (Synapse's peeking; guests must give one) only that room is read: a
        joined room, or a ``world_readable`` one (room_previews.md), else 403.
        """
        user_id = requester.user_id
        if requester.is_guest and room_id is None:
            # Synapse: guests read one room at a time ("Guest users must specify room_id param").
            raise invalid_param("Guest users must specify room_id")
        peek: tuple[str, int] | None = None
        if room_id is not None:
            access = await self._visibility.room_access(user_id, room_id)
            if access.membership != "join" and not access.world_readable:
                raise forbidden("You are not a member of this room and it is not world readable")
            peek = (room_id, access.room.room_nid)
        await self._synced(requester)
        since = from_token if from_token is not None else self._notifier.current_token()
        deadline = self._clock.seconds() + timeout_ms / 1000
        while True:
            now = self._notifier.current_token()
            chunk, end, rooms = await self._stream_between(requester, since, now, limit, peek)
            remaining = deadline - self._clock.seconds()
            if chunk or remaining <= 0:
                return {"chunk": chunk, "start": since.serialize(), "end": end.serialize()}
            if self._notifier.current_token().is_after(now):
                continue
            await self._notifier.wait(user_id, rooms, int(remaining * 1000))

    async def _stream_between(
        self, requester: Requester, since: StreamToken, now: StreamToken, limit: int, peek: tuple[str, int] | None
    ) -> tuple[list[JsonDict], StreamToken, list[str]]:
        """The events after ``since`` up to ``now`` (at most ``limit`` room events), the token
        after them, and the rooms read (for the notifier)."""
        user_id = requester.user_id
        memberships = await self._room_source.memberships(user_id)
        # (room ID, room NID, read up to): joined rooms up to now, rooms left since `since` up to
        # the leave (what happened while the user was there, and the leave itself).
        rooms: list[tuple[str, int, int]]
        own_changes: list[str] = []
        if peek is not None:
            rooms = [(peek[0], peek[1], now.room)]
        else:
            rooms = [(m.room_id, m.room_nid, now.room) for m in memberships if m.membership == "join"]
            for m in memberships:
                if not since.room < m.stream_ordering <= now.room:
                    continue
                if m.membership in ("leave", "ban"):
                    rooms.append((m.room_id, m.room_nid, m.stream_ordering))
                elif m.membership != "join":
                    # Invites and knocks: the user's own membership event, out of the room's timeline.
                    own_changes.append(m.event_id)
        room_ids = [r for r, _, upto in rooms if upto == now.room]

        timeline, room_end = await self._room_events(user_id, rooms, own_changes, since.room, now.room, limit)
        viewer = (user_id, requester.device_id)
        chunk = [_v1_format(e) for e in await self._serializer.serialize(timeline, viewer)]

        request = SyncRequest(requester, memberships, room_ids, _EVERYTHING, since, now)
        end = now.copy_and_replace("room", room_end)
        for name in LEGACY_STREAMS:
            source = self._sources.get(name)
            if source is None:
                continue
            section = await source.sync_section(request)
            for rid, events in section.room_ephemeral.items():
                chunk += [{**e, "room_id": rid} for e in events]
            if name == "presence":
                presence = list(section.top_level.get("presence", {}).get("events", []))
                if peek is not None:
                    # Peeking: the presence of the room's members too (Synapse's explicit_room_id).
                    seen = {e.get("sender") for e in presence}
                    members = await self._members.members(peek[0])
                    more = await self._presence.presence_for_users(members, since.presence)
                    presence += [e for e in more if e.get("sender") not in seen]
                chunk += [_legacy_presence(e) for e in presence]
            if name == "account_data":
                chunk += _global_account_data(section.top_level)
                for rid, events in section.room_account_data.items():
                    chunk += [{**e, "room_id": rid} for e in events]
            if section.next_position is not None:
                end = end.copy_and_replace(name, section.next_position)
        return chunk, end, room_ids

    async def _room_events(
        self,
        user_id: str,
        rooms: Sequence[tuple[str, int, int]],
        own_changes: Sequence[str],
        after: int,
        upto: int,
        limit: int,
    ) -> tuple[list[Event], int]:
        """The room events the user may see in (after, upto], oldest first, at most ``limit``, and
        the room position the client has everything up to. ``rooms`` are (room ID, room NID,
        position to read the room up to); ``own_changes`` the user's own membership events in
        rooms they are only invited to or knocking on.

        Only rooms that changed are queried (the room source knows without the database). A
        room that filled its page may have more: the answer stops at the first such gap so a
        later call continues without losing anything.
        """
        if limit <= 0 or after >= upto:
            return [], upto
        candidates: list[Event] = []
        complete_upto = upto
        for room_id, room_nid, room_upto in rooms:
            if not self._room_source.room_changed_since(room_id, after):
                continue
            page = await self._timeline.page(room_nid, after, min(upto, room_upto), False, limit)
            candidates += page
            if len(page) >= limit:
                last = page[-1].metadata.stream_ordering
                assert last is not None
                complete_upto = min(complete_upto, last)
        own: set[str] = set()
        if own_changes:
            found = await self._events.get_events(own_changes)
            candidates += [found[e] for e in own_changes if e in found]
            own = set(found)
        ordered = sorted(
            (e for e in candidates if (e.metadata.stream_ordering or 0) <= complete_upto),
            key=lambda e: e.metadata.stream_ordering or 0,
        )
        end = complete_upto
        if len(ordered) > limit:
            ordered = ordered[:limit]
            end = ordered[-1].metadata.stream_ordering or end
        # The user's own membership changes (an invite, a kick) are theirs to see whatever the
        # room's history visibility: the sync APIs tell them out of band too.
        others = [e for e in ordered if e.event_id not in own]
        # (as filtered: an erased sender's events come redacted)
        visible = {e.event_id: e for e in await self._visibility.filter_events_for_user(user_id, others)}
        return [visible.get(e.event_id, e) for e in ordered if e.event_id in own or e.event_id in visible], end

    # -- GET /events/{eventId} -------------------------------------------------------------------

    async def get_event(self, requester: Requester, event_id: str) -> JsonDict:
        """old_sync.yaml GET /events/{eventId}: the event if the user may see it, else 404."""
        event = await self._events.get_event(event_id)
        if event is None:
            raise not_found("Event not found")
        try:
            return _v1_format(await self._rooms.get_event(requester, event.room_id, event_id))
        except MatrixError as e:
            # Not allowed to read the room: as unknown (old_sync.yaml: 404 either way).
            if e.code == 403:
                raise not_found("Event not found") from None
            raise

    # -- GET /initialSync ------------------------------------------------------------------------

    async def initial_sync(self, requester: Requester, limit: int, archived: bool) -> JsonDict:
        """old_sync.yaml GET /initialSync: every joined and invited room (and left ones with
        ``archived``), each with its state and latest messages, plus presence, receipts and
        account data; ``end`` is where /events continues."""
        user_id = requester.user_id
        viewer = (user_id, requester.device_id)
        # First: the user coming online is in this answer, not news for the stream after it.
        await self._synced(requester)
        now = self._notifier.current_token()
        memberships = await self._room_source.memberships(user_id)
        wanted = ("join", "invite", "leave") if archived else ("join", "invite")
        chosen = [m for m in memberships if m.membership in wanted and not m.forgotten]
        joined_ids = [m.room_id for m in chosen if m.membership == "join"]
        request = SyncRequest(requester, memberships, joined_ids, _EVERYTHING, None, now)
        sections = await self._sections(request)

        rooms: list[JsonDict] = []
        for m in chosen:
            info: JsonDict = {"room_id": m.room_id, "membership": m.membership}
            info["visibility"] = "public" if await self._directory.is_published(m.room_id) else "private"
            if m.membership == "invite":
                invite = await self._events.get_event(m.event_id)
                if invite is not None:
                    info["invite"] = _v1_format(await self._serializer.serialize_one(invite, viewer))
                    info["inviter"] = invite.sender
                rooms.append(info)
                continue
            info["messages"] = await self._messages(requester, m.room_id, now, limit)
            if m.membership == "leave":
                # The messages stop at the leave (the room reader's rule for former members).
                info["messages"]["end"] = now.copy_and_replace("room", m.stream_ordering).serialize()
            info["state"] = [_v1_format(e) for e in await self._rooms.get_state(requester, m.room_id)]
            info["account_data"] = _room_account_data(sections.room_account_data.get(m.room_id, []))
            rooms.append(info)

        return {
            "end": now.serialize(),
            "rooms": rooms,
            "presence": sections.presence,
            "receipts": [{**e, "room_id": rid} for rid, e in sections.receipts.items()],
            "account_data": sections.account_data,
        }

    # -- GET /rooms/{roomId}/initialSync ---------------------------------------------------------------

    async def room_initial_sync(self, requester: Requester, room_id: str, limit: int) -> JsonDict:
        """room_initial_sync.yaml: the room's state and latest messages for a member, a former
        member (as when they left, SPEC-216) or anyone in a ``world_readable`` room (peeking)."""
        user_id = requester.user_id
        access = await self._visibility.room_access(user_id, room_id)
        if not access.can_read:
            raise forbidden("You are not a member of this room and it is not world readable")
        now = self._notifier.current_token()
        messages = await self._messages(requester, room_id, now, limit)
        state = [_v1_format(e) for e in await self._rooms.get_state(requester, room_id)]
        out: JsonDict = {"room_id": room_id, "messages": messages, "state": state}
        out["visibility"] = "public" if await self._directory.is_published(room_id) else "private"
        if access.membership in ("join", "leave", "ban"):
            out["membership"] = access.membership
        if access.until is not None:
            # A former member: nothing from after they left (Synapse: no presence, no receipts).
            out["messages"]["end"] = now.copy_and_replace("room", access.until).serialize()
            out["presence"] = []
            out["receipts"] = []
        else:
            members = await self._members.members(room_id)
            out["presence"] = [_legacy_presence(e) for e in await self._presence.presence_for_users(members, None)]
            sections = await self._sections(
                SyncRequest(requester, await self._room_source.memberships(user_id), [room_id], _EVERYTHING, None, now),
                only=("receipts",),
            )
            out["receipts"] = [{**e, "room_id": rid} for rid, e in sections.receipts.items()]
        account_data = await self._sections(
            SyncRequest(requester, [], [], _EVERYTHING, None, now), only=("account_data",)
        )
        out["account_data"] = _room_account_data(account_data.room_account_data.get(room_id, []))
        return out

    # -- shared -------------------------------------------------------------------------------------------

    async def _synced(self, requester: Requester) -> None:
        """Reading the stream is activity, as a /sync is (Synapse: /events "affects presence");
        not for guests, as Synapse."""
        if self._on_sync is not None and not requester.is_guest:
            await self._on_sync(requester.user_id, None)

    async def _messages(self, requester: Requester, room_id: str, now: StreamToken, limit: int) -> JsonDict:
        """The latest ``limit`` messages the user may see, oldest first, as a pagination chunk
        whose ``end`` is a whole stream token (for /events) and ``start`` a /messages token."""
        page = await self._rooms.messages(requester, room_id, now.serialize(), None, "b", limit)
        chunk = [_v1_format(e) for e in reversed(page["chunk"])]
        start = page.get("end")
        if start is None:
            start = room_token(now.room) if not chunk else page["start"]
        return {"chunk": chunk, "start": start, "end": now.serialize()}

    async def _sections(self, request: SyncRequest, only: Sequence[str] = LEGACY_STREAMS) -> _Sections:
        out = _Sections()
        for name in only:
            source = self._sources.get(name)
            if source is None:
                continue
            section = await source.sync_section(request)
            if name == "receipts":
                out.receipts = {rid: e for rid, events in section.room_ephemeral.items() for e in events}
            elif name == "presence":
                events = section.top_level.get("presence", {}).get("events", [])
                out.presence = [_legacy_presence(e) for e in events]
            elif name == "account_data":
                out.account_data = _global_account_data(section.top_level)
                out.room_account_data = section.room_account_data
        return out


class _Sections:
    """The non-room streams of an initial sync."""

    def __init__(self) -> None:
        self.receipts: dict[str, JsonDict] = {}
        self.presence: list[JsonDict] = []
        self.account_data: list[JsonDict] = []
        self.room_account_data: dict[str, list[JsonDict]] = {}


def _v1_format(event: JsonDict) -> JsonDict:
    """A client event as the v1 APIs give it (Synapse's format_event_for_client_v1, which SyTest
    reads): ``user_id`` beside ``sender``, and ``age``, ``prev_content``, ``redacted_because`` and
    ``replaces_state`` from ``unsigned`` at the top level too."""
    out = dict(event)
    if "sender" in out:
        out["user_id"] = out["sender"]
    unsigned = out.get("unsigned")
    if isinstance(unsigned, dict):
        for key in ("age", "prev_content", "redacted_because", "replaces_state"):
            if key in unsigned:
                out[key] = unsigned[key]
    return out


def _legacy_presence(event: JsonDict) -> JsonDict:
    """An ``m.presence`` event as the v1 APIs give it: ``content.user_id`` too (Synapse's format,
    which SyTest reads)."""
    sender = event.get("sender")
    return {**event, "content": {**event.get("content", {}), "user_id": sender}}


def _global_account_data(top_level: JsonDict) -> list[JsonDict]:
    """The global account data of a sync section without ``m.push_rules``: Synapse keeps push
    rules out of the v1 APIs (clients of those read them from /pushrules), and SyTest's
    44account_data counts the events."""
    events = top_level.get("account_data", {}).get("events", [])
    return [e for e in events if e.get("type") != "m.push_rules"]


def _room_account_data(events: Sequence[JsonDict]) -> list[JsonDict]:
    """A room's account data for an initial sync, ``m.tag`` first (as Synapse lists it)."""
    return sorted(events, key=lambda e: e.get("type") != "m.tag")
