"""Sending into rooms from the client API: messages, state events, redactions.

Sending a message is the hottest write path, so it does no work of its own
beyond the rate limit: the room server builds, authorises and persists the
event, and makes the send idempotent per ``(user, device, txnId)``.

client-server-api §Transaction identifiers scopes a transaction ID to a
device *and an endpoint*. The room server's key has no endpoint, so when a
device reuses a transaction ID on another path (another room, event type,
or the redact endpoint) the answer of the first send comes back; we then
send under a key that also names the path (rare: clients use fresh IDs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mxserver.accounts.auth import Requester
from mxserver.accounts.invite_permission import InvitePermissions
from mxserver.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from mxserver.events.model import TXN_SCOPE_SEPARATOR, Event
from mxserver.events.relations import THREAD, relation_of
from mxserver.events.versions import RedactionRules
from mxserver.identifier_checks import check_user_id
from mxserver.ids import is_valid_event_id
from mxserver.room_handlers.directory import DirectoryHandler
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.power_levels import CREATE_KEY, POWER_LEVELS_KEY, user_has_named_level
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.events import EventStore, RoomRecord

#: longest transaction ID accepted (it is stored with the event)
MAX_TXN_ID_LENGTH = 255


class RateLimit(Protocol):
    """A per-user rate limit (the homeserver's ``mxserver.api.ratelimit.RateLimiter`` for messages)."""

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` from ``key``'s allowance or raise 429 M_LIMIT_EXCEEDED."""


class MessageHandler:
    """Turns client sends into room-server submissions."""

    def __init__(
        self,
        room_server: ClientRooms,
        events: EventStore,
        ratelimit: RateLimit,
        directory: DirectoryHandler,
        invite_permissions: InvitePermissions,
    ) -> None:
        self.room_server = room_server
        self.invite_permissions = invite_permissions
        self.events = events
        self.ratelimit = ratelimit
        #: owns aliases: checks m.room.canonical_alias contents
        self.directory = directory

    # -- messages --------------------------------------------------------------------------

    async def send_event(
        self, requester: Requester, room_id: str, event_type: str, content: dict[str, Any], txn_id: str
    ) -> str:
        """PUT /rooms/{roomId}/send/{eventType}/{txnId}: the event ID (the first one on retransmission).

        A suspended account may send only redactions of its own events (§Account suspension).
        """
        if event_type != "m.room.redaction":
            requester.check_not_suspended()
        self.ratelimit.check(requester.user_id)
        redacts = None
        if event_type == "m.room.redaction":
            # room_send.yaml (v1.18): redactions may be sent here; before v11 "redacts" moves to the top level.
            redacts = content.get("redacts")
            if not isinstance(redacts, str) or not is_valid_event_id(redacts):
                raise bad_json("An m.room.redaction event needs 'redacts' (an event ID) in its content")
            room = await self._room(room_id)
            await self._check_may_redact(requester, room_id, redacts)
            if room.room_version.redaction is not RedactionRules.V11:
                content = {k: v for k, v in content.items() if k != "redacts"}
        relation = relation_of(content)
        if relation is not None and relation.rel_type == THREAD:
            await self._check_thread_root(room_id, relation.parent_id)
        spec = EventSpec(event_type, content, None, requester.user_id, redacts)
        event = await self._send_with_txn(
            requester,
            room_id,
            spec,
            txn_id,
            f"send{TXN_SCOPE_SEPARATOR}{event_type}",
            lambda ev: ev.room_id == room_id and ev.type == event_type,
        )
        return event.event_id

    # -- state -----------------------------------------------------------------------------------

    async def send_state(
        self, requester: Requester, room_id: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> str:
        """PUT /rooms/{roomId}/state/{eventType}/{stateKey}: the new event's ID.

        A PUT equal to the current state (same content, same sender) from a joined user answers
        the current event's ID and sends nothing: room_state.yaml is silent, and this is what
        Synapse does (SyTest "Setting state twice is idempotent"). A suspended account may only
        leave this way (§Account suspension).
        """
        if event_type == "m.room.member":
            # client-server-api §m.room.member: "The state_key is the user ID whose membership
            # is being set" (a member event of anything else is no one's membership)
            check_user_id(state_key)
        if not (
            event_type == "m.room.member" and state_key == requester.user_id and content.get("membership") == "leave"
        ):
            requester.check_not_suspended()
        self.ratelimit.check(requester.user_id)
        if event_type == "m.room.member" and content.get("membership") == "invite":
            # client-server-api §Invite permission (v1.18): an invite this way is refused too
            await self.invite_permissions.check_invitable(state_key)
        current = await self.room_server.current_state_event(room_id, event_type, state_key)
        if (
            current is not None
            and current.sender == requester.user_id
            and current.content == content
            and not current.metadata.redacted_by
            and await self.room_server.membership(room_id, requester.user_id) == "join"
        ):
            return current.event_id
        if event_type == "m.room.canonical_alias":
            # room_state.yaml: new aliases must be valid and point to this room.
            await self.directory.validate_canonical_alias(room_id, content)
        spec = EventSpec(event_type, content, state_key, requester.user_id)
        event = await self.room_server.send(room_id, spec)
        return event.event_id

    # -- redactions ------------------------------------------------------------------------------

    async def redact(self, requester: Requester, room_id: str, event_id: str, txn_id: str, reason: str | None) -> str:
        """PUT /rooms/{roomId}/redact/{eventId}/{txnId}: the redaction event's ID."""
        self.ratelimit.check(requester.user_id)
        if not is_valid_event_id(event_id):
            raise invalid_param("Invalid event ID")
        await self._room(room_id)
        await self._check_may_redact(requester, room_id, event_id)
        content = {"reason": reason} if reason is not None else {}
        spec = EventSpec("m.room.redaction", content, None, requester.user_id, event_id)
        event = await self._send_with_txn(
            requester,
            room_id,
            spec,
            txn_id,
            f"redact{TXN_SCOPE_SEPARATOR}{event_id}",
            lambda ev: ev.room_id == room_id and ev.type == "m.room.redaction" and ev.redacts == event_id,
        )
        return event.event_id

    async def _check_may_redact(self, requester: Requester, room_id: str, target_id: str) -> None:
        """redaction.yaml: own events with the m.room.redaction level, others' only with the redact level.

        The auth rules check the m.room.redaction level; from room v3 they do
        not check whose event it is (that is "handling redactions", decided
        when the redaction is applied), so the client API checks it here. A suspended account
        may redact only its own events (§Account suspension).
        """
        user_id = requester.user_id
        if await self.room_server.membership(room_id, user_id) != "join":
            raise forbidden("You are not joined to this room")
        target = await self.events.get_event(target_id)
        if target is None or target.rejected:
            raise not_found("Event not found")
        if target.room_id != room_id:
            # The spec is silent; Synapse answers 400 ("Cannot redact event from a different
            # room") and SyTest's 10redactions expects that.
            raise invalid_param("Cannot redact an event from a different room")
        if target.sender == user_id:
            return
        requester.check_not_suspended()
        state = await self.room_server.current_state_events(room_id, [POWER_LEVELS_KEY, CREATE_KEY])
        if not user_has_named_level(user_id, "redact", state, target.room_version):
            raise forbidden("You may not redact other users' events")

    # -- helpers -----------------------------------------------------------------------------------

    async def _check_thread_root(self, room_id: str, root_id: str) -> None:
        """threading.md §Validation of m.thread relationships: servers SHOULD refuse to start a
        thread off an event that is itself related to another (threads do not nest), with 400
        and M_UNKNOWN ("A specific error code is not currently available")."""
        root = await self.events.get_event(root_id)
        if root is not None and root.room_id == room_id and relation_of(root.content) is not None:
            raise MatrixError(400, "M_UNKNOWN", "Cannot start a thread from an event with a relation")

    async def _room(self, room_id: str) -> RoomRecord:
        room = await self.room_server.get_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return room

    async def _send_with_txn(
        self,
        requester: Requester,
        room_id: str,
        spec: EventSpec,
        txn_id: str,
        endpoint: str,
        same_request: Callable[[Event], bool],
    ) -> Event:
        if len(txn_id) > MAX_TXN_ID_LENGTH:
            raise invalid_param("Transaction ID too long")
        device = requester.session
        event = await self.room_server.send(room_id, spec, txn_key=(requester.user_id, device, txn_id))
        if same_request(event):
            return event
        # The ID was first used on another endpoint: this is a different request.
        scoped = TXN_SCOPE_SEPARATOR.join((txn_id, room_id, endpoint))
        event = await self.room_server.send(room_id, spec, txn_key=(requester.user_id, device, scoped))
        if event.metadata.txn_id == scoped:
            event.metadata.txn_id = txn_id
        return event
