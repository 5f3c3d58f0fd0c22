"""Outbound EDUs: what local users' typing, receipts, presence and to-device messages send to other servers.

:class:`OutboundEdus` is a reader of the ephemeral streams (typing, receipts,
presence, to-device; READERS phase): for each local change published there it
builds the EDU of server-server-api §Typing Notifications, §Receipts,
§Presence or §Send-to-device messaging and queues it through
:meth:`FederationSender.send_edu` with a coalescing key, so a burst of
changes to the same thing sends only the latest:

============================  =================================  ============================
EDU                           to                                 coalesced per
============================  =================================  ============================
``m.typing``                  the other servers in the room      (room, user)
``m.receipt``                 the other servers in the room      (room, user, thread)
``m.presence``                servers sharing a room with user   user (and merged per transaction)
``m.direct_to_device``        each recipient's server            not coalesced; persisted
============================  =================================  ============================

A new join sends presence too, though nobody's changed: a remote user's join gets its server
the presence of our users in the room, our user's join sends theirs to the room's other servers
(:meth:`OutboundEdus.on_room_events`, :meth:`OutboundEdus.on_joined_state`).

Only local users' changes are sent: a remote server speaks for its own users,
and ``m.read.private`` receipts are never sent (receipts module: private to their owner).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from mxserver.events.model import Event
from mxserver.federation.destinations import user_server
from mxserver.streams import EphemeralStreams, Phase, PresenceChange, ReceiptChange, ToDeviceSent, TypingChange

log = Logger()

#: server-server-api §Send-to-device messaging: message_id is at most 32 codepoints
MESSAGE_ID_LENGTH = 32


class EduQueue(Protocol):
    """What the EDUs are queued on (:class:`~mxserver.federation.sender.FederationSender`)."""

    @property
    def enabled(self) -> bool: ...

    def send_edu(
        self, destination: str, edu_type: str, content: dict[str, Any], key: Hashable | None = None, *,
        persistent: bool = False,
    ) -> None: ...

    def send_edu_to_room(
        self, room_id: str, edu_type: str, content: dict[str, Any], key: Hashable | None = None
    ) -> Deferred[None]: ...

    async def servers_in_room(self, room_id: str) -> set[str]: ...


class RoomsForUser(Protocol):
    """Who is joined where (:class:`~mxserver.ephemeral.room_members.RoomMembers`)."""

    async def rooms_for_user(self, user_id: str) -> Collection[str]: ...

    async def members(self, room_id: str) -> Collection[str]: ...


class PresenceStates(Protocol):
    """Local users' current presence (:class:`~mxserver.ephemeral.presence.PresenceHandler`)."""

    def current_state(self, user_id: str) -> Mapping[str, Any] | None: ...


class OutboundEdus:
    """The hooks; every one is a no-op for remote users and when federation is disabled.

    :meth:`subscribe` makes it a reader of the ephemeral streams (the Homeserver calls it).
    """

    def __init__(
        self, server_name: str, sender: EduQueue, members: RoomsForUser, presence: PresenceStates | None = None
    ) -> None:
        self._sender = sender
        self._members = members
        self._presence = presence
        self._server_name = server_name
        #: room -> local users whose "typing" other servers were last told
        self._typing: dict[str, set[str]] = {}

    def subscribe(self, streams: EphemeralStreams) -> None:
        """Follow the typing, receipt, presence and to-device streams (READERS phase)."""
        streams.typing.subscribe(self.on_typing, Phase.READERS)
        streams.receipts.subscribe(self.on_receipt, Phase.READERS)
        streams.presence.subscribe(self.on_presence, Phase.READERS)
        streams.to_device.subscribe(self.on_to_device, Phase.READERS)

    # -- the stream subscribers ---------------------------------------------------------------

    def on_typing(self, change: TypingChange) -> None:
        self.typing_changed(change.room_id, change.typing_now, change.refreshed)

    def on_receipt(self, change: ReceiptChange) -> None:
        self.receipt(change.room_id, change.receipt_type, change.user_id, change.event_id, change.thread_id, change.ts)

    def on_presence(self, change: PresenceChange) -> None:
        self.presence_changed(change.user_id, dict(change.state))

    def on_to_device(self, change: ToDeviceSent) -> None:
        messages = {user_id: dict(by_device) for user_id, by_device in change.messages.items()}
        self.to_device(change.sender, change.sender_device, change.event_type, change.txn_id, messages)

    def _local(self, user_id: str) -> bool:
        return user_server(user_id) == self._server_name

    def _background(self, d: Deferred[Any], what: str) -> Deferred[Any]:
        d.addErrback(lambda f: log.failure("queueing {what} EDUs failed", f, what=what))
        return d

    # -- typing -------------------------------------------------------------------------------

    def typing_changed(self, room_id: str, typing_now: Iterable[str], refreshed: str | None = None) -> Deferred[None]:
        """Who is typing in ``room_id`` changed (``typing_now``: everyone typing there now).

        Local users who started or stopped (an expiry included) are announced;
        ``refreshed`` is a local user who said again that they are typing (the
        other servers time typing out themselves, so a refresh is sent too).
        """
        if not self._sender.enabled:
            return succeed(None)
        now = {u for u in typing_now if self._local(u)}
        before = self._typing.get(room_id, set())
        changes = [(u, True) for u in sorted(now - before)] + [(u, False) for u in sorted(before - now)]
        if refreshed is not None and refreshed in now and refreshed in before:
            changes.append((refreshed, True))
        if now:
            self._typing[room_id] = now
        else:
            self._typing.pop(room_id, None)
        if not changes:
            return succeed(None)

        async def send() -> None:
            for user_id, typing in changes:
                await self._sender.send_edu_to_room(
                    room_id, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing}, key=(room_id, user_id)
                )

        return self._background(ensureDeferred(send()), "typing")

    # -- receipts -------------------------------------------------------------------------------

    def receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_id: str, thread_id: str | None, ts: int
    ) -> Deferred[None]:
        """A local user's public receipt moved forward."""
        if not self._sender.enabled or not self._local(user_id) or receipt_type != "m.read":
            return succeed(None)
        data: dict[str, Any] = {"ts": ts}
        if thread_id is not None:
            data["thread_id"] = thread_id
        content = {room_id: {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}}
        d = self._sender.send_edu_to_room(room_id, "m.receipt", content, key=(room_id, user_id, thread_id))
        return self._background(d, "receipt")

    # -- presence ----------------------------------------------------------------------------------

    def presence_changed(self, user_id: str, state: Mapping[str, Any]) -> Deferred[None]:
        """A local user's presence changed: tell every server sharing a room with them."""
        if not self._sender.enabled or not self._local(user_id):
            return succeed(None)
        item = _presence_item(user_id, state)

        async def send() -> None:
            servers: set[str] = set()
            for room_id in await self._members.rooms_for_user(user_id):
                servers |= await self._sender.servers_in_room(room_id)
            servers.discard(self._server_name)
            for server in servers:
                self._sender.send_edu(server, "m.presence", {"push": [item]}, key=user_id)

        return self._background(ensureDeferred(send()), "presence")

    def on_room_events(self, events: list[Event]) -> Deferred[None]:
        """Room-stream subscriber: a new join makes servers share a room that may not have
        shared one before, and presence only travels on changes. So, as Synapse does (SyTest
        "New federated private chats get full presence information (SYN-115)"; modules/presence.md
        only says servers share presence of users who share a room): a remote user's join sends
        the presence of our users in the room to its server, and our user's join sends theirs
        to the room's other servers."""
        if not self._sender.enabled or self._presence is None:
            return succeed(None)
        joins = [
            e
            for e in events
            if e.type == "m.room.member"
            and e.membership == "join"
            and isinstance(e.state_key, str)
            and (e.metadata.stream_ordering or 0) > 0  # backfilled history is not a new join
            and not e.rejected
            and not e.metadata.soft_failed
            and not e.metadata.outlier
            and not _was_joined(e)
        ]
        if not joins:
            return succeed(None)
        return self._background(ensureDeferred(self._presence_for_joins(joins)), "presence")

    def on_joined_state(self, room_id: str, joined: Collection[str]) -> Deferred[None]:
        """Our user joined a room over federation and its state (``joined``: the joined members)
        is stored: their presence goes to the room's other servers. (The join event itself was
        on the room stream before the member caches knew the room's other servers.)"""
        if not self._sender.enabled or self._presence is None:
            return succeed(None)
        presence = self._presence
        ours = sorted(u for u in joined if self._local(u))
        servers = {s for s in (user_server(u) for u in joined) if s is not None and s != self._server_name}

        async def send() -> None:
            allowed = servers & await self._sender.servers_in_room(room_id)  # the room's ACL applies
            for user_id in ours:
                state = presence.current_state(user_id)
                if state is None:
                    continue
                for server in sorted(allowed):
                    self._sender.send_edu(server, "m.presence", {"push": [_presence_item(user_id, state)]}, key=user_id)

        return self._background(ensureDeferred(send()), "presence")

    async def _presence_for_joins(self, joins: list[Event]) -> None:
        assert self._presence is not None
        for event in joins:
            user_id = event.state_key
            assert isinstance(user_id, str)
            if self._local(user_id):
                state = self._presence.current_state(user_id)
                if state is None:
                    continue
                servers = await self._sender.servers_in_room(event.room_id)
                servers.discard(self._server_name)
                for server in servers:
                    self._sender.send_edu(server, "m.presence", {"push": [_presence_item(user_id, state)]}, key=user_id)
                continue
            joiner_server = user_server(user_id)
            if joiner_server is None:
                continue
            for member in sorted(await self._members.members(event.room_id)):
                if not self._local(member):
                    continue
                state = self._presence.current_state(member)
                if state is not None:
                    push = [_presence_item(member, state)]
                    self._sender.send_edu(joiner_server, "m.presence", {"push": push}, key=member)

    # -- send-to-device ----------------------------------------------------------------------------

    def to_device(
        self, sender: str, sender_device: str | None, event_type: str, txn_id: str, messages: dict[str, dict[str, Any]]
    ) -> None:
        """A local user's messages for remote users (already deduplicated on the client's txn ID):
        one EDU per destination server."""
        if not self._sender.enabled or not self._local(sender):
            return
        by_server: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            server = user_server(user_id)
            if server is None or server == self._server_name:
                continue
            by_server.setdefault(server, {})[user_id] = by_device
        for server, msgs in sorted(by_server.items()):
            # Derived from the client's transaction, so a resend after a restart dedupes remotely.
            seed = "\x00".join((sender, sender_device or "", event_type, txn_id, server))
            message_id = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:MESSAGE_ID_LENGTH]
            content = {"sender": sender, "type": event_type, "message_id": message_id, "messages": msgs}
            # Persisted until delivered: end-to-end encryption keys travel this way.
            self._sender.send_edu(server, "m.direct_to_device", content, persistent=True)


def _was_joined(event: Event) -> bool:
    """Whether a join event only changed a member's profile (its ``unsigned.prev_content``)."""
    prev = event.unsigned.get("prev_content")
    return isinstance(prev, dict) and prev.get("membership") == "join"


def _presence_item(user_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of an ``m.presence`` EDU's ``push`` (server-server-api §Presence)."""
    item: dict[str, Any] = {
        "user_id": user_id,
        "presence": state.get("presence", "offline"),
        "last_active_ago": int(state.get("last_active_ago", 0) or 0),
    }
    if state.get("status_msg") is not None:
        item["status_msg"] = state["status_msg"]
    if state.get("currently_active") is not None:
        item["currently_active"] = bool(state["currently_active"])
    return item


def merge_presence(edus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold every ``m.presence`` EDU of a transaction into one (its ``push`` lists joined)."""
    pushes: list[Any] = []
    out: list[dict[str, Any]] = []
    index: int | None = None
    for edu in edus:
        if edu.get("edu_type") == "m.presence":
            pushes.extend(edu.get("content", {}).get("push", []))
            if index is None:
                index = len(out)
                out.append(edu)
        else:
            out.append(edu)
    if index is not None:
        out[index] = {"edu_type": "m.presence", "content": {"push": pushes}}
    return out
