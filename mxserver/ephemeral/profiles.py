"""Profiles (client-server-api §Profiles): display name, avatar URL and the other fields
(``m.tz``, custom keys: profile.yaml v1.16) of local users.

Reading: anyone may look up a local user's profile (the spec's minimum is
users visible through rooms; this server does not restrict further). Writing:
only your own. Remote users' profiles come from their server (federation ``query/profile``,
through :class:`~mxserver.federation.remote_queries.RemoteQueries`). A change is propagated (§Events on Change of Profile Information): a new
``m.room.member`` join event with the new values in every room the user is
joined to (rooms in parallel, a few at a time; a room that refuses is logged
and skipped), a presence update, and the user directory.

Limits: a display name is at most 256 characters; an avatar URL must be an
``mxc://server/media-id`` URI (appendices / content repository §MXC URIs) of
at most 1000 characters. ``null`` or ``""`` clears either. ``m.tz`` is a string (not checked
against the time zone database: clients must expect unknown values). A custom key follows the
Common Namespaced Identifier Grammar (appendices) with a namespace (a dot), outside the
spec's reserved ``m.``; its value is any JSON, ``null`` included (stored, not a deletion:
profile.yaml). A key is at most 255 bytes (400 ``M_KEY_TOO_LARGE``), and the whole profile as
JSON at most 64 KiB (400 ``M_PROFILE_TOO_LARGE``). Only displayname and avatar_url changes are
propagated to rooms, presence and the user directory.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import DeferredSemaphore, gatherResults
from twisted.logger import Logger

from mxserver.ephemeral.presence import PresenceHandler
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.ephemeral.user_directory import UserDirectory
from mxserver.errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from mxserver.identifier_checks import check_user_id, is_profile_key, server_of_user
from mxserver.ids import is_valid_server_name
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.profiles import FIELDS, Profile, ProfileStore, encoded_size

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester
    from mxserver.federation.remote_queries import RemoteQueries
    from mxserver.rooms.api import ClientRooms

log = Logger()

MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000
#: member events sent at once when a profile change is propagated to the user's rooms
PROPAGATION_CONCURRENCY = 10
#: profile.yaml: "the total profile MUST be under 64 KiB"; keys at most 255 bytes
MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
TIME_ZONE = "m.tz"

# content repository §Matrix Content (mxc://) URIs: mxc://<server-name>/<media-id>, media-id [A-Za-z0-9_-]+
_MXC = re.compile(r"mxc://([^/]+)/([A-Za-z0-9_-]+)")

#: member-event keys that belong to one join and must not be copied into the next one
_NOT_COPIED = ("reason", "join_authorised_via_users_server")


class UserQueries(Protocol):
    """Asks application services about users in their namespaces (appservice queries)."""

    async def user_exists(self, user_id: str) -> bool: ...


def is_mxc_uri(value: str) -> bool:
    m = _MXC.fullmatch(value)
    return m is not None and is_valid_server_name(m.group(1))


def check_profile_key(key: str) -> str:
    """``key`` if it may name a profile field, else 400 ``M_KEY_TOO_LARGE`` or ``M_INVALID_PARAM``."""
    if is_profile_key(key):
        return key
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_KEY_TOO_LARGE", f"Profile keys are at most {MAX_KEY_BYTES} bytes")
    raise invalid_param(f"Invalid profile key {key!r}")


def check_profile_value(key: str, value: Any) -> Any:
    """The value to store for ``key`` (checked with :func:`check_profile_key`): 400
    ``M_BAD_JSON`` for a wrong JSON type, ``M_INVALID_PARAM`` for a value out of bounds or a
    key the spec reserves without defining it."""
    if key in FIELDS:
        if value is not None and not isinstance(value, str):
            raise bad_json(f"'{key}' must be a string")
        return check_profile_field(key, value)
    if key == TIME_ZONE:
        if not isinstance(value, str):
            raise bad_json(f"'{key}' must be a string")
        return value
    if key.startswith("m."):
        raise invalid_param(f"Profile keys starting with 'm.' are reserved by the specification: {key!r}")
    return value


def check_profile_field(field: str, value: str | None) -> str | None:
    """The value to store for ``field`` (None for ``""``), or 400 M_INVALID_PARAM (see the limits above)."""
    if field not in FIELDS:
        raise invalid_param(f"Unknown profile field {field!r}")
    if value == "":
        return None
    if value is not None:
        if field == "displayname" and len(value) > MAX_DISPLAYNAME_LENGTH:
            raise invalid_param(f"The display name may be at most {MAX_DISPLAYNAME_LENGTH} characters")
        if field == "avatar_url" and (len(value) > MAX_AVATAR_URL_LENGTH or not is_mxc_uri(value)):
            raise invalid_param("avatar_url must be an mxc:// URI")
    return value


def _too_large() -> MatrixError:
    return MatrixError(400, "M_PROFILE_TOO_LARGE", f"The profile would be larger than {MAX_PROFILE_BYTES} bytes")


class ProfileHandler:
    """``hs.profiles``: reads and changes profiles; a change is sent to the user's rooms (as
    member events, through ``rooms``), to presence and to the user directory."""

    def __init__(
        self,
        server_name: str,
        store: ProfileStore,
        rooms: ClientRooms,
        members: RoomMembers,
        remote_queries: RemoteQueries,
        presence: PresenceHandler,
        user_directory: UserDirectory,
        user_queries: UserQueries | None = None,
    ) -> None:
        self._server_name = server_name
        self._user_queries = user_queries
        self.store = store
        self._rooms = rooms
        self._members = members
        self._remote_queries = remote_queries
        self._presence = presence
        self._user_directory = user_directory

    # -- reading -----------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        """profile.yaml GET /profile/{userId}: the fields that are set; 404 M_NOT_FOUND for unknown users."""
        check_user_id(user_id)
        if server_of_user(user_id) != self._server_name:
            # server-server-api §Querying for information: query/profile, cached briefly.
            return await self._remote_queries.profile(user_id)
        await self._lookup(user_id)
        whole = await self.store.get_whole_profile(user_id)
        if whole is None:
            raise not_found("Profile not found")
        return whole

    async def get_field(self, user_id: str, field: str) -> dict[str, Any]:
        """GET /profile/{userId}/{field}: 404 if the user is unknown or the field is not set."""
        check_profile_key(field)
        profile = await self.get_profile(user_id)
        if field not in profile:
            raise not_found(f"The user has no {field}")
        return {field: profile[field]}


    async def _lookup(self, user_id: str) -> Profile:
        check_user_id(user_id)
        if server_of_user(user_id) != self._server_name:
            raise not_found("Profiles of users on other servers are not stored here")
        profile = await self.store.get_profile(user_id)
        if profile is None and self._user_queries is not None and await self._user_queries.user_exists(user_id):
            # application-service-api §Querying: the service registered the user while we waited.
            profile = await self.store.get_profile(user_id)
        if profile is None:
            raise not_found("Profile not found")
        return profile

    # -- writing ------------------------------------------------------------------------------

    async def set_field(self, requester: Requester, user_id: str, field: str, value: Any) -> None:
        """profile.yaml PUT: only your own, not while suspended (§Account suspension); any
        key (see the module docstring)."""
        check_user_id(user_id)
        check_profile_key(field)
        if user_id != requester.user_id:
            raise forbidden("You may only change your own profile")
        requester.check_not_suspended()
        value = check_profile_value(field, value)
        if field in FIELDS:
            await self._check_size(user_id, field, value)
            await self.set_field_of(user_id, field, value)
            return
        await self._lookup(user_id)
        if not await self.store.set_other_field(user_id, field, value, MAX_PROFILE_BYTES):
            raise _too_large()

    async def delete_field(self, requester: Requester, user_id: str, field: str) -> None:
        """profile.yaml DELETE: only your own, not while suspended; deleting an unset field
        succeeds. For displayname and avatar_url it is clearing them (and propagated)."""
        check_user_id(user_id)
        check_profile_key(field)
        if user_id != requester.user_id:
            raise forbidden("You may only change your own profile")
        requester.check_not_suspended()
        if field in FIELDS:
            await self.set_field_of(user_id, field, None)
            return
        await self._lookup(user_id)
        await self.store.delete_other_field(user_id, field)

    async def _check_size(self, user_id: str, field: str, value: Any) -> None:
        whole = await self.store.get_whole_profile(user_id)
        if whole is None:
            raise not_found("Profile not found")
        whole[field] = value
        if value is not None and encoded_size(whole) > MAX_PROFILE_BYTES:
            raise _too_large()

    async def set_field_of(self, user_id: str, field: str, value: str | None) -> None:
        """Change a local user's profile field, whoever asks (a server admin; after the owner
        check of :meth:`set_field`): checked, stored and propagated the same way."""
        value = check_profile_field(field, value)
        old = await self._lookup(user_id)
        if not await self.store.set_field(user_id, field, value):
            raise not_found("Profile not found")
        if old[FIELDS.index(field)] == value:
            return
        new = {f: (value if f == field else v) for f, v in zip(FIELDS, old, strict=True)}
        await self._propagate(user_id, new)
        self._presence.profile_changed(user_id)
        self._user_directory.profile_changed(user_id, new["displayname"], new["avatar_url"])

    async def _propagate(self, user_id: str, profile: dict[str, str | None]) -> None:
        """A new join event with the new profile in every room the user is joined to."""
        rooms = sorted(await self._members.rooms_for_user(user_id))
        if not rooms:
            return
        sem = DeferredSemaphore(PROPAGATION_CONCURRENCY)
        await gatherResults([sem.run(self._update_member_event, room_id, user_id, profile) for room_id in rooms])

    async def _update_member_event(self, room_id: str, user_id: str, profile: dict[str, str | None]) -> None:
        try:
            member = await self._rooms.current_state_event(room_id, "m.room.member", user_id)
            if member is None or member.membership != "join":
                return
            content = {k: v for k, v in member.content.items() if k not in _NOT_COPIED}
            for field, value in profile.items():
                if value is None:
                    content.pop(field, None)
                else:
                    content[field] = value
            if content == member.content:
                return
            await self._rooms.send(
                room_id, EventSpec("m.room.member", content, state_key=user_id, sender=user_id)
            )
        except MatrixError as e:
            log.warn(
                "profile change of {user_id} not sent to {room_id}: {err}", user_id=user_id, room_id=room_id, err=e
            )
        except Exception:
            log.failure("profile change of {user_id} not sent to {room_id}", user_id=user_id, room_id=room_id)
