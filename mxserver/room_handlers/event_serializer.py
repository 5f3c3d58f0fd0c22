"""Serialising batches of events for clients, with one fetch for what they refer to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.events.client_format import format_client_event, needed_event_ids
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.relations import REFERENCE, REPLACE, THREAD, Bundle
from mxserver.storage.events import EventStore


class EventSerializer:
    """Turns events into client-format dicts (redactions applied, prev_content filled, bundled
    aggregations attached when the caller computed them)."""

    def __init__(self, store: EventStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    async def serialize(
        self,
        events: Sequence[Event],
        viewer: tuple[str, str | None] | None = None,
        include_room_id: bool = True,
        bundles: Mapping[str, Bundle] | None = None,
    ) -> list[dict[str, Any]]:
        """``events`` in client format; ``bundles`` (from
        :class:`~mxserver.room_handlers.aggregations.BundledAggregations`) become their
        ``unsigned["m.relations"]`` (client-server-api §Aggregations of child events)."""
        if not events:
            return []
        bundles = bundles or {}
        # the events the bundles show are formatted too: their redactions in the same fetch
        shown: list[Event] = []
        for ev in events:
            bundle = bundles.get(ev.event_id)
            if bundle is not None:
                shown += _bundled_events(bundle)
                if bundle.thread is not None and (inner := bundles.get(bundle.thread.latest.event_id)) is not None:
                    shown += _bundled_events(inner)
        related = await self._store.get_events(needed_event_ids([*events, *shown]))
        now = int(self._clock.seconds() * 1000)

        def fmt(ev: Event, bundle: Bundle | None, nested: bool = False) -> dict[str, Any]:
            redaction = related.get(ev.metadata.redacted_by) if ev.metadata.redacted_by else None
            if redaction is not None and (redaction.rejected or redaction.metadata.soft_failed):
                redaction = None
            prev = related.get(ev.metadata.replaces_state) if ev.metadata.replaces_state else None
            out = format_client_event(
                ev,
                now,
                include_room_id=include_room_id,
                viewer=viewer,
                redacted_because=redaction,
                prev_content=_content_as_seen(prev) if prev is not None else None,
                prev_sender=prev.sender if prev is not None else None,
            )
            if bundle and not ev.is_state():
                # §Aggregations of child events: "State events do not currently receive bundled
                # aggregations"
                out["unsigned"]["m.relations"] = relations_json(bundle, nested)
            return out

        def relations_json(bundle: Bundle, nested: bool) -> dict[str, Any]:
            rel: dict[str, Any] = {}
            thread = bundle.thread
            if thread is not None and not nested:
                latest = thread.latest
                rel[THREAD] = {
                    # threading.md: "serialized in the same form as the event itself", with its
                    # own aggregations (not its threads: see BundledAggregations.bundles)
                    "latest_event": fmt(latest, bundles.get(latest.event_id), nested=True),
                    "count": thread.count,
                    "current_user_participated": thread.participated,
                }
            if bundle.replace is not None:
                # event_replacements.md: the most recent valid replacement, "formatted as normal"
                rel[REPLACE] = fmt(bundle.replace, None)
            if bundle.references:
                rel[REFERENCE] = {"chunk": [{"event_id": e} for e in bundle.references]}
            return rel

        return [fmt(ev, bundles.get(ev.event_id)) for ev in events]

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

    async def serialize_one(
        self,
        event: Event,
        viewer: tuple[str, str | None] | None = None,
        bundles: Mapping[str, Bundle] | None = None,
    ) -> dict[str, Any]:
        return (await self.serialize([event], viewer, bundles=bundles))[0]


def _bundled_events(bundle: Bundle) -> list[Event]:
    out = [bundle.thread.latest] if bundle.thread is not None else []
    if bundle.replace is not None:
        out.append(bundle.replace)
    return out


def _content_as_seen(event: Event) -> dict[str, Any]:
    """An event's content as clients see it: pruned if the event was redacted."""
    if event.metadata.redacted_by:
        return redact_pdu(event.get_pdu_json(), event.room_version).get("content", {})
    return event.content
