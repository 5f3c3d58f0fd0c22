"""Presence (modules/presence.md): the client API, who may see whom, idle timeouts, and the "presence" stream.

The IPresence module keeps each user's state; this handler decides the rest:

- **Who may see whom**: users who share a room (:class:`~mxserver.ephemeral.room_members.RoomMembers`,
  an in-memory map kept current from the room stream). Anyone else asking
  ``GET /presence/{userId}/status`` gets 403.
- **Activity**: ``user_synced`` (every /sync) and ``PUT .../status`` count as
  activity. A user who stops syncing becomes ``unavailable`` after
  ``presence.idle_after_ms`` and ``offline`` after
  ``presence.offline_after_ms`` (one timer per user on the reactor clock, reset by
  each activity; :meth:`PresenceHandler.stop` cancels them at shutdown).
- **The stream**: an in-memory position, bumped on every change the module
  reports (its ``on_change`` callback) and on profile changes (m.presence
  carries ``displayname``/``avatar_url``, client-server-api §Events on Change
  of Profile Information). Each change is published as a
  :class:`~mxserver.streams.PresenceChange` on the presence stream, naming
  everyone sharing a room with the user (and the user) as the users whose /sync
  it wakes; the federation sender tells the servers of local users' rooms. After a restart the stream starts at 0 again; a token
  ahead of it is answered like an initial sync.
- ``presence.enabled: false``: PUT is accepted and ignored, GET says
  ``offline``, nothing is tracked, no stream traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mxserver.config import PresenceConfig
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.errors import forbidden, invalid_param
from mxserver.interfaces import IPresence
from mxserver.storage.profiles import ProfileStore
from mxserver.streams import PresenceChange, Stream

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester

log = Logger()

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)


class PresenceHandler:
    """``hs.presence_handler``."""

    def __init__(
        self,
        module: IPresence,
        config: PresenceConfig,
        members: RoomMembers,
        profiles: ProfileStore,
        clock: IReactorTime,
        changes: Stream[PresenceChange],
    ) -> None:
        self._module = module
        self._members = members
        self._profiles = profiles
        self._clock = clock
        self._changes = changes
        self.enabled: bool = config.enabled
        self._idle_after = config.idle_after_ms / 1000
        self._offline_after = max(config.offline_after_ms, config.idle_after_ms) / 1000
        self._position = 0
        #: user -> stream position of their latest change
        self._user_positions: dict[str, int] = {}
        #: user -> the pending idle/offline timer
        self._timers: dict[str, IDelayedCall] = {}
        #: user -> publishing their change (looking up who shares a room) in progress
        self._waking: dict[str, Deferred[None]] = {}
        # IPresence: the module reports every change through on_change.
        self._module.on_change = self._changed

    @property
    def current_position(self) -> int:
        return self._position

    # -- the client API ------------------------------------------------------------------------

    async def get_presence(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """presence.yaml GET: your own, or of someone sharing a room with you (else 403)."""
        if not self.enabled:
            return {"presence": OFFLINE}
        if not await self._members.share_a_room(requester.user_id, user_id):
            raise forbidden("You are not allowed to see their presence")
        return dict(self._module.get_state(user_id))

    async def set_presence(self, requester: Requester, user_id: str, presence: str, status_msg: str | None) -> None:
        """presence.yaml PUT: only your own; counts as activity."""
        if user_id != requester.user_id:
            raise forbidden("You may only set your own presence")
        if presence not in STATES:
            raise invalid_param(f"'presence' must be one of {', '.join(STATES)}")
        if not self.enabled:
            return
        self._module.set_state(user_id, presence, status_msg)
        if presence == OFFLINE:
            self._cancel_timer(user_id)
        else:
            self._schedule(user_id, self._idle_after, self._went_idle)
        await self._woken(user_id)

    async def set_remote_presence(self, user_id: str, presence: str, status_msg: str | None) -> None:
        """An ``m.presence`` update from the user's own server: stored and shown, no local timers
        (the user's server decides when they go idle or offline)."""
        if not self.enabled:
            return
        self._module.set_state(user_id, presence, status_msg)
        await self._woken(user_id)

    def current_state(self, user_id: str) -> dict[str, Any] | None:
        """The user's presence as other servers are told it; None when presence is disabled or
        the user's presence never changed since start (offline, which other servers assume)."""
        if not self.enabled or user_id not in self._user_positions:
            return None
        return dict(self._module.get_state(user_id))

    # -- for /sync --------------------------------------------------------------------------------

    async def user_synced(self, user_id: str, set_presence: str | None) -> None:
        """A /sync by ``user_id`` with its ``set_presence`` parameter (None: the default, online).

        ``online`` marks the user online and active, ``unavailable`` marks
        them unavailable (still connected: no offline timeout), ``offline``
        leaves their presence alone (the client does not want to appear).
        """
        if not self.enabled or set_presence == OFFLINE:
            return
        target = UNAVAILABLE if set_presence == UNAVAILABLE else ONLINE
        state = self._module.get_state(user_id)
        if state.get("presence") != target:
            self._module.set_state(user_id, target, state.get("status_msg"))
        elif target == ONLINE:
            self._module.user_active(user_id)
        self._schedule(user_id, self._idle_after, self._went_idle)
        await self._woken(user_id)

    async def presence_for_sync(
        self, user_id: str, since_pos: int | None, newly_shared: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """``m.presence`` events for /sync: users sharing a room with ``user_id``, and the user.

        Incremental (``since_pos`` given): those whose presence changed after
        ``since_pos``, and ``newly_shared`` (users who came to share a room with
        it since then) whatever their last change. Initial (None, or a token from
        before a restart): every one of them this server has presence for (a user
        never seen since start is offline, which clients assume anyway), and
        always the user.
        """
        if not self.enabled:
            return []
        sharing = set(await self._members.users_sharing_rooms(user_id))
        sharing.add(user_id)
        if since_pos is None or since_pos > self._position:
            users = {u for u in sharing if u in self._user_positions}
            users.add(user_id)
        elif len(sharing) <= len(self._user_positions):
            users = {u for u in sharing if self._user_positions.get(u, 0) > since_pos}
        else:
            users = {u for u, pos in self._user_positions.items() if pos > since_pos and u in sharing}
        if since_pos is not None:
            # Even those never seen since start (offline): the client has no presence for them yet.
            users |= {u for u in newly_shared if u in sharing}
        return await self._events(users)

    async def presence_for_users(self, user_ids: Iterable[str], since_pos: int | None) -> list[dict[str, Any]]:
        """``m.presence`` events of the given users (e.g. the members of a room a user peeks into
        through the legacy /events and room /initialSync): those whose presence changed after
        ``since_pos``; with None (or a token from before a restart), those this server has
        presence for."""
        if not self.enabled:
            return []
        if since_pos is None or since_pos > self._position:
            users = {u for u in user_ids if u in self._user_positions}
        else:
            users = {u for u in user_ids if self._user_positions.get(u, 0) > since_pos}
        return await self._events(users)

    async def _events(self, users: set[str]) -> list[dict[str, Any]]:
        if not users:
            return []
        ordered = sorted(users)
        profiles = await self._profiles.get_profiles(ordered)
        events = []
        for u in ordered:
            content = dict(self._module.get_state(u))
            displayname, avatar_url = profiles.get(u, (None, None))
            if displayname is not None:
                content["displayname"] = displayname
            if avatar_url is not None:
                content["avatar_url"] = avatar_url
            events.append({"type": "m.presence", "sender": u, "content": content})
        return events

    def profile_changed(self, user_id: str) -> None:
        """The user's display name or avatar changed: send their presence again."""
        if self.enabled:
            self._changed(user_id)

    def snapshot(self) -> list[PresenceChange]:
        """Every user whose presence changed since start, as a change at its position (a
        cluster's worker starting: presence lives in this process's memory)."""
        if not self.enabled:
            return []
        return [
            PresenceChange(user_id, dict(self._module.get_state(user_id)), position=position)
            for user_id, position in self._user_positions.items()
        ]

    # -- state changes and the stream -----------------------------------------------------------------

    def _changed(self, user_id: str) -> None:
        if not self.enabled:
            return
        self._position += 1
        self._user_positions[user_id] = self._position
        d = ensureDeferred(self._publish(user_id))
        d.addErrback(lambda f: log.failure("publishing the presence of {user_id} failed", f, user_id=user_id))
        if not d.called:
            self._waking[user_id] = d
            d.addBoth(self._woke, user_id, d)

    def _woke(self, result: object, user_id: str, d: Deferred[None]) -> None:
        if self._waking.get(user_id) is d:
            del self._waking[user_id]

    async def _woken(self, user_id: str) -> None:
        """Wait until the user's latest change is published and its watchers woken (so API callers see it done)."""
        d = self._waking.get(user_id)
        if d is not None:
            await d

    async def _publish(self, user_id: str) -> None:
        """Publish the user's change, waking everyone sharing a room with them (usually cached, so
        this completes at once; otherwise the state published is the one current by then)."""
        try:
            users = set(await self._members.users_sharing_rooms(user_id))
            users.add(user_id)
        except Exception:
            # Still published, so other servers hear of it; but nobody can be woken.
            log.failure("waking presence watchers of {user_id} failed", user_id=user_id)
            users = set()
        position = self._user_positions.get(user_id, self._position)
        self._changes.publish(PresenceChange(user_id, dict(self._module.get_state(user_id)), frozenset(users), position))

    # -- timeouts ------------------------------------------------------------------------------------

    def _schedule(self, user_id: str, delay: float, fn: Callable[[str], None]) -> None:
        self._cancel_timer(user_id)
        self._timers[user_id] = self._clock.callLater(delay, fn, user_id)

    def _cancel_timer(self, user_id: str) -> None:
        timer = self._timers.pop(user_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _went_idle(self, user_id: str) -> None:
        self._timers.pop(user_id, None)
        state = self._module.get_state(user_id)
        if state.get("presence") in (ONLINE, UNAVAILABLE):
            # Even when the module already reports "unavailable" (its own idle clock), the
            # stored state changes here, which is what tells the watchers.
            self._module.set_state(user_id, UNAVAILABLE, state.get("status_msg"))
        remaining = self._offline_after - self._idle_after
        if remaining > 0:
            self._schedule(user_id, remaining, self._went_offline)
        else:
            self._went_offline(user_id)

    def _went_offline(self, user_id: str) -> None:
        self._timers.pop(user_id, None)
        state = self._module.get_state(user_id)
        if state.get("presence") != OFFLINE:
            self._module.set_state(user_id, OFFLINE, state.get("status_msg"))

    def stop(self) -> None:
        """At shutdown: cancel every timer."""
        for user_id in list(self._timers):
            self._cancel_timer(user_id)
