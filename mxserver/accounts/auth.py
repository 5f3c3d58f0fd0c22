"""Access-token authentication: who is making this request.

Tokens are 256-bit random strings; the database keeps only their SHA-256
(a fast hash suffices: the tokens have full entropy). Resolved tokens are
cached in memory, and the cache is invalidated on logout and device deletion,
so the hot paths (send, /sync) cost no database round trip for auth.

An application service's ``as_token`` (application-service-api §Identity assertion) acts as
the service's sender user or, with ``?user_id=``, as any registered user of its user
namespaces (403 M_FORBIDDEN otherwise); ``?device_id=`` picks one of that user's devices
(400 M_UNKNOWN_DEVICE if it has no such device).

A token that expired answers 401 ``M_UNKNOWN_TOKEN`` with ``soft_logout`` true (§Refreshing
access tokens: the client refreshes it or logs in again on the same device). A locked
account's token answers 401 ``M_USER_LOCKED`` (§Account locking) except where the route asks
with ``allow_locked`` (logout). The first use of an access token made by ``POST /refresh``
revokes the refresh token it was made from.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from mxserver.appservice.registration import AppService
from mxserver.errors import MatrixError, forbidden, missing_token, unknown_token, user_locked, user_suspended
from mxserver.request_info import access_token, client_ip, query_str
from mxserver.storage.accounts import AccountStore
from mxserver.streams import Invalidation, Stream

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
    #: the application service whose as_token made the request (None for users' tokens)
    app_service: AppService | None = None
    #: when the token stops working (ms since the epoch); None: never (see ``add_deviceless_token``)
    expires_ts: int | None = None
    #: client-server-api §Account locking / §Account suspension
    locked: bool = False
    suspended: bool = False

    def check_not_suspended(self) -> None:
        """403 ``M_USER_SUSPENDED`` if the account is suspended (§Account suspension)."""
        if self.suspended:
            raise user_suspended()

    @property
    def session(self) -> str:
        """What a client transaction ID is scoped to besides the user: the device, else the
        application service, else the access token."""
        if self.device_id is not None:
            return self.device_id
        if self.app_service is not None:
            return f"appservice:{self.app_service.id}"
        return f"token:{self.token_hash}"


class AppServiceTokens(Protocol):
    """The registered application services, by as_token (the appservice registry)."""

    def by_token(self, as_token: str) -> AppService | None: ...


class _NoAppServices:
    def by_token(self, as_token: str) -> AppService | None:
        return None


class Auth:
    """Resolves access tokens to :class:`Requester` objects."""

    CACHE_SIZE = 50_000

    def __init__(
        self,
        store: AccountStore,
        clock: IReactorTime,
        appservices: AppServiceTokens | None = None,
        invalidations: Stream[Invalidation] | None = None,
    ) -> None:
        """``invalidations``: where revoked tokens are announced (a cluster's other processes
        hold them in memory too)."""
        self._store = store
        self._invalidations = invalidations
        self._clock = clock
        self._appservices = appservices or _NoAppServices()
        self._cache: OrderedDict[str, Requester] = OrderedDict()
        self._seen: dict[tuple[str, str], float] = {}
        self._seen_writes: set[Deferred[None]] = set()
        #: users known to exist, for application services' masquerading (accounts are never
        #: deleted), with whether they are (locked, suspended); dropped by invalidate_user
        self._registered: OrderedDict[str, tuple[bool, bool]] = OrderedDict()

    async def get_user(self, request: IRequest, allow_guest: bool = False, allow_locked: bool = False) -> Requester:
        """The requester, or M_MISSING_TOKEN / M_UNKNOWN_TOKEN / M_USER_LOCKED / M_GUEST_ACCESS_FORBIDDEN
        (and for an application service M_FORBIDDEN / M_UNKNOWN_DEVICE, see the module docstring)."""
        token = access_token(request)
        if token is None:
            raise missing_token()
        service = self._appservices.by_token(token)
        if service is not None:
            requester = await self._appservice_requester(service, request)
            if requester.locked and not allow_locked:
                raise user_locked()
            return requester
        requester = await self.get_user_by_token(token)
        if requester.locked and not allow_locked:
            raise user_locked()
        if requester.is_guest and not allow_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        ip = client_ip(request)
        self._note_seen(requester, ip, request)
        return attrs.evolve(requester, ip=ip)

    async def get_user_by_token(self, token: str) -> Requester:
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        if cached is not None:
            if self._expired(cached.expires_ts):
                del self._cache[token_hash]
                raise unknown_token(soft_logout=True)
            self._cache.move_to_end(token_hash)
            return cached
        owner = await self._store.get_token_owner(token_hash)
        if owner is None or owner.deactivated:
            raise unknown_token()
        if self._expired(owner.expires_ts):
            raise unknown_token(soft_logout=True)
        if owner.refresh_parent is not None and owner.refresh_hash is not None:
            # §Refreshing access tokens: the old refresh token is revoked once the new access
            # token is used. Only a token not yet cached can be in its first use.
            await self._store.revoke_refresh_parent(owner.refresh_hash)
        requester = Requester(
            owner.user_id,
            owner.device_id,
            owner.is_guest,
            token_hash,
            expires_ts=owner.expires_ts,
            locked=owner.locked,
            suspended=owner.suspended,
        )
        self._cache[token_hash] = requester
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return requester

    def _expired(self, expires_ts: int | None) -> bool:
        return expires_ts is not None and self._clock.seconds() * 1000 >= expires_ts

    def appservice(self, request: IRequest) -> AppService:
        """The application service whose as_token the request carries (``/register`` and ``/login``
        with ``m.login.application_service``): M_MISSING_TOKEN or M_UNKNOWN_TOKEN otherwise."""
        token = access_token(request)
        if token is None:
            raise missing_token()
        service = self._appservices.by_token(token)
        if service is None:
            raise unknown_token()
        return service

    async def _appservice_requester(self, service: AppService, request: IRequest) -> Requester:
        user_id = query_str(request, "user_id") or service.sender
        # A user the service acts as is locked or suspended as when it acts itself.
        locked = suspended = False
        if user_id != service.sender:
            if not service.is_interested_in_user(user_id):
                raise forbidden(f"Application service cannot masquerade as this user ({user_id})")
            status = await self._registered_status(user_id)
            if status is None:
                raise forbidden(f"Application service has not registered this user ({user_id})")
            locked, suspended = status
        # MSC4326 (spec v1.17 §Identity assertion); Synapse still reads MSC3202's name too.
        device_id = query_str(request, "device_id") or query_str(request, "org.matrix.msc3202.device_id")
        if device_id is not None and await self._store.get_device(user_id, device_id) is None:
            raise MatrixError(400, "M_UNKNOWN_DEVICE", f"{user_id} has no device {device_id}")
        return Requester(
            user_id, device_id, False, None, client_ip(request), app_service=service, locked=locked, suspended=suspended
        )

    async def _registered_status(self, user_id: str) -> tuple[bool, bool] | None:
        """``(locked, suspended)`` of an active local user; None if there is none."""
        status = self._registered.get(user_id)
        if status is not None:
            self._registered.move_to_end(user_id)
            return status
        user = await self._store.get_user(user_id)
        if user is None or user.deactivated:
            return None
        status = self._registered[user_id] = (user.locked, user.suspended)
        if len(self._registered) > self.CACHE_SIZE:
            self._registered.popitem(last=False)
        return status

    def invalidate(self, token_hashes: list[str]) -> None:
        for h in token_hashes:
            self._cache.pop(h, None)
        if self._invalidations is not None and token_hashes:
            self._invalidations.publish(Invalidation("tokens", tuple(token_hashes)))

    def invalidate_user(self, user_id: str) -> None:
        for h in [h for h, r in self._cache.items() if r.user_id == user_id]:
            del self._cache[h]
        self._registered.pop(user_id, None)
        if self._invalidations is not None:
            self._invalidations.publish(Invalidation("user", (user_id,)))

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
        self._seen_writes.add(d)
        d.addBoth(lambda _: self._seen_writes.discard(d))

    def settle(self) -> Deferred[None]:
        """Fires once the "last seen" writes begun so far are done (the requests that began
        them did not wait for them)."""
        pending = list(self._seen_writes)
        return gatherResults(pending).addCallback(lambda _: None)
