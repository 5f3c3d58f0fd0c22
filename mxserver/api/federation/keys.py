"""Signing keys over federation: our own (``/_matrix/key/v2/server``) and, as a
notary, other servers' (``/_matrix/key/v2/query``). Both are unauthenticated."""

from __future__ import annotations

from typing import Any

from signedjson.types import SigningKey
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, query_int, route
from mxserver.errors import bad_json, invalid_param
from mxserver.federation.keyring import MAX_NOTARY_QUERY_SERVERS, OWN_KEY_VALIDITY_MS, Keyring, local_key_response
from mxserver.ids import is_valid_server_name

#: How long other servers may cache our key response (server-server-api §Publishing Keys).
KEY_VALIDITY_MS = OWN_KEY_VALIDITY_MS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class KeyServerServlet:
    """Our signing keys, and as a notary the keys of other servers the keyring holds."""

    def __init__(self, server_name: str, signing_key: SigningKey, keyring: Keyring, clock: IReactorTime) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.keyring = keyring
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @route("GET", "/_matrix/key/v2/server", "/_matrix/key/v2/server/{key_id}")
    def server_keys(self, request: IRequest, key_id: str | None = None) -> JsonDict:
        # The {key_id} form is deprecated; the answer is the same: all current keys.
        return local_key_response(self.server_name, self.signing_key, self._now_ms())

    @route("GET", "/_matrix/key/v2/query/{server_name}", "/_matrix/key/v2/query/{server_name}/{key_id}")
    async def query_one(self, request: IRequest, server_name: str, key_id: str | None = None) -> JsonDict:
        """keys_query.yaml GET. The ``/{keyId}`` form was dropped from the spec (r0.1.1) but
        servers and SyTest ("... notary server via a GET request") still use it: it asks for
        that key, like a POST naming it."""
        if not is_valid_server_name(server_name):
            raise invalid_param(f"Invalid server name {server_name!r}")
        # keys_query.yaml: without minimum_valid_until_ts the notary uses the current time.
        min_valid = query_int(request, "minimum_valid_until_ts", self._now_ms(), minimum=0)
        criteria = {key_id: min_valid} if key_id else {}
        keys = await self.keyring.notary_query({server_name: (criteria, min_valid)})
        return {"server_keys": keys}

    @route("POST", "/_matrix/key/v2/query")
    async def query_many(self, request: IRequest) -> JsonDict:
        body = json_body(request)
        server_keys = body.get("server_keys")
        if not isinstance(server_keys, dict):
            raise bad_json("'server_keys' must be an object")
        if len(server_keys) > MAX_NOTARY_QUERY_SERVERS:
            raise bad_json(f"At most {MAX_NOTARY_QUERY_SERVERS} servers per query")
        now = self._now_ms()
        query: dict[str, tuple[dict[str, int], int]] = {}
        for server_name, key_criteria in server_keys.items():
            if not is_valid_server_name(server_name):
                raise invalid_param(f"Invalid server name {server_name!r}")
            if not isinstance(key_criteria, dict):
                raise bad_json(f"server_keys.{server_name} must be an object")
            criteria: dict[str, int] = {}
            for kid, criterion in key_criteria.items():
                if not isinstance(criterion, dict):
                    raise bad_json(f"server_keys.{server_name}.{kid} must be an object")
                wanted = criterion.get("minimum_valid_until_ts")
                if wanted is None:
                    wanted = now
                if not _is_int(wanted):
                    raise bad_json(f"server_keys.{server_name}.{kid}.minimum_valid_until_ts must be an integer")
                criteria[kid] = wanted
            query[server_name] = (criteria, now)
        return {"server_keys": await self.keyring.notary_query(query)}
