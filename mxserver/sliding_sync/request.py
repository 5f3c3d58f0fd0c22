"""The sliding sync request: parsed and validated once, then immutable.

The wire format is the one Synapse 1.163 serves at
``/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`` (and Element X
speaks): ``lists`` with ``ranges``, ``required_state`` as ``[type, state_key]``
pairs with the ``*``, ``$LAZY`` and ``$ME`` markers, ``is_invite``. MSC4186's
later spellings that do not clash are accepted too (``range``, ``is_invited``,
``pos``/``timeout``/``set_presence`` in the body).

Every malformed field is a 400: ``M_BAD_JSON`` for a wrong type,
``M_MISSING_PARAM`` for a missing required field, ``M_INVALID_PARAM`` for a value
out of bounds (MSC4186 §Request body: more than 100 lists or subscriptions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mxserver.errors import bad_json, invalid_param, missing_param
from mxserver.ids import is_valid_room_id

MEMBER = "m.room.member"
WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"

#: MSC4186 §Request body: "Max lists: 100", "Max subscriptions: 100"
MAX_LISTS = 100
MAX_SUBSCRIPTIONS = 100
#: Synapse's bound on list keys
MAX_LIST_KEY_LENGTH = 64
#: Synapse's cap on ``timeline_limit``
MAX_TIMELINE_LIMIT = 1000
MAX_RANGES = 100
MAX_REQUIRED_STATE = 1000
MAX_CONN_ID_LENGTH = 255
#: send_to_device.md's recommended batch, Synapse's cap for the extension
MAX_TO_DEVICE_LIMIT = 100


@attrs.frozen
class RequiredState:
    """The ``required_state`` pairs of a room config (MSC3575 semantics, as Synapse reads them).

    ``["*", "*"]`` asks for all state; with ``["m.room.member", "$LAZY"]`` beside it, every
    state event except members, which are lazy-loaded (Synapse's documented example).
    ``$ME`` stands for the syncing user.
    """

    entries: frozenset[tuple[str, str]] = frozenset()

    @property
    def lazy_members(self) -> bool:
        return (MEMBER, LAZY) in self.entries

    @property
    def all_members(self) -> bool:
        """Whether every membership event is wanted (not lazily)."""
        e = self.entries
        return (MEMBER, WILDCARD) in e or ((WILDCARD, WILDCARD) in e and (MEMBER, LAZY) not in e)

    @property
    def everything(self) -> bool:
        return (WILDCARD, WILDCARD) in self.entries

    def matches(self, event_type: str, state_key: str, me: str) -> bool:
        """Whether the state event at (event_type, state_key) is wanted (lazy members aside)."""
        e = self.entries
        if not e:
            return False
        keys = (state_key, ME) if state_key == me else (state_key,)
        if event_type == MEMBER and self.lazy_members and not self.all_members:
            # Lazy-loaded members: only the ones named (or the user itself with $ME).
            return any((t, k) in e for t in (MEMBER, WILDCARD) for k in keys)
        return any((t, k) in e for t in (event_type, WILDCARD) for k in (*keys, WILDCARD))

    def covers(self, entry: tuple[str, str], me: str) -> bool:
        """Whether everything ``entry`` asks for is already asked for here."""
        event_type, state_key = entry
        if entry in self.entries:
            return True
        if state_key == LAZY:
            return event_type != MEMBER or self.lazy_members or self.all_members
        if event_type == WILDCARD or state_key == WILDCARD:
            wide = (WILDCARD, WILDCARD) in self.entries
            if event_type == MEMBER:
                return self.all_members
            return wide or (event_type != WILDCARD and (event_type, WILDCARD) in self.entries)
        return self.matches(event_type, me if state_key == ME else state_key, me)

    def expands(self, previous: RequiredState, me: str) -> bool:
        """Whether this asks for state ``previous`` did not (MSC4186 §Changes to required_state)."""
        return any(not previous.covers(entry, me) for entry in self.entries - previous.entries)

    def union(self, other: RequiredState) -> RequiredState:
        return RequiredState(self.entries | other.entries)

    def wants(self, me: str) -> StateWants:
        """What to read of a room's state for this config (lazy members aside)."""
        if self.everything and not self.lazy_members:
            return StateWants(everything=True)
        types: set[str] = set()
        exact: set[tuple[str, str]] = set()
        any_type: set[str] = set()
        for event_type, state_key in self.entries:
            if state_key == LAZY:
                continue
            key = me if state_key == ME else state_key
            if event_type == WILDCARD and key == WILDCARD:
                # all but lazily-loaded members: every type is read, members filtered after
                return StateWants(everything=True)
            if key == WILDCARD:
                types.add(event_type)
            elif event_type == WILDCARD:
                any_type.add(key)
            else:
                exact.add((event_type, key))
        return StateWants(False, frozenset(types), frozenset(exact), frozenset(any_type))

    def to_json(self) -> list[list[str]]:
        return [list(e) for e in sorted(self.entries)]

    @classmethod
    def from_json(cls, raw: Any) -> RequiredState:
        return cls(frozenset((str(t), str(k)) for t, k in raw))


@attrs.frozen
class StateWants:
    """Which state entries to read: all, or whole types, exact keys, and keys of any type."""

    everything: bool = False
    types: frozenset[str] = frozenset()
    exact: frozenset[tuple[str, str]] = frozenset()
    any_type_keys: frozenset[str] = frozenset()

    def with_keys(self, keys: frozenset[tuple[str, str]]) -> StateWants:
        return attrs.evolve(self, exact=self.exact | keys)

    @property
    def empty(self) -> bool:
        return not (self.everything or self.types or self.exact or self.any_type_keys)


@attrs.frozen
class RoomConfig:
    """What to send of a room (MSC4186 §Room results): its timeline length and state."""

    timeline_limit: int
    required_state: RequiredState

    def combine(self, other: RoomConfig) -> RoomConfig:
        """MSC4186 §Combining room configs: the superset of both."""
        return RoomConfig(
            max(self.timeline_limit, other.timeline_limit), self.required_state.union(other.required_state)
        )

    def to_json(self) -> dict[str, Any]:
        return {"tl": self.timeline_limit, "rs": self.required_state.to_json()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RoomConfig:
        return cls(int(raw["tl"]), RequiredState.from_json(raw["rs"]))


@attrs.frozen
class ListFilters:
    """MSC4186 §SlidingRoomFilter; None means "no filter on that"."""

    is_dm: bool | None = None
    spaces: tuple[str, ...] | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    room_name_like: str | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None

    @property
    def needs_traits(self) -> bool:
        return (
            self.is_encrypted is not None
            or self.room_types is not None
            or self.not_room_types is not None
            or self.room_name_like is not None
        )


@attrs.frozen
class ListConfig:
    config: RoomConfig
    #: inclusive [start, end] windows; None: the whole filtered list (MSC4186 ``range`` absent)
    ranges: tuple[tuple[int, int], ...] | None
    filters: ListFilters


@attrs.frozen
class ExtensionScope:
    """An extension's ``lists`` and ``rooms`` (``["*"]`` each by default, as Synapse)."""

    lists: tuple[str, ...] | None = ("*",)
    rooms: tuple[str, ...] | None = ("*",)


@attrs.frozen
class ToDeviceRequest:
    since: int | None = None
    limit: int = MAX_TO_DEVICE_LIMIT


@attrs.frozen
class ExtensionsRequest:
    """The enabled extensions (an extension absent or not ``enabled`` is None)."""

    to_device: ToDeviceRequest | None = None
    e2ee: bool = False
    account_data: ExtensionScope | None = None
    receipts: ExtensionScope | None = None
    typing: ExtensionScope | None = None


@attrs.frozen
class SlidingSyncRequest:
    conn_id: str = ""
    lists: Mapping[str, ListConfig] = attrs.Factory(dict)
    room_subscriptions: Mapping[str, RoomConfig] = attrs.Factory(dict)
    extensions: ExtensionsRequest = ExtensionsRequest()
    #: MSC4186 moved these from the query string into the body: either works
    pos: str | None = None
    timeout: int | None = None
    set_presence: str | None = None


# -- parsing -----------------------------------------------------------------------------------------


def parse_request(body: Mapping[str, Any]) -> SlidingSyncRequest:
    """The request body, validated (every bad field a 400 Matrix error)."""
    conn_id = _opt(body, "conn_id", str, "a string", "")
    if len(conn_id) > MAX_CONN_ID_LENGTH:
        raise invalid_param("'conn_id' is too long")

    lists_raw = _opt(body, "lists", dict, "an object", {})
    if len(lists_raw) > MAX_LISTS:
        raise invalid_param(f"Max lists: {MAX_LISTS} but saw {len(lists_raw)}")
    lists: dict[str, ListConfig] = {}
    for key, raw in lists_raw.items():
        if not key or len(key) > MAX_LIST_KEY_LENGTH:
            raise invalid_param(f"List keys must be 1 to {MAX_LIST_KEY_LENGTH} characters")
        lists[key] = _list_config(raw, f"lists.{key}")

    subs_raw = _opt(body, "room_subscriptions", dict, "an object", {})
    if len(subs_raw) > MAX_SUBSCRIPTIONS:
        raise invalid_param(f"Max subscriptions: {MAX_SUBSCRIPTIONS} but saw {len(subs_raw)}")
    subs: dict[str, RoomConfig] = {}
    for room_id, raw in subs_raw.items():
        if not is_valid_room_id(room_id):
            raise invalid_param(f"Invalid room ID in 'room_subscriptions': {room_id!r}")
        subs[room_id] = _room_config(_object(raw, f"room_subscriptions.{room_id}"), f"room_subscriptions.{room_id}")

    extensions = _extensions(_opt(body, "extensions", dict, "an object", {}))

    pos = _opt(body, "pos", str, "a string", None)
    timeout = _opt(body, "timeout", int, "an integer", None)
    if timeout is not None and timeout < 0:
        raise invalid_param("'timeout' must not be negative")
    set_presence = _opt(body, "set_presence", str, "a string", None)
    return SlidingSyncRequest(conn_id, lists, subs, extensions, pos, timeout, set_presence)


def _list_config(raw: Any, where: str) -> ListConfig:
    obj = _object(raw, where)
    config = _room_config(obj, where)
    ranges: tuple[tuple[int, int], ...] | None = None
    if obj.get("ranges") is not None:
        ranges_raw = obj["ranges"]
        if not isinstance(ranges_raw, list):
            raise bad_json(f"'{where}.ranges' must be an array of [start, end] pairs")
        if len(ranges_raw) > MAX_RANGES:
            raise invalid_param(f"'{where}.ranges' has more than {MAX_RANGES} ranges")
        ranges = tuple(_range(r, f"{where}.ranges") for r in ranges_raw)
    elif obj.get("range") is not None:
        ranges = (_range(obj["range"], f"{where}.range"),)
    filters = _filters(_opt(obj, "filters", dict, "an object", {}), f"{where}.filters")
    return ListConfig(config, ranges, filters)


def _range(raw: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
    ):
        raise bad_json(f"'{where}' must hold [start, end] pairs of integers")
    start, end = raw
    if start < 0 or end < 0:
        raise invalid_param(f"'{where}' must not be negative")
    if start > end:
        raise invalid_param(f"'{where}': start {start} is after end {end}")
    return start, end


def _room_config(obj: Mapping[str, Any], where: str) -> RoomConfig:
    if "timeline_limit" not in obj:
        raise missing_param(f"Missing '{where}.timeline_limit'")
    limit = obj["timeline_limit"]
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise bad_json(f"'{where}.timeline_limit' must be an integer")
    if not 0 <= limit <= MAX_TIMELINE_LIMIT:
        raise invalid_param(f"'{where}.timeline_limit' must be between 0 and {MAX_TIMELINE_LIMIT}")
    if "required_state" not in obj:
        raise missing_param(f"Missing '{where}.required_state'")
    return RoomConfig(limit, _required_state(obj["required_state"], f"{where}.required_state"))


def _required_state(raw: Any, where: str) -> RequiredState:
    if not isinstance(raw, list):
        raise bad_json(f"'{where}' must be an array of [type, state_key] pairs")
    if len(raw) > MAX_REQUIRED_STATE:
        raise invalid_param(f"'{where}' has more than {MAX_REQUIRED_STATE} entries")
    entries = set()
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) for v in pair):
            raise bad_json(f"'{where}' must be an array of [type, state_key] string pairs")
        entries.add((pair[0], pair[1]))
    return RequiredState(frozenset(entries))


def _filters(obj: Mapping[str, Any], where: str) -> ListFilters:
    is_invite = _opt(obj, "is_invite", bool, "a boolean", None, where)
    if is_invite is None:
        is_invite = _opt(obj, "is_invited", bool, "a boolean", None, where)
    spaces = _str_tuple(obj, "spaces", where)
    return ListFilters(
        is_dm=_opt(obj, "is_dm", bool, "a boolean", None, where),
        spaces=spaces,
        is_encrypted=_opt(obj, "is_encrypted", bool, "a boolean", None, where),
        is_invite=is_invite,
        room_types=_types_tuple(obj, "room_types", where),
        not_room_types=_types_tuple(obj, "not_room_types", where),
        room_name_like=_opt(obj, "room_name_like", str, "a string", None, where),
        tags=_str_tuple(obj, "tags", where),
        not_tags=_str_tuple(obj, "not_tags", where),
    )


def _extensions(obj: Mapping[str, Any]) -> ExtensionsRequest:
    # Unknown extensions are ignored (MSC3575: a newer client must work with an older server).
    def enabled(name: str) -> Mapping[str, Any] | None:
        raw = obj.get(name)
        if raw is None:
            return None
        ext = _object(raw, f"extensions.{name}")
        return ext if _opt(ext, "enabled", bool, "a boolean", False, f"extensions.{name}") else None

    to_device = None
    if (td := enabled("to_device")) is not None:
        since_raw = _opt(td, "since", str, "a string", None, "extensions.to_device")
        since = None
        if since_raw is not None:
            # Synapse's to-device `since` is its stream position, sent as a string.
            try:
                since = int(since_raw)
            except ValueError:
                raise invalid_param("'extensions.to_device.since' is not a to-device position") from None
            if since < 0:
                raise invalid_param("'extensions.to_device.since' must not be negative")
        limit = _opt(td, "limit", int, "an integer", MAX_TO_DEVICE_LIMIT, "extensions.to_device")
        if limit < 0:
            raise invalid_param("'extensions.to_device.limit' must not be negative")
        to_device = ToDeviceRequest(since, min(limit, MAX_TO_DEVICE_LIMIT))

    def scoped(name: str) -> ExtensionScope | None:
        ext = enabled(name)
        if ext is None:
            return None
        where = f"extensions.{name}"
        lists = _str_tuple(ext, "lists", where) if "lists" in ext else ("*",)
        rooms = _str_tuple(ext, "rooms", where) if "rooms" in ext else ("*",)
        return ExtensionScope(lists, rooms)

    return ExtensionsRequest(
        to_device=to_device,
        e2ee=enabled("e2ee") is not None,
        account_data=scoped("account_data"),
        receipts=scoped("receipts"),
        typing=scoped("typing"),
    )


# -- small typed readers ----------------------------------------------------------------------------------


def _object(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise bad_json(f"'{where}' must be an object")
    return raw


def _opt(obj: Mapping[str, Any], key: str, types: type, what: str, default: Any, where: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
        name = f"{where}.{key}" if where else key
        raise bad_json(f"'{name}' must be {what}")
    return value


def _str_tuple(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{where}.{key}' must be an array of strings")
    return tuple(value)


def _types_tuple(obj: Mapping[str, Any], key: str, where: str) -> tuple[str | None, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise bad_json(f"'{where}.{key}' must be an array of strings or nulls")
    return tuple(value)

