"""Serialising batches of events for clients, with one fetch for what they refer to.

The part of an event's client format that is the same for every reader (all but
``unsigned``) is kept in memory, encoded, for the events served lately: a page of
/messages is then mostly assembled from JSON already encoded
(:meth:`EventSerializer.serialize_encoded`). ``unsigned`` changes with the reader and
the time (``age``, ``transaction_id``, ``m.relations``, ``prev_content``,
``redacted_because``) and is made on each request. A kept entry is for the event object
the event store handed out and for whether it was redacted then: the store updates
its object when the event is redacted, so a redaction is never served from memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from twisted.internet.interfaces import IReactorTime

from mxserver.crypto.canonical import encode_json
from mxserver.events.client_format import client_fields, client_unsigned, needed_event_ids
from mxserver.events.model import Event
from mxserver.events.redaction import redact_pdu
from mxserver.events.relations import REFERENCE, REPLACE, THREAD, Bundle
from mxserver.storage.events import EventStore

#: the separator between a kept event's fields and its unsigned part, and the end of the event
_UNSIGNED = b',"unsigned":'
_END = b"}"


class _Fields:
    """An event's client format less ``unsigned``, as a dict and (once asked) encoded."""

    __slots__ = ("event", "redacted", "fields", "_encoded")

    def __init__(self, event: Event, redacted: bool, fields: dict[str, Any]) -> None:
        self.event = event
        self.redacted = redacted
        self.fields = fields
        self._encoded: bytes | None = None

    @property
    def encoded(self) -> bytes:
        """The fields' JSON object without its closing brace (never empty: event_id is in it)."""
        if self._encoded is None:
            self._encoded = encode_json(self.fields)[:-1]
        return self._encoded


class EventSerializer:
    """Turns events into client-format dicts (redactions applied, prev_content filled, bundled
    aggregations attached when the caller computed them)."""

    #: events whose reader-independent client format is kept (a little more than the event
    #: store keeps: an entry is only used for the event object it was made from)
    CACHE_SIZE = 4_000

    def __init__(self, store: EventStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._fields: OrderedDict[tuple[str, bool], _Fields] = OrderedDict()

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
        return await self._serialize(events, viewer, include_room_id, bundles, encoded=False)

    async def serialize_encoded(
        self,
        events: Sequence[Event],
        viewer: tuple[str, str | None] | None = None,
        include_room_id: bool = True,
        bundles: Mapping[str, Bundle] | None = None,
    ) -> list[orjson.Fragment]:
        """As :meth:`serialize`, each event as its encoded JSON, for an answer that is rendered
        as it is (:func:`~mxserver.crypto.canonical.encode_json` embeds them)."""
        return await self._serialize(events, viewer, include_room_id, bundles, encoded=True)

    async def _serialize(
        self,
        events: Sequence[Event],
        viewer: tuple[str, str | None] | None,
        include_room_id: bool,
        bundles: Mapping[str, Bundle] | None,
        encoded: bool,
    ) -> list[Any]:
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
        wanted = needed_event_ids([*events, *shown])
        related = await self._store.get_events(wanted) if wanted else {}
        now = int(self._clock.seconds() * 1000)
        fields_of = self._fields_of

        def assemble(fields: _Fields, unsigned: dict[str, Any]) -> Any:
            if encoded:
                return orjson.Fragment(b"".join((fields.encoded, _UNSIGNED, encode_json(unsigned), _END)))
            out = dict(fields.fields)
            out["unsigned"] = unsigned
            return out

        def unsigned_of(ev: Event) -> tuple[dict[str, Any], bool]:
            """``(unsigned, whether the event is served redacted)``."""
            meta = ev.metadata
            if meta.redacted_by is None and meta.replaces_state is None:
                return client_unsigned(ev, now, viewer=viewer), False  # most events
            redaction = related.get(meta.redacted_by) if meta.redacted_by else None
            if redaction is not None and (redaction.rejected or redaction.metadata.soft_failed):
                redaction = None
            because = None
            if redaction is not None:
                # the redaction as anyone sees it: no transaction ID, nothing of its own redaction
                because = assemble(fields_of(redaction, False, include_room_id), client_unsigned(redaction, now))
            prev = related.get(meta.replaces_state) if meta.replaces_state else None
            unsigned = client_unsigned(
                ev,
                now,
                viewer=viewer,
                redacted_because=because,
                redacted_by=redaction.event_id if redaction is not None else None,
                prev_content=_content_as_seen(prev) if prev is not None else None,
                prev_sender=prev.sender if prev is not None else None,
            )
            return unsigned, redaction is not None

        def fmt(ev: Event, bundle: Bundle | None, nested: bool = False) -> Any:
            unsigned, redacted = unsigned_of(ev)
            if bundle and not ev.is_state():
                # §Aggregations of child events: "State events do not currently receive bundled
                # aggregations"
                unsigned["m.relations"] = relations_json(bundle, nested)
            return assemble(fields_of(ev, redacted, include_room_id), unsigned)

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

    def _fields_of(self, event: Event, redacted: bool, include_room_id: bool) -> _Fields:
        """The reader-independent client format of ``event`` (kept, or made and kept)."""
        key = (event.event_id, include_room_id)
        cache = self._fields
        kept = cache.get(key)
        if kept is not None and kept.event is event and kept.redacted == redacted:
            cache.move_to_end(key)
            return kept
        kept = _Fields(event, redacted, client_fields(event, include_room_id=include_room_id, redacted=redacted))
        cache[key] = kept
        cache.move_to_end(key)
        if len(cache) > self.CACHE_SIZE:
            cache.popitem(last=False)
        return kept

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
