"""Room upgrades (client-server-api modules/room_upgrades.md §Server behaviour).

1. The user must be joined and able to send ``m.room.tombstone``.
2. A replacement room is created (one room-server ``create_room`` call): its
   create event names the ``predecessor`` and keeps the old room's ``type``
   and ``m.federate``; the recommended state is copied (server ACLs,
   encryption, name, avatar, topic, guest access, history visibility, join
   rules, power levels), with the canonical alias and the bans.
3. Local aliases move to the new room, and so does a room directory listing.
4. ``m.room.tombstone`` goes into the old room.
5. The old room's power levels are raised so ordinary members can no longer
   talk or invite (``events_default`` and ``invite`` to max(50, users_default + 1)).

Power levels are converted to the new version's rules: every level becomes
an integer (v10+ refuse strings); in v12+ the room creators (the upgrader and
the requested ``additional_creators``) leave ``users`` and
``m.room.tombstone`` needs more than ``state_default``; creators of a v12+
old room who are not creators of the new room keep administrator power.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.accounts.auth import Requester
from mxserver.errors import MatrixError, forbidden
from mxserver.events.model import Event
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.identifier_checks import check_user_id
from mxserver.room_handlers.creation import unsupported_room_version
from mxserver.room_handlers.directory import CANONICAL_ALIAS, DirectoryHandler
from mxserver.room_handlers.membership import MembershipHandler
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.power_levels import (
    CREATE_KEY,
    NAMED_LEVEL_DEFAULTS,
    POWER_LEVELS_KEY,
    StateKey,
    can_send_event,
    default_power_levels_content,
    get_room_creators,
    parse_power_level,
)
from mxserver.rooms.room_server import EventSpec

TOMBSTONE = "m.room.tombstone"
POWER_LEVELS = "m.room.power_levels"

#: room_upgrades.md: the state events recommended for transfer (power levels handled apart)
TRANSFERABLE_STATE = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
)

#: the level old-room creators (v12+, unlimited power) keep when they are not creators of the new room
FORMER_CREATOR_LEVEL = 100


class RoomUpgradeHandler:
    """Replaces a room by a new one of another room version, moving aliases and the listing."""

    def __init__(self, room_server: ClientRooms, membership: MembershipHandler, directory: DirectoryHandler) -> None:
        self.room_server = room_server
        self.membership = membership
        self.directory = directory
        # Identical concurrent requests share one upgrade (and one replacement room).
        self._inflight: dict[tuple[str, str, str], list[Deferred[str]]] = {}

    async def upgrade(
        self,
        requester: Requester,
        room_id: str,
        new_version: str,
        additional_creators: Sequence[str] | None = None,
    ) -> str:
        """Upgrade ``room_id`` to ``new_version``; returns the replacement room's ID."""
        requester.check_not_suspended()  # §Account suspension: it creates and joins a room
        key = (room_id, requester.user_id, new_version)
        waiters = self._inflight.get(key)
        if waiters is not None:
            d: Deferred[str] = Deferred()
            waiters.append(d)
            return await d
        self._inflight[key] = []
        try:
            new_room_id = await self._upgrade(requester, room_id, new_version, additional_creators)
        except BaseException as e:
            for waiter in self._inflight.pop(key):
                waiter.errback(e)
            raise
        for waiter in self._inflight.pop(key):
            waiter.callback(new_room_id)
        return new_room_id

    async def _upgrade(
        self, requester: Requester, room_id: str, new_version: str, additional_creators: Sequence[str] | None
    ) -> str:
        new_rv = get_room_version(new_version)
        if new_rv is None:
            raise unsupported_room_version(new_version)
        room = await self.membership.local_room(room_id)
        user_id = requester.user_id
        keys: list[StateKey] = [
            CREATE_KEY,
            POWER_LEVELS_KEY,
            ("m.room.member", user_id),
            (CANONICAL_ALIAS, ""),
            *((t, "") for t in TRANSFERABLE_STATE),
        ]
        old = await self.room_server.current_state_events(room_id, keys)
        member = old.get(("m.room.member", user_id))
        if member is None or member.membership != "join":
            raise forbidden("You are not in the room")
        if not can_send_event(user_id, TOMBSTONE, True, old):
            raise forbidden("You cannot upgrade this room: you may not send m.room.tombstone events in it")

        extra_creators: list[str] = []
        if new_rv.hydra:
            extra_creators = [u for u in dict.fromkeys(check_user_id(u) for u in additional_creators or ()) if u != user_id]
        new_creators = {user_id, *extra_creators} if new_rv.hydra else {user_id}
        old_create = old[CREATE_KEY]
        old_creators = get_room_creators(old_create) if room.room_version.hydra else set()

        create_content = await self._create_content(room_id, old_create, extra_creators)
        final_pl = upgraded_power_levels(
            old[POWER_LEVELS_KEY].content if POWER_LEVELS_KEY in old else None,
            room.room_version,
            new_rv,
            user_id,
            new_creators,
            # v12+ creators who are not creators of the new room keep administrator power.
            old_creators - (new_creators if new_rv.hydra else set()),
        )
        copied = [(t, old[(t, "")].content) for t in TRANSFERABLE_STATE if (t, "") in old]
        canonical = self._canonical_alias_content(old.get((CANONICAL_ALIAS, "")))
        sent_types = [POWER_LEVELS, *(t for t, _ in copied)] + ([CANONICAL_ALIAS] if canonical else [])

        # The upgrader must be able to send every copied event: if the copied power levels
        # do not allow it, a first power-levels event raises them, and the real one comes last.
        first_pl = final_pl
        if not new_rv.hydra:
            needed = max(_required(final_pl, t) for t in sent_types)
            if _level(final_pl, user_id, new_creators, new_rv) < needed:
                first_pl = {**final_pl, "users": {**final_pl.get("users", {}), user_id: needed}}
        bans = await self._bans_to_copy(room_id, first_pl, user_id, new_creators, new_rv)

        def state(etype: str, content: dict[str, Any], state_key: str = "") -> EventSpec:
            return EventSpec(etype, content, state_key, user_id)

        events = [
            state("m.room.member", {"membership": "join", **await self.membership.profile_content(user_id)}, user_id),
            state(POWER_LEVELS, first_pl),
            *(state(t, content) for t, content in copied),
        ]
        if canonical:
            events.append(state(CANONICAL_ALIAS, canonical))
        events.extend(state("m.room.member", content, target) for target, content in bans)
        if first_pl is not final_pl:
            events.append(state(POWER_LEVELS, final_pl))
        try:
            new_room_id, _ = await self.room_server.replace_room(
                room_id, user_id, new_rv, create_content, events, {"body": "This room has been replaced"}
            )
        except MatrixError as e:
            if e.code == 403:
                raise MatrixError(400, "M_INVALID_ROOM_STATE", f"The room's state cannot be copied: {e.msg}") from None
            raise

        await self.membership.copy_user_state_from_predecessor(user_id, new_room_id)
        await self._move_aliases(room_id, new_room_id, user_id, old.get((CANONICAL_ALIAS, "")))
        await self._restrict_old_room(room_id, user_id, old.get(POWER_LEVELS_KEY))
        return new_room_id

    async def _create_content(self, room_id: str, old_create: Event, extra_creators: Sequence[str]) -> dict[str, Any]:
        # predecessor.event_id, "the last known event in the old room" (m.room.create), is the
        # tombstone: the room server adds it when it builds that (see ClientRooms.replace_room).
        content: dict[str, Any] = {"predecessor": {"room_id": room_id}}
        for key in ("type", "m.federate"):
            # room_upgrades.md: the type is copied from the predecessor; a non-federating room stays so.
            if key in old_create.content:
                content[key] = old_create.content[key]
        if extra_creators:
            content["additional_creators"] = list(extra_creators)
        return content

    def _canonical_alias_content(self, event: Event | None) -> dict[str, Any] | None:
        """The old canonical alias, as the new room will have it (its local aliases move with it)."""
        if event is None:
            return None
        content: dict[str, Any] = {}
        alias = event.content.get("alias")
        if isinstance(alias, str) and alias:
            content["alias"] = alias
        alt = event.content.get("alt_aliases")
        if isinstance(alt, list):
            content["alt_aliases"] = [a for a in alt if isinstance(a, str)]
        return content or None

    async def _bans_to_copy(
        self, room_id: str, pl: dict[str, Any], user_id: str, creators: set[str], rv: RoomVersion
    ) -> list[tuple[str, dict[str, Any]]]:
        """The old room's bans the upgrader may repeat in the new room (so banned users stay out)."""
        ids = await self.room_server.current_state_ids(room_id)
        members = await self.room_server.current_state_events(room_id, [k for k in ids if k[0] == "m.room.member"])
        own = _level(pl, user_id, creators, rv)
        if own < _named(pl, "ban"):
            return []
        bans = []
        for (_, target), ev in sorted(members.items()):
            if ev.membership != "ban" or target == user_id or _level(pl, target, creators, rv) >= own:
                continue
            content: dict[str, Any] = {"membership": "ban"}
            if isinstance(ev.content.get("reason"), str):
                content["reason"] = ev.content["reason"]
            bans.append((target, content))
        return bans

    async def _move_aliases(self, old_room: str, new_room: str, user_id: str, canonical: Event | None) -> None:
        directory = self.directory
        moved = await directory.move_aliases(old_room, new_room)
        if await directory.is_published(old_room):
            await directory.publish(new_room, True)
            await directory.publish(old_room, False)
        if canonical is None or not moved:
            return
        # The old room's canonical alias must no longer name the aliases that moved away.
        content = dict(canonical.content)
        if content.get("alias") in moved:
            del content["alias"]
        alt = content.get("alt_aliases")
        if isinstance(alt, list):
            content["alt_aliases"] = [a for a in alt if a not in moved]
            if not content["alt_aliases"]:
                # Nothing left: the key goes too (Synapse leaves the old room an empty
                # m.room.canonical_alias; SyTest "/upgrade moves aliases to the new room").
                del content["alt_aliases"]
        if content != canonical.content:
            await _send_if_allowed(self.room_server, old_room, EventSpec(CANONICAL_ALIAS, content, "", user_id))

    async def _restrict_old_room(self, room_id: str, user_id: str, pl_event: Event | None) -> None:
        if pl_event is None:
            return
        rv = pl_event.room_version
        content = dict(pl_event.content)
        users_default = parse_power_level(content.get("users_default"), rv)
        restricted = max(50, (users_default if users_default is not None else 0) + 1)
        changed = False
        for name in ("events_default", "invite"):
            current = parse_power_level(content.get(name), rv)
            if current is None:
                current = NAMED_LEVEL_DEFAULTS[name]
            if current < restricted:
                content[name] = restricted
                changed = True
        if changed:
            await _send_if_allowed(self.room_server, room_id, EventSpec(POWER_LEVELS, content, "", user_id))


async def _send_if_allowed(rooms: ClientRooms, room_id: str, spec: EventSpec) -> None:
    """Best-effort follow-up events of an upgrade: refused ones (403) are skipped."""
    try:
        await rooms.send(room_id, spec)
    except MatrixError as e:
        if e.code != 403:
            raise


# -- power levels across room versions --------------------------------------------------------------


def upgraded_power_levels(
    old: dict[str, Any] | None,
    old_rv: RoomVersion,
    new_rv: RoomVersion,
    upgrader: str,
    new_creators: set[str],
    former_creators: set[str],
) -> dict[str, Any]:
    """The old room's power levels under the new room version's rules."""
    if old is None:
        return default_power_levels_content(new_rv, upgrader, additional_creators=new_creators - {upgrader})
    out: dict[str, Any] = {}
    for key, value in old.items():
        if key in NAMED_LEVEL_DEFAULTS:
            level = parse_power_level(value, old_rv)
            if level is not None:
                out[key] = level
        elif key in ("events", "notifications", "users"):
            if isinstance(value, dict):
                levels = {k: parse_power_level(v, old_rv) for k, v in value.items()}
                out[key] = {k: v for k, v in levels.items() if v is not None}
        else:
            out[key] = value
    users: dict[str, int] = out.setdefault("users", {})
    for creator in former_creators:
        users[creator] = max(users.get(creator, 0), FORMER_CREATOR_LEVEL, _required(out, POWER_LEVELS))
    if new_rv.hydra:
        for creator in new_creators:
            users.pop(creator, None)
        events = out.setdefault("events", {})
        state_default = _named(out, "state_default")
        if events.get(TOMBSTONE, state_default) <= state_default:
            # create_room.yaml (v12+): m.room.tombstone needs more than state_default.
            events[TOMBSTONE] = max(150, state_default + 1)
    return out


def _named(pl: dict[str, Any], name: str) -> int:
    value = pl.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else NAMED_LEVEL_DEFAULTS[name]


def _required(pl: dict[str, Any], event_type: str) -> int:
    events = pl.get("events")
    if isinstance(events, dict) and isinstance(events.get(event_type), int):
        return events[event_type]
    return _named(pl, "state_default")


def _level(pl: dict[str, Any], user_id: str, creators: set[str], rv: RoomVersion) -> float:
    if rv.hydra and user_id in creators:
        return float("inf")
    users = pl.get("users")
    if isinstance(users, dict) and isinstance(users.get(user_id), int):
        return users[user_id]
    return _named(pl, "users_default")
