"""The frozen event model: a PDU as received or built, plus its room version.

An :class:`Event` wraps the PDU dict exactly as it is signed and hashed. It is
never mutated after construction; redaction produces a new :class:`Event`.
Server-side facts about an event (rejection, soft failure, stream position)
live in :class:`EventMetadata`, which is not part of the signed PDU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from mxserver.events.versions import EventFormat, RedactionRules, RoomVersion

#: between a reused transaction ID and the endpoint that scopes it (see the messages handler)
TXN_SCOPE_SEPARATOR = "\x1f"


def client_txn_id(stored: str) -> str:
    """The transaction ID the client sent, of the key an event's transaction is stored under."""
    return stored.split(TXN_SCOPE_SEPARATOR, 1)[0]


@attrs.define
class EventMetadata:
    """What this server knows about an event that is not in the PDU."""

    #: stream position once persisted (room event stream), else None
    stream_ordering: int | None = None
    #: why the event was rejected by auth or format checks, else None
    rejected_reason: str | None = None
    #: passed auth against its auth events, failed against current state
    soft_failed: bool = False
    #: an event whose state/position in the DAG we do not know (e.g. from send_join auth chain)
    outlier: bool = False
    #: the client transaction that produced it (local events only)
    txn_id: str | None = None
    device_id: str | None = None
    #: the event that redacted this one, if any
    redacted_by: str | None = None
    #: the state event this one replaced in the room state (gives clients prev_content)
    replaces_state: str | None = None
    #: state snapshots (storage nids) before and after the event, once persisted
    state_before: int | None = None
    state_after: int | None = None


class Event:
    """An immutable room event (PDU) of a known room version."""

    __slots__ = ("_pdu", "room_version", "_event_id", "metadata")

    def __init__(
        self,
        pdu: Mapping[str, Any],
        room_version: RoomVersion,
        event_id: str | None = None,
        metadata: EventMetadata | None = None,
    ) -> None:
        self._pdu = dict(pdu)
        self.room_version = room_version
        if room_version.event_format is EventFormat.V1:
            event_id = self._pdu.get("event_id", event_id)
        self._event_id = event_id
        self.metadata = metadata if metadata is not None else EventMetadata()

    # -- identity ---------------------------------------------------------

    @property
    def event_id(self) -> str:
        if self._event_id is None:
            # Imported here: crypto depends on this module's types.
            from mxserver.events.hashing import compute_event_id

            self._event_id = compute_event_id(self._pdu, self.room_version)
        return self._event_id

    @property
    def room_id(self) -> str:
        rid = self._pdu.get("room_id")
        if rid is None and self.type == "m.room.create" and not self.room_version.create_event_has_room_id:
            # v12: the room ID is the create event's ID with the "!" sigil.
            return "!" + self.event_id[1:]
        return rid  # type: ignore[return-value]

    # -- fields -----------------------------------------------------------

    @property
    def type(self) -> str:
        return self._pdu["type"]

    @property
    def state_key(self) -> str | None:
        return self._pdu.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self._pdu

    @property
    def sender(self) -> str:
        return self._pdu["sender"]

    @property
    def content(self) -> dict[str, Any]:
        return self._pdu.get("content", {})

    @property
    def depth(self) -> int:
        return self._pdu.get("depth", 0)

    @property
    def origin_server_ts(self) -> int:
        return self._pdu.get("origin_server_ts", 0)

    @property
    def redacts(self) -> str | None:
        """The event a redaction targets, wherever this room version keeps it.

        rooms/v11 §Moving the redacts property: from v11 it lives only in
        ``content``; a top-level ``redacts`` there is not part of the format
        and must not be honoured. Before v11 it is top-level only.
        """
        if self.type != "m.room.redaction":
            return None
        if self.room_version.redaction is RedactionRules.V11:
            value = self.content.get("redacts")
        else:
            value = self._pdu.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def unsigned(self) -> dict[str, Any]:
        return self._pdu.get("unsigned", {})

    @property
    def hashes(self) -> dict[str, str]:
        return self._pdu.get("hashes", {})

    @property
    def signatures(self) -> dict[str, dict[str, str]]:
        return self._pdu.get("signatures", {})

    @property
    def origin(self) -> str | None:
        return self._pdu.get("origin")

    @property
    def membership(self) -> str | None:
        if self.type != "m.room.member":
            return None
        return self.content.get("membership")

    @property
    def prev_event_ids(self) -> Sequence[str]:
        return _ids(self._pdu.get("prev_events", []))

    @property
    def auth_event_ids(self) -> Sequence[str]:
        return _ids(self._pdu.get("auth_events", []))

    def state_tuple(self) -> tuple[str, str]:
        """``(type, state_key)``; only meaningful for state events."""
        return (self.type, self._pdu["state_key"])

    # -- representations --------------------------------------------------

    def add_signature(self, server_name: str, key_id: str, signature: str) -> None:
        """Add one signature, keeping the others (a Policy Server's: server-server-api §Validating
        Policy Server signatures). Signatures are not part of the event ID."""
        signatures = {k: dict(v) for k, v in self.signatures.items()}
        signatures.setdefault(server_name, {})[key_id] = signature
        self._pdu["signatures"] = signatures

    def get_pdu_json(self) -> dict[str, Any]:
        """The PDU as signed and sent over federation (a copy)."""
        return dict(self._pdu)

    def get(self, key: str, default: Any = None) -> Any:
        return self._pdu.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self._pdu

    @property
    def rejected(self) -> bool:
        return self.metadata.rejected_reason is not None

    def __repr__(self) -> str:
        return f"<Event {self._event_id or '?'} {self.type} {self.state_key!r} from {self.get('sender')}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)


def _ids(refs: Sequence[Any]) -> list[str]:
    # v1/v2 PDUs reference events as [event_id, {hashes}] pairs; later versions as bare IDs.
    return [r[0] if isinstance(r, (list, tuple)) else r for r in refs]
