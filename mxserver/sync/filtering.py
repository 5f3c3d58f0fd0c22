"""Filters (client-server-api §Filtering, filter.yaml, definitions/*filter.yaml).

A :class:`Filter` is parsed and validated once from the JSON a client
uploaded (``POST /user/{userId}/filter``) or passed inline (``?filter={...}``)
and then only answers questions: which rooms, which events, how many, which
fields. Unknown keys are ignored; a known key of the wrong type is
``M_BAD_JSON``, a wrong value (``limit`` < 1, a room ID without ``!``)
``M_INVALID_PARAM``. JSON ``null`` counts as absent.

Matching works on :class:`mxserver.events.model.Event` objects and on
event dicts (client or federation format) alike.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from mxserver.crypto.canonical import decode_json
from mxserver.errors import MatrixError, bad_json, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.storage.filters import FilterStore

T = TypeVar("T")

#: filter.yaml: "Servers should apply a default value, and impose a maximum value"
DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000

EVENT_FORMATS = ("client", "federation")


# -- wildcards and dotted paths ------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    # event_filter.yaml: "A * can be used as a wildcard to match any sequence of characters."
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def type_matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` matches a filter type (``*`` matches any sequence)."""
    if "*" not in pattern:
        return pattern == event_type
    return _glob(pattern).fullmatch(event_type) is not None


def split_dotted_path(path: str) -> list[str]:
    """appendices §Dot-separated property paths: ``content.m\\.relates_to`` -> ["content", "m.relates_to"].

    ``\\.`` is a literal dot and ``\\\\`` a literal backslash; any other
    backslash is kept as it is.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _has_type(event: Any) -> bool:
    """What an empty filter asks of an event: a type (a stored event always has one)."""
    return isinstance(event, Event) or isinstance(event, str) or isinstance(_field(event, "type"), str)


def _field(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


# -- validation helpers ------------------------------------------------------------------------


def _opt(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], what: str, where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise bad_json(f"filter '{where}{key}' must be {what}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _str_list(obj: Mapping[str, Any], key: str, where: str, sigil: str | None = None) -> tuple[str, ...] | None:
    value = _opt(obj, key, list, "an array of strings", where)
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value):
        raise bad_json(f"filter '{where}{key}' must be an array of strings")
    if sigil is not None:
        for v in value:
            if not v.startswith(sigil):
                raise invalid_param(f"filter '{where}{key}' entries must start with '{sigil}': {v!r}")
    return tuple(value)


def _object(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _opt(obj, key, dict, "an object", where)
    return value if value is not None else {}


# -- the filters --------------------------------------------------------------------------------


class EventFilter:
    """event_filter.yaml: ``limit``, ``types``/``not_types`` (with ``*``), ``senders``/``not_senders``.

    An absent include list includes everything; an empty one includes
    nothing; an exclude list wins over the include list.
    """

    def __init__(self, obj: Mapping[str, Any] | None = None, where: str = "", default_limit: int | None = None):
        obj = obj or {}
        limit = _opt(obj, "limit", int, "an integer", where)
        if limit is not None and limit < 1:
            raise invalid_param(f"filter '{where}limit' must be an integer greater than 0")
        #: the number of events wanted (capped at MAX_LIMIT), or the default (None: no limit asked)
        self.limit: int | None = min(limit, MAX_LIMIT) if limit is not None else default_limit
        self.types = _str_list(obj, "types", where)
        self.not_types = _str_list(obj, "not_types", where) or ()
        self.senders = _str_list(obj, "senders", where, "@")
        self.not_senders = frozenset(_str_list(obj, "not_senders", where, "@") or ())
        self._senders_set = frozenset(self.senders) if self.senders is not None else None
        #: no condition at all (most /messages and /sync timelines): every event passes
        self._matches_all = self.types is None and not self.not_types and self.senders is None and not self.not_senders

    def matches_type(self, event_type: str) -> bool:
        """Whether the type passes ``types``/``not_types``."""
        if any(type_matches(p, event_type) for p in self.not_types):
            return False
        return self.types is None or any(type_matches(p, event_type) for p in self.types)

    def matches_sender(self, sender: str | None) -> bool:
        """Whether the sender passes ``senders``/``not_senders`` (an event without one always does)."""
        if sender is None:
            return True
        if sender in self.not_senders:
            return False
        return self._senders_set is None or sender in self._senders_set

    def matches(self, event: Any) -> bool:
        """Whether an event (Event, event dict, or a bare type string) passes this filter."""
        if isinstance(event, str):
            return self.matches_type(event)
        event_type = _field(event, "type")
        if not isinstance(event_type, str) or not self.matches_type(event_type):
            return False
        return self.matches_sender(_field(event, "sender"))

    def filter_events(self, events: Iterable[T]) -> list[T]:
        """The matching events, in order (``limit`` is the caller's to apply)."""
        if self._matches_all:
            return [e for e in events if _has_type(e)]
        return [e for e in events if self.matches(e)]

    @property
    def allows_nothing(self) -> bool:
        """Whether no event can match (``types: []``): callers may skip the work."""
        return self.types == ()


class RoomEventFilter(EventFilter):
    """room_event_filter.yaml: an EventFilter plus rooms, ``contains_url`` and lazy-loading flags."""

    def __init__(self, obj: Mapping[str, Any] | None = None, where: str = "", default_limit: int | None = None):
        obj = obj or {}
        super().__init__(obj, where, default_limit)
        rooms = _str_list(obj, "rooms", where, "!")
        self.rooms = frozenset(rooms) if rooms is not None else None
        self.not_rooms = frozenset(_str_list(obj, "not_rooms", where, "!") or ())
        self.contains_url: bool | None = _opt(obj, "contains_url", bool, "a boolean", where)
        self.lazy_load_members = bool(_opt(obj, "lazy_load_members", bool, "a boolean", where))
        self.include_redundant_members = bool(_opt(obj, "include_redundant_members", bool, "a boolean", where))
        self.unread_thread_notifications = bool(_opt(obj, "unread_thread_notifications", bool, "a boolean", where))
        self._matches_all = (
            self._matches_all and self.rooms is None and not self.not_rooms and self.contains_url is None
        )

    @classmethod
    def from_json(cls, value: Any, default_limit: int | None = None) -> RoomEventFilter:
        """A RoomEventFilter from a JSON value (``/messages`` and ``/context``'s ``filter``)."""
        if not isinstance(value, dict):
            raise bad_json("filter must be a JSON object")
        return cls(value, default_limit=default_limit)

    def room_allowed(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: Any, room_id: str | None = None) -> bool:
        """Whether an event passes; its room is ``room_id`` or the event's own ``room_id``, if any.

        Client-format events in /sync carry no ``room_id``: then the room
        lists are not checked here (use :meth:`room_allowed`).
        """
        if not super().matches(event):
            return False
        if isinstance(event, str):
            return True
        room = room_id if room_id is not None else _field(event, "room_id")
        if room is not None and not self.room_allowed(room):
            return False
        if self.contains_url is not None:
            content = _field(event, "content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def filter_events(self, events: Iterable[T], room_id: str | None = None) -> list[T]:
        if self._matches_all:
            return [e for e in events if _has_type(e)]
        return [e for e in events if self.matches(e, room_id)]

    @property
    def allows_nothing(self) -> bool:
        return super().allows_nothing or self.rooms == frozenset()

    @classmethod
    def from_query(cls, raw: str | None) -> RoomEventFilter:
        """The filter of a ``filter`` query parameter (JSON text), as /messages and /context take it."""
        if raw is None or raw == "":
            return cls()
        try:
            value = decode_json(raw)
        except ValueError:
            raise bad_json("'filter' is not valid JSON") from None
        return cls.from_json(value)

    def sql_conditions(self, type_column: str = "e.type", sender_column: str = "e.sender") -> tuple[str, list[Any]]:
        """``(" AND ...", args)`` narrowing a query to (a superset of) the matching events.

        Exact types and senders become ``IN``/``NOT IN``; wildcard types a
        ``LIKE`` (case-insensitive on SQLite, so only an inclusive
        pre-filter); :meth:`matches` gives the exact answer afterwards.
        """
        sql: list[str] = []
        args: list[Any] = []
        if self.types is not None and len(self.types) <= _MAX_SQL_TERMS:
            if not self.types:
                return " AND 1 = 0", []
            exact = [t for t in self.types if "*" not in t]
            likes = [t for t in self.types if "*" in t]
            terms = []
            if exact:
                terms.append(f"{type_column} IN ({','.join('?' * len(exact))})")
                args += exact
            for t in likes:
                terms.append(f"{type_column} LIKE ? ESCAPE '!'")
                args.append(_like(t))
            sql.append("(" + " OR ".join(terms) + ")")
        exact_not = [t for t in self.not_types if "*" not in t]
        if exact_not and len(exact_not) <= _MAX_SQL_TERMS:
            sql.append(f"{type_column} NOT IN ({','.join('?' * len(exact_not))})")
            args += exact_not
        if self.senders is not None and len(self.senders) <= _MAX_SQL_TERMS:
            if not self.senders:
                return " AND 1 = 0", []
            sql.append(f"{sender_column} IN ({','.join('?' * len(self.senders))})")
            args += sorted(self.senders)
        if self.not_senders and len(self.not_senders) <= _MAX_SQL_TERMS:
            sql.append(f"{sender_column} NOT IN ({','.join('?' * len(self.not_senders))})")
            args += sorted(self.not_senders)
        return "".join(" AND " + s for s in sql), args


#: more terms than this are not worth an SQL pre-filter (the Python check still applies)
_MAX_SQL_TERMS = 200


def _like(glob: str) -> str:
    escaped = glob.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%")


class Filter:
    """sync_filter.yaml: the whole filter a /sync (or another event-returning API) applies."""

    def __init__(self, obj: Mapping[str, Any] | None = None) -> None:
        obj = obj if obj is not None else {}
        if not isinstance(obj, Mapping):
            raise bad_json("filter must be a JSON object")
        #: the JSON it was parsed from (what GET /user/{userId}/filter/{filterId} returns)
        self.json: dict[str, Any] = dict(obj)
        self.event_fields = _str_list(obj, "event_fields", "")
        self._event_field_paths = [split_dotted_path(f) for f in self.event_fields] if self.event_fields else None
        event_format = _opt(obj, "event_format", str, "a string", "")
        if event_format is not None and event_format not in EVENT_FORMATS:
            raise invalid_param("filter 'event_format' must be 'client' or 'federation'")
        self.event_format: str = event_format or "client"
        self.presence = EventFilter(_object(obj, "presence", ""), "presence.")
        self.account_data = EventFilter(_object(obj, "account_data", ""), "account_data.")
        room = _object(obj, "room", "")
        rooms = _str_list(room, "rooms", "room.", "!")
        self.rooms = frozenset(rooms) if rooms is not None else None
        self.not_rooms = frozenset(_str_list(room, "not_rooms", "room.", "!") or ())
        self.include_leave = bool(_opt(room, "include_leave", bool, "a boolean", "room."))
        self.timeline = RoomEventFilter(_object(room, "timeline", "room."), "room.timeline.", DEFAULT_TIMELINE_LIMIT)
        self.state = RoomEventFilter(_object(room, "state", "room."), "room.state.")
        self.ephemeral = RoomEventFilter(_object(room, "ephemeral", "room."), "room.ephemeral.")
        self.room_account_data = RoomEventFilter(_object(room, "account_data", "room."), "room.account_data.")

    # -- rooms ---------------------------------------------------------------------------------

    def room_allowed(self, room_id: str) -> bool:
        """room.rooms / room.not_rooms, applied before the per-section filters."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    # -- lazy-loading (client-server-api §Lazy-loading room members) ------------------------------

    @property
    def lazy_load_members(self) -> bool:
        """Lazy-loading for /sync, enabled on the state filter (as clients send it) or the timeline's."""
        return self.state.lazy_load_members or self.timeline.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        """Only meaningful with :attr:`lazy_load_members`."""
        if not self.lazy_load_members:
            return False
        return self.state.include_redundant_members or self.timeline.include_redundant_members

    @property
    def unread_thread_notifications(self) -> bool:
        return self.timeline.unread_thread_notifications

    # -- event fields ------------------------------------------------------------------------

    def apply_event_fields(self, event: dict[str, Any]) -> dict[str, Any]:
        """Keep only ``event_fields`` (dotted paths) of a serialized event; all of it if unset."""
        if self._event_field_paths is None:
            return event
        out: dict[str, Any] = {}
        for path in self._event_field_paths:
            _copy_path(event, out, path)
        return out


def _copy_path(src: Mapping[str, Any], dst: dict[str, Any], path: Sequence[str]) -> None:
    value: Any = src
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return
        value = value[key]
    target = dst
    for key in path[:-1]:
        nxt = target.get(key)
        if not isinstance(nxt, dict):
            nxt = target[key] = {}
        target = nxt
    target[path[-1]] = copy.deepcopy(value)


DEFAULT_FILTER = Filter()


def parse_filter_json(raw: str) -> Filter:
    """A Filter from inline JSON text; M_BAD_JSON if it is not a JSON object."""
    try:
        value = decode_json(raw)
    except ValueError:
        raise bad_json("The filter is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_json("The filter must be a JSON object")
    return Filter(value)



def filter_hash(value: Mapping[str, Any]) -> str:
    """SHA-256 of a filter's JSON with sorted keys: identical uploads share one filter ID."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def load_filter(filters: FilterHandler, user_id: str, filter_param: str | None) -> Filter:
    """The filter of a ``filter`` query parameter: a filter ID of ``user_id`` or inline JSON.

    filter.yaml: an ID never starts with "{", so that marks inline JSON.
    No parameter gives the default filter. Raises M_NOT_FOUND for an unknown
    ID and M_BAD_JSON / M_INVALID_PARAM for invalid JSON.
    """
    if filter_param is None or filter_param == "":
        return DEFAULT_FILTER
    if filter_param.lstrip().startswith("{"):
        return parse_filter_json(filter_param)
    return await filters.get_filter(user_id, filter_param)


class FilterHandler:
    """Upload and fetch filters; parsed filters are cached (they never change)."""

    CACHE_SIZE = 10_000

    def __init__(self, store: FilterStore) -> None:
        self._store = store
        self._cache: dict[tuple[str, str], Filter] = {}

    async def create_filter(self, user_id: str, body: dict[str, Any]) -> str:
        """Validate and store a filter; returns its ID (an identical earlier upload's, if any)."""
        Filter(body)  # raises on invalid input
        return await self._store.add_filter(user_id, body, filter_hash(body))

    async def get_filter_json(self, user_id: str, filter_id: str) -> dict[str, Any]:
        """The filter as uploaded; M_NOT_FOUND if the user has no such filter."""
        body = await self._store.get_filter(user_id, filter_id)
        if body is None:
            raise not_found("Unknown filter")
        return body

    async def get_filter(self, user_id: str, filter_id: str) -> Filter:
        key = (user_id, filter_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        body = await self._store.get_filter(user_id, filter_id)
        if body is None:
            raise not_found("Unknown filter")
        try:
            parsed = Filter(body)
        except MatrixError:
            # Stored filters were valid when uploaded; a stricter later release must not break /sync.
            parsed = DEFAULT_FILTER
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = parsed
        return parsed
