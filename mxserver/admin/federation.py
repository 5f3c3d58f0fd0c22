"""The admin API's federation destinations in Synapse's shape
(``/_synapse/admin/v1/federation/destinations``), read from the federation sender's state:
the same destinations mxserver's own view (``/_mxserver/admin/v1/federation/destinations``)
lists. Rooms per destination come from the sender's catch-up table: each room whose events
were queued for the destination, with the stream position of the latest one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxserver.errors import MatrixError, invalid_param, not_found
from mxserver.federation.sender import FederationSender
from mxserver.federation.sender_state import Destination
from mxserver.storage.federation_sender import FederationSenderStore


def destination_entry(dest: Destination) -> dict[str, Any]:
    """One destination as Synapse's admin API shows it (times in ms since the epoch)."""
    return {
        "destination": dest.name,
        # 0 when the last attempt succeeded (federation.md)
        "retry_last_ts": dest.retry_last_ts or 0,
        "retry_interval": dest.retry_interval,
        "failure_ts": dest.failure_ts,
        # null until a PDU was delivered
        "last_successful_stream_ordering": dest.last_stream or None,
    }


def _nullable(field: str) -> Callable[[dict[str, Any]], Any]:
    # Synapse's SQL order: NULLs last going forwards (as Postgres sorts them)
    return lambda d: (d[field] is None, d[field] or 0)


_ORDER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "destination": lambda d: d["destination"],
    "retry_last_ts": lambda d: d["retry_last_ts"],
    "retry_interval": lambda d: d["retry_interval"],
    "failure_ts": _nullable("failure_ts"),
    "last_successful_stream_ordering": _nullable("last_successful_stream_ordering"),
}
#: the values ``order_by`` accepts
ORDER_BY = frozenset(_ORDER)


class AdminFederationHandler:
    """What the federation destination servlets answer."""

    def __init__(self, sender: FederationSender, store: FederationSenderStore, server_name: str) -> None:
        self.sender = sender
        self.store = store
        self.server_name = server_name

    def list_destinations(
        self, start: int, limit: int, order_by: str, backwards: bool, name_filter: str | None
    ) -> dict[str, Any]:
        """``GET .../federation/destinations``: one page, ``next_token`` while more follow."""
        if order_by not in ORDER_BY:
            raise invalid_param(f"Unknown order_by '{order_by}'")
        entries = [destination_entry(d) for d in self.sender.destinations()]
        if name_filter:
            lowered = name_filter.lower()
            entries = [e for e in entries if lowered in e["destination"].lower()]
        entries.sort(key=lambda e: e["destination"])
        entries.sort(key=_ORDER[order_by], reverse=backwards)
        page = entries[start : start + limit]
        out: dict[str, Any] = {"destinations": page, "total": len(entries)}
        if start + limit < len(entries):
            out["next_token"] = str(start + limit)
        return out

    def _destination(self, name: str) -> Destination:
        dest = self.sender.destination(name)
        if dest is None:
            raise not_found("Unknown destination")
        return dest

    def get_destination(self, name: str) -> dict[str, Any]:
        """``GET .../federation/destinations/{destination}``."""
        return destination_entry(self._destination(name))

    async def destination_rooms(self, name: str, start: int, limit: int, backwards: bool) -> dict[str, Any]:
        """``GET .../federation/destinations/{destination}/rooms``."""
        self._destination(name)
        rooms, total = await self.store.destination_rooms(name, start, limit, backwards)
        out: dict[str, Any] = {
            "rooms": [{"room_id": room_id, "stream_ordering": position} for room_id, position in rooms],
            "total": total,
        }
        if start + len(rooms) < total and rooms:
            out["next_token"] = str(start + len(rooms))
        return out

    def reset_connection(self, name: str) -> None:
        """``POST .../federation/destinations/{destination}/reset_connection``: end the backoff
        and try again now (400 unless the destination is backing off)."""
        if name == self.server_name:
            raise invalid_param("This server is not a destination of its own")
        self._destination(name)
        if not self.sender.reset_backoff(name):
            raise MatrixError(400, "M_UNKNOWN", "The retry timing does not need to be reset for this destination")
