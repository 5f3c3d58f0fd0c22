"""Devices and the sessions on them (client-server-api §Device management).

Every access token belongs to a device; removing a device removes its
tokens, and the hashes removed are always handed to :class:`Auth` so a cached
token stops working at once. Areas built after accounts (to-device queues, device
keys) learn of removed and renamed devices through :class:`DeviceHooks`.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Auth, Requester, hash_token, new_access_token
from mxserver.accounts.uia import UIARequest, UserInteractiveAuth
from mxserver.config import SessionConfig
from mxserver.errors import MatrixError, not_found, unknown_token, user_locked
from mxserver.storage.accounts import AccountStore, DeviceRecord

REFRESH_TOKEN_PREFIX = "mxr_"

#: longest device ID and device display name accepted from a client
MAX_DEVICE_ID_LENGTH = 255
MAX_DISPLAY_NAME_LENGTH = 255

_DEVICE_ID_ALPHABET = string.ascii_uppercase


def generate_device_id() -> str:
    """Ten random upper-case letters (about 47 bits)."""
    return "".join(secrets.choice(_DEVICE_ID_ALPHABET) for _ in range(10))


#: ``(user_id, device_ids)``; None: every device the user no longer has
DevicesRemoved = Callable[[str, list[str] | None], Awaitable[None]]
#: ``(user_id, device_id)``: a device was created or renamed
DeviceChanged = Callable[[str, str], Awaitable[None]]


class DeviceHooks:
    """What other areas do when accounts removes or renames a local device.

    Their components (to-device queues, device lists) are built after accounts, so
    homeserver.py subscribes them here. Callbacks are awaited one after the other, in
    subscription order, before the request answers; an error propagates to it.
    """

    def __init__(self) -> None:
        self._removed: list[DevicesRemoved] = []
        self._changed: list[DeviceChanged] = []

    def on_removed(self, fn: DevicesRemoved) -> None:
        self._removed.append(fn)

    def on_changed(self, fn: DeviceChanged) -> None:
        self._changed.append(fn)

    async def devices_removed(self, user_id: str, device_ids: list[str] | None) -> None:
        for fn in self._removed:
            # each callback gets its own list: none can change what the next one sees
            await fn(user_id, None if device_ids is None else list(device_ids))

    async def device_changed(self, user_id: str, device_id: str) -> None:
        for fn in self._changed:
            await fn(user_id, device_id)


@attrs.frozen
class Session:
    """The tokens of a new session: what /login and /register answer."""

    device_id: str
    access_token: str
    #: with ``refresh_token: true`` (client-server-api §Refreshing access tokens)
    refresh_token: str | None = None
    expires_in_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``access_token``, ``device_id`` and, for a refreshable session, ``refresh_token`` and
        ``expires_in_ms``."""
        out: dict[str, Any] = {"access_token": self.access_token, "device_id": self.device_id}
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
            out["expires_in_ms"] = self.expires_in_ms
        return out


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


class DeviceHandler:
    """Creating sessions (and refreshing them), listing, renaming and deleting devices."""

    def __init__(
        self,
        store: AccountStore,
        auth: Auth,
        uia: UserInteractiveAuth,
        hooks: DeviceHooks,
        clock: IReactorTime,
        sessions: SessionConfig,
    ) -> None:
        self._store = store
        self._auth = auth
        self._uia = uia
        self._hooks = hooks
        self._clock = clock
        self._sessions = sessions

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def create_session(self, user_id: str, device_id: str | None, display_name: str | None) -> tuple[str, str]:
        """A new non-expiring access token on ``device_id`` (see :meth:`open_session`):
        ``(device_id, token)``."""
        session = await self.open_session(user_id, device_id, display_name)
        return session.device_id, session.access_token

    async def open_session(
        self, user_id: str, device_id: str | None, display_name: str | None, refresh: bool = False
    ) -> Session:
        """A new access token on ``device_id`` (created if new, generated if None).

        A known device keeps its name and loses its previous tokens, refresh tokens too. A new
        device is a device-list change (end_to_end_encryption.md §Tracking the device list for
        a user: users sharing a room, and the user's own other devices, learn of it through
        ``device_lists.changed``; Synapse signals it at creation, before any keys). With
        ``refresh`` the access token expires (``sessions.refreshable_access_token_lifetime_ms``)
        and comes with a refresh token.
        """
        token = new_access_token()
        now = self._now_ms()
        refresh_token = new_refresh_token() if refresh else None
        lifetime = self._sessions.refreshable_access_token_lifetime_ms if refresh else None
        kwargs: dict[str, Any] = {}
        if refresh_token is not None and lifetime is not None:
            kwargs = {
                "expires_ts": now + lifetime,
                "refresh_hash": hash_token(refresh_token),
                "refresh_expires_ts": self._refresh_expiry(now),
            }
        session = Session("", token, refresh_token, lifetime)
        if device_id is not None:
            outcome = await self._store.create_device_and_token(
                user_id, device_id, display_name, hash_token(token), now, **kwargs
            )
            created, replaced = outcome if outcome is not None else (False, [])
            self._auth.invalidate(replaced)
            if created:
                await self._hooks.device_changed(user_id, device_id)
            return attrs.evolve(session, device_id=device_id)
        for _ in range(10):
            candidate = generate_device_id()
            outcome = await self._store.create_device_and_token(
                user_id, candidate, display_name, hash_token(token), now, new_only=True, **kwargs
            )
            if outcome is not None:
                await self._hooks.device_changed(user_id, candidate)
                return attrs.evolve(session, device_id=candidate)
        raise MatrixError(500, "M_UNKNOWN", "Could not allocate a device ID")

    def _refresh_expiry(self, now: int) -> int | None:
        lifetime = self._sessions.refresh_token_lifetime_ms
        return None if lifetime is None else now + lifetime

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """``POST /refresh`` (refresh.yaml): a new access token and a new refresh token on the
        same device. An unknown (or revoked, or logged out) refresh token answers 401
        ``M_UNKNOWN_TOKEN``; an expired one the same with ``soft_logout`` true (the device is
        still there: the client may log in again on it); a locked account ``M_USER_LOCKED``."""
        token = new_access_token()
        new_refresh = new_refresh_token()
        now = self._now_ms()
        lifetime = self._sessions.refreshable_access_token_lifetime_ms
        outcome = await self._store.refresh(
            hash_token(refresh_token), hash_token(new_refresh), hash_token(token), now, now + lifetime,
            self._refresh_expiry(now),
        )
        if outcome.user_id is None:
            raise unknown_token()
        if outcome.expired:
            raise unknown_token(soft_logout=True)
        if outcome.locked:
            raise user_locked()
        self._auth.invalidate(list(outcome.removed))
        return {"access_token": token, "refresh_token": new_refresh, "expires_in_ms": lifetime}

    async def list_devices(self, requester: Requester) -> list[dict[str, Any]]:
        return [d.to_client() for d in await self.devices_of(requester.user_id)]

    async def get_device(self, requester: Requester, device_id: str) -> dict[str, Any]:
        return (await self.device_of(requester.user_id, device_id)).to_client()

    async def update_device(self, requester: Requester, device_id: str, display_name: str | None) -> None:
        """Rename one of the requester's devices; 404 for an unknown one (creating is for appservices)."""
        await self.rename_device(requester.user_id, device_id, display_name)

    # The same for any user's devices, whoever asks (the admin API; the methods above after
    # scoping to the requester).

    async def devices_of(self, user_id: str) -> list[DeviceRecord]:
        return await self._store.get_devices(user_id)

    async def device_of(self, user_id: str, device_id: str) -> DeviceRecord:
        """The user's device, or 404 M_NOT_FOUND."""
        device = await self._store.get_device(user_id, device_id)
        if device is None:
            raise not_found("Unknown device")
        return device

    async def rename_device(self, user_id: str, device_id: str, display_name: str | None) -> None:
        """Rename the user's device (None: leave the name); 404 for an unknown one."""
        if display_name is None:
            await self.device_of(user_id, device_id)
            return
        if not await self._store.set_device_display_name(user_id, device_id, display_name):
            raise not_found("Unknown device")
        await self._hooks.device_changed(user_id, device_id)

    async def put_appservice_device(self, requester: Requester, device_id: str, display_name: str | None) -> bool:
        """``PUT /devices/{deviceId}`` by an application service (MSC4190, spec v1.17 §Device
        management): the device is created if the user has none of that ID. Whether it was."""
        if not await self.add_device(requester.user_id, device_id, display_name):
            await self.update_device(requester, device_id, display_name)
            return False
        return True

    async def add_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """Create a device without a token for the user (an application service's, or by a server
        admin); False if the user has one of that ID already (left as it is)."""
        if len(device_id) > MAX_DEVICE_ID_LENGTH or not device_id:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid device ID")
        outcome = await self._store.create_device_and_token(
            user_id, device_id, display_name, None, self._now_ms(), new_only=True
        )
        if outcome is None:
            return False
        await self._hooks.device_changed(user_id, device_id)
        return True

    async def delete_devices(self, requester: Requester, device_ids: list[str], uia: UIARequest) -> None:
        """Delete devices (and their tokens) after UIA; IDs the requester does not have are ignored.

        device_management.yaml: the answer is 200 whether a device "was successfully
        removed, or had been removed previously"; another user's devices are never touched
        because every query is scoped to the requester. An application service is not asked
        for UIA (spec v1.17 §Device management: it "MUST NOT require" it).
        """
        if requester.app_service is None:
            await self._uia.authenticate(uia, self._uia.reauth_flows(), requester.user_id)
        await self.remove_devices(requester.user_id, device_ids)

    async def remove_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and their tokens, without asking (logout, password change)."""
        self._auth.invalidate(await self._store.delete_devices(user_id, device_ids))
        await self._hooks.devices_removed(user_id, list(device_ids))
