"""Inbound EDUs: the registry the ``/send`` handler dispatches through, and the
handlers for typing, receipts, presence and send-to-device.

The Homeserver's ``federation_edus`` is an :class:`EduRegistry`. Any component registers a
handler ``(origin, content) -> None | Awaitable[None]`` for an ``edu_type``;
unknown types are ignored (server-server-api §EDUs: they are not persistent,
so dropping them is harmless). A handler that fails is logged and does not
affect the rest of the transaction.

Every handler trusts nothing in ``content``: the origin may only speak for
its own users (server-server-api §Typing Notifications: "a user belonging to
the sending server"), and room-scoped EDUs are ignored when the room's server
ACL denies the origin (§Server Access Control Lists).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.federation.room_access import acl_allows
from mxserver.ids import UserID, is_valid_event_id, is_valid_room_id

if TYPE_CHECKING:
    from mxserver.ephemeral.presence import PresenceHandler
    from mxserver.ephemeral.receipts import ReceiptsHandler
    from mxserver.ephemeral.room_members import RoomMembers
    from mxserver.ephemeral.typing import TypingHandler
    from mxserver.rooms.api import FederationRooms
    from mxserver.sync.to_device import ToDeviceHandler

log = Logger()

EduHandler = Callable[[str, dict[str, Any]], "Awaitable[None] | None"]

#: how long a remote user stays "typing" without a refresh (EDUs carry no timeout)
REMOTE_TYPING_TIMEOUT_MS = 30_000
#: guard rails on what one EDU may make us do
MAX_RECEIPT_ROOMS = 100
MAX_PRESENCE_PUSH = 1000
MAX_TO_DEVICE_USERS = 1000


class EduRegistry:
    """EDU type -> handler; the ``/send`` receiver dispatches every EDU through it."""

    def __init__(self) -> None:
        self._handlers: dict[str, EduHandler] = {}

    def register(self, edu_type: str, handler: EduHandler) -> None:
        """Handle EDUs of ``edu_type`` with ``handler`` (a later registration replaces an earlier one)."""
        self._handlers[edu_type] = handler

    def handler_for(self, edu_type: str) -> EduHandler | None:
        return self._handlers.get(edu_type)

    async def dispatch(self, origin: str, edu_type: Any, content: Any) -> bool:
        """Run the handler of one EDU; False when it was ignored (unknown type, bad shape, failure)."""
        if not isinstance(edu_type, str) or not isinstance(content, dict):
            return False
        handler = self._handlers.get(edu_type)
        if handler is None:
            return False
        try:
            result = handler(origin, content)
            if result is not None and hasattr(result, "__await__"):
                await result
        except CancelledError:
            raise  # the request carrying it went away (the sending server hung up): not a failure
        except Exception:
            log.failure("EDU {edu_type} from {origin} failed", edu_type=edu_type, origin=origin)
            return False
        return True


def _user_of(origin: str, user_id: Any) -> str | None:
    """``user_id`` if it is a valid user ID of ``origin``, else None."""
    if not UserID.is_valid(user_id):
        return None
    return user_id if UserID.parse(user_id).server_name == origin else None


class Handshakes(Protocol):
    """Our joins over federation in progress (:class:`~mxserver.federation.remote_rooms.RemoteRooms`)."""

    async def wait_for_handshakes(self) -> None: ...


class InboundEdus:
    """The handlers of the EDUs the core understands; :meth:`register` puts them on a registry."""

    def __init__(
        self,
        server_name: str,
        clock: IReactorTime,
        rooms: FederationRooms,
        room_members: RoomMembers,
        typing: TypingHandler,
        receipts: ReceiptsHandler,
        presence: PresenceHandler,
        to_device: ToDeviceHandler,
        handshakes: Handshakes | None = None,
    ) -> None:
        self.server_name = server_name
        self.handshakes = handshakes
        self.clock = clock
        self.rooms = rooms
        self.room_members = room_members
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self.to_device = to_device

    def register(self, registry: EduRegistry) -> None:
        registry.register("m.typing", self.on_typing)
        registry.register("m.receipt", self.on_receipt)
        registry.register("m.presence", self.on_presence)
        registry.register("m.direct_to_device", self.on_direct_to_device)

    async def _joined(self, room_id: str, user_id: str) -> bool:
        if not is_valid_room_id(room_id) or await self.rooms.get_room(room_id) is None:
            return False
        return bool(await self.rooms.membership(room_id, user_id) == "join")

    async def on_typing(self, origin: str, content: dict[str, Any]) -> None:
        """m.typing: for a user of the origin who is joined to the room (so the origin is in it)."""
        room_id = content.get("room_id")
        user_id = _user_of(origin, content.get("user_id"))
        typing = content.get("typing")
        if not isinstance(room_id, str) or user_id is None or not isinstance(typing, bool):
            return
        if not await self._joined(room_id, user_id) or not await acl_allows(self.rooms, room_id, origin):
            return
        self.typing.set_remote_typing(room_id, user_id, typing, REMOTE_TYPING_TIMEOUT_MS)

    async def on_receipt(self, origin: str, content: dict[str, Any]) -> None:
        """m.receipt: {room_id: {"m.read": {user_id: {event_ids, data: {ts, thread_id?}}}}}."""
        for room_id, by_type in list(content.items())[:MAX_RECEIPT_ROOMS]:
            if not isinstance(by_type, dict) or not isinstance(room_id, str):
                continue
            if not await acl_allows(self.rooms, room_id, origin):
                continue
            # receipts.md: m.read.private never leaves its server; only m.read travels.
            reads = by_type.get("m.read")
            if not isinstance(reads, dict):
                continue
            for raw_user, receipt in reads.items():
                user_id = _user_of(origin, raw_user)
                if user_id is None or not isinstance(receipt, dict):
                    continue
                event_ids = receipt.get("event_ids")
                data = receipt.get("data")
                if not isinstance(event_ids, list) or not isinstance(data, dict):
                    continue
                ts = data.get("ts")
                thread_id = data.get("thread_id")
                if not isinstance(ts, int) or isinstance(ts, bool):
                    ts = int(self.clock.seconds() * 1000)
                # receipts.md: a thread is "main" or the event ID of its root
                if thread_id is not None and not (thread_id == "main" or is_valid_event_id(thread_id)):
                    continue
                if not await self._joined(room_id, user_id):
                    continue
                for event_id in event_ids[:10]:
                    if is_valid_event_id(event_id):
                        await self.receipts.store_remote_receipt(room_id, "m.read", user_id, thread_id, event_id, ts)

    async def on_presence(self, origin: str, content: dict[str, Any]) -> None:
        """m.presence: ``push`` updates, each for a user of the origin."""
        push = content.get("push")
        if not isinstance(push, list):
            return
        for update in push[:MAX_PRESENCE_PUSH]:
            if not isinstance(update, dict):
                continue
            user_id = _user_of(origin, update.get("user_id"))
            presence = update.get("presence")
            status_msg = update.get("status_msg")
            if user_id is None or presence not in ("online", "unavailable", "offline"):
                continue
            if status_msg is not None and not isinstance(status_msg, str):
                status_msg = None
            # Only users someone here could see (sharing a room with us): the origin cannot fill
            # our memory with presence nobody asked for (§Presence: send only what is of interest).
            if not await self.room_members.rooms_for_user(user_id) and not await self._shares_after_joins(user_id):
                continue
            await self.presence.set_remote_presence(user_id, presence, status_msg)

    async def _shares_after_joins(self, user_id: str) -> bool:
        """Whether ``user_id`` shares a room with us once our running joins are done: the room's
        resident sends its users' presence when it accepts our join (Synapse does so too), which
        may be before we have stored the room's state from its answer."""
        if self.handshakes is None:
            return False
        await self.handshakes.wait_for_handshakes()
        return bool(await self.room_members.rooms_for_user(user_id))

    async def on_direct_to_device(self, origin: str, content: dict[str, Any]) -> None:
        """m.direct_to_device: deliver to local devices, once per (origin, sender, message_id)."""
        sender = _user_of(origin, content.get("sender"))
        event_type = content.get("type")
        message_id = content.get("message_id")
        messages = content.get("messages")
        if sender is None or not isinstance(event_type, str) or not event_type or not isinstance(messages, dict):
            return
        if not isinstance(message_id, str) or not message_id:
            return
        local: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in list(messages.items())[:MAX_TO_DEVICE_USERS]:
            if not UserID.is_valid(user_id) or UserID.parse(user_id).server_name != self.server_name:
                continue
            if not isinstance(by_device, dict):
                continue
            devices = {d: c for d, c in by_device.items() if isinstance(d, str) and d and isinstance(c, dict)}
            if devices:
                local[user_id] = devices
        if local:
            await self.to_device.receive_remote(origin, sender, event_type, message_id, local)
