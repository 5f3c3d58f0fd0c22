"""The user directory (users.yaml): ``POST /user_directory/search``, in memory.

Who can be found: local users joined to a room the searcher is joined to,
or joined to a room whose join rule is ``public`` or whose history is
``world_readable`` (users.yaml: the minimum a server must consider). A user
in no such room is never found. Remote users are found the same way; their
display name and avatar are those of their latest ``join`` member event
(their own server's profile is not asked: a search must not cost one
federation request per result).

How: an in-memory index, no per-search SQL once warm.

- :class:`~mxserver.ephemeral.room_members.RoomMembers` gives each room's members and the users sharing a
  room with the searcher (both cached and kept current from the room stream).
- The set of public rooms is loaded on first search from the current state
  (join rules and history visibility of every room, through
  :class:`~mxserver.storage.user_directory.UserDirectoryStore`) and then kept current
  from the room stream; its members' union is cached and dropped when a
  membership in a public room or the set itself changes.
- Profiles of local users (and their search tokens) are cached on first
  sight and updated by profile changes.

A search scans the visible local users (O(visible), a set union and a prefix
test on a few cached tokens per user): fine for the tens of thousands of users
a room-sharing/public set holds; a sorted token index is the next step if a
server outgrows it.

Matching is case-insensitive prefix matching per word: every word of the
search term must start some word of the user's display name or of their
user ID (localpart words split at ``.``, ``_``, ``-``, ``=``, ``/``, ``+``;
the server name too). Results rank exact matches first, then matches at the
start of the display name or user ID, then the rest; within a rank, users
with a display name or avatar first, then by user ID.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxserver.ephemeral.room_members import RoomMembers
from mxserver.events.model import Event
from mxserver.identifier_checks import server_of_user
from mxserver.storage.profiles import ProfileStore
from mxserver.storage.user_directory import RoomRules, UserDirectoryStore, member_profile

log = Logger()

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000

_WORDS = re.compile(r"[^\W_]+")  # letters and digits: "_" separates words too


def words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def _tokens(user_id: str, displayname: str | None) -> tuple[str, ...]:
    out = words(user_id[1:]) + words(displayname or "")
    out.append(user_id[1:].split(":", 1)[0].casefold())
    return tuple(dict.fromkeys(out))


class UserDirectory:
    """``hs.user_directory``.

    The Homeserver subscribes :meth:`on_room_events` to the room stream and
    :meth:`membership_changed` to the members cache's joins and leaves.
    """

    def __init__(
        self, server_name: str, store: UserDirectoryStore, profiles: ProfileStore, members: RoomMembers
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._profile_store = profiles
        self._members = members
        #: user -> (displayname, avatar_url, search tokens), local users seen so far
        self._profiles: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {}
        #: room -> (join_rule, history_visibility); None until loaded
        self._room_rules: dict[str, RoomRules] | None = None
        self._loading = False
        self._waiters: list[Deferred[None]] = []
        self._pending: list[Event] = []
        self._public_members: frozenset[str] | None = None
        self._public_generation = 0

    # -- search -----------------------------------------------------------------------------------

    async def search(self, searcher: str, term: str, limit: int) -> dict[str, Any]:
        """users.yaml: ``{"results": [{user_id, display_name?, avatar_url?}], "limited": bool}``."""
        query = words(term)
        if not query or limit <= 0:
            return {"results": [], "limited": False}
        # user_directory: users sharing a room with the searcher, and users in public rooms. The
        # searcher shares its own rooms with itself but is only found through a public room (as
        # Synapse; SyTest 52user-directory/01public.pl).
        visible = set(await self._members.users_sharing_rooms(searcher)) - {searcher}
        visible |= await self._public_room_members()
        own = self._server_name
        local = [u for u in visible if server_of_user(u) == own]
        remote = [u for u in visible if server_of_user(u) != own]
        await self._ensure_profiles(local)
        await self._ensure_remote_profiles(remote)
        matches = []
        for user_id in local + remote:
            entry = self._profiles.get(user_id)
            if entry is None:
                continue  # not a local account (any more)
            displayname, avatar_url, tokens = entry
            if all(any(t.startswith(q) for t in tokens) for q in query):
                matches.append((_rank(user_id, displayname, avatar_url, query), user_id, displayname, avatar_url))
        matches.sort()
        results = []
        for _, user_id, displayname, avatar_url in matches[:limit]:
            result = {"user_id": user_id}
            if displayname is not None:
                result["display_name"] = displayname
            if avatar_url is not None:
                result["avatar_url"] = avatar_url
            results.append(result)
        return {"results": results, "limited": len(matches) > limit}

    # -- profiles ---------------------------------------------------------------------------------

    async def _ensure_profiles(self, user_ids: list[str]) -> None:
        missing = [u for u in user_ids if u not in self._profiles]
        if not missing:
            return
        found = await self._profile_store.get_profiles(missing)
        for user_id, (displayname, avatar_url) in found.items():
            # A profile change that landed while we read wins over what we read.
            self._profiles.setdefault(user_id, (displayname, avatar_url, _tokens(user_id, displayname)))

    async def _ensure_remote_profiles(self, user_ids: list[str]) -> None:
        """Remote users' profiles from their member events in the current state of our rooms."""
        missing = [u for u in user_ids if u not in self._profiles]
        if not missing:
            return
        found = await self._store.member_profiles(missing)
        for user_id in missing:
            displayname, avatar_url = found.get(user_id, (None, None))
            self._profiles.setdefault(user_id, (displayname, avatar_url, _tokens(user_id, displayname)))

    def _remote_member_event(self, ev: Event) -> None:
        user_id = ev.state_key
        if not user_id or server_of_user(user_id) == self._server_name or ev.membership != "join":
            return
        displayname, avatar_url = member_profile(ev.content)
        self._profiles[user_id] = (displayname, avatar_url, _tokens(user_id, displayname))

    def profile_changed(self, user_id: str, displayname: str | None, avatar_url: str | None) -> None:
        self._profiles[user_id] = (displayname, avatar_url, _tokens(user_id, displayname))

    # -- public rooms -------------------------------------------------------------------------------

    async def _public_room_members(self) -> frozenset[str]:
        await self._ensure_rules()
        if self._public_members is not None:
            return self._public_members
        generation = self._public_generation
        assert self._room_rules is not None
        public = [r for r, rules in self._room_rules.items() if _is_public(rules)]
        by_room = await self._members.members_of_rooms(public)
        union: set[str] = set()
        own = self._server_name
        for members in by_room.values():
            # Only rooms this server is in: after our last user left, the members we last knew
            # are stale (Synapse drops the room; SyTest "User in remote room doesn't appear in
            # user directory after server left room").
            if any(server_of_user(u) == own for u in members):
                union |= members
        result = frozenset(union)
        if generation == self._public_generation:
            self._public_members = result
        return result

    async def _ensure_rules(self) -> None:
        if self._room_rules is not None:
            return
        if self._loading:
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            await d
            return
        self._loading = True
        try:
            rules = await self._store.room_rules()
        except BaseException as e:
            self._loading = False
            self._pending = []
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.errback(e)
            raise
        self._room_rules = rules
        # Events published while we read: replay them in order (setting a value is idempotent).
        pending, self._pending = self._pending, []
        for ev in pending:
            self._apply_rule(ev)
        self._loading = False
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def on_room_events(self, events: list[Event]) -> None:
        """Room-stream subscriber: remote users' profiles, rooms becoming public or not."""
        for ev in events:
            if ev.type == "m.room.member" and not (ev.rejected or ev.metadata.soft_failed or ev.metadata.outlier):
                self._remote_member_event(ev)
                continue
            if ev.type not in ("m.room.join_rules", "m.room.history_visibility") or ev.state_key != "":
                continue
            if ev.rejected or ev.metadata.soft_failed or ev.metadata.outlier:
                continue
            if self._room_rules is None:
                if self._loading:
                    self._pending.append(ev)
                continue
            self._apply_rule(ev)

    def _apply_rule(self, ev: Event) -> None:
        assert self._room_rules is not None
        join_rule, history = self._room_rules.get(ev.room_id, (None, None))
        value = ev.content.get("join_rule" if ev.type == "m.room.join_rules" else "history_visibility")
        value = value if isinstance(value, str) else None
        new = (value, history) if ev.type == "m.room.join_rules" else (join_rule, value)
        was = _is_public((join_rule, history))
        self._room_rules[ev.room_id] = new
        if was != _is_public(new):
            self._invalidate_public()

    def membership_changed(self, room_id: str, user_id: str, joined: bool) -> None:
        """A join or leave (from the members cache): the public rooms' members may have moved."""
        if self._room_rules is not None and _is_public(self._room_rules.get(room_id, (None, None))):
            self._invalidate_public()

    def _invalidate_public(self) -> None:
        self._public_generation += 1
        self._public_members = None


def _is_public(rules: RoomRules) -> bool:
    return rules[0] == "public" or rules[1] == "world_readable"


def _rank(user_id: str, displayname: str | None, avatar_url: str | None, query: list[str]) -> tuple[int, int, str]:
    name_words = words(displayname or "")
    id_words = words(user_id[1:].split(":", 1)[0])
    if query in (name_words, id_words):
        rank = 0
    elif _starts(name_words, query) or _starts(id_words, query):
        rank = 1
    else:
        rank = 2
    return rank, 0 if (displayname or avatar_url) else 1, user_id


def _starts(words_: list[str], query: list[str]) -> bool:
    return bool(words_) and words_[0].startswith(query[0])
