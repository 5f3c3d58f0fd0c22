"""Device lists: who must hear that a user's devices changed (end_to_end_encryption.md
§Tracking the device list for a user; server-server-api §Device Management).

The Homeserver's ``device_lists``. Every change to a local user's devices, device keys or
cross-signing keys takes a position on the persisted ``device_lists`` stream
(recorded by the store in the same transaction as the change). Then a
:class:`~mxserver.streams.DeviceListChange` is published on the ephemeral
``device_lists`` stream, naming the local users sharing a room with the user:

- the notifier wakes them; their ``/sync`` ``device_lists.changed`` (and
  ``/keys/changes``) lists the user;
- :mod:`mxserver.e2ee.outbound_device_lists` sends every other server
  sharing a room with the user an ``m.device_list_update`` EDU per device
  (``stream_id`` = the position, ``prev_id`` = the user's previous device
  change) or an ``m.signing_key_update`` EDU for cross-signing keys.

Inbound, an EDU for a remote user whose list we cache is applied when every
``prev_id`` is one we applied; otherwise (a gap: an EDU was lost, or the cache
came from ``/user/keys/query``, which gives no stream position) the list is
fetched whole with ``GET /user/devices/{userId}``. An EDU for a user sharing a
room with us whose list we do not cache yet starts the cache the same way (a
resync), and so does a local ``/keys/query`` for such a user's whole list
(:meth:`DeviceListHandler.start_tracking`), as Synapse does. Either way local
users sharing a room with that user see them in ``device_lists.changed`` (a
change published for the remote user: it wakes them, no server is sent anything).

Membership moves the lists too: a user who starts sharing a room is
``changed``, one who no longer shares any room is ``left``; and a remote
user's cached list is dropped when they or a local user join a room with
them, because their server may not have been sending us updates meanwhile.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import DeferredLock, TimeoutError, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.background import BackgroundTasks
from mxserver.e2ee.keys import merge_signatures, user_devices_path
from mxserver.e2ee.validation import cross_signing_public_key, remote_device_keys
from mxserver.ids import UserID
from mxserver.rooms.activity import RoomActivity
from mxserver.storage.e2ee_device_lists import DeviceListStore
from mxserver.storage.e2ee_keys import E2eKeyStore
from mxserver.storage.stream_positions import PersistedStream
from mxserver.storage.sync import MembershipRow
from mxserver.streams import DeviceListChange, Stream

if TYPE_CHECKING:
    from mxserver.federation.client import FederationClient

log = Logger()

JsonDict = dict[str, Any]

DEVICE_LIST_UPDATE = "m.device_list_update"
SIGNING_KEY_UPDATE = "m.signing_key_update"
#: Device names often say more than their owners mean to tell other servers ("Alice's work
#: laptop"); like Synapse by default, they are not sent over federation.
SHARE_DEVICE_NAMES_OVER_FEDERATION = False


def _server(user_id: str) -> str | None:
    try:
        return UserID.parse(user_id).server_name
    except Exception:
        return None


class RoomMembership(Protocol):
    """Who is joined where (``mxserver.ephemeral.room_members.RoomMembers``)."""

    async def members(self, room_id: str) -> Collection[str]: ...

    async def rooms_for_user(self, user_id: str) -> Collection[str]: ...

    async def users_sharing_rooms(self, user_id: str) -> Collection[str]: ...


class Memberships(Protocol):
    """A user's memberships, read from the database (``mxserver.storage.sync.SyncStore``)."""

    async def memberships(self, user_id: str) -> list[MembershipRow]: ...


class DeviceListHandler:
    """Device-list changes: /sync ``device_lists``, /keys/changes, /user/devices, inbound EDUs.

    The Homeserver wires it: :meth:`start` as a start hook, :meth:`membership_changed` as a room-members
    listener, :meth:`on_device_list_update` and :meth:`on_signing_key_update` as the
    inbound EDU handlers.
    """

    def __init__(
        self,
        server_name: str,
        store: DeviceListStore,
        key_store: E2eKeyStore,
        stream: PersistedStream,
        changes: Stream[DeviceListChange],
        room_members: RoomMembership,
        activity: RoomActivity,
        memberships: Memberships,
        federation_client: FederationClient,
        clock: IReactorTime | None = None,
    ) -> None:
        self.server_name = server_name
        #: bounds :meth:`wait_for_updates` (None: only in unit tests that never wait)
        self._clock = clock
        self.store = store
        self.key_store = key_store
        self.stream = stream
        self._changes = changes
        self._room_members = room_members
        self._activity = activity
        self._memberships = memberships
        self._federation_client = federation_client
        self._locks: dict[str, DeferredLock] = {}
        #: background work (EDU handling, cache drops), awaited by tests through :meth:`settle`
        self._tasks = BackgroundTasks("device list background work")
        #: remote users whose cached device list must be dropped (:meth:`_queue_forget`), in order
        self._to_forget: dict[str, int] = {}
        #: when (a sequence number, not a time) each remote user's cached list was last filled:
        #: a forget queued before a fill must not drop the fresh list (see :meth:`_forget`)
        self._fill_seq = 0
        self._filled_at: dict[str, int] = {}
        self._forgetting = False

    async def start(self) -> None:
        """A start hook (after the room server's): load the stream position."""
        await self.stream.load()

    @property
    def current_position(self) -> int:
        return self.stream.current

    def _background(self, coro: Any) -> None:
        self._tasks.run(coro)

    async def settle(self) -> None:
        """Wait for background work started so far (tests)."""
        await self._tasks.settle()

    def _lock(self, user_id: str) -> DeferredLock:
        lock = self._locks.get(user_id)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {u: lk for u, lk in self._locks.items() if lk.locked}
            lock = self._locks[user_id] = DeferredLock()
        return lock

    # -- local changes -------------------------------------------------------------------------

    async def _interested_local_users(self, user_id: str) -> set[str]:
        sharing = set(await self._room_members.users_sharing_rooms(user_id))
        return {u for u in sharing if _server(u) == self.server_name} | {user_id}

    async def _publish(self, user_id: str, changes: list[tuple[str, int, int | None]]) -> None:
        notify = await self._interested_local_users(user_id)
        self._changes.publish(DeviceListChange(user_id, tuple(changes), frozenset(notify)))

    async def local_changes(self, user_id: str, changes: list[tuple[str, int, int | None]]) -> None:
        """Changes recorded for local ``user_id``: ``[(device_id or '', stream_id, prev_id)]``.

        Published (even with no change, which wakes the user's room-mates and sends nothing).
        """
        await self._publish(user_id, changes)

    async def devices_removed(self, user_id: str, device_ids: list[str] | None) -> None:
        """Local devices were deleted (None: every device the user no longer has)."""
        removed = await self.key_store.delete_device_keys(user_id, device_ids)
        await self.local_changes(user_id, removed)

    async def device_changed(self, user_id: str, device_id: str) -> None:
        """A local device was created or renamed: other servers hear of it."""
        stream_id, prev = await self.key_store.record_device_change(user_id, device_id)
        await self.local_changes(user_id, [(device_id, stream_id, prev)])

    # -- what /sync and /keys/changes show ---------------------------------------------------------------

    async def changes_for(
        self, user_id: str, since_room: int, since_dl: int, now_room: int, now_dl: int, memberships: list[Any]
    ) -> tuple[list[str], list[str]]:
        """``(changed, left)`` for ``user_id`` between two positions (sync tokens' room and device_lists)."""
        room_members = self._room_members
        sharing = set(await room_members.users_sharing_rooms(user_id))
        changed: set[str] = set()
        if now_dl > since_dl:
            changed = (await self.store.users_changed_between(since_dl, now_dl, user_id)) & (sharing | {user_id})
        left_candidates: set[str] = set()
        if now_room > since_room:
            joined = [m for m in memberships if m.membership == "join"]
            for m in joined:
                if since_room < m.stream_ordering <= now_room:
                    changed |= set(await room_members.members(m.room_id))  # we joined: everyone there is new to us
            # Only rooms with events since then can have membership changes (known in memory).
            busy = [m for m in joined if self._activity.changed_since(m.room_id, since_room)]
            moves = (
                await self.store.membership_changes([m.room_nid for m in busy], since_room, now_room) if busy else []
            )
            for _, other, membership in moves:
                if other == user_id:
                    continue
                if membership == "join":
                    changed.add(other)
                else:
                    left_candidates.add(other)
            for m in memberships:
                if m.membership in ("leave", "ban") and since_room < m.stream_ordering <= now_room:
                    left_candidates |= set(await room_members.members(m.room_id))
        left = {u for u in left_candidates if u not in sharing and u != user_id}
        return sorted(changed - left), sorted(left)

    async def sync_fields(self, requester: Any, since: Any, now: Any, memberships: list[Any]) -> tuple[JsonDict, bool]:
        """The E2EE parts of a /sync response (§Extensions to /sync), and whether they hold news."""
        fields: JsonDict = {}
        has_data = False
        if since is not None:
            changed, left = await self.changes_for(
                requester.user_id, since.room, since.device_lists, now.room, now.device_lists, memberships
            )
            fields["device_lists"] = {"changed": changed, "left": left}
            has_data = bool(changed or left)
        else:
            fields["device_lists"] = {"changed": [], "left": []}
        if requester.device_id is not None:
            # signed_curve25519 always, zero included: some clients only replenish keys they see counted.
            counts = await self.key_store.one_time_key_counts(requester.user_id, requester.device_id)
            fields["device_one_time_keys_count"] = {"signed_curve25519": 0, **counts}
            fields["device_unused_fallback_key_types"] = await self.key_store.unused_fallback_key_types(
                requester.user_id, requester.device_id
            )
        else:
            fields["device_one_time_keys_count"] = {}
            fields["device_unused_fallback_key_types"] = []
        return fields, has_data

    async def keys_changes(self, user_id: str, from_token: Any, to_token: Any) -> JsonDict:
        """GET /keys/changes."""
        memberships = await self._memberships.memberships(user_id)
        to_dl = min(to_token.device_lists, self.stream.current)
        to_room = min(to_token.room, self._activity.current_position)
        changed, left = await self.changes_for(
            user_id, from_token.room, from_token.device_lists, to_room, to_dl, memberships
        )
        return {"changed": changed, "left": left}

    # -- federation: answering ---------------------------------------------------------------------------

    async def user_devices(self, user_id: str) -> JsonDict:
        """GET /user/devices/{userId} for a local user (user_devices.yaml)."""
        # The position first: a change committed between these reads then shows up as
        # devices newer than the position, which the asking server applies again when the
        # change's EDU arrives. Read last, the position could claim a change whose keys the
        # devices below were read too early to hold, and the EDU would be dropped as seen.
        stream_id = await self.store.latest_device_stream_id(user_id)
        names = (await self.key_store.get_local_device_names([user_id])).get(user_id, {})
        stored = (await self.key_store.get_device_keys([(user_id, None)])).get(user_id, {})
        sigs = await self.key_store.get_signatures([user_id], [user_id])
        devices = []
        for device_id in sorted(names):
            entry: JsonDict = {"device_id": device_id}
            keys = stored.get(device_id, (None, None))[0]
            if keys is not None:
                entry["keys"] = merge_signatures(keys, sigs.get((user_id, device_id)))
            if SHARE_DEVICE_NAMES_OVER_FEDERATION and names[device_id] is not None:
                entry["device_display_name"] = names[device_id]
            devices.append(entry)
        result: JsonDict = {
            "user_id": user_id,
            "stream_id": stream_id,
            "devices": devices,
        }
        cross = (await self.key_store.get_cross_signing_keys([user_id])).get(user_id, {})
        for key_type, field in (("master", "master_key"), ("self_signing", "self_signing_key")):
            if key_type in cross:
                key = cross[key_type]
                public = cross_signing_public_key(key)
                if public is not None:
                    key = merge_signatures(key, sigs.get((user_id, public[1])))
                result[field] = key
        return result

    # -- federation: receiving ---------------------------------------------------------------------------

    async def _shares_room_locally(self, user_id: str) -> bool:
        return bool(await self._room_members.rooms_for_user(user_id))

    async def _remote_changed(self, user_id: str) -> None:
        await self.store.record_remote_change(user_id)
        # Published to wake local users, with no changes of ours to send any server.
        await self._publish(user_id, [])

    def on_device_list_update(self, origin: str, content: JsonDict) -> None:
        """An inbound m.device_list_update EDU: handled in the background, in order per user.

        Not inline: a resync is a request back to the origin, which should not hold up
        the answer to its transaction.
        """
        self._background(self._device_list_update(origin, content))

    def on_signing_key_update(self, origin: str, content: JsonDict) -> None:
        """An inbound m.signing_key_update EDU (in the background, like device list updates)."""
        self._background(self._signing_key_update(origin, content))

    async def _device_list_update(self, origin: str, content: JsonDict) -> None:
        user_id = content.get("user_id") if isinstance(content, dict) else None
        device_id = content.get("device_id") if isinstance(content, dict) else None
        stream_id = content.get("stream_id") if isinstance(content, dict) else None
        if not isinstance(user_id, str) or not isinstance(device_id, str) or _server(user_id) != origin:
            log.info("Dropping m.device_list_update from {origin}: bad user_id/device_id", origin=origin)
            return
        if not isinstance(stream_id, int) or isinstance(stream_id, bool):
            return
        prev_ids = content.get("prev_id") or []
        if not isinstance(prev_ids, list) or not all(isinstance(p, int) for p in prev_ids):
            prev_ids = None
        async with self._lock(user_id):
            shares = await self._shares_room_locally(user_id)
            tracked = await self.store.tracked([user_id])
            if user_id in tracked:
                position = tracked[user_id]
                if position is not None and stream_id <= position:
                    # Older than the list we hold (the origin's stream IDs only grow): a
                    # retransmission, or an update a resync already covered. Treating it as
                    # a gap would fetch the whole list again for nothing.
                    return
                known = await self.store.known_remote_ids(user_id)
                if stream_id in known:
                    return  # seen already (a retransmission)
                if tracked[user_id] is not None and prev_ids and all(p in known for p in prev_ids):
                    name = content.get("device_display_name")
                    await self.store.apply_remote_update(
                        user_id,
                        stream_id,
                        device_id,
                        content.get("deleted") is True,
                        remote_device_keys(content.get("keys"), user_id, device_id),
                        name if isinstance(name, str) else None,
                    )
                else:
                    # A gap (or no position to build on): fetch the whole list.
                    await self.resync(user_id)
            elif shares:
                # Not cached yet, though we share a room (so the user's server will keep
                # telling us): start the cache from the whole list, as Synapse does on an
                # update from a user it has no list of.
                await self.resync(user_id)
            if shares:
                await self._remote_changed(user_id)

    async def _signing_key_update(self, origin: str, content: JsonDict) -> None:
        user_id = content.get("user_id") if isinstance(content, dict) else None
        if not isinstance(user_id, str) or _server(user_id) != origin:
            return
        async with self._lock(user_id):
            if user_id in await self.store.tracked([user_id]):
                keys: dict[str, tuple[str, JsonDict]] = {}
                for key_type, field in (("master", "master_key"), ("self_signing", "self_signing_key")):
                    key = content.get(field)
                    if not isinstance(key, dict) or key.get("user_id") != user_id:
                        continue
                    public = cross_signing_public_key(key)
                    if public is not None:
                        keys[key_type] = (public[1], key)
                if keys:
                    await self.store.set_remote_cross_signing(user_id, keys)
            if await self._shares_room_locally(user_id):
                await self._remote_changed(user_id)

    async def wait_for_updates(self, user_ids: Collection[str], timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, for the device list updates of ``user_ids`` being
        applied now (an EDU's resync waiting on ``GET /user/devices``).

        A ``/keys/query`` right after the EDU then answers from the list the update is
        filling, rather than find no cache and ask the user's server directly.
        """
        pending = [lock for u in user_ids if (lock := self._locks.get(u)) is not None and lock.locked]
        if not pending or self._clock is None:
            return
        for lock in pending:
            acquiring = lock.acquire()
            acquiring.addTimeout(timeout, self._clock)
            try:
                await acquiring
            except TimeoutError:
                return  # answer without it: the caller asks the user's server instead
            lock.release()

    async def start_tracking(self, user_ids: Collection[str], timeout: float) -> set[str]:
        """Start caching the lists of remote ``user_ids`` sharing a room with us; those now cached.

        For a local ``/keys/query`` of a user's whole list: the list is fetched with
        ``GET /user/devices`` (which, unlike ``/user/keys/query``, gives the stream
        position later EDUs build on), as Synapse does for users it has no cache of.
        Local users sharing a room see the user in ``device_lists.changed`` once the
        cache starts. A user whose fetch fails is left out (the caller asks
        ``/user/keys/query`` instead).
        """
        sharing = [u for u in user_ids if await self._shares_room_locally(u)]
        if not sharing:
            return set()
        results = await gatherResults([ensureDeferred(self._start_tracking(u, timeout)) for u in sharing])
        return {u for u, ok in zip(sharing, results, strict=True) if ok}

    async def _start_tracking(self, user_id: str, timeout: float) -> bool:
        try:
            async with self._lock(user_id):
                if user_id in await self.store.tracked([user_id]):
                    return True  # cached meanwhile (an EDU's resync)
                if not await self.resync(user_id, timeout):
                    return False
                await self._remote_changed(user_id)
                return True
        except Exception:
            log.failure("starting the device list cache of {user_id} failed", user_id=user_id)
            return False

    async def resync(self, user_id: str, timeout: float = 30) -> bool:
        """Fetch a remote user's whole device list (GET /user/devices); False if it failed.

        On failure the cache is dropped, so the next query asks the server again.
        """
        server = _server(user_id)
        try:
            if server is None:
                raise ValueError("not a user ID")
            answer = await self._federation_client.get_json(server, user_devices_path(user_id), timeout=timeout)
            stream_id = answer.get("stream_id")
            devices_in = answer.get("devices")
            if answer.get("user_id") != user_id or not isinstance(stream_id, int) or not isinstance(devices_in, list):
                raise ValueError("malformed /user/devices answer")
        except Exception as e:
            log.info("Device list resync of {user_id} failed: {e}", user_id=user_id, e=e)
            await self.store.forget_remote(user_id)
            return False
        devices: dict[str, tuple[JsonDict | None, str | None]] = {}
        for entry in devices_in:
            if not isinstance(entry, dict) or not isinstance(entry.get("device_id"), str):
                continue
            keys = remote_device_keys(entry.get("keys"), user_id, entry["device_id"])
            name = entry.get("device_display_name")
            devices[entry["device_id"]] = (keys, name if isinstance(name, str) else None)
        await self.store.replace_remote_list(user_id, stream_id, devices, _cross_signing_from(answer, user_id, "_key"))
        self._filled(user_id)
        return True

    async def cache_query_answer(self, users: dict[str, list[str]], answer: JsonDict) -> None:
        """Cache what a remote /user/keys/query answered for whole-list queries of users sharing a room with us."""
        for user_id, devices in users.items():
            if devices or user_id not in answer.get("device_keys", {}):
                continue
            if not await self._shares_room_locally(user_id):
                continue  # we would hear of no changes: do not cache
            cross: dict[str, tuple[str, JsonDict]] = {}
            for key_type, field in (("master", "master_keys"), ("self_signing", "self_signing_keys")):
                key = answer.get(field, {}).get(user_id)
                public = cross_signing_public_key(key) if isinstance(key, dict) else None
                if public is not None:
                    cross[key_type] = (public[1], key)
            by_device = {
                d: (k, (k.get("unsigned") or {}).get("device_display_name"))
                for d, k in answer["device_keys"][user_id].items()
            }
            async with self._lock(user_id):
                if user_id not in await self.store.tracked([user_id]):
                    await self.store.replace_remote_list(user_id, None, by_device, cross)
                    self._filled(user_id)
                    # What this server knows of the list went from nothing to something: local
                    # users sharing a room see the user in device_lists.changed, as Synapse
                    # signals after its first resync (SyTest "Device list doesn't change if
                    # remote server is down" waits for it).
                    await self._remote_changed(user_id)

    # -- membership ---------------------------------------------------------------------------------------

    def membership_changed(self, room_id: str, user_id: str, joined: bool) -> None:
        """Room-members listener: a join makes cached lists of remote users untrustworthy."""
        if not joined:
            return
        if _server(user_id) != self.server_name:
            self._queue_forget(user_id)
        else:
            self._background(self._forget_room_members(room_id, self._fill_seq))

    def _queue_forget(self, user_id: str) -> None:
        """Forget ``user_id``'s cached list in the background, coalesced with other joins.

        A join over federation adopts a whole state (``RoomMembers.state_replaced``): one
        listener call per member, which was one database read each. While a batch is being
        forgotten, the next joins queue up and go as one batch after it.
        """
        # The first queueing counts: a cache filled after it is newer than the join.
        self._to_forget.setdefault(user_id, self._fill_seq)
        if not self._forgetting:
            self._forgetting = True
            self._background(self._drain_forgets())

    async def _drain_forgets(self) -> None:
        try:
            while self._to_forget:
                batch = dict(self._to_forget)
                self._to_forget.clear()
                try:
                    await self._forget(batch)
                except Exception:
                    log.failure("dropping the cached device lists of {n} users failed", n=len(batch))
        finally:
            self._forgetting = False

    def _filled(self, user_id: str) -> None:
        self._fill_seq += 1
        self._filled_at[user_id] = self._fill_seq

    async def _forget_room_members(self, room_id: str, queued_at: int) -> None:
        members = await self._room_members.members(room_id)
        # A suffix test, not a parse per member: a local join into a room of thousands runs this.
        local = ":" + self.server_name
        await self._forget({u: queued_at for u in members if not u.endswith(local)})

    async def _forget(self, queued: dict[str, int]) -> None:
        """Drop the cached lists of the users in ``queued`` (user -> fill sequence when the
        join was seen), except those filled again since: that fill (a resync or a query
        answer after the join) is already as fresh as a refetch would be, and a forget that
        ran after it would leave the user uncached while every update since went unused."""
        if not queued:
            return
        tracked = await self.store.tracked(list(queued))
        for user_id in tracked:
            async with self._lock(user_id):
                if self._filled_at.get(user_id, 0) > queued[user_id]:
                    continue
                self._filled_at.pop(user_id, None)
                await self.store.forget_remote(user_id)


def _cross_signing_from(answer: JsonDict, user_id: str, suffix: str) -> dict[str, tuple[str, JsonDict]]:
    out: dict[str, tuple[str, JsonDict]] = {}
    for key_type, field in (("master", "master" + suffix), ("self_signing", "self_signing" + suffix)):
        key = answer.get(field)
        public = cross_signing_public_key(key) if isinstance(key, dict) else None
        if public is not None and key.get("user_id") == user_id:  # type: ignore[union-attr]
            out[key_type] = (public[1], key)  # type: ignore[assignment]
    return out
