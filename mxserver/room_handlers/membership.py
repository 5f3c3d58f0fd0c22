"""Membership changes requested by clients: join, invite, leave, forget, kick, ban, unban, knock.

client-server-api §Room membership. Every change is one m.room.member event
handed to the room server, which authorises it with the auth rules; the
checks made here before that only turn the commonest refusals into clear
messages (and make repeated requests harmless: joining a room one is in,
inviting someone already invited, banning someone banned, leaving a room one
has left all answer success without a new event).

Joins, knocks and invites carry the joining/invited user's profile
(``displayname``, ``avatar_url``) in the member event content. Joins to
restricted rooms (v8+) are authorised by a local member with the invite level
(``join_authorised_via_users_server``). Rooms this server is not in and
users of other servers go through federation
(:class:`~mxserver.federation.remote_rooms.RemoteRooms`): remote joins and knocks, rejecting an
invite received from another server, inviting a user of another server.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import TYPE_CHECKING, Any, Protocol

from mxserver.accounts.auth import Requester
from mxserver.accounts.invite_permission import InvitePermissions
from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.identifier_checks import check_room_id, check_user_id, server_of_room_id, server_of_user
from mxserver.room_handlers.directory import DirectoryHandler
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.power_levels import (
    CREATE_KEY,
    JOIN_RULES_KEY,
    POWER_LEVELS_KEY,
    StateKey,
    get_named_level,
    get_user_power_level,
)
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.accounts import AccountStore
from mxserver.storage.events import RoomRecord
from mxserver.storage.memberships import MembershipStore

if TYPE_CHECKING:
    # Types only: the federation package imports room_handlers.identifiers at run time.
    from mxserver.federation.remote_rooms import RemoteRooms

MEMBER = "m.room.member"
#: client-server-api §Direct Messaging: the global account data listing direct chats
DIRECT_TYPE = "m.direct"
GUEST_ACCESS_KEY: StateKey = ("m.room.guest_access", "")


def _member_key(user_id: str) -> StateKey:
    return (MEMBER, user_id)


def _membership(state: dict[StateKey, Event], user_id: str) -> str | None:
    ev = state.get(_member_key(user_id))
    return ev.membership if ev is not None else None


class ServersInRoom(Protocol):
    """The servers with joined members in a room (the federation side's per-room cache)."""

    async def servers_in_room(self, room_id: str) -> Set[str]: ...


class RoomTags(Protocol):
    """A user's room tags and ``m.direct`` (the account data handler), copied into an upgraded
    room on joining it."""

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]: ...

    async def add_tag(self, user_id: str, room_id: str, tag: str, tag_content: dict[str, Any]) -> int: ...

    async def get_account_data(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any]: ...

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any], *, from_client: bool = True
    ) -> int: ...


class BlockedRooms(Protocol):
    """The rooms a server admin blocked (admin API): local users may not join, knock on or be
    invited to them (leaving and bans stay possible)."""

    async def is_blocked(self, room_id: str) -> bool: ...


class NoticeRooms(Protocol):
    """Each user's server notices room (client-server-api §Server Notices)."""

    async def is_notice_room_of(self, user_id: str, room_id: str) -> bool: ...


class UserQueries(Protocol):
    """Asks application services about users in their namespaces (appservice queries)."""

    async def user_exists(self, user_id: str) -> bool: ...


class MembershipHandler:
    """Join, knock, leave, forget, invite, kick, ban and unban, locally or through federation."""

    def __init__(
        self,
        room_server: ClientRooms,
        accounts: AccountStore,
        memberships: MembershipStore,
        directory: DirectoryHandler,
        remote_rooms: RemoteRooms,
        room_servers: ServersInRoom,
        server_name: str,
        invite_permissions: InvitePermissions,
        tags: RoomTags | None = None,
        blocked: BlockedRooms | None = None,
        notice_rooms: NoticeRooms | None = None,
        user_queries: UserQueries | None = None,
    ) -> None:
        self.room_server = room_server
        self.user_queries = user_queries
        self.blocked = blocked
        self.notice_rooms = notice_rooms
        self.tags = tags
        self.accounts = accounts
        self.memberships = memberships
        self.directory = directory
        self.remote_rooms = remote_rooms
        self.room_servers = room_servers
        self.server_name = server_name
        self.invite_permissions = invite_permissions

    # -- shared ------------------------------------------------------------------------------

    async def profile_content(self, user_id: str) -> dict[str, Any]:
        """``displayname``/``avatar_url`` of a local user, for their member events."""
        if server_of_user(user_id) != self.server_name:
            return {}
        profile = await self.accounts.get_profile(user_id)
        if profile is None:
            return {}
        displayname, avatar_url = profile
        out: dict[str, Any] = {}
        if displayname is not None:
            out["displayname"] = displayname
        if avatar_url is not None:
            out["avatar_url"] = avatar_url
        return out

    async def resolve_room(self, room_id_or_alias: str, via: Sequence[str] = ()) -> str:
        """The room ID of a room ID or alias (a local alias is looked up; ``via`` is only a hint)."""
        return (await self.resolve_room_and_servers(room_id_or_alias, via))[0]

    async def resolve_room_and_servers(self, room_id_or_alias: str, via: Sequence[str] = ()) -> tuple[str, list[str]]:
        """The room ID and the servers to join it through (``via``, then the alias's servers)."""
        if room_id_or_alias.startswith("#"):
            room_id, servers = await self.directory.resolve_alias_with_servers(room_id_or_alias)
            return room_id, [*via, *servers]
        if room_id_or_alias.startswith("!"):
            return check_room_id(room_id_or_alias), list(via)
        raise invalid_param(f"Not a room ID or alias: {room_id_or_alias[:100]!r}")

    async def _remote_candidates(self, room_id: str, user_id: str, servers: Sequence[str]) -> list[str] | None:
        """The servers to join/knock through when this server is not in the room; None when the
        request is for this server alone (a room we are in, or one with nobody else to ask)."""
        remote = self.remote_rooms
        if await remote.is_host_in_room(room_id):
            return None
        extra: list[str] = []
        own = await remote.local_membership(room_id, user_id)
        if own is not None and own.membership == "invite":
            extra.append(server_of_user(own.sender))  # the inviting server is in the room
        if await self.room_server.get_room(room_id) is not None:
            extra.extend(sorted(await self.room_servers.servers_in_room(room_id)))  # a room we left: who was in it
        candidates = remote.candidates(room_id, servers, extra)
        return candidates or None

    async def local_room(self, room_id: str, via: Sequence[str] = ()) -> RoomRecord:
        """The room, if this server has it; else 404 (saying so when it lives elsewhere)."""
        check_room_id(room_id)
        room = await self.room_server.get_room(room_id)
        if room is not None:
            return room
        ours = self.server_name
        server = server_of_room_id(room_id)
        if (server is not None and server != ours) or any(s != ours for s in via):
            raise not_found(f"Room {room_id} is not on this server and this server is not in it")
        raise not_found(f"Unknown room {room_id}")

    async def _check_not_blocked(self, room_id: str) -> None:
        if self.blocked is not None and await self.blocked.is_blocked(room_id):
            raise forbidden("This room has been blocked on this server")

    async def _state(self, room_id: str, *users: str, extra: Sequence[StateKey] = ()) -> dict[StateKey, Event]:
        keys = [CREATE_KEY, POWER_LEVELS_KEY, JOIN_RULES_KEY, *extra, *(_member_key(u) for u in users)]
        return await self.room_server.current_state_events(room_id, keys)

    async def _send(self, room_id: str, sender: str, target: str, content: dict[str, Any]) -> Event:
        return await self.room_server.send(room_id, EventSpec(MEMBER, content, target, sender))

    @staticmethod
    def _with_reason(content: dict[str, Any], reason: str | None) -> dict[str, Any]:
        if reason is not None:
            content["reason"] = reason
        return content

    # -- joining ---------------------------------------------------------------------------------

    async def _guests_invited_in(self, room_id: str, user_id: str) -> bool:
        """Whether a guest may join a room this server is not in: guest_access.md lets guests
        join only rooms whose ``m.room.guest_access`` is ``can_join``, and the only state we
        have of such a room before joining is the stripped state of the guest's invite (which
        mxserver includes that event in; a room whose invite does not say is refused)."""
        own = await self.remote_rooms.local_membership(room_id, user_id)
        if own is None or own.membership != "invite":
            return False
        unsigned = own.unsigned if isinstance(own.unsigned, dict) else {}
        stripped = unsigned.get("invite_room_state")
        for entry in stripped if isinstance(stripped, list) else []:
            if isinstance(entry, dict) and entry.get("type") == GUEST_ACCESS_KEY[0] and entry.get("state_key") == "":
                content = entry.get("content")
                return isinstance(content, dict) and content.get("guest_access") == "can_join"
        return False

    async def join(
        self,
        requester: Requester,
        room_id_or_alias: str,
        reason: str | None = None,
        via: Sequence[str] = (),
        *,
        extra_content: dict[str, Any] | None = None,
    ) -> str:
        """Join a room by ID or alias; returns the room ID.

        ``extra_content``: other keys of the request body, kept in the join event (Synapse's
        behaviour, see ``mxserver.api.client.membership``); they may set a per-room
        ``displayname``/``avatar_url`` but never ``membership`` nor the server-chosen
        ``join_authorised_via_users_server``.
        """
        requester.check_not_suspended()  # §Account suspension
        extra = {
            k: v
            for k, v in (extra_content or {}).items()
            if k not in ("membership", "join_authorised_via_users_server")
        }
        room_id, servers = await self.resolve_room_and_servers(room_id_or_alias, via)
        await self._check_not_blocked(room_id)
        user_id = requester.user_id
        candidates = await self._remote_candidates(room_id, user_id, servers)
        if candidates is not None:
            if requester.is_guest and not await self._guests_invited_in(room_id, user_id):
                raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may not join this room")
            content = self._with_reason(
                {**await self.profile_content(user_id), **extra, "membership": "join"}, reason
            )
            if await self.remote_rooms.join(user_id, room_id, candidates, content) is not None:
                await self._adopt_upgraded_room(room_id)
                await self.copy_user_state_from_predecessor(user_id, room_id)
                return room_id
            # None: a concurrent join brought this server into the room meanwhile; join here.
        room = await self.local_room(room_id, via)
        state = await self._state(room_id, user_id, extra=[GUEST_ACCESS_KEY])
        membership = _membership(state, user_id)
        if membership == "join":
            # Joining again changes nothing (SyTest "Joining room twice is idempotent").
            return room_id
        if membership == "ban":
            raise forbidden("You are banned from this room")
        if requester.is_guest:
            guest = state.get(GUEST_ACCESS_KEY)
            if guest is None or guest.content.get("guest_access") != "can_join":
                raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may not join this room")
        content = self._with_reason({**await self.profile_content(user_id), **extra, "membership": "join"}, reason)
        rv = room.room_version
        jr_event = state.get(JOIN_RULES_KEY)
        jr = jr_event.content if jr_event is not None else {}
        restricted = ("restricted", "knock_restricted") if rv.knock_restricted_join_rule else ("restricted",)
        # v8 auth rule 4.3.3: a member already joined (or invited) needs no authoriser.
        if membership not in ("invite", "join") and rv.restricted_join_rule and jr.get("join_rule") in restricted:
            content["join_authorised_via_users_server"] = await self._restricted_join_authoriser(
                room_id, state, jr, user_id
            )
        await self._send(room_id, user_id, user_id, content)
        await self.copy_user_state_from_predecessor(user_id, room_id)
        return room_id

    async def _predecessor(self, room_id: str) -> str | None:
        """The room ``room_id`` replaces (its create event's ``predecessor.room_id``), if any."""
        create = await self.room_server.current_state_event(room_id, "m.room.create")
        predecessor = create.content.get("predecessor") if create is not None else None
        old_room = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        return old_room if isinstance(old_room, str) and old_room != room_id else None

    async def copy_user_state_from_predecessor(self, user_id: str, room_id: str) -> None:
        """Joining (or creating by an upgrade) an upgraded room: the user's tags of the old room
        apply to the new one too, and a direct chat stays one.

        room_upgrades.md leaves per-user data to the server; Synapse copies the tags and adds
        the new room wherever ``m.direct`` lists the old one (SyTest's 42tags and "/upgrade
        preserves direct room state" expect it). Tags the user already set in the new room win.
        """
        if self.tags is None:
            return
        old_room = await self._predecessor(room_id)
        if old_room is None:
            return
        await self._copy_direct(user_id, old_room, room_id)
        old_tags = await self.tags.get_tags(user_id, old_room)
        if not old_tags or await self.tags.get_tags(user_id, room_id):
            return
        for tag, tag_content in old_tags.items():
            try:
                await self.tags.add_tag(user_id, room_id, tag, tag_content if isinstance(tag_content, dict) else {})
            except MatrixError:
                continue  # a tag the old room somehow held but that is not valid now: skipped

    async def _copy_direct(self, user_id: str, old_room: str, new_room: str) -> None:
        """``m.direct`` (client-server-api §Direct Messaging: user ID -> room IDs): every list
        naming the old room names the new one too."""
        assert self.tags is not None
        try:
            direct = await self.tags.get_account_data(user_id, None, DIRECT_TYPE)
        except MatrixError:
            return  # unset
        changed = False
        updated: dict[str, Any] = {}
        for other, rooms in direct.items():
            if isinstance(rooms, list) and old_room in rooms and new_room not in rooms:
                rooms = [*rooms, new_room]
                changed = True
            updated[other] = rooms
        if changed:
            await self.tags.set_account_data(user_id, None, DIRECT_TYPE, updated, from_client=False)

    async def _adopt_upgraded_room(self, room_id: str) -> None:
        """This server joined an upgraded room through another server: its local aliases and
        directory listing of the old room move to the new one, as when a local user upgrades
        (room_upgrades.md steps 3-4 done by the upgrader's server for its own directory).

        Only when the old room's tombstone, as this server knows it, names this room: a room
        merely claiming a predecessor cannot take that room's aliases (Synapse checks the same;
        SyTest "/upgrade moves remote aliases to the new room" and "Local and remote users'
        homeservers remove a room from their public directory on upgrade").
        """
        old_room = await self._predecessor(room_id)
        if old_room is None or await self.room_server.get_room(old_room) is None:
            return
        tombstone = await self.room_server.current_state_event(old_room, "m.room.tombstone")
        if tombstone is None or tombstone.content.get("replacement_room") != room_id:
            return
        await self.directory.move_aliases(old_room, room_id)
        if await self.directory.is_published(old_room):
            await self.directory.publish(room_id, True)
            await self.directory.publish(old_room, False)

    async def _restricted_join_authoriser(
        self, room_id: str, state: dict[StateKey, Event], join_rules: dict[str, Any], user_id: str
    ) -> str:
        """client-server-api §Restricted rooms: check the allow conditions, then pick a local
        joined member with the invite level to vouch for the join (v8 auth rule 4.3.5)."""
        allow = join_rules.get("allow")
        rooms = [
            c["room_id"]
            for c in (allow if isinstance(allow, list) else [])
            if isinstance(c, dict) and c.get("type") == "m.room_membership" and isinstance(c.get("room_id"), str)
        ]
        satisfied = False
        for other in rooms:
            if await self.room_server.get_room(other) is not None and await self.room_server.membership(other, user_id) == "join":
                satisfied = True
                break
        if not satisfied:
            raise forbidden(
                "You are not invited to this room and are not joined to any room its join rule allows"
            )
        ours = self.server_name
        ids = await self.room_server.current_state_ids(room_id)
        keys = [k for k in ids if k[0] == MEMBER and server_of_user(k[1]) == ours]
        members = await self.room_server.current_state_events(room_id, keys)
        pl = state.get(POWER_LEVELS_KEY)
        invite_level = get_named_level(pl.content if pl is not None else None, "invite", pl.room_version if pl else None)
        candidates = []
        for (_, member), ev in members.items():
            if ev.membership != "join":
                continue
            level = get_user_power_level(member, state)
            if level >= invite_level:
                candidates.append((-level, member))
        if not candidates:
            raise forbidden("No member of this room on this server may invite you, so your join cannot be authorised")
        return min(candidates)[1]

    async def knock(
        self, requester: Requester, room_id_or_alias: str, reason: str | None = None, via: Sequence[str] = ()
    ) -> str:
        requester.check_not_suspended()  # §Account suspension
        room_id, servers = await self.resolve_room_and_servers(room_id_or_alias, via)
        await self._check_not_blocked(room_id)
        user_id = requester.user_id
        candidates = await self._remote_candidates(room_id, user_id, servers)
        if candidates is not None:
            own = await self.remote_rooms.local_membership(room_id, user_id)
            if own is not None and own.membership in ("invite", "knock", "ban"):
                raise forbidden(f"You cannot knock: your membership is {own.membership}")
            content = self._with_reason({"membership": "knock", **await self.profile_content(user_id)}, reason)
            if await self.remote_rooms.knock(user_id, room_id, candidates, content) is not None:
                return room_id
        room = await self.local_room(room_id, via)
        if not room.room_version.knock_join_rule:
            raise forbidden(f"Room version {room.room_version.identifier} does not support knocking")
        state = await self._state(room_id, user_id)
        membership = _membership(state, user_id)
        if membership == "join":
            raise forbidden("You are already in the room")
        if membership == "invite":
            raise forbidden("You are already invited to the room: join it instead")
        if membership == "ban":
            raise forbidden("You are banned from this room")
        content = self._with_reason({"membership": "knock", **await self.profile_content(user_id)}, reason)
        await self._send(room_id, user_id, user_id, content)
        return room_id

    # -- leaving and forgetting ---------------------------------------------------------------------

    async def leave(self, requester: Requester, room_id: str, reason: str | None = None) -> None:
        user_id = requester.user_id
        remote = self.remote_rooms
        own = await remote.local_membership(check_room_id(room_id), user_id)
        if (
            own is not None
            and own.metadata.outlier
            and own.membership in ("invite", "knock")
            and not await remote.is_host_in_room(room_id)
        ):
            # An invite or knock through another server: rejected/retracted through it (make_leave).
            await remote.leave_out_of_band(user_id, own, reason)
            return
        await self.local_room(room_id)
        membership = await self.room_server.membership(room_id, user_id)
        if membership is None:
            raise forbidden("You are not a member of this room")
        if membership == "leave":
            return
        if membership == "ban":
            raise forbidden("You are banned from this room")
        if (
            membership == "invite"
            and self.notice_rooms is not None
            and await self.notice_rooms.is_notice_room_of(user_id, room_id)
        ):
            # §Server Notices: "Attempting to reject the invite must result in a
            # M_CANNOT_LEAVE_SERVER_NOTICE_ROOM error" (leaving once joined stays possible).
            raise MatrixError(403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", "You cannot reject the server notices room")
        await self._send(room_id, user_id, user_id, self._with_reason({"membership": "leave"}, reason))

    async def forget(self, requester: Requester, room_id: str) -> None:
        room = await self.local_room(room_id)
        user_id = requester.user_id
        membership = await self.room_server.membership(room_id, user_id)
        if membership is None:
            # A rejected remote invite or retracted knock is not in the room's state here.
            own = await self.remote_rooms.local_membership(room_id, user_id)
            membership = own.membership if own is not None else None
        if membership is None:
            raise not_found("You have never been a member of this room")
        if membership not in ("leave", "ban"):
            # leaving.yaml: "If the user is currently joined to the room, they must leave the room first"
            raise MatrixError(400, "M_UNKNOWN", f"User {user_id} is in room {room_id}")
        await self.memberships.forget(user_id, room.room_nid)

    # -- acting on other users ------------------------------------------------------------------------

    async def invite(
        self, requester: Requester, room_id: str, target: str, reason: str | None = None, is_direct: bool = False
    ) -> None:
        requester.check_not_suspended()  # §Account suspension
        check_user_id(target)
        await self.local_room(room_id)
        await self._check_not_blocked(room_id)
        sender = requester.user_id
        remote_target = server_of_user(target) != self.server_name
        if not remote_target:
            await self.check_invitee(target)
        state = await self._state(room_id, sender, target)
        if _membership(state, sender) != "join":
            raise forbidden("You are not in the room")
        membership = _membership(state, target)
        if membership == "ban":
            raise forbidden(f"{target} is banned from the room")
        if membership == "join":
            raise forbidden(f"{target} is already in the room")
        if membership == "invite":
            return  # inviting.yaml: "or was already invited"
        content = await self.invite_content(target, reason, is_direct)
        if remote_target:
            # The invitee's server co-signs the invite before it enters the room (§Inviting to a room).
            await self.remote_rooms.invite(room_id, sender, target, content)
            return
        await self._send(room_id, sender, target, content)

    async def check_invitee(self, target: str) -> None:
        """A user who can be invited from here: a local, existing, active account that does not
        block invites, or anyone on another server (whose server decides when it is asked to
        co-sign the invite)."""
        if server_of_user(target) != self.server_name:
            return
        user = await self.accounts.get_user(target)
        if user is None and self.user_queries is not None and await self.user_queries.user_exists(target):
            # application-service-api §Querying users: an unknown user in a service's namespace
            # (e.g. a room invite) is asked of the service, which may register it before answering.
            user = await self.accounts.get_user(target)
        if user is None or user.deactivated:
            raise not_found(f"Unknown user {target}")
        # §Invite permission (v1.18): 403 M_INVITE_BLOCKED for /invite and createRoom's invitees
        await self.invite_permissions.check_invitable(target)

    async def invite_content(self, target: str, reason: str | None, is_direct: bool) -> dict[str, Any]:
        content: dict[str, Any] = {"membership": "invite", **await self.profile_content(target)}
        if is_direct:
            content["is_direct"] = True
        return self._with_reason(content, reason)

    async def kick(self, requester: Requester, room_id: str, target: str, reason: str | None = None) -> None:
        requester.check_not_suspended()  # §Account suspension
        check_user_id(target)
        await self.local_room(room_id)
        sender = requester.user_id
        state = await self._state(room_id, sender, target)
        if _membership(state, sender) != "join":
            raise forbidden("You are not in the room")
        membership = _membership(state, target)
        if membership == "ban":
            raise forbidden(f"{target} is banned from the room; unban them instead")
        if membership not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        await self._send(room_id, sender, target, self._with_reason({"membership": "leave"}, reason))

    async def ban(self, requester: Requester, room_id: str, target: str, reason: str | None = None) -> None:
        requester.check_not_suspended()  # §Account suspension
        check_user_id(target)
        await self.local_room(room_id)
        sender = requester.user_id
        if target == sender:
            raise forbidden("You cannot ban yourself")
        state = await self._state(room_id, sender, target)
        if _membership(state, sender) != "join":
            raise forbidden("You are not in the room")
        if _membership(state, target) == "ban":
            return
        await self._send(room_id, sender, target, self._with_reason({"membership": "ban"}, reason))

    async def unban(self, requester: Requester, room_id: str, target: str, reason: str | None = None) -> None:
        requester.check_not_suspended()  # §Account suspension
        check_user_id(target)
        await self.local_room(room_id)
        sender = requester.user_id
        state = await self._state(room_id, sender, target)
        if _membership(state, sender) != "join":
            raise forbidden("You are not in the room")
        if _membership(state, target) != "ban":
            # client-server-api §Other error codes: M_BAD_STATE, "attempting to unban a user who is not banned"
            raise MatrixError(400, "M_BAD_STATE", f"{target} is not banned from the room")
        await self._send(room_id, sender, target, self._with_reason({"membership": "leave"}, reason))
