"""Account data (modules/account_data.md) and room tags (modules/tags.md), and their sync feed.

Global and per-room account data are opaque JSON objects per type, visible
only to their owner. Room tags are the room's ``m.tag`` account data. Push
rules are served as the global ``m.push_rules`` type but live in their own
tables (:mod:`mxserver.sync.push_rules`). Every change is a new position on
the persisted ``account_data`` stream and wakes the owner's ``/sync``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mxserver.batched_cache import BatchedCache
from mxserver.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from mxserver.ids import is_valid_room_id
from mxserver.storage.account_data import GLOBAL, TAG_TYPE, AccountDataStore
from mxserver.storage.stream_positions import PersistedStream
from mxserver.streams import AccountDataChange, Stream
from mxserver.sync.push_rules import PushRulesHandler

PUSH_RULES_TYPE = "m.push_rules"
FULLY_READ_TYPE = "m.fully_read"
IGNORED_USERS_TYPE = "m.ignored_user_list"
DIRECT_TYPE = "m.direct"

#: users whose ignore lists are kept in memory (every /sync reads the list)
IGNORED_CACHE_SIZE = 10_000

#: account_data.md §Server Behaviour: types the server manages; clients may read, not set, them
SERVER_MANAGED_TYPES = frozenset({FULLY_READ_TYPE, PUSH_RULES_TYPE})

#: account data types are used like event types: bounded so they fit an index
MAX_TYPE_BYTES = 255
#: tags.md: "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_BYTES = 255


def check_own_data(requester_user_id: str, user_id: str) -> None:
    """Users may only see and change their own account data, tags and filters."""
    if requester_user_id != user_id:
        raise forbidden("You may only access your own account data")


def check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"{room_id!r} is not a valid room ID")


def check_type(data_type: str) -> None:
    if not data_type:
        raise invalid_param("The account data type must not be empty")
    if len(data_type.encode("utf-8")) > MAX_TYPE_BYTES:
        raise invalid_param("The account data type is too long")


class AccountDataHandler:
    """Read and write account data and tags; what /sync sends of them."""

    def __init__(
        self, store: AccountDataStore, stream: PersistedStream, push_rules: PushRulesHandler, changes: Stream[AccountDataChange]
    ) -> None:
        self._store = store
        self._stream = stream
        self._push_rules = push_rules
        self._changes = changes
        #: user -> ignored user IDs; /sync asks on every request, set_account_data refreshes it
        self._ignored: BatchedCache[str, frozenset[str]] = BatchedCache(self._read_ignored, IGNORED_CACHE_SIZE)
        #: user -> DM room IDs (m.direct); sliding sync asks on every request, likewise refreshed
        self._direct: BatchedCache[str, frozenset[str]] = BatchedCache(self._read_direct, IGNORED_CACHE_SIZE)

    @property
    def current_position(self) -> int:
        """The ``account_data`` stream's current position (for sync tokens)."""
        return self._stream.current

    # -- account data ------------------------------------------------------------------

    async def get_account_data(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any]:
        """The content of one type, global (``room_id`` None) or for a room; M_NOT_FOUND if unset."""
        if room_id is None and data_type == PUSH_RULES_TYPE:
            # "Servers must allow clients to read the above event types as normal."
            return await self._push_rules.push_rules_content(user_id)
        content = await self._store.get(user_id, GLOBAL if room_id is None else room_id, data_type)
        if content is None:
            raise not_found("Room account data not found." if room_id is not None else "Account data not found.")
        return content

    async def set_account_data(
        self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any], *, from_client: bool = True
    ) -> int:
        """Store one type's content (global if ``room_id`` is None); returns the stream position.

        Clients (``from_client``) may not set the server-managed types; the
        server's own features (read markers for ``m.fully_read``) pass False.
        """
        check_type(data_type)
        if from_client and data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API.")
        if not isinstance(content, dict):
            raise bad_json("Account data content must be a JSON object")
        if data_type == PUSH_RULES_TYPE:
            raise MatrixError(405, "M_BAD_JSON", "Push rules are changed through the /pushrules API.")
        position = await self._store.set(user_id, GLOBAL if room_id is None else room_id, data_type, content)
        if room_id is None and data_type == IGNORED_USERS_TYPE:
            self._ignored.invalidate(user_id)
        if room_id is None and data_type == DIRECT_TYPE:
            self._direct.invalidate(user_id)
        self._changes.publish(AccountDataChange(user_id))
        return position

    def forget_user(self, user_id: str) -> None:
        """Drop what memory holds of the user's account data and push rules (another process
        changed one of them)."""
        self._ignored.invalidate(user_id)
        self._direct.invalidate(user_id)
        self._push_rules.forget_user(user_id)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores (modules/ignore_users.md: the ``ignored_users`` keys of its
        global ``m.ignored_user_list``), from memory after the first read: /sync asks on every request."""
        cached = self._ignored.get_cached(user_id)
        if cached is not None:
            return cached
        return (await self._ignored.get_many([user_id]))[user_id]

    async def ignored_users_of(self, user_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """:meth:`ignored_users` of many users, those not in memory read in one query (push
        evaluation asks for every member of a room)."""
        return await self._ignored.get_many(user_ids)

    async def _read_ignored(self, user_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        contents = await self._store.get_for_users(user_ids, GLOBAL, IGNORED_USERS_TYPE)
        out: dict[str, frozenset[str]] = {}
        for user_id in user_ids:
            ignored = (contents.get(user_id) or {}).get("ignored_users")
            out[user_id] = (
                frozenset(u for u in ignored if isinstance(u, str) and u != user_id)
                if isinstance(ignored, dict)
                else frozenset()
            )
        return out

    # -- tags --------------------------------------------------------------------------

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self._store.get(user_id, room_id, TAG_TYPE)
        tags = content.get("tags") if content else None
        return tags if isinstance(tags, dict) else {}

    async def tags_of_rooms(self, user_id: str) -> dict[str, frozenset[str]]:
        """The tag names of every room the user tagged (sliding sync's ``tags`` filters)."""
        out: dict[str, frozenset[str]] = {}
        for room_id, content in (await self._store.get_rooms_of_type(user_id, TAG_TYPE)).items():
            tags = content.get("tags") if isinstance(content, dict) else None
            if isinstance(tags, dict) and tags:
                out[room_id] = frozenset(tags)
        return out

    async def direct_rooms(self, user_id: str) -> frozenset[str]:
        """The rooms in the user's global ``m.direct`` (its DMs), from memory after the first read."""
        cached = self._direct.get_cached(user_id)
        if cached is not None:
            return cached
        return (await self._direct.get_many([user_id]))[user_id]

    async def _read_direct(self, user_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        contents = await self._store.get_for_users(user_ids, GLOBAL, DIRECT_TYPE)
        out: dict[str, frozenset[str]] = {}
        for user_id in user_ids:
            content = contents.get(user_id)
            rooms: set[str] = set()
            if isinstance(content, dict):  # the client's content: checked
                for listed in content.values():
                    if isinstance(listed, list):
                        rooms.update(r for r in listed if isinstance(r, str))
            out[user_id] = frozenset(rooms)
        return out

    async def add_tag(self, user_id: str, room_id: str, tag: str, tag_content: dict[str, Any]) -> int:
        """Add or replace a tag; ``order`` (if given) must be a number in [0, 1] (tag.yaml)."""
        check_tag(tag)
        order = tag_content.get("order")
        if order is not None:
            if isinstance(order, bool) or not isinstance(order, (int, float)):
                raise bad_json("'order' must be a number")
            if not 0 <= order <= 1:
                raise invalid_param("'order' must be between 0 and 1")
        position = await self._store.update_tag(user_id, room_id, tag, tag_content)
        self._changes.publish(AccountDataChange(user_id))
        return position

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> int:
        """Remove a tag (removing an absent tag succeeds too)."""
        check_tag(tag)
        position = await self._store.update_tag(user_id, room_id, tag, None)
        self._changes.publish(AccountDataChange(user_id))
        return position

    # -- sync --------------------------------------------------------------------------

    async def get_account_data_for_sync(
        self, user_id: str, from_pos: int | None, to_pos: int
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Account data changed in (from_pos, to_pos], everything if ``from_pos`` is None.

        Returns ``(global events, {room_id: room events})``, each event
        ``{"type", "content"}``. ``m.push_rules`` (the whole ruleset) is among the
        global events on an initial sync and whenever the rules changed.
        """
        global_events: list[dict[str, Any]] = []
        rooms: dict[str, list[dict[str, Any]]] = {}
        for room_id, data_type, content in await self._store.get_changes(user_id, from_pos, to_pos):
            event = {"type": data_type, "content": content}
            if room_id == GLOBAL:
                global_events.append(event)
            else:
                rooms.setdefault(room_id, []).append(event)
        if from_pos is None or (
            from_pos < to_pos and await self._push_rules.changed_between(user_id, from_pos, to_pos)
        ):
            content = await self._push_rules.push_rules_content(user_id)
            global_events.append({"type": PUSH_RULES_TYPE, "content": content})
        return global_events, rooms


def check_tag(tag: str) -> None:
    if not tag:
        raise invalid_param("The tag must not be empty")
    if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise invalid_param("The tag must not exceed 255 bytes")
