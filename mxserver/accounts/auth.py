"""Access-token authentication: who is making this request.

Tokens are 256-bit random strings; the database keeps only their SHA-256
(a fast hash suffices: the tokens have full entropy). Resolved tokens are
cached in memory, and the cache is invalidated on logout and device deletion,
so the hot paths (send, /sync) cost no database round trip for auth.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from mxserver.errors import MatrixError, missing_token, unknown_token
from mxserver.request_info import access_token, client_ip
from mxserver.storage.accounts import AccountStore

TOKEN_PREFIX = "mxa_"


def new_access_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@attrs.frozen
class Requester:
    """The authenticated user (and device) behind a request."""

    user_id: str
    device_id: str | None
    is_guest: bool = False
    token_hash: str | None = None
    ip: str = ""


class Auth:
    """Resolves access tokens to :class:`Requester` objects."""

    CACHE_SIZE = 50_000

    def __init__(self, store: AccountStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._cache: OrderedDict[str, Requester] = OrderedDict()
        self._seen: dict[tuple[str, str], float] = {}

    async def get_user(self, request: IRequest, allow_guest: bool = False) -> Requester:
        """The requester, or M_MISSING_TOKEN / M_UNKNOWN_TOKEN / M_GUEST_ACCESS_FORBIDDEN."""
        token = access_token(request)
        if token is None:
            raise missing_token()
        requester = await self.get_user_by_token(token)
        if requester.is_guest and not allow_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        ip = client_ip(request)
        self._note_seen(requester, ip, request)
        return attrs.evolve(requester, ip=ip)

    async def get_user_by_token(self, token: str) -> Requester:
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None:
            self._cache.move_to_end(token_hash)
            return cached
        owner = await self._store.get_token_owner(token_hash)
        if owner is None or owner.deactivated:
            raise unknown_token()
        requester = Requester(owner.user_id, owner.device_id, owner.is_guest, token_hash)
        self._cache[token_hash] = requester
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return requester

    def invalidate(self, token_hashes: list[str]) -> None:
        for h in token_hashes:
            self._cache.pop(h, None)

    def invalidate_user(self, user_id: str) -> None:
        for h in [h for h, r in self._cache.items() if r.user_id == user_id]:
            del self._cache[h]

    def _note_seen(self, requester: Requester, ip: str, request: IRequest) -> None:
        # Device "last seen" is written at most once a minute per device: it is a hint, not a log.
        if requester.device_id is None:
            return
        key = (requester.user_id, requester.device_id)
        now = self._clock.seconds()
        if now - self._seen.get(key, 0.0) < 60:
            return
        self._seen[key] = now
        raw_ua = request.getHeader(b"User-Agent")
        ua = raw_ua.decode("utf-8", "replace")[:512] if raw_ua else None
        d = self._store.record_device_seen(requester.user_id, requester.device_id, int(now * 1000), ip, ua)
        d.addErrback(lambda f: None)
