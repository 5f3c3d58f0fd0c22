"""Asking application services: unknown users and aliases, third-party lookups, the ping.

- :meth:`AppServiceQueries.user_exists` / :meth:`~AppServiceQueries.alias_exists`
  (application-service-api §Querying): before this server answers that a local user or alias
  in a service's namespace does not exist (profile look-ups, alias resolution, joins by alias),
  it asks the services whose namespace covers it, one after the other, until one says it
  created it. A service that does not answer counts as "no", as Synapse treats it (the spec's
  408 would fail the client's request where the user or alias may simply not exist).
- third-party lookups (client-server ``/thirdparty/*``, application-service-api §Third-party
  networks) are asked of the services that declare the protocol; their answers are checked
  and combined as Synapse combines them (protocol metadata from the first service, the
  instances of all, each with ``instance_id`` = ``{service id}|{network_id}``). A service's
  description of a protocol is kept for :data:`PROTOCOL_CACHE_SECONDS`: it describes the
  bridge, not the moment, and clients ask for it often (Synapse keeps it an hour).
- :meth:`AppServiceQueries.ping` (appservice_ping.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from mxserver.appservice.api import MAX_PING_BODY_CHARS, AppServiceApi, RequestFailed
from mxserver.appservice.registration import AppService, AppServiceRegistry, instance_id
from mxserver.errors import MatrixError, forbidden, not_found

#: third-party entity kinds and the field each result must name
THIRD_PARTY_KINDS = {"location": "alias", "user": "userid"}
#: how long a service's answer to ``GET /thirdparty/protocol/{protocol}`` is reused
PROTOCOL_CACHE_SECONDS = 300.0


def _valid_result(result: Any, field: str) -> bool:
    return (
        isinstance(result, dict)
        and isinstance(result.get(field), str)
        and isinstance(result.get("protocol"), str)
        and isinstance(result.get("fields"), dict)
    )


class AppServiceQueries:
    """Questions to application services on behalf of the client API."""

    def __init__(self, registry: AppServiceRegistry, api: AppServiceApi, clock: IReactorTime) -> None:
        self._registry = registry
        self._api = api
        self._clock = clock
        #: (service id, protocol) -> (when asked, the service's description); answers only
        self._protocol_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    # -- §Querying -------------------------------------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        """Whether a service whose user namespace covers ``user_id`` says it created it now."""
        for service in self._registry.interested_in_user(user_id):
            if service.url is not None and user_id != service.sender and await self._api.query_user(service, user_id):
                return True
        return False

    async def alias_exists(self, alias: str) -> bool:
        """Whether a service whose alias namespace covers ``alias`` says it created it now."""
        for service in self._registry.interested_in_alias(alias):
            if service.url is not None and await self._api.query_alias(service, alias):
                return True
        return False

    # -- third-party lookups -----------------------------------------------------------------------

    async def protocols(self, only: str | None = None) -> dict[str, dict[str, Any]]:
        """``GET /thirdparty/protocols``: every declared protocol some service describes."""
        infos: dict[str, list[dict[str, Any]]] = {}
        asks = []
        for service in self._registry.with_url():
            for protocol in service.protocols:
                if only is None or protocol == only:
                    asks.append((service, protocol))
        answers = await gatherResults([self._protocol(s, p) for s, p in asks]) if asks else []
        for (_, protocol), info in zip(asks, answers, strict=True):
            if info is not None:
                infos.setdefault(protocol, []).append(info)
        out = {}
        for protocol, found in infos.items():
            combined = dict(found[0])
            combined["instances"] = [i for info in found for i in info["instances"]]
            out[protocol] = combined
        return out

    def _protocol(self, service: AppService, protocol: str) -> Deferred[dict[str, Any] | None]:
        async def ask() -> dict[str, Any] | None:
            key = (service.id, protocol)
            now = self._clock.seconds()
            cached = self._protocol_cache.get(key)
            if cached is not None and now - cached[0] < PROTOCOL_CACHE_SECONDS:
                return cached[1]
            info = await self._api.protocol(service, protocol)
            if info is None:
                return None
            instances = []
            for instance in info["instances"]:
                if isinstance(instance, dict):
                    instance = dict(instance)
                    if isinstance(instance.get("network_id"), str):
                        instance["instance_id"] = instance_id(service.id, instance["network_id"])
                    instances.append(instance)
            described = {**info, "instances": instances}
            self._protocol_cache[key] = (now, described)
            return described

        return ensureDeferred(ask())

    async def protocol(self, protocol: str) -> dict[str, Any]:
        """``GET /thirdparty/protocol/{protocol}``; 404 M_NOT_FOUND for a protocol nobody provides."""
        found = await self.protocols(only=protocol)
        if protocol not in found:
            raise not_found(f"Unknown protocol {protocol!r}")
        return found[protocol]

    async def lookup(self, kind: str, protocol: str, fields: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """``GET /thirdparty/{location,user}/{protocol}``: every service's valid results.

        404 M_NOT_FOUND when no service provides the protocol or none found anything
        (third_party_lookup.yaml: "No portal rooms were found" / "The Matrix User ID was not
        found"; Synapse answers 200 with an empty list instead)."""
        services = self._registry.for_protocol(protocol)
        if not services:
            raise not_found(f"Unknown protocol {protocol!r}")
        return await self._gather(services, kind, protocol, fields)

    async def reverse_lookup(self, kind: str, fields: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """``GET /thirdparty/location?alias=`` / ``/thirdparty/user?userid=``: asked of every
        service that declares a protocol."""
        services = [s for s in self._registry.with_url() if s.protocols]
        return await self._gather(services, kind, None, fields)

    async def _gather(
        self, services: Sequence[AppService], kind: str, protocol: str | None, fields: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        field = THIRD_PARTY_KINDS[kind]
        answers = await gatherResults(
            [ensureDeferred(self._api.thirdparty(s, kind, protocol, fields)) for s in services]
        )
        results = [r for answer in answers for r in answer if _valid_result(r, field)]
        if not results:
            raise not_found(f"No third-party {kind} found")
        return results

    # -- appservice_ping.yaml ---------------------------------------------------------------------

    async def ping(self, requester_service: AppService | None, service_id: str, txn_id: str | None) -> dict[str, Any]:
        """``POST /_matrix/client/v1/appservice/{appserviceId}/ping``: ``{"duration_ms": ...}``."""
        if requester_service is None:
            raise forbidden("Only application services may ping (use the as_token)")
        if requester_service.id != service_id:
            raise forbidden("Provided access token is not the as_token of this application service")
        service = self._registry.by_id(service_id) or requester_service
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "Application service doesn't have a URL configured")
        try:
            answer, duration_ms = await self._api.ping(service, txn_id)
        except RequestFailed as e:
            if e.timed_out:
                raise MatrixError(504, "M_CONNECTION_TIMEOUT", "Connection to application service timed out") from None
            raise MatrixError(502, "M_CONNECTION_FAILED", f"Cannot reach the application service: {e}") from None
        if not answer.ok:
            raise MatrixError(
                502,
                "M_BAD_STATUS",
                f"Ping returned status {answer.code}",
                status=answer.code,
                body=answer.body.decode("utf-8", "replace")[:MAX_PING_BODY_CHARS],
            )
        return {"duration_ms": duration_ms}
