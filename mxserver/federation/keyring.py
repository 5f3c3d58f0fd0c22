"""The keyring: other servers' signing keys, fetched, checked, cached; signature checks.

server-server-api §Retrieving server keys. Keys are looked up in memory,
then in the database, then fetched: from the server itself
(``GET /_matrix/key/v2/server``), and for keys still missing from each of
``federation.trusted_key_servers`` (``POST /_matrix/key/v2/query``). A key
response is accepted only if it names the server asked about and is signed
by that server with every key it lists that we understand; a notary's answer
must in addition carry the notary's valid signature (the notary's own keys
are fetched from the notary directly, never through notaries, so look-ups
cannot wait on each other in a cycle).

A key may be used until its ``valid_until_ts``, capped at 7 days after we
fetched it (keys_server.yaml: "the lesser of this field and 7 days into the
future"); an ``old_verify_keys`` entry until its ``expired_ts``.
Concurrent look-ups of one server share one fetch, and a server is not
asked again within :data:`MIN_REFETCH_INTERVAL_S` of the last attempt. Our
own keys are answered locally.

The keyring also answers as a notary (:meth:`Keyring.notary_query`): the
key responses we hold with their original signatures, plus ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from signedjson.types import SigningKey, VerifyKey
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.crypto.keys import decode_verify_key, get_verify_key, key_id, verify_key_base64
from mxserver.crypto.signing import ED25519, SignatureError, sign_json, signature_ids, verify_signed_json
from mxserver.federation.responses import SharedCalls
from mxserver.ids import is_valid_server_name
from mxserver.storage.server_keys import ServerKeyStore, StoredServerKey

if TYPE_CHECKING:
    from mxserver.federation.client import FederationClient

log = Logger()

#: how long other servers may cache our key response (server-server-api §Publishing Keys)
OWN_KEY_VALIDITY_MS = 24 * 3600 * 1000
#: keys_server.yaml: never trust a key for longer than this after fetching it
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
#: a server is not asked for its keys again sooner than this
MIN_REFETCH_INTERVAL_S = 10.0
KEY_FETCH_TIMEOUT_S = 30.0
#: largest key response read from a server, and from a notary (which may answer for several)
MAX_KEY_RESPONSE_SIZE = 1024 * 1024
MAX_NOTARY_RESPONSE_SIZE = 10 * 1024 * 1024
#: how many servers one notary query may ask about
MAX_NOTARY_QUERY_SERVERS = 100

_FOREVER_MS = 2**62


class KeyResponseError(ValueError):
    """A key response (from a server or a notary) fails the spec's checks."""


class KeyLookupError(SignatureError):
    """No usable key was found for a signature."""


@attrs.frozen
class ServerKey:
    """One verify key of a server, and until when it may be used."""

    server_name: str
    key_id: str
    verify_key: VerifyKey
    #: for a current key its capped valid_until_ts; for an old key its expired_ts
    valid_until_ts: int
    is_old: bool = False


def local_key_response(server_name: str, signing_key: SigningKey, now_ms: int) -> dict[str, Any]:
    """Our ``/_matrix/key/v2/server`` answer, signed."""
    body = {
        "server_name": server_name,
        "verify_keys": {key_id(signing_key): {"key": verify_key_base64(signing_key)}},
        "old_verify_keys": {},
        "valid_until_ts": now_ms + OWN_KEY_VALIDITY_MS,
    }
    return sign_json(body, server_name, signing_key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_key_response(server_name: str, response: Any, now_ms: int) -> tuple[list[ServerKey], dict[str, Any]]:
    """The keys in a ``/_matrix/key/v2/server``-shaped response, after the spec's checks.

    Returns the keys and the response as we keep it (the origin's signatures
    only); raises :class:`KeyResponseError` with the reason otherwise.
    """
    if not isinstance(response, dict):
        raise KeyResponseError("the key response is not a JSON object")
    if response.get("server_name") != server_name:
        raise KeyResponseError(f"the key response is for {response.get('server_name')!r}, not {server_name!r}")
    if not _is_int(response.get("valid_until_ts")):
        raise KeyResponseError("valid_until_ts is missing or not an integer")
    valid_until: int = response["valid_until_ts"]
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict):
        raise KeyResponseError("verify_keys is missing or not an object")
    old_keys = response.get("old_verify_keys", {})
    if not isinstance(old_keys, dict):
        raise KeyResponseError("old_verify_keys is not an object")

    current: dict[str, VerifyKey] = {}
    for kid, entry in verify_keys.items():
        if not kid.startswith(ED25519 + ":"):
            continue  # appendices §Checking for a Signature: algorithms we do not understand are skipped
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyResponseError(f"verify_keys.{kid} has no key string")
        try:
            current[kid] = decode_verify_key(kid, entry["key"])
        except ValueError as e:
            raise KeyResponseError(f"verify_keys.{kid}: {e}") from None
    if not current:
        raise KeyResponseError("the key response lists no ed25519 verify key")
    try:
        verify_signed_json(response, server_name, current)
    except SignatureError as e:
        raise KeyResponseError(f"the key response is not signed by {server_name} with its keys: {e}") from None

    keys = [
        ServerKey(server_name, kid, vk, min(valid_until, now_ms + MAX_KEY_VALIDITY_MS)) for kid, vk in current.items()
    ]
    for kid, entry in old_keys.items():
        if not kid.startswith(ED25519 + ":") or kid in current:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not _is_int(entry.get("expired_ts")):
            raise KeyResponseError(f"old_verify_keys.{kid} needs key and expired_ts")
        try:
            vk = decode_verify_key(kid, entry["key"])
        except ValueError as e:
            raise KeyResponseError(f"old_verify_keys.{kid}: {e}") from None
        keys.append(ServerKey(server_name, kid, vk, entry["expired_ts"], is_old=True))

    kept = dict(response)
    kept["signatures"] = {server_name: dict(response["signatures"][server_name])}
    return keys, kept


class Keyring:
    """Finds and checks the keys of other servers."""

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        store: ServerKeyStore,
        client: FederationClient,
        clock: IReactorTime,
        trusted_key_servers: Iterable[str] = (),
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.store = store
        #: fetches key responses (its get_json/post_json; tests hand in a fake)
        self.client = client
        self.clock = clock
        self.trusted_key_servers = list(trusted_key_servers)
        self._cache: dict[str, dict[str, ServerKey]] = {}
        self._loaded: set[str] = set()
        self._fetches = SharedCalls()
        self._last_attempt: dict[str, float] = {}
        self._last_error: dict[str, str] = {}

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def own_keys(self) -> dict[str, ServerKey]:
        """Our own verify key(s), usable at any time."""
        kid = key_id(self.signing_key)
        return {kid: ServerKey(self.server_name, kid, get_verify_key(self.signing_key), _FOREVER_MS)}

    # -- looking keys up ------------------------------------------------------------

    async def get_server_keys(
        self, server_name: str, key_ids: Iterable[str], min_valid_until_ts: int, *, use_notaries: bool = True
    ) -> dict[str, ServerKey]:
        """The keys among ``key_ids`` of ``server_name`` usable at ``min_valid_until_ts``; fetches the missing.

        Keys that cannot be found are absent from the answer (see
        :meth:`last_error` for why).
        """
        wanted = list(dict.fromkeys(key_ids))
        if server_name == self.server_name:
            own = self.own_keys()
            return {k: own[k] for k in wanted if k in own}
        found = self._usable(server_name, wanted, min_valid_until_ts)
        if len(found) < len(wanted) and server_name not in self._loaded:
            await self._load(server_name)
            found = self._usable(server_name, wanted, min_valid_until_ts)
        if len(found) < len(wanted):
            await self._fetch(server_name, wanted, min_valid_until_ts, use_notaries)
            found = self._usable(server_name, wanted, min_valid_until_ts)
        return found

    async def get_verify_keys(
        self, server_name: str, key_ids: Iterable[str], min_valid_until_ts: int
    ) -> dict[str, VerifyKey]:
        """Like :meth:`get_server_keys`, as ``{key_id: VerifyKey}``."""
        keys = await self.get_server_keys(server_name, key_ids, min_valid_until_ts)
        return {kid: k.verify_key for kid, k in keys.items()}

    async def verify_json_for_server(
        self, server_name: str, json_obj: Mapping[str, Any], min_valid_until_ts: int, *, use_notaries: bool = True
    ) -> None:
        """Check that ``server_name`` signed ``json_obj`` with a key valid at ``min_valid_until_ts``.

        Raises :class:`KeyLookupError` if no such key can be found and
        ``SignatureError`` if a signature does not verify.
        """
        ids = signature_ids(json_obj, server_name)
        if not ids:
            raise SignatureError(f"not signed by {server_name} (no ed25519 signature)")
        keys = await self.get_server_keys(server_name, ids, min_valid_until_ts, use_notaries=use_notaries)
        if not keys:
            reason = self._last_error.get(server_name)
            raise KeyLookupError(
                f"no key of {server_name} among {', '.join(sorted(ids))} valid at {min_valid_until_ts}"
                + (f" ({reason})" if reason else "")
            )
        verify_signed_json(json_obj, server_name, {kid: k.verify_key for kid, k in keys.items()})

    def last_error(self, server_name: str) -> str | None:
        """Why the last fetch of ``server_name``'s keys did not find everything, if it did not."""
        return self._last_error.get(server_name)

    def _usable(self, server_name: str, key_ids: list[str], min_valid_until_ts: int) -> dict[str, ServerKey]:
        keys = self._cache.get(server_name, {})
        return {kid: keys[kid] for kid in key_ids if kid in keys and keys[kid].valid_until_ts >= min_valid_until_ts}

    async def _load(self, server_name: str) -> None:
        rows = await self.store.get_server_keys(server_name)
        cache = self._cache.setdefault(server_name, {})
        for row in rows:
            if row.key_id in cache:
                continue  # fetched meanwhile: newer than the database
            try:
                vk = decode_verify_key(row.key_id, row.verify_key)
            except ValueError:
                continue
            cache[row.key_id] = ServerKey(server_name, row.key_id, vk, row.valid_until_ts, row.is_old)
        self._loaded.add(server_name)

    # -- fetching ----------------------------------------------------------------------

    async def _fetch(
        self, server_name: str, key_ids: list[str], min_valid: int, use_notaries: bool, *, throttle: bool = True
    ) -> None:
        # Direct-only fetches (a notary's own keys) never wait for a notary fetch: no cycles.
        shared_key = (server_name, use_notaries)
        if throttle and shared_key not in self._fetches:
            now = self.clock.seconds()
            last = self._last_attempt.get(server_name)
            if last is not None and now - last < MIN_REFETCH_INTERVAL_S:
                return
            self._last_attempt[server_name] = now
        await self._fetches.run(shared_key, lambda: self._fetch_now(server_name, key_ids, min_valid, use_notaries))

    async def _fetch_now(self, server_name: str, key_ids: list[str], min_valid: int, use_notaries: bool) -> None:
        """Direct, then notaries for what is still missing; records errors rather than raising."""
        errors: list[str] = []
        try:
            await self._fetch_direct(server_name)
        except Exception as e:
            errors.append(f"fetching from {server_name}: {_reason(e)}")
        missing = [k for k in key_ids if k not in self._usable(server_name, key_ids, min_valid)]
        if missing and use_notaries:
            for notary in self.trusted_key_servers:
                if notary in (server_name, self.server_name):
                    continue
                try:
                    await self._fetch_via_notary(notary, server_name, missing, min_valid)
                except Exception as e:
                    errors.append(f"asking notary {notary}: {_reason(e)}")
                missing = [k for k in key_ids if k not in self._usable(server_name, key_ids, min_valid)]
                if not missing:
                    break
        if missing:
            reason = "; ".join(errors) or f"{server_name} did not publish {', '.join(missing)} valid until {min_valid}"
            self._last_error[server_name] = reason
            log.info("keys of {server} not found: {reason}", server=server_name, reason=reason)
        else:
            self._last_error.pop(server_name, None)

    async def _fetch_direct(self, server_name: str) -> None:
        response = await self.client.get_json(
            server_name,
            "/_matrix/key/v2/server",
            timeout=KEY_FETCH_TIMEOUT_S,
            max_size=MAX_KEY_RESPONSE_SIZE,
            authenticate=False,
        )
        keys, kept = parse_key_response(server_name, response, self._now_ms())
        await self._remember(server_name, server_name, keys, kept)

    async def _fetch_via_notary(self, notary: str, server_name: str, key_ids: list[str], min_valid: int) -> None:
        body = {"server_keys": {server_name: {kid: {"minimum_valid_until_ts": min_valid} for kid in key_ids}}}
        response = await self.client.post_json(
            notary,
            "/_matrix/key/v2/query",
            body,
            timeout=KEY_FETCH_TIMEOUT_S,
            max_size=MAX_NOTARY_RESPONSE_SIZE,
            authenticate=False,
        )
        items = response.get("server_keys")
        if not isinstance(items, list):
            raise KeyResponseError("server_keys is not an array")
        answered = False
        for item in items:
            if not isinstance(item, dict) or item.get("server_name") != server_name:
                continue
            keys, kept = parse_key_response(server_name, item, self._now_ms())
            notary_ids = signature_ids(item, notary)
            if not notary_ids:
                raise KeyResponseError(f"the keys of {server_name} are not signed by the notary")
            try:
                await self.verify_json_for_server(notary, item, self._now_ms(), use_notaries=False)
            except SignatureError as e:
                raise KeyResponseError(f"the notary's signature does not check: {e}") from None
            await self._remember(server_name, notary, keys, kept)
            answered = True
        if not answered:
            raise KeyResponseError(f"no keys of {server_name} in the answer")

    async def _remember(self, server_name: str, from_server: str, keys: list[ServerKey], kept: dict[str, Any]) -> None:
        now = self._now_ms()
        text = json.dumps(kept, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        await self.store.store_server_keys(
            [
                StoredServerKey(
                    server_name,
                    k.key_id,
                    verify_key_base64(k.verify_key),
                    k.valid_until_ts,
                    k.is_old,
                    from_server,
                    now,
                    text,
                )
                for k in keys
            ]
        )
        cache = self._cache.setdefault(server_name, {})
        for k in keys:
            cache[k.key_id] = k

    # -- answering as a notary -------------------------------------------------------------

    async def notary_query(self, query: Mapping[str, tuple[dict[str, int], int]]) -> list[dict[str, Any]]:
        """The key responses for a notary query, each also signed by us.

        ``query`` maps a server name to ``(criteria, min_valid)``: criteria
        maps key IDs to the ``minimum_valid_until_ts`` wanted (empty: all
        keys, valid until ``min_valid``). Keys missing or too old are fetched
        from their server first; servers we cannot reach and know nothing of
        are left out (keys_query.yaml).
        """
        names = [s for s in query if is_valid_server_name(s)]
        results = await DeferredList(
            [ensureDeferred(self._notary_answer(s, *query[s])) for s in names], consumeErrors=True
        )
        out: list[dict[str, Any]] = []
        for server_name, (ok, value) in zip(names, results, strict=True):
            if not ok:
                failure: Any = value
                log.failure("notary answer for {server} failed", failure=failure, server=server_name)
                continue
            for response in value:
                out.append(sign_json(response, self.server_name, self.signing_key))
        return out

    async def _notary_answer(self, server_name: str, criteria: dict[str, int], min_valid: int) -> list[dict[str, Any]]:
        if server_name == self.server_name:
            return [local_key_response(self.server_name, self.signing_key, self._now_ms())]
        rows = await self.store.get_server_keys(server_name)
        if self._notary_needs_fetch(rows, criteria, min_valid):
            # Not throttled (MIN_REFETCH_INTERVAL_S is for our own signature checks): the asking
            # server wants keys valid later than those we hold, and keys_query.yaml has the
            # notary fetch them then; concurrent queries still share one fetch. Synapse does the
            # same (SyTest "Key notary server should return an expired key if it can't find any
            # others" asks again at once with a later minimum_valid_until_ts).
            wanted = min(criteria.values(), default=min_valid)
            await self._fetch(server_name, list(criteria), wanted, False, throttle=False)
            rows = await self.store.get_server_keys(server_name)
        seen: dict[str, dict[str, Any]] = {}
        for row in rows:
            if criteria and row.key_id not in criteria:
                # keys_query.yaml: the query names the key IDs it wants; the responses that
                # hold none of them are not what was asked (every key, when it names none).
                continue
            if row.key_json not in seen:
                try:
                    seen[row.key_json] = json.loads(row.key_json)
                except ValueError:
                    continue
        return list(seen.values())

    @staticmethod
    def _notary_needs_fetch(rows: list[StoredServerKey], criteria: dict[str, int], min_valid: int) -> bool:
        by_id = {r.key_id: r for r in rows}
        if criteria:
            return any(kid not in by_id or by_id[kid].valid_until_ts < wanted for kid, wanted in criteria.items())
        return not any(r.valid_until_ts >= min_valid for r in rows if not r.is_old)


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__
