"""Server notices (client-server-api §Server Notices): the admin API's ``send_server_notice``.

Each local user has exactly one notices room, made on the first notice to them by the
system user (``server_notices.system_mxid_localpart``: a real local account, created on
first use, without a password so nobody logs in as it; registration refuses its ID). The user is invited (or joined,
with ``auto_join``) and the room carries the ``m.server_notice`` tag in their room tags. The
user cannot reject the invite (``M_CANNOT_LEAVE_SERVER_NOTICE_ROOM``, in the membership
handler); if they leave after joining, the next notice invites them back into the same room.
A notices room that is gone (deleted by an admin) is replaced by a new one.

Notices are ``m.room.message`` events whose ``msgtype`` is always ``m.server_notice``, as the
spec's module defines them; the admin's other content keys (``body``, ``server_notice_type``,
...) are kept.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Requester
from mxserver.config import ServerNoticesConfig
from mxserver.ephemeral.profiles import ProfileHandler
from mxserver.errors import MatrixError, bad_json, invalid_param, not_found
from mxserver.ids import server_of
from mxserver.room_handlers.creation import CreateRoomRequest, RoomCreationHandler
from mxserver.room_handlers.membership import MembershipHandler, RoomTags
from mxserver.room_handlers.messages import MessageHandler
from mxserver.rooms.api import ClientRooms
from mxserver.storage.accounts import AccountStore
from mxserver.storage.server_notices import ServerNoticeRoomsStore

#: the room tag that marks a user's server notices room (client-server-api §Server Notices)
NOTICE_TAG = "m.server_notice"
NOTICE_MSGTYPE = "m.server_notice"


def notices_disabled() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", "Server notices are not enabled on this server")


def system_user_id(config: ServerNoticesConfig, server_name: str) -> str | None:
    """The system user who sends notices, or None when server notices are off."""
    if config.system_mxid_localpart is None:
        return None
    return f"@{config.system_mxid_localpart}:{server_name}"


class ServerNoticesHandler:
    """Sends server notices, making each user's notices room and the system user as needed."""

    def __init__(
        self,
        config: ServerNoticesConfig,
        server_name: str,
        rooms: ServerNoticeRoomsStore,
        accounts: AccountStore,
        clock: IReactorTime,
        profiles: ProfileHandler,
        room_server: ClientRooms,
        creation: RoomCreationHandler,
        membership: MembershipHandler,
        messages: MessageHandler,
        tags: RoomTags,
    ) -> None:
        self.config = config
        self.server_name = server_name
        self.rooms = rooms
        self.accounts = accounts
        self.clock = clock
        self.profiles = profiles
        self.room_server = room_server
        self.creation = creation
        self.membership = membership
        self.messages = messages
        self.tags = tags
        self.system_user_id = system_user_id(config, server_name)
        # One notice at a time per user: two first notices must not make two rooms.
        self._locks: dict[str, DeferredLock] = {}

    async def send_notice(
        self, user_id: str, event_type: str, content: dict[str, Any], state_key: str | None, txn_id: str | None
    ) -> str:
        """Send ``content`` to the user's notices room; the event ID. ``txn_id``: the admin's
        transaction (already scoped to them): a retry answers the same event."""
        system = self.system_user_id
        if system is None:
            raise notices_disabled()
        if server_of(user_id) != self.server_name:
            raise invalid_param("Server notices can only be sent to local users")
        if user_id == system:
            raise invalid_param("The system user does not send notices to itself")
        user = await self.accounts.get_user(user_id)
        if user is None or user.deactivated:
            raise not_found(f"Unknown user {user_id}")
        if event_type == "m.room.message" and state_key is None:
            if not isinstance(content.get("body"), str):
                raise bad_json("A notice needs a 'body' (a string)")
            content = {**content, "msgtype": NOTICE_MSGTYPE}
        lock = self._locks.setdefault(user_id, DeferredLock())
        async with lock:
            try:
                room_id = await self._notice_room(system, user_id)
            finally:
                if not lock.waiting:
                    self._locks.pop(user_id, None)
        sender = Requester(system, None)
        if state_key is not None:
            return await self.messages.send_state(sender, room_id, event_type, state_key, content)
        return await self.messages.send_event(sender, room_id, event_type, content, txn_id or _fresh_txn())

    async def _ensure_system_user(self, system: str) -> None:
        if await self.accounts.get_user(system) is not None:
            return
        config = self.config
        # Straight into the store: registration refuses the ID to everyone (it is the server's).
        # No password: nobody logs in as it.
        now_ms = int(self.clock.seconds() * 1000)
        if not await self.accounts.create_user(system, None, now_ms, displayname=config.system_mxid_display_name):
            return  # made meanwhile by a concurrent notice
        if config.system_mxid_avatar_url is not None:
            await self.profiles.set_field(Requester(system, None), system, "avatar_url", config.system_mxid_avatar_url)

    async def _notice_room(self, system: str, user_id: str) -> str:
        """The user's notices room, with the user invited or joined to it."""
        await self._ensure_system_user(system)
        room_id = await self.rooms.room_of(user_id)
        if room_id is not None and await self.room_server.get_room(room_id) is not None:
            if await self.room_server.membership(room_id, system) == "join":
                membership = await self.room_server.membership(room_id, user_id)
                if membership not in ("join", "invite"):
                    # They left: the next notice brings them back into the same room.
                    await self.membership.invite(Requester(system, None), room_id, user_id)
                    await self.tags.add_tag(user_id, room_id, NOTICE_TAG, {})
                    await self._auto_join(user_id, room_id)
                return room_id
        return await self._make_room(system, user_id)

    async def _make_room(self, system: str, user_id: str) -> str:
        config = self.config
        initial_state: list[tuple[str, str, dict[str, Any]]] = []
        if config.room_avatar_url is not None:
            initial_state.append(("m.room.avatar", "", {"url": config.room_avatar_url}))
        created = await self.creation.create_room(
            Requester(system, None),
            CreateRoomRequest(
                preset="private_chat",
                name=config.room_name,
                topic=config.room_topic,
                invite=[user_id],
                initial_state=initial_state,
                # an official room: the user reads, only the system user speaks
                power_level_content_override={"users_default": -10},
            ),
        )
        room_id = str(created["room_id"])
        await self.rooms.set_room(user_id, room_id)
        await self.tags.add_tag(user_id, room_id, NOTICE_TAG, {})
        await self._auto_join(user_id, room_id)
        return room_id

    async def _auto_join(self, user_id: str, room_id: str) -> None:
        if self.config.auto_join:
            await self.membership.join(Requester(user_id, None), room_id)


def _fresh_txn() -> str:
    return "notice-" + secrets.token_urlsafe(12)
