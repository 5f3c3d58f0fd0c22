"""Account management (client-server-api §Account management).

Changing the password and deactivating both need the requester to prove,
through UIA, that they own the account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.logger import Logger

from mxserver.accounts.auth import Auth, Requester
from mxserver.accounts.devices import DeviceHooks
from mxserver.accounts.erasure import ErasedUsers
from mxserver.accounts.passwords import PasswordHasher
from mxserver.accounts.registration import check_password_strength
from mxserver.accounts.threepids import ThreepidHandler, ThreepidValidator
from mxserver.accounts.uia import EMAIL_IDENTITY, UIARequest, UserInteractiveAuth
from mxserver.config import PasswordConfig
from mxserver.errors import MatrixError, forbidden, not_found, user_deactivated
from mxserver.storage.accounts import AccountStore

log = Logger()


class AccountHandler:
    """Changing the password, deactivating the account."""

    def __init__(
        self,
        store: AccountStore,
        password_config: PasswordConfig,
        passwords: PasswordHasher,
        auth: Auth,
        uia: UserInteractiveAuth,
        device_hooks: DeviceHooks,
        erasure: ErasedUsers,
        threepids: ThreepidHandler | None = None,
        threepid_validator: ThreepidValidator | None = None,
    ) -> None:
        self._threepids = threepids
        self._threepid_validator = threepid_validator
        self._store = store
        self._erasure = erasure
        self._password_config = password_config
        self._passwords = passwords
        self._auth = auth
        self._uia = uia
        self._device_hooks = device_hooks
        self._deactivation_hooks: list[Callable[[str], Awaitable[None]]] = []

    def on_deactivated(self, fn: Callable[[str], Awaitable[None]]) -> None:
        """Call ``fn(user_id)`` once an account is deactivated (its rooms are left then)."""
        self._deactivation_hooks.append(fn)

    async def change_password(
        self, requester: Requester, new_password: str, logout_devices: bool, uia: UIARequest
    ) -> None:
        """password_management.yaml: the requester's token survives; with ``logout_devices``
        every other device (and its tokens) is removed."""
        check_password_strength(self._password_config, new_password)
        await self._uia.authenticate(uia, self._uia.reauth_flows(), requester.user_id)
        await self.set_password(requester.user_id, new_password, logout_devices, requester.device_id)

    async def threepids(self, user_id: str) -> list[dict[str, Any]]:
        """The 3PIDs associated with the account (medium, address, validated_at, added_at)."""
        return await self._threepids.list_threepids(user_id) if self._threepids is not None else []

    @property
    def reset_by_email(self) -> bool:
        """Whether a forgotten password can be reset through a validated e-mail address."""
        return self._threepid_validator is not None and self._threepid_validator.email_enabled

    async def reset_password(self, new_password: str, logout_devices: bool, uia: UIARequest) -> None:
        """password_management.yaml without an access token: UIA ``m.login.email.identity`` proves
        the requester owns an address of the account, whose password is then set."""
        if not self.reset_by_email or self._threepid_validator is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token (password resets by e-mail are off)")
        check_password_strength(self._password_config, new_password)
        completed = await self._uia.authenticate(uia, [[EMAIL_IDENTITY]])
        threepid = completed.threepid
        user_id = None if threepid is None else await self._threepid_validator.owner(threepid.medium, threepid.address)
        if user_id is None:
            raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this e-mail address")
        user = await self._store.get_user(user_id)
        if user is None or user.deactivated:
            raise user_deactivated()
        await self.set_password(user_id, new_password, logout_devices)
        log.info("Reset the password of {user_id} by e-mail", user_id=user_id)

    async def set_password(
        self, user_id: str, new_password: str, logout_devices: bool, keep_device_id: str | None = None
    ) -> None:
        """Set a local user's password without asking (after UIA, or by a server admin); with
        ``logout_devices`` every device but ``keep_device_id`` (None: all) is removed."""
        check_password_strength(self._password_config, new_password)
        password_hash = await self._passwords.hash(new_password)
        removed = await self._store.change_password(user_id, password_hash, logout_devices, keep_device_id)
        self._auth.invalidate(removed)
        await self._device_hooks.devices_removed(user_id, None)

    async def deactivate(
        self, requester: Requester, uia: UIARequest, erase: bool = False, id_server: str | None = None
    ) -> dict[str, Any]:
        """account_deactivation.yaml: the account can never log in again; every token goes.

        Its 3PIDs are unbound from the identity servers they were bound through here (and from
        ``id_server`` when given), then forgotten; ``id_server_unbind_result`` says whether every
        unbind succeeded (``success`` too when there was nothing to unbind). ``erase``: the
        user's events are served redacted from now on (see :mod:`mxserver.accounts.erasure`) and
        their account data is dropped.
        """
        await self._uia.authenticate(uia, self._uia.reauth_flows(), requester.user_id)
        unbound = await self.deactivate_user(requester.user_id, erase, id_server)
        return {"id_server_unbind_result": "success" if unbound else "no-support"}

    async def deactivate_user(self, user_id: str, erase: bool = False, id_server: str | None = None) -> bool:
        """Deactivate (and with ``erase`` erase) a local account, without asking: what
        :meth:`deactivate` does once UIA passed, and what the admin API does. Its 3PIDs are
        unbound and forgotten first; False when an identity server did not unbind one."""
        unbound = True
        if self._threepids is not None:
            unbound = await self._threepids.remove_all(user_id, id_server)
        await self._store.deactivate_user(user_id, erase=erase)
        if erase:
            self._erasure.erased(user_id)
        await self._device_hooks.devices_removed(user_id, None)
        self._auth.invalidate_user(user_id)
        log.info("Deactivated {user_id}", user_id=user_id)
        for hook in self._deactivation_hooks:
            await hook(user_id)
        return unbound

    async def whois(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """admin.yaml ``GET /admin/whois/{userId}``: the user's devices and where they were last seen.

        The spec lets servers restrict it to the user themself or a server admin, and so
        it is here (anyone else gets 403 before any lookup, so it tells nothing). mxserver
        keeps one "last seen" record per device, so each device has one session with at most
        one connection.
        """
        if requester.user_id != user_id:
            me = await self._store.get_user(requester.user_id)
            if me is None or not me.is_admin:
                raise forbidden("You may only look up yourself")
        if await self._store.get_user(user_id) is None:
            raise not_found("Unknown user")
        devices: dict[str, Any] = {}
        for device_id, ip, last_seen, user_agent in await self._store.get_device_connections(user_id):
            connections = []
            if last_seen is not None:
                connections.append({"ip": ip or "", "last_seen": last_seen, "user_agent": user_agent or ""})
            devices[device_id] = {"sessions": [{"connections": connections}]}
        return {"user_id": user_id, "devices": devices}
