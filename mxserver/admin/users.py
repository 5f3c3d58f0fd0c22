"""Managing local users as a server admin (Synapse's user admin API shapes).

Only this server's users are managed: another server's user ID is refused with 400
``M_UNKNOWN`` "Can only look up local users" (Synapse's answer, whose message admin tools look
for), a malformed one with 400 ``M_INVALID_PARAM``, an unknown local one with 404 ``M_NOT_FOUND``
"User not found".

Nothing here has its own way of changing an account: passwords, deactivation and erasure go
through :class:`~mxserver.accounts.account.AccountHandler`, devices through
:class:`~mxserver.accounts.devices.DeviceHandler`, profiles through
:class:`~mxserver.ephemeral.profiles.ProfileHandler` (so a new display name reaches the user's
rooms), new accounts through :class:`~mxserver.accounts.registration.UserRegistrar`, and the
sessions lookup is the client API's ``whois``.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.account import AccountHandler
from mxserver.accounts.auth import Auth, Requester, hash_token, new_access_token
from mxserver.accounts.devices import DeviceHandler
from mxserver.accounts.erasure import ErasedUsers
from mxserver.accounts.passwords import PasswordHasher
from mxserver.accounts.registration import UserRegistrar, check_localpart, check_password_strength
from mxserver.config import PasswordConfig
from mxserver.ephemeral.profiles import ProfileHandler, check_profile_field
from mxserver.ephemeral.room_members import RoomMembers
from mxserver.errors import MatrixError, forbidden, invalid_param, not_found, user_in_use
from mxserver.identifier_checks import check_user_id, server_of_user
from mxserver.storage.accounts import USER_ORDER_COLUMNS, AccountStore, DeviceRecord, UserDetails

log = Logger()

#: the ``order_by`` values of ``GET /_synapse/admin/v2/users``
USER_ORDERS = frozenset(USER_ORDER_COLUMNS)

_UNSET: Any = object()


@attrs.frozen
class UserListQuery:
    """The parameters of ``GET /_synapse/admin/v2/users``, parsed."""

    offset: int = 0
    limit: int = 100
    user_id: str | None = None
    name: str | None = None
    guests: bool = True
    #: only deactivated users (True), only the others (False), both (None)
    deactivated: bool | None = False
    admins: bool | None = None
    order_by: str = "name"
    backwards: bool = False


@attrs.frozen
class UserChanges:
    """The body of ``PUT /_synapse/admin/v2/users/{userId}``, parsed: what to set (``None``:
    leave it; for the profile fields ``""`` clears them)."""

    password: str | None = None
    logout_devices: bool = True
    displayname: str | None = None
    avatar_url: str | None = None
    admin: bool | None = None
    deactivated: bool | None = None
    locked: bool | None = None


def user_json(user: UserDetails) -> dict[str, Any]:
    """A user in a ``GET /_synapse/admin/v2/users`` list."""
    return {
        "name": user.user_id,
        "is_guest": user.is_guest,
        "admin": user.is_admin,
        "user_type": None,
        "deactivated": user.deactivated,
        "erased": user.erased,
        "shadow_banned": False,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "creation_ts": user.created_ts,
        "last_seen_ts": user.last_seen_ts,
        "locked": user.locked,
    }


def device_json(device: DeviceRecord) -> dict[str, Any]:
    """A device as the admin API shows it (more than the client API: the user agent)."""
    return {
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_user_agent": device.last_seen_user_agent,
        "last_seen_ts": device.last_seen_ts,
        "user_id": device.user_id,
        # mxserver keeps dehydrated devices apart from the device list
        "dehydrated": False,
    }


class AdminUsers:
    """What the user admin API does: list, show, create, change, deactivate users; their
    passwords, devices, sessions and rooms; tokens to act as them."""

    def __init__(
        self,
        server_name: str,
        store: AccountStore,
        *,
        registrar: UserRegistrar,
        account: AccountHandler,
        devices: DeviceHandler,
        profiles: ProfileHandler,
        members: RoomMembers,
        auth: Auth,
        passwords: PasswordHasher,
        password_config: PasswordConfig,
        erasure: ErasedUsers,
        password_login: bool,
        clock: IReactorTime,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._registrar = registrar
        self._account = account
        self._devices = devices
        self._profiles = profiles
        self._members = members
        self._auth = auth
        self._passwords = passwords
        self._password_config = password_config
        self._erasure = erasure
        #: whether users log in with passwords here (re-activating an account then needs one)
        self._password_login = password_login
        self._clock = clock

    # -- checks -------------------------------------------------------------------------------

    def check_local(self, user_id: str) -> str:
        """``user_id`` if it is a well-formed ID of this server's; else 400."""
        check_user_id(user_id)
        if server_of_user(user_id) != self._server_name:
            raise MatrixError(400, "M_UNKNOWN", "Can only look up local users")
        return user_id

    async def existing(self, user_id: str) -> UserDetails:
        """The local user ``user_id``: 400 for another server's or a malformed ID, 404 if unknown."""
        self.check_local(user_id)
        user = await self._store.get_user_details(user_id)
        if user is None:
            raise not_found("User not found")
        return user

    # -- users ----------------------------------------------------------------------------

    async def list_users(self, query: UserListQuery) -> dict[str, Any]:
        """``GET /v2/users``: a page, ``total`` matching, and ``next_token`` if there are more."""
        users, total = await self._store.list_users(
            offset=query.offset,
            limit=query.limit,
            user_id=query.user_id,
            name=query.name,
            guests=query.guests,
            deactivated=query.deactivated,
            admins=query.admins,
            order_by=query.order_by,
            backwards=query.backwards,
        )
        body: dict[str, Any] = {"users": [user_json(u) for u in users], "total": total}
        if query.offset + len(users) < total:
            body["next_token"] = str(query.offset + len(users))
        return body

    async def get_user(self, user_id: str) -> dict[str, Any]:
        """``GET /v2/users/{userId}``."""
        user = await self.existing(user_id)
        return {
            **user_json(user),
            "threepids": await self._account.threepids(user_id),
            # mxserver has no SSO: always empty
            "external_ids": [],
            "appservice_id": None,
            "consent_server_notice_sent": None,
            "consent_version": None,
            "consent_ts": None,
            "suspended": user.suspended,
        }

    async def put_user(self, requester: Requester, user_id: str, changes: UserChanges) -> tuple[bool, dict[str, Any]]:
        """``PUT /v2/users/{userId}``: create the user (True) or change it (False); then its fields.

        Everything is checked before anything is written: the password's strength, the profile
        fields, that an admin does not demote themself, that re-activating gives a password
        (when users log in with one here: the deactivation removed the old one).
        """
        self.check_local(user_id)
        if changes.password is not None:
            check_password_strength(self._password_config, changes.password)
        displayname = _UNSET if changes.displayname is None else check_profile_field("displayname", changes.displayname)
        avatar_url = _UNSET if changes.avatar_url is None else check_profile_field("avatar_url", changes.avatar_url)
        if user_id == requester.user_id and changes.admin is False:
            raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself")
        user = await self._store.get_user(user_id)
        if user is None:
            await self._create(user_id, changes, displayname, avatar_url)
            return True, await self.get_user(user_id)

        reactivate = changes.deactivated is False and user.deactivated
        if reactivate and self._password_login and changes.password is None:
            raise MatrixError(400, "M_UNKNOWN", "Must provide a password to re-activate an account")
        if reactivate:
            password_hash = await self._passwords.hash(changes.password) if changes.password is not None else None
            if await self._store.reactivate_user(user_id, password_hash):
                self._erasure.not_erased(user_id)
                self._auth.invalidate_user(user_id)
                log.info("Re-activated {user_id}", user_id=user_id)
        elif changes.password is not None:
            await self._account.set_password(user_id, changes.password, changes.logout_devices)
        if displayname is not _UNSET:
            await self._profiles.set_field_of(user_id, "displayname", displayname)
        if avatar_url is not _UNSET:
            await self._profiles.set_field_of(user_id, "avatar_url", avatar_url)
        if changes.admin is not None and changes.admin != user.is_admin:
            await self._store.set_admin(user_id, changes.admin)
        if changes.locked is not None and changes.locked != user.locked:
            await self.set_moderation(user_id, locked=changes.locked)
        if changes.deactivated is True and not user.deactivated:
            await self._account.deactivate_user(user_id)
        return False, await self.get_user(user_id)

    async def _create(self, user_id: str, changes: UserChanges, displayname: Any, avatar_url: Any) -> None:
        localpart = user_id[1:].split(":", 1)[0]
        await self._registrar.register_user(
            localpart,
            changes.password,
            bool(changes.admin),
            # a display name given as "" means none; not given, the registrar's default
            displayname=displayname if isinstance(displayname, str) else None,
        )
        if displayname is None:
            await self._profiles.set_field_of(user_id, "displayname", None)
        if isinstance(avatar_url, str):
            await self._profiles.set_field_of(user_id, "avatar_url", avatar_url)
        if changes.locked:
            await self.set_moderation(user_id, locked=True)
        if changes.deactivated:
            await self._account.deactivate_user(user_id)

    # -- locking and suspension -----------------------------------------------------------
    #
    # One state, two APIs: the client API's admin/lock and admin/suspend (v1.18) and Synapse's
    # (PUT /v2/users with `locked`, PUT /v1/suspend). Their effects are in Auth (a locked
    # account's tokens answer M_USER_LOCKED) and Requester.check_not_suspended.

    async def set_moderation(self, user_id: str, *, locked: bool | None = None, suspended: bool | None = None) -> None:
        """Lock or unlock, suspend or unsuspend a local user (None: leave it). The user's
        sessions are kept (§Account locking: servers SHOULD NOT invalidate them); cached ones
        are dropped so the next request sees the change."""
        await self._store.set_moderation(user_id, locked=locked, suspended=suspended)
        self._auth.invalidate_user(user_id)
        log.info("{user_id}: locked={locked} suspended={suspended}", user_id=user_id, locked=locked, suspended=suspended)

    async def moderated_user(self, requester: Requester, user_id: str, changing: bool) -> UserDetails:
        """The target of the client API's ``admin/lock`` and ``admin/suspend`` (admin.yaml; the
        requester is an admin, checked first so that no one else learns who exists): 400
        M_INVALID_PARAM for a malformed or another server's ID, 404 M_NOT_FOUND for an unknown
        or deactivated user, 403 M_FORBIDDEN for another admin or, when ``changing``, oneself."""
        check_user_id(user_id)
        if server_of_user(user_id) != self._server_name:
            raise invalid_param("User does not belong to the local server")
        user = await self._store.get_user_details(user_id)
        if user is None or user.deactivated:
            raise not_found("User not found")
        if user_id == requester.user_id:
            if changing:
                raise forbidden("You cannot change the status of your own account")
        elif user.is_admin:
            raise forbidden("The target user is a server administrator")
        return user

    async def is_admin(self, user_id: str) -> dict[str, bool]:
        """``GET /v1/users/{userId}/admin``."""
        return {"admin": bool((await self.existing(user_id)).is_admin)}

    async def set_admin(self, requester: Requester, user_id: str, admin: bool) -> None:
        """``PUT /v1/users/{userId}/admin``: the same change as ``PUT /v2/users`` with ``admin``
        (an admin may not demote themself); 404 for an unknown user."""
        await self.existing(user_id)
        await self.put_user(requester, user_id, UserChanges(admin=admin))

    async def username_available(self, username: str) -> dict[str, bool]:
        """``GET /v1/username_available``: what ``register/available`` checks, whether or not
        sign-up is open (an admin creates users either way): M_INVALID_USERNAME, M_USER_IN_USE,
        M_EXCLUSIVE (a name an application service or the server reserves)."""
        user_id = check_localpart(self._server_name, username, self._registrar.reserved)
        if await self._store.get_user(user_id) is not None:
            raise user_in_use()
        return {"available": True}

    async def deactivate(self, user_id: str, erase: bool) -> dict[str, Any]:
        """``POST /v1/deactivate/{userId}``: as the account's owner deactivating it, without UIA."""
        await self.existing(user_id)
        await self._account.deactivate_user(user_id, erase)
        return {"id_server_unbind_result": "success"}

    async def reset_password(self, user_id: str, new_password: str, logout_devices: bool) -> None:
        """``POST /v1/reset_password/{userId}``: with ``logout_devices`` every device goes."""
        await self.existing(user_id)
        await self._account.set_password(user_id, new_password, logout_devices)

    async def whois(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """``GET /v1/whois/{userId}``: the client API's ``admin/whois`` (the requester is an admin)."""
        self.check_local(user_id)
        return await self._account.whois(requester, user_id)

    async def joined_rooms(self, user_id: str) -> dict[str, Any]:
        """``GET /v1/users/{userId}/joined_rooms``."""
        await self.existing(user_id)
        rooms = sorted(await self._members.rooms_for_user(user_id))
        return {"joined_rooms": rooms, "total": len(rooms)}

    async def login_as(self, requester: Requester, user_id: str, valid_until_ms: int | None) -> str:
        """``POST /v1/users/{userId}/login``: a new access token for the user, on no device (it does
        not show in their device list). Not for the admin themself (Synapse's documented rule);
        ``valid_until_ms`` (in the future) makes it expire."""
        user = await self.existing(user_id)
        if user_id == requester.user_id:
            raise MatrixError(400, "M_UNKNOWN", "Cannot use the admin API to log in as yourself")
        if user.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "The user is deactivated")
        now_ms = int(self._clock.seconds() * 1000)
        if valid_until_ms is not None and valid_until_ms <= now_ms:
            raise invalid_param("'valid_until_ms' is in the past")
        token = new_access_token()
        await self._store.add_deviceless_token(user_id, hash_token(token), now_ms, valid_until_ms)
        return token

    # -- devices --------------------------------------------------------------------------

    async def list_devices(self, user_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        devices = await self._devices.devices_of(user_id)
        return {"devices": [device_json(d) for d in devices], "total": len(devices)}

    async def get_device(self, user_id: str, device_id: str) -> dict[str, Any]:
        await self.existing(user_id)
        return device_json(await self._devices.device_of(user_id, device_id))

    async def add_device(self, user_id: str, device_id: str) -> None:
        """``POST /v2/users/{userId}/devices``: a new device (no token); nothing if it exists."""
        await self.existing(user_id)
        await self._devices.add_device(user_id, device_id, None)

    async def rename_device(self, user_id: str, device_id: str, display_name: str | None) -> None:
        await self.existing(user_id)
        await self._devices.rename_device(user_id, device_id, display_name)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Remove the user's devices and their tokens (IDs they do not have are ignored)."""
        await self.existing(user_id)
        await self._devices.remove_devices(user_id, device_ids)
