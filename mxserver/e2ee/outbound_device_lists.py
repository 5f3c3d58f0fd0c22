"""Outbound device-list EDUs: other servers hear that a local user's devices changed
(server-server-api §Device Management; end_to_end_encryption.md §Tracking the device list).

:class:`OutboundDeviceLists` subscribes to the ephemeral ``device_lists`` stream.
For each :class:`~mxserver.streams.DeviceListChange` of a local user, every
other server sharing a room with the user is sent an ``m.device_list_update``
EDU per changed device (``stream_id`` = the change's position, ``prev_id`` =
the one before it) and, when cross-signing keys changed (device ID ``""``),
one ``m.signing_key_update``. Changes of remote users (published only to wake
local syncs) and changes with nothing in them send nothing.

Building an EDU reads the user's current keys, so it runs in the background,
one change at a time in publish order: a server receives each user's updates
in the order of their ``prev_id`` chain and does not resync for a gap that was
only a reordering.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mxserver.e2ee.device_lists import DEVICE_LIST_UPDATE, SHARE_DEVICE_NAMES_OVER_FEDERATION, SIGNING_KEY_UPDATE
from mxserver.e2ee.keys import merge_signatures
from mxserver.e2ee.validation import cross_signing_public_key
from mxserver.ids import UserID
from mxserver.storage.e2ee_keys import E2eKeyStore
from mxserver.streams import DeviceListChange

log = Logger()

JsonDict = dict[str, Any]

#: ``servers_in_room(room_id)``: the servers with joined members in the room (ours may be among them)
ServersInRoom = Callable[[str], Awaitable[Iterable[str]]]


def _server(user_id: str) -> str | None:
    try:
        return UserID.parse(user_id).server_name
    except Exception:
        return None


class JoinedRooms(Protocol):
    """The rooms a user is joined to (``mxserver.ephemeral.room_members.RoomMembers``)."""

    async def rooms_for_user(self, user_id: str) -> Collection[str]: ...


class EduSender(Protocol):
    """Queues EDUs for a destination (``mxserver.federation.sender.FederationSender``)."""

    def send_edu(
        self, destination: str, edu_type: str, content: JsonDict, key: Any = None, *, persistent: bool = False
    ) -> None: ...


class OutboundDeviceLists:
    """Sends local users' device-list changes to the servers sharing a room with them.

    The Homeserver subscribes :meth:`on_change` to ``ephemeral_streams.device_lists``.
    """

    def __init__(
        self,
        server_name: str,
        key_store: E2eKeyStore,
        room_members: JoinedRooms,
        servers_in_room: ServersInRoom,
        sender: EduSender,
    ) -> None:
        self._server_name = server_name
        self._key_store = key_store
        self._room_members = room_members
        self._servers_in_room = servers_in_room
        self._sender = sender
        self._queue: deque[DeviceListChange] = deque()
        self._draining = False
        #: :meth:`settle` callers, told when the queue is empty
        self._idle: list[Deferred[None]] = []

    def on_change(self, change: DeviceListChange) -> None:
        """Stream subscriber: queue ``change`` for sending (in the background)."""
        if not change.changes or _server(change.user_id) != self._server_name:
            return
        self._queue.append(change)
        if not self._draining:
            self._draining = True
            ensureDeferred(self._drain())

    def settle(self) -> Deferred[None]:
        """Fires once every change published so far has been handed to the sender (tests)."""
        d: Deferred[None] = Deferred()
        if not self._draining:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    async def _drain(self) -> None:
        try:
            while self._queue:
                change = self._queue.popleft()
                try:
                    await self._send(change.user_id, change.changes)
                except Exception:
                    log.failure("sending the device-list change of {user_id} failed", user_id=change.user_id)
        finally:
            self._draining = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _remote_servers(self, user_id: str) -> set[str]:
        servers: set[str] = set()
        for room_id in await self._room_members.rooms_for_user(user_id):
            servers |= set(await self._servers_in_room(room_id))
        servers.discard(self._server_name)
        return servers

    async def _send(self, user_id: str, changes: Iterable[tuple[str, int, int | None]]) -> None:
        servers = await self._remote_servers(user_id)
        if not servers:
            return
        edus = await self.edus_for(user_id, list(changes))
        # Stored until delivered: a peer that was down, or our own restart, must not leave
        # another server with a stale device list (end_to_end_encryption §Tracking device lists).
        for destination in sorted(servers):
            for edu_type, content in edus:
                self._sender.send_edu(destination, edu_type, content, persistent=True)

    async def edus_for(self, user_id: str, changes: list[tuple[str, int, int | None]]) -> list[tuple[str, JsonDict]]:
        """The EDUs telling another server of ``changes`` (``(device_id or "", stream_id, prev_id)``)."""
        edus: list[tuple[str, JsonDict]] = []
        if any(device_id == "" for device_id, _, _ in changes):
            edus.append((SIGNING_KEY_UPDATE, await self._signing_key_content(user_id)))
        device_changes = [c for c in changes if c[0] != ""]
        if device_changes:
            store = self._key_store
            names = (await store.get_local_device_names([user_id])).get(user_id, {})
            stored = (await store.get_device_keys([(user_id, None)])).get(user_id, {})
            sigs = await store.get_signatures([user_id], [user_id])
            # Each EDU points at the one before it: in one batch, the previous change of the batch.
            prev: int | None = device_changes[0][2]
            for device_id, stream_id, _ in sorted(device_changes, key=lambda c: c[1]):
                content: JsonDict = {
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": stream_id,
                    "prev_id": [prev] if prev is not None else [],
                }
                if device_id not in names:
                    content["deleted"] = True
                else:
                    if SHARE_DEVICE_NAMES_OVER_FEDERATION and names[device_id] is not None:
                        content["device_display_name"] = names[device_id]
                    keys = stored.get(device_id, (None, None))[0]
                    if keys is not None:
                        content["keys"] = merge_signatures(keys, sigs.get((user_id, device_id)))
                edus.append((DEVICE_LIST_UPDATE, content))
                prev = stream_id
        return edus

    async def _signing_key_content(self, user_id: str) -> JsonDict:
        keys = (await self._key_store.get_cross_signing_keys([user_id])).get(user_id, {})
        content: JsonDict = {"user_id": user_id}
        if "master" in keys:
            # With the signatures of the user's own devices on it (others may see those).
            public = cross_signing_public_key(keys["master"])
            sigs = await self._key_store.get_signatures([user_id], [user_id]) if public else {}
            content["master_key"] = merge_signatures(keys["master"], sigs.get((user_id, public[1])) if public else None)
        if "self_signing" in keys:
            content["self_signing_key"] = keys["self_signing"]
        return content
