"""Registration tokens (client-server-api §Token-authenticated registration, ``m.login.registration_token``).

Two kinds of token open sign-up:

* the token of the config file (``registration.registration_token``): valid for any number of
  sign-ups, forever, and not counted;
* tokens made by server admins (the admin API, :mod:`mxserver.api.admin.registration_tokens`),
  kept in the database with a number of uses and an expiry time.

Either is required when ``registration.registration_token`` is set or ``registration.requires_token``
is true. A database token counts its uses as Synapse documents: when a UIA session passes the stage
with it, one use becomes *pending* (so a token with one use left cannot start two sign-ups);
when that registration completes the use becomes *completed*; when the session is abandoned
(it expires) the pending use is given back.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string

from twisted.internet.interfaces import IReactorTime

from mxserver.config import RegistrationConfig
from mxserver.errors import MatrixError, invalid_param, not_found
from mxserver.storage.registration_tokens import RegistrationToken, RegistrationTokenStore

#: what a token may consist of (Synapse's documented rule, also the spec's)
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{1,64}")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "._~-"
MAX_TOKEN_LENGTH = 64
DEFAULT_TOKEN_LENGTH = 16


def token_json(token: RegistrationToken) -> dict[str, object]:
    """A token in the admin API's shape."""
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


class RegistrationTokens:
    """Checks and counts registration tokens; the admin API manages the database ones here.

    ``store`` None: only the config file's token (a UIA built without a database, in tests).
    """

    def __init__(self, config: RegistrationConfig, store: RegistrationTokenStore | None, clock: IReactorTime) -> None:
        self._config = config
        self._store = store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    @property
    def required(self) -> bool:
        """Whether sign-up needs a token (and therefore is possible with one)."""
        return bool(self._config.registration_token) or self._config.requires_token

    def _is_configured(self, token: str) -> bool:
        configured = self._config.registration_token
        # constant-time: the comparison must not tell how much of a guess was right
        if not configured:
            return False
        return hmac.compare_digest(configured.encode("utf-8"), token.encode("utf-8"))

    # -- sign-up ----------------------------------------------------------------------------

    async def is_valid(self, token: str) -> bool:
        """``GET /register/m.login.registration_token/validity``: whether ``token`` may be used now."""
        if self._is_configured(token):
            return True
        if self._store is None:
            return False
        stored = await self._store.get(token)
        return stored is not None and stored.valid_at(self._now_ms())

    async def begin_use(self, token: str) -> bool:
        """The UIA stage with ``token``: whether it passes. A database token gets one more pending use."""
        if self._is_configured(token):
            return True
        if self._store is None:
            return False
        return await self._store.begin_use(token, self._now_ms())

    async def end_use(self, token: str, completed: bool) -> None:
        """The sign-up begun with ``token`` completed, or was abandoned (``completed`` False)."""
        if self._store is None or self._is_configured(token):
            return
        await self._store.end_use(token, completed)

    # -- the admin API ------------------------------------------------------------------------

    def _admin_store(self) -> RegistrationTokenStore:
        assert self._store is not None, "the admin API is built with a store"
        return self._store

    async def list_tokens(self, valid: bool | None) -> list[RegistrationToken]:
        return await self._admin_store().list(valid, self._now_ms())

    async def get(self, token: str) -> RegistrationToken:
        found = await self._admin_store().get(token)
        if found is None:
            raise not_found(f"No such registration token: {token}")
        return found

    async def create(
        self, token: str | None, length: int, uses_allowed: int | None, expiry_time: int | None
    ) -> RegistrationToken:
        """A new token: ``token``, or ``length`` random characters of :data:`TOKEN_ALPHABET`."""
        self._check_limits(uses_allowed, expiry_time)
        store = self._admin_store()
        if token is not None:
            if not TOKEN_PATTERN.fullmatch(token):
                raise invalid_param("'token' must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '~' and '-'")
            if not await store.create(token, uses_allowed, expiry_time):
                raise invalid_param(f"Token already exists: {token}")
            return await self.get(token)
        if not 1 <= length <= MAX_TOKEN_LENGTH:
            raise invalid_param(f"'length' must be between 1 and {MAX_TOKEN_LENGTH}")
        for _ in range(10):
            candidate = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(length))
            if await store.create(candidate, uses_allowed, expiry_time):
                return await self.get(candidate)
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a new token: try a longer one")

    async def update(self, token: str, changes: dict[str, int | None]) -> RegistrationToken:
        """Set ``uses_allowed`` and/or ``expiry_time`` (the keys given)."""
        self._check_limits(changes.get("uses_allowed"), changes.get("expiry_time"))
        updated = await self._admin_store().update(token, changes)
        if updated is None:
            raise not_found(f"No such registration token: {token}")
        return updated

    async def delete(self, token: str) -> None:
        if not await self._admin_store().delete(token):
            raise not_found(f"No such registration token: {token}")

    def _check_limits(self, uses_allowed: int | None, expiry_time: int | None) -> None:
        if uses_allowed is not None and uses_allowed < 0:
            raise invalid_param("'uses_allowed' must be a non-negative integer or null")
        if expiry_time is not None and expiry_time < self._now_ms():
            raise invalid_param("'expiry_time' must not be in the past")
