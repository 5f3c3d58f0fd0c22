"""Send-to-device messaging (modules/send_to_device.md, to_device.yaml).

Messages for local devices are queued per device with a position on the
persisted ``to_device`` stream. ``/sync`` lists a device's pending messages
in order of arrival (at most 100 at a time) and, when the client's next
``since`` shows it received them, deletes them (:meth:`ToDeviceHandler.ack_to_device`).

Every batch queued publishes a :class:`~mxserver.streams.ToDeviceSent` on the
ephemeral ``to_device`` stream: the notifier wakes the local recipients, and
for a local sender the federation sender sends the remote recipients' messages
(one ``m.direct_to_device`` EDU per server).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.errors import bad_json, invalid_param, missing_param
from mxserver.ids import UserID
from mxserver.storage.stream_positions import PersistedStream
from mxserver.storage.to_device import ToDeviceStore
from mxserver.streams import Stream, ToDeviceSent

log = Logger()

#: send_to_device.md: "100 messages is recommended as a reasonable limit"
DEFAULT_SYNC_LIMIT = 100
#: event types and transaction IDs are path segments and key columns: bounded
MAX_TYPE_BYTES = 255
MAX_TXN_ID_BYTES = 255


class ToDeviceHandler:
    """The Homeserver's ``to_device``: send messages, and what /sync delivers and acknowledges.

    ``sent`` is the ephemeral ``to_device`` stream it publishes every queued batch on.
    """

    def __init__(
        self,
        server_name: str,
        store: ToDeviceStore,
        stream: PersistedStream,
        sent: Stream[ToDeviceSent],
        clock: IReactorTime,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._stream = stream
        self._sent = sent
        self._clock = clock

    @property
    def current_position(self) -> int:
        """The ``to_device`` stream's current position (for sync tokens)."""
        return self._stream.current

    async def send(self, sender: str, sender_device: str | None, event_type: str, txn_id: str, body: Any) -> None:
        """PUT /sendToDevice/{eventType}/{txnId}: validate and queue; a retransmission is a no-op."""
        if not event_type or len(event_type.encode("utf-8")) > MAX_TYPE_BYTES:
            raise invalid_param("Invalid event type")
        if not txn_id or len(txn_id.encode("utf-8")) > MAX_TXN_ID_BYTES:
            raise invalid_param("Invalid transaction ID")
        messages = parse_messages(body)
        local: dict[str, dict[str, dict[str, Any]]] = {}
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            if UserID.parse(user_id).server_name != self._server_name:
                remote[user_id] = by_device
                continue
            local[user_id] = by_device
        now_ms = int(self._clock.seconds() * 1000)
        # The txn ID is recorded even without local recipients: a retransmission sends nothing twice.
        result = await self._store.add_messages(sender, sender_device or "", event_type, txn_id, local, now_ms)
        if result is None:
            return  # a retransmission
        # The federation sender sends the remote recipients' messages (server-server-api
        # §Send-to-device messaging: one m.direct_to_device EDU per server).
        self._sent.publish(
            ToDeviceSent(sender, sender_device, event_type, txn_id, messages, frozenset(result[1]))
        )

    async def receive_remote(
        self, origin: str, sender: str, event_type: str, message_id: str, messages: dict[str, dict[str, dict[str, Any]]]
    ) -> bool:
        """Queue an ``m.direct_to_device`` EDU's messages for local devices (server-server-api
        §Send-to-device messaging). Idempotent per (origin, sender, type, message_id): a resent
        EDU delivers nothing twice. False when it was a repeat."""
        if len(event_type.encode("utf-8")) > MAX_TYPE_BYTES or len(message_id.encode("utf-8")) > MAX_TXN_ID_BYTES:
            return False
        now_ms = int(self._clock.seconds() * 1000)
        # The sender has no local device: the origin server stands in for it in the txn key.
        result = await self._store.add_messages(sender, f"federation:{origin}", event_type, message_id, messages, now_ms)
        if result is None:
            return False
        # Published to wake the recipients; from a remote sender, so no server is sent anything.
        self._sent.publish(ToDeviceSent(sender, None, event_type, message_id, messages, frozenset(result[1])))
        return True

    async def get_to_device_for_sync(
        self,
        user_id: str,
        device_id: str | None,
        since_pos: int,
        limit: int = DEFAULT_SYNC_LIMIT,
        to_pos: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A device's messages after ``since_pos`` (oldest first, at most ``limit``) and the next position.

        Each message is ``{"type", "sender", "content"}``. The position goes in
        ``next_batch``: the last message's when more are waiting, else the
        stream's current position (or ``to_pos``, the sync's upper bound, if
        given). The messages stay queued until :meth:`ack_to_device`.
        """
        upper = self._stream.current if to_pos is None else min(to_pos, self._stream.current)
        if limit <= 0:
            return [], since_pos
        if device_id is None or since_pos >= upper:
            # Nothing can be pending; a token from the future is brought back to the present.
            return [], upper
        rows = await self._store.get_messages(user_id, device_id, since_pos, upper, limit)
        messages = [message for _, message in rows]
        if len(rows) >= limit:
            return messages, rows[-1][0]
        return messages, upper

    async def ack_to_device(self, user_id: str, device_id: str | None, up_to_pos: int) -> None:
        """The device received everything up to ``up_to_pos`` (its sync's ``since``): delete it."""
        if device_id is None or up_to_pos <= 0:
            return
        # A token from the future must not delete messages not yet delivered.
        await self._store.delete_messages(user_id, device_id, min(up_to_pos, self._stream.current))

    async def delete_device_queues(self, user_id: str, device_ids: list[str] | None = None) -> None:
        """Drop the pending messages of removed devices (None: every device the user no longer has)."""
        await self._store.delete_device_queues(user_id, device_ids)


def parse_messages(body: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """to_device.yaml ``messages``: {user_id: {device_id or "*": content object}}."""
    if not isinstance(body, dict) or "messages" not in body:
        raise missing_param("Missing 'messages'")
    messages = body["messages"]
    if not isinstance(messages, dict):
        raise bad_json("'messages' must be an object")
    for user_id, by_device in messages.items():
        if not UserID.is_valid(user_id):
            raise invalid_param(f"Invalid user ID in 'messages': {user_id!r}")
        if not isinstance(by_device, dict):
            raise bad_json(f"'messages.{user_id}' must be an object of device IDs")
        for device_id, content in by_device.items():
            if not device_id:
                raise invalid_param("Device IDs in 'messages' must not be empty")
            if not isinstance(content, dict):
                raise bad_json(f"The message for {user_id} / {device_id} must be an object")
    return messages
