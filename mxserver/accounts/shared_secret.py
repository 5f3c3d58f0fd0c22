"""Shared-secret registration (``/_synapse/admin/v1/register``).

Not part of the Matrix spec: it is the interface existing admin tooling
(``register_new_matrix_user`` and the like) speaks. ``GET`` hands out a
nonce, single-use and valid for 60 seconds; ``POST`` registers an account if
``mac`` is the hex HMAC-SHA1, keyed by ``registration.shared_secret``, of
``nonce NUL username NUL password NUL ("admin" | "notadmin")``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.devices import DeviceHandler
from mxserver.accounts.registration import UserRegistrar
from mxserver.config import RegistrationConfig
from mxserver.errors import MatrixError, forbidden

NONCE_LIFETIME_SECONDS = 60
MAX_NONCES = 10_000


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """The hex HMAC-SHA1 a client must send (what admin tooling computes)."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    return mac.hexdigest()


class SharedSecretRegistration:
    """Nonces and the HMAC check."""

    def __init__(
        self,
        config: RegistrationConfig,
        server_name: str,
        registrar: UserRegistrar,
        devices: DeviceHandler,
        clock: IReactorTime,
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._registrar = registrar
        self._devices = devices
        self._clock = clock
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> issued at

    def check_enabled(self) -> None:
        self._secret()

    def _secret(self) -> str:
        secret = self._config.shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return secret

    def new_nonce(self) -> str:
        self._secret()
        now = self._clock.seconds()
        self._expire(now)
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        return nonce

    async def register(
        self, nonce: str, username: str, password: str, admin: bool, mac: str, displayname: str | None
    ) -> dict[str, Any]:
        secret = self._secret()
        self._expire(self._clock.seconds())
        # Single use: the nonce is spent whether or not the rest of the request is good.
        if self._nonces.pop(nonce, None) is None:
            raise MatrixError(400, "M_UNKNOWN", "Unrecognised or expired nonce")
        expected = registration_mac(secret, nonce, username, password, admin)
        if not hmac.compare_digest(expected.encode("ascii"), mac.encode("utf-8")):
            raise forbidden("HMAC incorrect")
        user_id = await self._registrar.register_user(username, password, admin, displayname=displayname)
        device_id, token = await self._devices.create_session(user_id, None, None)
        return {
            "user_id": user_id,
            "access_token": token,
            "device_id": device_id,
            "home_server": self._server_name,
        }

    def _expire(self, now: float) -> None:
        while self._nonces:
            issued = next(iter(self._nonces.values()))
            if now - issued < NONCE_LIFETIME_SECONDS:
                break
            self._nonces.popitem(last=False)
