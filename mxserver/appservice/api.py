"""The homeserver's requests to application services (application-service-api.md
§Homeserver -> Application Service API).

Every request carries ``Authorization: Bearer <hs_token>`` (§Authorisation, v1.4) and goes to
``{url}/_matrix/app/v1/...``. Like Synapse, neither the legacy unprefixed routes nor the
``access_token`` query parameter are used: every maintained application service serves v1.

Requests go out through an IP-filtered agent, like push gateways' (``federation.ip_range_blacklist``
with the exceptions of ``federation.ip_range_whitelist`` and ``app_service_ip_range_whitelist``):
a service on this machine needs ``app_service_ip_range_whitelist: [127.0.0.0/8, ::1/128]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import attrs
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from mxserver.appservice.registration import AppService
from mxserver.crypto.canonical import encode_json
from mxserver.federation.responses import read_body

log = Logger()

PREFIX = "/_matrix/app/v1"
#: the longest a transaction may take before it counts as failed (seconds)
TRANSACTION_TIMEOUT_S = 60.0
#: the longest a query (user, alias, third-party, ping) may block the client request that asked
QUERY_TIMEOUT_S = 30.0
#: the largest answer read from a service
MAX_ANSWER_BYTES = 1024 * 1024
#: the part of an answer's body the ping passes back to the service (spec: "to aid with debugging")
MAX_PING_BODY_CHARS = 1000


class RequestFailed(Exception):
    """The service could not be reached (connection refused, blocked address, DNS) or timed out."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


@attrs.frozen
class Answer:
    code: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class AppServiceApi:
    """HTTP requests to application services."""

    def __init__(self, agent: IAgent, clock: IReactorTime, close: Callable[[], Deferred[None]] | None = None) -> None:
        self._http = treq.client.HTTPClient(agent)
        self._clock = clock
        self._close = close

    def close(self) -> Deferred[None]:
        """Close the connections kept open (at shutdown)."""
        return self._close() if self._close is not None else succeed(None)

    async def request(
        self,
        service: AppService,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        timeout: float = QUERY_TIMEOUT_S,
    ) -> Answer:
        """One request to ``service`` (``path`` under /_matrix/app/v1); :class:`RequestFailed` when
        no answer came."""
        assert service.url is not None, "no requests to a service without a URL"
        url = f"{service.url}{PREFIX}{path}"
        if query:
            url += "?" + urlencode(list(query))
        headers = Headers({b"Authorization": [b"Bearer " + service.hs_token.encode("utf-8")]})
        data = None
        if body is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
            data = encode_json(body)
        d: Deferred[Answer] = Deferred.fromCoroutine(self._send(method, url, headers, data))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._clock.callLater(timeout, expire)
        try:
            return await d
        except Exception as e:
            if expired:
                raise RequestFailed("timed out", timed_out=True) from None
            reasons = getattr(e, "reasons", None) or []
            if reasons:
                e = reasons[0].value
            raise RequestFailed(f"{type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _send(self, method: str, url: str, headers: Headers, data: bytes | None) -> Answer:
        response = await self._http.request(method, url.encode("utf-8"), headers=headers, data=data)
        body = await read_body(response, MAX_ANSWER_BYTES)
        return Answer(response.code, body)

    # -- §Pushing events ----------------------------------------------------------------------------

    async def push(self, service: AppService, txn_id: str, body: dict[str, Any]) -> Answer:
        """``PUT /transactions/{txnId}``; the answer (the caller judges it)."""
        return await self.request(
            service, "PUT", f"/transactions/{quote(txn_id, safe='')}", body, timeout=TRANSACTION_TIMEOUT_S
        )

    # -- §Querying ----------------------------------------------------------------------------------

    async def _exists(self, service: AppService, path: str) -> bool:
        # query_user.yaml / query_room.yaml: 200 means the service created the entity; anything
        # else (404, an error, no answer) means it did not, as Synapse treats it.
        try:
            answer = await self.request(service, "GET", path)
        except RequestFailed as e:
            log.warn("application service {id} did not answer {path}: {reason}", id=service.id, path=path, reason=e)
            return False
        if answer.code != 200 and answer.code != 404:
            log.warn("application service {id} answered {path} with {code}", id=service.id, path=path, code=answer.code)
        return answer.code == 200

    async def query_user(self, service: AppService, user_id: str) -> bool:
        """``GET /users/{userId}``: whether the service says it created ``user_id``."""
        return await self._exists(service, f"/users/{quote(user_id, safe='')}")

    async def query_alias(self, service: AppService, alias: str) -> bool:
        """``GET /rooms/{roomAlias}``: whether the service says it created ``alias``."""
        return await self._exists(service, f"/rooms/{quote(alias, safe='')}")

    # -- §Third-party networks ----------------------------------------------------------------------

    async def protocol(self, service: AppService, protocol: str) -> dict[str, Any] | None:
        """``GET /thirdparty/protocol/{protocol}``: the protocol's metadata, or None."""
        try:
            answer = await self.request(service, "GET", f"/thirdparty/protocol/{quote(protocol, safe='')}")
        except RequestFailed as e:
            log.warn("application service {id}: protocol {p} failed: {reason}", id=service.id, p=protocol, reason=e)
            return None
        info = answer.json() if answer.ok else None
        if not isinstance(info, dict) or not isinstance(info.get("instances"), list):
            return None
        return info

    async def thirdparty(
        self, service: AppService, kind: str, protocol: str | None, query: Sequence[tuple[str, str]]
    ) -> list[Any]:
        """``GET /thirdparty/{kind}[/{protocol}]``: the answer's list (empty when there is none)."""
        path = f"/thirdparty/{kind}" + (f"/{quote(protocol, safe='')}" if protocol is not None else "")
        try:
            answer = await self.request(service, "GET", path, query=query)
        except RequestFailed as e:
            log.warn("application service {id}: {path} failed: {reason}", id=service.id, path=path, reason=e)
            return []
        result = answer.json() if answer.ok else None
        return result if isinstance(result, list) else []

    # -- §Pinging -----------------------------------------------------------------------------------

    async def ping(self, service: AppService, txn_id: str | None) -> tuple[Answer, int]:
        """``POST /ping``: the answer and how long it took (ms); :class:`RequestFailed` without one."""
        body: dict[str, Any] = {} if txn_id is None else {"transaction_id": txn_id}
        start = time.monotonic()
        answer = await self.request(service, "POST", "/ping", body)
        return answer, int((time.monotonic() - start) * 1000)
