"""Password hashing: argon2id (default) or bcrypt, always off the reactor thread.

Both formats are verified whatever the configured scheme, so switching the
scheme (or importing bcrypt hashes from another server) keeps old passwords
working; a hash in the old scheme is upgraded at the next successful login.
"""

from __future__ import annotations

from typing import Any

import argon2
import bcrypt
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from mxserver.config import PasswordConfig
from mxserver.storage.accounts import AccountStore

# One of OWASP's equivalent argon2id configurations (7 MiB, 5 passes, 1 lane):
# the low-memory end, so a burst of sign-ups does not balloon the server's RSS.
_ARGON2 = argon2.PasswordHasher(time_cost=5, memory_cost=7 * 1024, parallelism=1)

#: hashes computed at once; more than the cores only adds memory, not speed
HASH_CONCURRENCY = 2


class PasswordHasher:
    """Hashes and checks passwords in the reactor's thread pool."""

    def __init__(self, config: PasswordConfig, reactor: IReactorThreads, store: AccountStore) -> None:
        self._config = config
        self._reactor = reactor
        self._store = store
        self._slots = DeferredSemaphore(HASH_CONCURRENCY)

    def _hash_sync(self, password: str) -> str:
        if self._config.scheme == "bcrypt":
            salt = bcrypt.gensalt(rounds=self._config.bcrypt_rounds)
            return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")
        return _ARGON2.hash(password)

    @staticmethod
    def _check_sync(password: str, stored: str) -> bool:
        try:
            if stored.startswith("$argon2"):
                return _ARGON2.verify(stored, password)
            if stored.startswith(("$2a$", "$2b$", "$2y$")):
                return bcrypt.checkpw(password.encode("utf-8"), stored.encode("ascii"))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
            return False
        return False

    def _needs_rehash(self, stored: str) -> bool:
        if self._config.scheme == "bcrypt":
            return not stored.startswith("$2")
        return not stored.startswith("$argon2") or _ARGON2.check_needs_rehash(stored)

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        return self._slots.run(deferToThreadPool, self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def hash(self, password: str) -> str:
        return await self._in_thread(self._hash_sync, password)

    async def check(self, password: str, stored: str | None) -> bool:
        if not stored:
            return False
        return await self._in_thread(self._check_sync, password, stored)

    async def check_user_password(self, user_id: str, password: str) -> bool:
        """Whether ``password`` is the user's; upgrades an outdated hash on success."""
        user = await self._store.get_user(user_id)
        if user is None or user.deactivated or not user.password_hash:
            # Spend the same time as a real check so timing does not reveal which users exist.
            await self.check(password, _DUMMY_HASH)
            return False
        ok = await self.check(password, user.password_hash)
        if ok and self._needs_rehash(user.password_hash):
            await self._store.set_password_hash(user_id, await self.hash(password))
        return ok


_DUMMY_HASH = _ARGON2.hash("not a password anyone has")
