"""The homeserver's requests to identity servers (identity-service-api; client-server-api
§Adding Account Administrative Contact Information).

An identity server is named as clients name it (``id_server``: a host, optionally with a port)
and reached at ``https://{id_server}/_matrix/identity/v2/...``. Requests go through the same
IP-filtered agent as push gateways (``federation.ip_range_blacklist`` / ``ip_range_whitelist``),
and TLS follows federation's policy (``federation.verify_tls``, ``federation.ca_certificates``):
a test identity server on loopback with a self-signed certificate needs both relaxed.

Requests made on a client's behalf carry its ``id_access_token`` (``Authorization: Bearer``);
``/3pid/unbind`` is signed by the homeserver instead (X-Matrix, as server-server requests are),
which is how the identity server knows the homeserver controls the user ID. Identity servers'
Matrix errors are passed through to the client, as the spec asks.

Small on purpose: the third-party invite work uses :meth:`IdentityServerClient.request` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs
import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from mxserver.crypto.canonical import encode_json
from mxserver.errors import MatrixError
from mxserver.federation.ip_filter import BlockedAddressError
from mxserver.federation.responses import read_body
from mxserver.ids import is_valid_server_name

log = Logger()

PREFIX = "/_matrix/identity/v2"
#: how long a client request may wait for an identity server (seconds)
REQUEST_TIMEOUT_S = 30.0
#: the largest answer read from an identity server
MAX_ANSWER_BYTES = 256 * 1024

#: signs a request as this homeserver: (method, destination, uri, content) → Authorization value
RequestSigner = Callable[[str, str, str, Any], bytes]


class IdentityServerUnreachable(MatrixError):
    """No answer came (refused, DNS, TLS, timeout)."""

    def __init__(self, id_server: str, reason: str) -> None:
        super().__init__(502, "M_UNKNOWN", f"Could not reach identity server {id_server}: {reason}")


@attrs.frozen
class IdentityAnswer:
    code: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def check_id_server(id_server: str) -> str:
    """``id_server`` if it is a hostname with an optional port (invite_3pid.yaml and
    administrative_contact.yaml: "The hostname+port of the identity server"), else 400."""
    if not isinstance(id_server, str) or not is_valid_server_name(id_server):
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid id_server {str(id_server)[:100]!r}: not a hostname[:port]")
    return id_server


class IdentityServerClient:
    """HTTP requests to identity servers."""

    def __init__(
        self,
        agent: IAgent,
        clock: IReactorTime,
        server_name: str,
        sign: RequestSigner,
        close: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        self._http = treq.client.HTTPClient(agent)
        self._clock = clock
        self._server_name = server_name
        self._sign = sign
        self._close = close

    def close(self) -> Deferred[None]:
        """Close the connections kept open (at shutdown)."""
        return self._close() if self._close is not None else succeed(None)

    async def request(
        self,
        method: str,
        id_server: str,
        path: str,
        body: Any = None,
        *,
        access_token: str | None = None,
        signed: bool = False,
        query: dict[str, str] | None = None,
    ) -> IdentityAnswer:
        """One request to ``https://{id_server}/_matrix/identity/v2{path}``; raises
        :class:`IdentityServerUnreachable` when no answer came."""
        id_server = check_id_server(id_server)
        uri = PREFIX + path
        if query:
            uri += "?" + urlencode(query)
        authorization = self._sign(method, id_server, uri, body) if signed else None
        return await self.fetch(
            method, f"https://{id_server}{uri}", body, access_token=access_token, authorization=authorization
        )

    async def fetch(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        access_token: str | None = None,
        authorization: bytes | None = None,
    ) -> IdentityAnswer:
        """One request to a URL of an identity server (the one transport of every identity-server
        request, :mod:`mxserver.accounts.identity_lookup`'s too): 400 ``M_SERVER_NOT_TRUSTED``
        for an address the IP filter refuses, :class:`IdentityServerUnreachable` when no answer
        came."""
        host = urlsplit(url).netloc
        headers = Headers({b"User-Agent": [b"mxserver"]})
        if access_token is not None:
            headers.addRawHeader(b"Authorization", b"Bearer " + access_token.encode("utf-8"))
        if authorization is not None:
            headers.addRawHeader(b"Authorization", authorization)
        data = None
        if body is not None:
            headers.addRawHeader(b"Content-Type", b"application/json")
            data = encode_json(body)
        d: Deferred[IdentityAnswer] = Deferred.fromCoroutine(self._send(method, url, headers, data))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._clock.callLater(REQUEST_TIMEOUT_S, expire)
        try:
            return await d
        except MatrixError:
            raise
        except Exception as e:
            if expired:
                raise IdentityServerUnreachable(host, "timed out") from None
            reasons = [r.value for r in getattr(e, "reasons", None) or []]
            if isinstance(e, BlockedAddressError) or any(isinstance(r, BlockedAddressError) for r in reasons):
                # client-server-api M_SERVER_NOT_TRUSTED: "a third-party server, e.g. identity
                # server, that this server does not trust"
                raise MatrixError(
                    400, "M_SERVER_NOT_TRUSTED", f"This server may not contact identity server {host} (blocked address)"
                ) from None
            shown = reasons[0] if reasons else e
            log.info("Identity server {host}: {error}", host=host, error=f"{type(shown).__name__}: {shown}")
            raise IdentityServerUnreachable(host, type(shown).__name__) from None
        finally:
            if timer.active():
                timer.cancel()

    async def _send(self, method: str, url: str, headers: Headers, data: bytes | None) -> IdentityAnswer:
        response = await self._http.request(method, url, headers=headers, data=data)
        raw = await read_body(response, MAX_ANSWER_BYTES)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return IdentityAnswer(response.code, body)

    # -- the operations a homeserver makes ---------------------------------------------------

    async def bind(self, id_server: str, id_access_token: str, sid: str, client_secret: str, mxid: str) -> dict[str, Any]:
        """identity-service-api ``POST /3pid/bind``: the IS's signed association (with the 3PID's
        ``medium`` and ``address``); its errors are passed through."""
        answer = await self.request(
            "POST",
            id_server,
            "/3pid/bind",
            {"sid": sid, "client_secret": client_secret, "mxid": mxid},
            access_token=id_access_token,
        )
        body = self._checked(id_server, answer)
        if not isinstance(body.get("medium"), str) or not isinstance(body.get("address"), str):
            raise MatrixError(502, "M_UNKNOWN", f"Identity server {id_server} gave an invalid association")
        return body

    async def unbind(self, id_server: str, mxid: str, medium: str, address: str) -> bool:
        """identity-service-api ``POST /3pid/unbind``, signed by this homeserver: True once the IS
        removed the association, False when it refuses to (the spec's ``no-support``: 400, 404,
        501), MatrixError for anything else."""
        body = {"mxid": mxid, "threepid": {"medium": medium, "address": address}}
        answer = await self.request("POST", id_server, "/3pid/unbind", body, signed=True)
        if answer.ok:
            return True
        if answer.code in (400, 404, 501):
            log.info(
                "Identity server {id_server} refused to unbind {medium} for {mxid}: {code}",
                id_server=id_server,
                medium=medium,
                mxid=mxid,
                code=answer.code,
            )
            return False
        self._checked(id_server, answer)
        return False

    @staticmethod
    def _checked(id_server: str, answer: IdentityAnswer) -> dict[str, Any]:
        """A 2xx answer's JSON object; an error answer raised as the IS's own Matrix error."""
        body = answer.body
        if answer.ok and isinstance(body, dict):
            return body
        if isinstance(body, dict) and isinstance(body.get("errcode"), str):
            error = body.get("error")
            status = answer.code if 400 <= answer.code < 500 else 502
            raise MatrixError(status, body["errcode"], error if isinstance(error, str) else "Identity server error")
        raise MatrixError(502, "M_UNKNOWN", f"Identity server {id_server} answered {answer.code}")

