"""``GET /_matrix/client/v3/notifications`` (notifications.yaml): the user's notifications,
newest first, as the push reader recorded them.

``from``/``next_token`` is the stream position of the last notification returned: the
next page holds older ones. ``read`` follows the user's read receipts, as unread counts do.
Rooms have no push-rule profiles here, so ``profile_tag`` is always null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from mxserver.errors import invalid_param
from mxserver.events.model import Event
from mxserver.storage.pushers import PusherStore

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class EventSource(Protocol):
    async def get_events(self, event_ids: Iterable[str], include_rejected: bool = True) -> dict[str, Event]: ...


class Serializer(Protocol):
    async def serialize(
        self, events: Any, viewer: tuple[str, str | None] | None = None, include_room_id: bool = True
    ) -> list[dict[str, Any]]: ...


class NotificationList:
    def __init__(self, store: PusherStore, events: EventSource, serializer: Serializer) -> None:
        self._store = store
        self._events = events
        self._serializer = serializer

    async def notifications(
        self, user_id: str, device_id: str | None, from_token: str | None, limit: int | None, only: str | None
    ) -> dict[str, Any]:
        before: int | None = None
        if from_token is not None:
            if not from_token.isdigit() or len(from_token) > 18:
                raise invalid_param("'from' is not a token this server gave out")
            before = int(from_token)
        limit = DEFAULT_LIMIT if limit is None else max(1, min(limit, MAX_LIMIT))
        # notifications.yaml: only=highlight keeps highlighted notifications; other values filter nothing
        rows = await self._store.notifications(user_id, before, limit, only == "highlight")
        found = await self._events.get_events([r.event_id for r in rows], include_rejected=False)
        present = [r for r in rows if r.event_id in found]
        formatted = await self._serializer.serialize([found[r.event_id] for r in present], viewer=(user_id, device_id))
        out: dict[str, Any] = {
            "notifications": [
                {
                    "actions": r.actions,
                    "event": event,
                    "profile_tag": None,
                    "read": r.read,
                    "room_id": r.room_id,
                    "ts": r.ts,
                }
                for r, event in zip(present, formatted, strict=True)
            ]
        }
        if len(rows) == limit:
            out["next_token"] = str(rows[-1].stream_ordering)
        return out
