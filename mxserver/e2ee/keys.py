"""Device keys: upload, query and claim (keys.yaml; server-server user_keys.yaml).

The Homeserver's ``e2e_keys``. Queries and claims for local users are answered from the
database; for remote users they go to the user's server over federation
(``/user/keys/query``, ``/user/keys/claim``), one request per server, run in
parallel. A remote user's device list is cached once a local user shares a
room with them, and kept current by ``m.device_list_update`` EDUs
(:mod:`mxserver.e2ee.device_lists`).

Signature visibility (end_to_end_encryption.md §Cross-signing): signatures
uploaded through ``/keys/signatures/upload`` are shown on a key of user U
to requester R only when made by U (U's devices or cross-signing keys) or by
R; so nobody sees another user's user-signing signatures, and user-signing
keys are shown to their owner alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.e2ee.validation import (
    check_device_keys,
    cross_signing_public_key,
    parse_key_map,
    remote_device_keys,
)
from mxserver.errors import MatrixError, bad_json, invalid_param
from mxserver.federation.client import FederationError
from mxserver.ids import UserID
from mxserver.storage.e2ee_keys import E2eKeyStore, KeyConflict

if TYPE_CHECKING:
    from mxserver.e2ee.device_lists import DeviceListHandler
    from mxserver.federation.client import FederationClient

log = Logger()

JsonDict = dict[str, Any]

#: keys.yaml: "10 seconds is the recommended default"
DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 60_000
#: bounds on one query or claim
MAX_QUERY_USERS = 1000
MAX_DEVICES_PER_USER = 1000

CROSS_SIGNING_FIELDS = (
    ("master", "master_keys"),
    ("self_signing", "self_signing_keys"),
    ("user_signing", "user_signing_keys"),
)


def merge_signatures(obj: JsonDict, extra: dict[str, dict[str, str]] | None) -> JsonDict:
    """``obj`` with ``extra`` signatures ({signer: {key id: sig}}) added."""
    if not extra:
        return obj
    sigs = {k: dict(v) for k, v in (obj.get("signatures") or {}).items() if isinstance(v, dict)}
    for signer, by_key in extra.items():
        sigs.setdefault(signer, {}).update(by_key)
    return {**obj, "signatures": sigs}


def parse_timeout(body: JsonDict) -> float:
    timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_MS
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise bad_json("'timeout' must be a non-negative integer")
    return min(timeout, MAX_TIMEOUT_MS) / 1000


def parse_device_query(device_keys: Any) -> dict[str, list[str]]:
    """``{user_id: [device_id, ...]}`` (an empty list means every device)."""
    if not isinstance(device_keys, dict):
        raise bad_json("'device_keys' must be an object")
    if len(device_keys) > MAX_QUERY_USERS:
        raise bad_json(f"At most {MAX_QUERY_USERS} users per query")
    for user_id, devices in device_keys.items():
        if not UserID.is_valid(user_id):
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json(f"'device_keys.{user_id}' must be an array of device IDs")
        if len(devices) > MAX_DEVICES_PER_USER:
            raise bad_json(f"At most {MAX_DEVICES_PER_USER} devices per user")
    return device_keys


def parse_claim_query(one_time_keys: Any) -> dict[str, dict[str, str]]:
    """``{user_id: {device_id: algorithm}}``."""
    if not isinstance(one_time_keys, dict):
        raise bad_json("'one_time_keys' must be an object")
    if len(one_time_keys) > MAX_QUERY_USERS:
        raise bad_json(f"At most {MAX_QUERY_USERS} users per claim")
    for user_id, devices in one_time_keys.items():
        if not UserID.is_valid(user_id):
            raise invalid_param(f"Invalid user ID {user_id!r}")
        if not isinstance(devices, dict) or not all(isinstance(a, str) and a for a in devices.values()):
            raise bad_json(f"'one_time_keys.{user_id}' must be an object of device ID to algorithm")
        if len(devices) > MAX_DEVICES_PER_USER:
            raise bad_json(f"At most {MAX_DEVICES_PER_USER} devices per user")
    return one_time_keys


async def _settle(coro: Any) -> Any:
    try:
        return await coro
    except Exception as e:
        log.info("remote key request failed: {e}", e=e)
        return e


async def settle_all(coros: list[Any]) -> list[Any]:
    """Run ``coros`` in parallel; each one's result, or the exception it raised."""
    return await gatherResults([ensureDeferred(_settle(c)) for c in coros])


def _failure(e: Exception) -> JsonDict:
    if isinstance(e, FederationError):
        return {"status": e.code, "errcode": e.errcode, "message": e.msg}
    return {"status": 503, "message": str(e) or type(e).__name__}


class E2eKeysHandler:
    """/keys/upload, /keys/query and /keys/claim, local and over federation."""

    def __init__(
        self,
        server_name: str,
        store: E2eKeyStore,
        device_lists: DeviceListHandler,
        federation_client: FederationClient,
        clock: IReactorTime,
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.device_lists = device_lists
        self._federation_client = federation_client
        self._clock = clock

    def _is_mine(self, user_id: str) -> bool:
        return UserID.parse(user_id).server_name == self.server_name

    # -- upload ---------------------------------------------------------------------------------

    async def upload(self, requester: Any, body: JsonDict) -> JsonDict:
        """POST /keys/upload."""
        user_id, device_id = requester.user_id, requester.device_id
        if device_id is None:
            raise invalid_param("Keys can only be uploaded by a device (this access token has none)")
        device_keys = body.get("device_keys")
        if device_keys is not None:
            device_keys = check_device_keys(device_keys, user_id, device_id)
            ed25519 = device_keys["keys"][f"ed25519:{device_id}"]
        else:
            stored = (await self.store.get_device_keys([(user_id, device_id)])).get(user_id, {}).get(device_id)
            ed25519 = (stored[0] or {}).get("keys", {}).get(f"ed25519:{device_id}") if stored else None
        otks = parse_key_map(body.get("one_time_keys"), "one_time_keys", ed25519, user_id, device_id)
        fallback = parse_key_map(body.get("fallback_keys"), "fallback_keys", ed25519, user_id, device_id)
        algorithms = [a for a, _ in fallback]
        if len(set(algorithms)) != len(algorithms):
            raise invalid_param("At most one fallback key per algorithm")
        now_ms = int(self._clock.seconds() * 1000)
        try:
            counts, changes = await self.store.upload_keys(user_id, device_id, device_keys, otks, fallback, now_ms)
        except KeyConflict as e:
            raise invalid_param(str(e)) from None
        if changes:
            await self.device_lists.local_changes(user_id, [(device_id, s, p) for s, p in changes])
        # keys.yaml: counts of every algorithm held; signed_curve25519 always, for older clients.
        return {"one_time_key_counts": {"signed_curve25519": 0, **counts}}

    # -- query ----------------------------------------------------------------------------------------

    async def query(self, requester_user: str, device_query: dict[str, list[str]], timeout: float) -> JsonDict:
        """POST /keys/query: local users from the database, remote ones from cache or their servers."""
        local: dict[str, list[str]] = {}
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in device_query.items():
            server = UserID.parse(user_id).server_name
            if server == self.server_name:
                local[user_id] = devices
            else:
                remote.setdefault(server, {})[user_id] = devices
        result = await self.query_local(local, requester_user)
        result["failures"] = {}
        if remote:
            await self._query_remote(requester_user, remote, timeout, result)
        return result

    async def query_local(self, device_query: dict[str, list[str]], requester_user: str | None) -> JsonDict:
        """The answer for local users; ``requester_user`` None means another server is asking."""
        users = list(device_query)
        pairs: list[tuple[str, str | None]] = []
        for user_id, devices in device_query.items():
            pairs += [(user_id, None)] if not devices else [(user_id, d) for d in dict.fromkeys(devices)]
        stored = await self.store.get_device_keys(pairs) if pairs else {}
        names = await self.store.get_local_device_names(users) if users else {}
        signers = set(users) | ({requester_user} if requester_user else set())
        sigs = await self.store.get_signatures(users, signers) if users else {}
        device_keys: JsonDict = {}
        for user_id in users:
            out: JsonDict = {}
            existing = names.get(user_id, {})
            for device_id, (keys, _) in stored.get(user_id, {}).items():
                if keys is None or device_id not in existing:
                    continue
                keys = merge_signatures(keys, sigs.get((user_id, device_id)))
                # Another server asking (requester None) gets no device names (device_lists.py).
                name = existing[device_id] if requester_user is not None else None
                keys = {**keys, "unsigned": {"device_display_name": name} if name is not None else {}}
                out[device_id] = keys
            device_keys[user_id] = out
        result: JsonDict = {"device_keys": device_keys, "master_keys": {}, "self_signing_keys": {}}
        if requester_user is not None:
            result["user_signing_keys"] = {}
        cross = await self.store.get_cross_signing_keys(users) if users else {}
        self._add_cross_signing(result, cross, sigs, requester_user)
        return result

    def _add_cross_signing(
        self,
        result: JsonDict,
        cross: dict[str, dict[str, JsonDict]],
        sigs: dict[tuple[str, str], dict[str, dict[str, str]]],
        requester_user: str | None,
    ) -> None:
        for user_id, by_type in cross.items():
            for key_type, field in CROSS_SIGNING_FIELDS:
                key = by_type.get(key_type)
                if key is None:
                    continue
                if key_type == "user_signing" and user_id != requester_user:
                    continue  # cross_signing: a user-signing key is shown to its owner only
                public = next(iter(key.get("keys", {}).values()), None)
                if public is not None:
                    key = merge_signatures(key, sigs.get((user_id, public)))
                result.setdefault(field, {})[user_id] = key

    async def _query_remote(
        self, requester_user: str, remote: dict[str, dict[str, list[str]]], timeout: float, result: JsonDict
    ) -> None:
        all_users = [u for users in remote.values() for u in users]
        # An update being applied (an EDU's resync) is about to fill or refresh the cache.
        await self.device_lists.wait_for_updates(all_users, timeout)
        tracked = await self.device_lists.store.tracked(all_users)
        from_cache: dict[str, list[str]] = {}
        to_fetch: dict[str, dict[str, list[str]]] = {}
        for server, users in remote.items():
            for user_id, devices in users.items():
                if user_id in tracked:
                    from_cache[user_id] = devices
                else:
                    to_fetch.setdefault(server, {})[user_id] = devices
        # A whole list of a user we share a room with but hold no cache of: start the cache
        # (GET /user/devices) and answer from it; the others go to /user/keys/query.
        whole = [u for users in to_fetch.values() for u, devices in users.items() if not devices]
        if whole:
            for user_id in await self.device_lists.start_tracking(whole, timeout):
                from_cache[user_id] = []
                server = UserID.parse(user_id).server_name
                del to_fetch[server][user_id]
                if not to_fetch[server]:
                    del to_fetch[server]
        if from_cache:
            self._merge_into(result, await self._from_cache(from_cache))
        if to_fetch:
            answers = await settle_all([self._fetch_keys(server, users, timeout) for server, users in to_fetch.items()])
            for server, answer in zip(to_fetch, answers, strict=True):
                if isinstance(answer, Exception):
                    result["failures"][server] = _failure(answer)
                else:
                    self._merge_into(result, answer)
        # The requester's own signatures on remote master keys (user-signing) are held here.
        masters = result.get("master_keys", {})
        remote_users = [u for u in all_users if u in masters]
        if remote_users:
            sigs = await self.store.get_signatures(remote_users, [requester_user])
            for user_id in remote_users:
                public = cross_signing_public_key(masters[user_id])
                if public is not None:
                    masters[user_id] = merge_signatures(masters[user_id], sigs.get((user_id, public[1])))

    @staticmethod
    def _merge_into(result: JsonDict, answer: JsonDict) -> None:
        for field in ("device_keys", "master_keys", "self_signing_keys"):
            result.setdefault(field, {}).update(answer.get(field, {}))

    async def _from_cache(self, query: dict[str, list[str]]) -> JsonDict:
        pairs: list[tuple[str, str | None]] = []
        for user_id, devices in query.items():
            pairs += [(user_id, None)] if not devices else [(user_id, d) for d in dict.fromkeys(devices)]
        stored = await self.store.get_device_keys(pairs)
        device_keys: JsonDict = {}
        for user_id in query:
            out: JsonDict = {}
            for device_id, (keys, name) in stored.get(user_id, {}).items():
                if keys is None:
                    continue
                out[device_id] = {**keys, "unsigned": {"device_display_name": name} if name else {}}
            device_keys[user_id] = out
        result: JsonDict = {"device_keys": device_keys, "master_keys": {}, "self_signing_keys": {}}
        cross = await self.store.get_cross_signing_keys(query)
        self._add_cross_signing(result, cross, {}, None)
        return result

    async def _fetch_keys(self, server: str, users: dict[str, list[str]], timeout: float) -> JsonDict:
        """POST /user/keys/query to ``server``; only what it may speak for (its own users) is kept."""
        answer = await self._federation_client.post_json(
            server, "/_matrix/federation/v1/user/keys/query", {"device_keys": users}, timeout=timeout
        )
        clean: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        got = answer.get("device_keys")
        for user_id in users:
            by_device = got.get(user_id) if isinstance(got, dict) else None
            if not isinstance(by_device, dict):
                continue
            kept = {d: remote_device_keys(k, user_id, d) for d, k in by_device.items()}
            clean["device_keys"][user_id] = {d: k for d, k in kept.items() if k is not None}
        for field in ("master_keys", "self_signing_keys"):
            keys = answer.get(field)
            if not isinstance(keys, dict):
                continue
            for user_id in users:
                key = keys.get(user_id)
                # A key without one string public key (cross_signing_key.yaml) is skipped, like a
                # key for a user the server may not speak for: neither reaches clients or the cache.
                if isinstance(key, dict) and key.get("user_id") == user_id and cross_signing_public_key(key):
                    clean[field][user_id] = key
        await self.device_lists.cache_query_answer(users, clean)
        return clean

    # -- claim ---------------------------------------------------------------------------------------

    async def claim(self, claim_query: dict[str, dict[str, str]], timeout: float) -> JsonDict:
        """POST /keys/claim."""
        local: dict[str, dict[str, str]] = {}
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in claim_query.items():
            server = UserID.parse(user_id).server_name
            if server == self.server_name:
                local[user_id] = devices
            else:
                remote.setdefault(server, {})[user_id] = devices
        result: JsonDict = {"one_time_keys": await self.claim_local(local), "failures": {}}
        if remote:
            answers = await settle_all([self._claim_remote(server, q, timeout) for server, q in remote.items()])
            for server, answer in zip(remote, answers, strict=True):
                if isinstance(answer, Exception):
                    result["failures"][server] = _failure(answer)
                else:
                    result["one_time_keys"].update(answer)
        return result

    async def claim_local(self, claim_query: dict[str, dict[str, str]]) -> JsonDict:
        wanted: Sequence[tuple[str, str, str]] = [
            (u, d, alg) for u, devices in claim_query.items() for d, alg in devices.items()
        ]
        return await self.store.claim_keys(wanted) if wanted else {}

    async def _claim_remote(self, server: str, query: dict[str, dict[str, str]], timeout: float) -> JsonDict:
        answer = await self._federation_client.post_json(
            server, "/_matrix/federation/v1/user/keys/claim", {"one_time_keys": query}, timeout=timeout
        )
        got = answer.get("one_time_keys")
        if not isinstance(got, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered /user/keys/claim without one_time_keys")
        return {u: got[u] for u in query if isinstance(got.get(u), dict)}


def user_devices_path(user_id: str) -> str:
    return "/_matrix/federation/v1/user/devices/" + quote(user_id, safe="")
