"""Serialising batches of events for clients, with one fetch for what they refer to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.events.client_format import format_client_event, needed_event_ids
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.storage.events import EventStore


class EventSerializer:
    """Turns events into client-format dicts (redactions applied, prev_content filled)."""

    def __init__(self, store: EventStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    async def serialize(
        self,
        events: Sequence[Event],
        viewer: tuple[str, str | None] | None = None,
        include_room_id: bool = True,
    ) -> list[dict[str, Any]]:
        related = await self._store.get_events(needed_event_ids(events)) if events else {}
        now = int(self._clock.seconds() * 1000)
        out = []
        for ev in events:
            redaction = related.get(ev.metadata.redacted_by) if ev.metadata.redacted_by else None
            if redaction is not None and (redaction.rejected or redaction.metadata.soft_failed):
                redaction = None
            prev = related.get(ev.metadata.replaces_state) if ev.metadata.replaces_state else None
            out.append(
                format_client_event(
                    ev,
                    now,
                    include_room_id=include_room_id,
                    viewer=viewer,
                    redacted_because=redaction,
                    prev_content=_content_as_seen(prev) if prev is not None else None,
                    prev_sender=prev.sender if prev is not None else None,
                )
            )
        return out

    def federation_format(self, event: Event) -> dict[str, Any]:
        """filter.yaml ``event_format: federation``: the PDU as sent over federation (redacted if
        it was), with its ``event_id`` and ``unsigned.age`` as Synapse adds them."""
        pdu = event.get_pdu_json()
        if event.metadata.redacted_by:
            pdu = redact_pdu(pdu, event.room_version)
        pdu["event_id"] = event.event_id
        unsigned = dict(pdu.get("unsigned") or {})
        unsigned["age"] = int(self._clock.seconds() * 1000) - int(pdu.get("origin_server_ts", 0))
        pdu["unsigned"] = unsigned
        return pdu

    async def serialize_one(self, event: Event, viewer: tuple[str, str | None] | None = None) -> dict[str, Any]:
        return (await self.serialize([event], viewer))[0]


def _content_as_seen(event: Event) -> dict[str, Any]:
    """An event's content as clients see it: pruned if the event was redacted."""
    if event.metadata.redacted_by:
        return redact_pdu(event.get_pdu_json(), event.room_version).get("content", {})
    return event.content
