"""Events as clients see them (client-server-api §Room Event Format).

The PDU's federation-only keys (``auth_events``, ``prev_events``, ``hashes``,
``signatures``, ``depth``...) are dropped; ``unsigned`` carries ``age``,
``prev_content``, ``redacted_because`` and, for the sending device only,
``transaction_id``. Redacted events show their redacted content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu

_CLIENT_KEYS = ("content", "event_id", "origin_server_ts", "room_id", "sender", "state_key", "type")


def format_client_event(
    event: Event,
    now_ms: int,
    *,
    include_room_id: bool = True,
    viewer: tuple[str, str | None] | None = None,
    redacted_because: Event | None = None,
    prev_content: Mapping[str, Any] | None = None,
    prev_sender: str | None = None,
) -> dict[str, Any]:
    """The client-format dict of ``event``.

    ``viewer`` is ``(user_id, device_id)`` of the reader: ``transaction_id``
    is added only for the device that sent the event.
    """
    out = client_fields(event, include_room_id=include_room_id, redacted=redacted_because is not None)
    because = (
        format_client_event(redacted_because, now_ms, include_room_id=include_room_id)
        if redacted_because is not None
        else None
    )
    out["unsigned"] = client_unsigned(
        event,
        now_ms,
        viewer=viewer,
        redacted_because=because,
        redacted_by=redacted_because.event_id if redacted_because is not None else None,
        prev_content=prev_content,
        prev_sender=prev_sender,
    )
    return out


def client_fields(event: Event, *, include_room_id: bool = True, redacted: bool = False) -> dict[str, Any]:
    """The client format of ``event`` but for its ``unsigned`` part: the same for every reader
    and request, as long as the event is not redacted (``redacted``: it is)."""
    pdu = event.get_pdu_json()
    if redacted:
        pdu = redact_pdu(pdu, event.room_version)
    out: dict[str, Any] = {"event_id": event.event_id, "type": pdu["type"], "sender": pdu["sender"]}
    out["content"] = pdu.get("content", {})
    out["origin_server_ts"] = pdu.get("origin_server_ts", 0)
    if include_room_id:
        out["room_id"] = event.room_id
    if "state_key" in pdu:
        out["state_key"] = pdu["state_key"]
    if event.type == "m.room.redaction" and event.redacts:
        # Clients read "redacts" at the top level in older rooms and in content from v11; give both.
        out["redacts"] = event.redacts
    return out


def client_unsigned(
    event: Event,
    now_ms: int,
    *,
    viewer: tuple[str, str | None] | None = None,
    redacted_because: Any = None,
    redacted_by: str | None = None,
    prev_content: Mapping[str, Any] | None = None,
    prev_sender: str | None = None,
) -> dict[str, Any]:
    """The ``unsigned`` part of ``event`` in client format, which changes with the reader and
    the time: ``redacted_because`` is the redaction already in client format (a dict, or its
    encoded JSON), ``redacted_by`` its ID."""
    unsigned: dict[str, Any] = {}
    ts = event.get("origin_server_ts")
    if isinstance(ts, int):
        unsigned["age"] = max(0, now_ms - ts)
    meta = event.metadata
    if viewer is not None and meta.txn_id is not None and viewer[0] == event.sender and viewer[1] == meta.device_id:
        unsigned["transaction_id"] = meta.txn_id
    if prev_content is not None:
        unsigned["prev_content"] = dict(prev_content)
        if prev_sender is not None:
            unsigned["prev_sender"] = prev_sender
        if meta.replaces_state is not None:
            unsigned["replaces_state"] = meta.replaces_state
    if redacted_because is not None:
        unsigned["redacted_because"] = redacted_because
        # Not in the spec (redacted_because is): Synapse also names the redaction here, and
        # clients and SyTest ("Can receive redactions from regular users over federation in
        # room version N") read it.
        unsigned["redacted_by"] = redacted_by
    return unsigned


def needed_event_ids(events: Iterable[Event]) -> set[str]:
    """Events a batch of client events refers to (redactions, replaced state) for one fetch."""
    ids: set[str] = set()
    for ev in events:
        if ev.metadata.redacted_by:
            ids.add(ev.metadata.redacted_by)
        if ev.metadata.replaces_state:
            ids.add(ev.metadata.replaces_state)
    return ids
