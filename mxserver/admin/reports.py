"""The admin API's event reports: listing, reading and deleting what users reported
(``/_synapse/admin/v1/event_reports``, Synapse's shapes). The client reporting endpoints
store the reports (:mod:`mxserver.room_handlers.reports`)."""

from __future__ import annotations

from typing import Any

from mxserver.errors import not_found
from mxserver.rooms.api import ClientRooms
from mxserver.storage.events import EventStore
from mxserver.storage.reports import EventReport, ReportsStore


class AdminReportsHandler:
    """What the event report servlets answer."""

    def __init__(self, store: ReportsStore, room_server: ClientRooms, events: EventStore) -> None:
        self.store = store
        self.room_server = room_server
        self.events = events

    async def _room_names(self, room_id: str | None) -> tuple[str | None, str | None]:
        """The room's current name and canonical alias (None each when unset or the room is gone)."""
        if room_id is None or await self.room_server.get_room(room_id) is None:
            return None, None
        state = await self.room_server.current_state_events(
            room_id, [("m.room.name", ""), ("m.room.canonical_alias", "")]
        )
        name_event, alias_event = state.get(("m.room.name", "")), state.get(("m.room.canonical_alias", ""))
        name = name_event.content.get("name") if name_event is not None else None
        alias = alias_event.content.get("alias") if alias_event is not None else None
        return (name if isinstance(name, str) else None, alias if isinstance(alias, str) else None)

    async def _format(self, entry: EventReport) -> dict[str, Any]:
        report = entry.report
        name, alias = await self._room_names(report.room_id)
        return {
            "id": report.report_id,
            "received_ts": report.received_ts,
            "room_id": report.room_id,
            "name": name,
            "event_id": report.event_id,
            "user_id": report.reporter,
            "reason": report.reason,
            "score": report.score,
            "sender": entry.sender,
            "canonical_alias": alias,
        }

    async def list_reports(
        self,
        start: int,
        limit: int,
        newest_first: bool,
        room_id: str | None,
        user_id: str | None,
        sender: str | None,
    ) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/event_reports``: one page, ``next_token`` while more follow."""
        page, total = await self.store.event_reports(start, limit, newest_first, room_id, user_id, sender)
        out: dict[str, Any] = {"event_reports": [await self._format(r) for r in page], "total": total}
        if start + len(page) < total and page:
            out["next_token"] = start + len(page)
        return out

    async def get_report(self, report_id: int) -> dict[str, Any]:
        """``GET /_synapse/admin/v1/event_reports/{reportId}``: with the reported event's PDU
        (``event_json``; null if the event is no longer stored, e.g. purged)."""
        entry = await self.store.get_event_report(report_id)
        if entry is None:
            raise not_found("Event report not found")
        out = await self._format(entry)
        event = await self.events.get_event(entry.report.event_id) if entry.report.event_id else None
        out["event_json"] = event.get_pdu_json() if event is not None else None
        return out

    async def delete_report(self, report_id: int) -> None:
        """``DELETE /_synapse/admin/v1/event_reports/{reportId}``."""
        if not await self.store.delete_event_report(report_id):
            raise not_found("Event report not found")
