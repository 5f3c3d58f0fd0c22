"""The keyring (fetching and checking server keys, DB cache) and the notary endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from mxserver.api.federation.keys import KeyServerServlet
from mxserver.crypto.keys import generate_signing_key, get_verify_key, key_id, verify_key_base64
from mxserver.crypto.signing import SignatureError, sign_json, verify_signed_json
from mxserver.federation.client import FederationClient
from mxserver.federation.keyring import (
    MAX_KEY_VALIDITY_MS,
    MIN_REFETCH_INTERVAL_S,
    KeyLookupError,
    Keyring,
    parse_key_response,
)
from mxserver.homeserver import Homeserver
from tests.harness import FakeKeyClient, HomeserverTestCase, key_response, serve_servlets

DAY_MS = 24 * 3600 * 1000
KEY_PATH = "/_matrix/key/v2/server"
QUERY_PATH = "/_matrix/key/v2/query"


class _KeyringCase(HomeserverTestCase):
    """A Keyring of the test server's name and key, over its database's key store, that fetches
    through ``self.fake`` (a FakeKeyClient) instead of the network."""

    def now_ms(self) -> int:
        return int(self.hs.clock.seconds() * 1000)

    def new_keyring(self, hs: Homeserver | None = None, client: FakeKeyClient | None = None,
                    trusted_key_servers: Sequence[str] = ()) -> Keyring:
        hs = hs or self.hs
        fetcher = cast(FederationClient, client or self.fake)
        return Keyring(hs.server_name, hs.signing_key, hs.server_keys, fetcher, hs.clock, trusted_key_servers)

    async def _set_up(self) -> None:
        await super()._set_up()
        self.fake = FakeKeyClient()
        self.keyring = self.new_keyring()
        self.remote_key = generate_signing_key("r1")
        self.remote_kid = key_id(self.remote_key)

    def publish(self, server_name: str = "remote.test", key: Any = None, valid_for_ms: int = DAY_MS, **kw: Any) -> dict:
        body = key_response(server_name, key or self.remote_key, self.now_ms() + valid_for_ms, **kw)
        self.fake.answers[(server_name, KEY_PATH)] = body
        return body


class KeyringTests(_KeyringCase):
    async def test_own_keys_answered_locally(self) -> None:
        keys = await self.keyring.get_verify_keys(
            self.hs.server_name, [self.hs.signing_key_id], self.now_ms() + 10 * DAY_MS
        )
        self.assertEqual(bytes(keys[self.hs.signing_key_id]), bytes(get_verify_key(self.hs.signing_key)))
        self.assertEqual(self.fake.calls, [])

    async def test_direct_fetch_then_memory(self) -> None:
        self.publish()
        for _ in range(3):
            keys = await self.keyring.get_verify_keys("remote.test", [self.remote_kid], self.now_ms())
            self.assertEqual(bytes(keys[self.remote_kid]), bytes(get_verify_key(self.remote_key)))
        self.assertEqual(self.fake.count("remote.test"), 1)

    async def test_verify_json_for_server(self) -> None:
        self.publish()
        obj = sign_json({"hello": "world"}, "remote.test", self.remote_key)
        await self.keyring.verify_json_for_server("remote.test", obj, self.now_ms())
        with self.assertRaises(SignatureError):
            await self.keyring.verify_json_for_server("remote.test", {**obj, "hello": "there"}, self.now_ms())
        with self.assertRaises(SignatureError) as cm:
            await self.keyring.verify_json_for_server("remote.test", {"hello": "world"}, self.now_ms())
        self.assertIn("not signed by remote.test", str(cm.exception))
        other = sign_json({"hello": "world"}, "remote.test", generate_signing_key("zz"))
        with self.assertRaises(KeyLookupError) as cm2:
            await self.keyring.verify_json_for_server("remote.test", other, self.now_ms())
        self.assertIn("no key of remote.test among ed25519:zz", str(cm2.exception))

    async def test_bad_key_responses_are_refused(self) -> None:
        now = self.now_ms()
        k = self.remote_key
        imposter = generate_signing_key("r1")

        def good(s: str) -> dict:
            return key_response(s, k, now + DAY_MS)

        def without(d: dict, key: str) -> dict:
            return {n: v for n, v in d.items() if n != key}

        cases: dict[str, tuple[Any, str]] = {
            "wrong-name": (lambda s: good("someone.else"), "is for 'someone.else'"),
            "unsigned": (lambda s: key_response(s, k, now + DAY_MS, signers=[]), "not signed by"),
            "other-signer": (lambda s: key_response(s, k, now + DAY_MS, signers=[(s, imposter)]), "bad signature"),
            "tampered": (lambda s: {**good(s), "valid_until_ts": now + 2 * DAY_MS}, "bad signature"),
            "no-valid-until": (lambda s: without(good(s), "valid_until_ts"), "valid_until_ts"),
            "bool-valid-until": (lambda s: {**good(s), "valid_until_ts": True}, "valid_until_ts"),
            "verify-keys-list": (lambda s: {**good(s), "verify_keys": []}, "verify_keys"),
            "bad-base64": (
                lambda s: {**good(s), "verify_keys": {"ed25519:r1": {"key": "!!"}}},
                "verify_keys.ed25519:r1",
            ),
            "no-ed25519": (lambda s: {**good(s), "verify_keys": {"curve:x": {"key": "AAAA"}}}, "no ed25519 verify key"),
            "old-keys-list": (lambda s: {**good(s), "old_verify_keys": []}, "old_verify_keys"),
        }
        for name, (build, reason) in cases.items():
            server = f"{name}.bad.test"
            self.fake.answers[(server, KEY_PATH)] = build(server)
            keys = await self.keyring.get_verify_keys(server, ["ed25519:r1"], now)
            self.assertEqual(keys, {}, name)
            self.assertIn(reason, self.keyring.last_error(server) or "", name)

    async def test_validity_cap_and_expiry(self) -> None:
        self.publish(valid_for_ms=30 * DAY_MS)
        now = self.now_ms()
        keys = await self.keyring.get_server_keys("remote.test", [self.remote_kid], now)
        self.assertLessEqual(keys[self.remote_kid].valid_until_ts, now + MAX_KEY_VALIDITY_MS + 1000)
        self.assertGreaterEqual(keys[self.remote_kid].valid_until_ts, now + MAX_KEY_VALIDITY_MS - 60_000)
        # needed valid in 8 days: not satisfied by a capped key
        self.assertEqual(await self.keyring.get_verify_keys("remote.test", [self.remote_kid], now + 8 * DAY_MS), {})

    async def test_expired_response_usable_only_for_the_past(self) -> None:
        self.publish(valid_for_ms=-DAY_MS)
        now = self.now_ms()
        self.assertEqual(await self.keyring.get_verify_keys("remote.test", [self.remote_kid], now), {})
        past = await self.keyring.get_verify_keys("remote.test", [self.remote_kid], now - 2 * DAY_MS)
        self.assertIn(self.remote_kid, past)

    async def test_old_verify_keys(self) -> None:
        old = generate_signing_key("old")
        now = self.now_ms()
        self.publish(old_verify_keys={"ed25519:old": {"key": verify_key_base64(old), "expired_ts": now - DAY_MS}})
        keys = await self.keyring.get_server_keys("remote.test", ["ed25519:old"], now - 2 * DAY_MS)
        self.assertTrue(keys["ed25519:old"].is_old)
        event = sign_json({"type": "m.room.message"}, "remote.test", old)
        await self.keyring.verify_json_for_server("remote.test", event, now - 2 * DAY_MS)
        with self.assertRaises(KeyLookupError):
            await self.keyring.verify_json_for_server("remote.test", event, now)

    async def test_concurrent_lookups_share_one_fetch(self) -> None:
        gate: Deferred[Any] = Deferred()
        self.fake.answers[("remote.test", KEY_PATH)] = gate
        lookups = [
            ensureDeferred(self.keyring.get_verify_keys("remote.test", [self.remote_kid], self.now_ms()))
            for _ in range(4)
        ]
        await _settle()
        gate.callback(key_response("remote.test", self.remote_key, self.now_ms() + DAY_MS))
        results = await gatherResults(lookups)
        self.assertTrue(all(self.remote_kid in r for r in results))
        self.assertEqual(self.fake.count("remote.test"), 1)

    async def test_notary_fetch(self) -> None:
        notary_key = generate_signing_key("n1")
        self.keyring = self.new_keyring(trusted_key_servers=["notary.test"])
        self.publish("notary.test", notary_key)
        now = self.now_ms()
        item = key_response(
            "remote.test",
            self.remote_key,
            now + DAY_MS,
            signers=[("remote.test", self.remote_key), ("notary.test", notary_key)],
        )
        self.fake.answers[("notary.test", QUERY_PATH)] = {"server_keys": [item]}
        keys = await self.keyring.get_verify_keys("remote.test", [self.remote_kid], now)
        self.assertIn(self.remote_kid, keys)
        method, _, _, body = [c for c in self.fake.calls if c[1] == "notary.test" and c[2] == QUERY_PATH][0]
        self.assertEqual(body, {"server_keys": {"remote.test": {self.remote_kid: {"minimum_valid_until_ts": now}}}})
        rows = await self.hs.server_keys.get_server_keys("remote.test")
        self.assertEqual([(r.key_id, r.from_server) for r in rows], [(self.remote_kid, "notary.test")])
        # what we keep carries the origin's signature only
        self.assertEqual(set(__import__("json").loads(rows[0].key_json)["signatures"]), {"remote.test"})

    async def test_notary_answers_that_are_refused(self) -> None:
        notary_key = generate_signing_key("n1")
        self.keyring = self.new_keyring(trusted_key_servers=["notary.test"])
        self.publish("notary.test", notary_key)
        now = self.now_ms()
        k = self.remote_key
        cases: dict[str, tuple[Any, str]] = {
            "no-notary-sig": (lambda s: key_response(s, k, now + DAY_MS), "not signed by the notary"),
            "forged-notary-sig": (
                lambda s: key_response(
                    s, k, now + DAY_MS, signers=[(s, k), ("notary.test", generate_signing_key("n1"))]
                ),
                "notary's signature does not check",
            ),
            "forged-origin": (
                lambda s: key_response(
                    s, k, now + DAY_MS, signers=[(s, generate_signing_key("r1")), ("notary.test", notary_key)]
                ),
                "not signed by",
            ),
            "other-server": (
                lambda s: key_response("x.test", k, now + DAY_MS, signers=[("x.test", k), ("notary.test", notary_key)]),
                "no keys of",
            ),
            "not-a-list": (None, "server_keys is not an array"),
        }
        for name, (build, reason) in cases.items():
            server = f"{name}.test"
            answer = {"server_keys": [build(server)]} if build else {"server_keys": {}}
            self.fake.answers[("notary.test", QUERY_PATH)] = answer
            keys = await self.keyring.get_verify_keys(server, [self.remote_kid], now)
            self.assertEqual(keys, {}, name)
            self.assertIn(reason, self.keyring.last_error(server) or "", name)

    async def test_cache_survives_restart(self) -> None:
        self.publish()
        await self.keyring.get_verify_keys("remote.test", [self.remote_kid], self.now_ms())
        config = self.make_config()
        config.listeners = []
        hs2 = Homeserver(config, reactor)
        hs2.startService()
        self.addCleanup(hs2.stopService)
        await hs2.when_ready()
        offline = FakeKeyClient()
        keys = await self.new_keyring(hs2, offline).get_verify_keys("remote.test", [self.remote_kid], self.now_ms())
        self.assertEqual(bytes(keys[self.remote_kid]), bytes(get_verify_key(self.remote_key)))
        self.assertEqual(offline.calls, [])

    def test_parse_key_response_keeps_only_origin_signatures(self) -> None:
        now = 1_000_000
        notary = generate_signing_key("n")
        body = key_response(
            "a.test", self.remote_key, now + 10, signers=[("a.test", self.remote_key), ("n.test", notary)]
        )
        keys, kept = parse_key_response("a.test", body, now)
        self.assertEqual([k.key_id for k in keys], [self.remote_kid])
        self.assertEqual(set(kept["signatures"]), {"a.test"})
        verify_signed_json(kept, "a.test", get_verify_key(self.remote_key))


class KeyringThrottleTests(_KeyringCase):
    use_fake_clock = True

    async def test_refetch_is_throttled(self) -> None:
        self.publish()
        self.assertEqual(await self.keyring.get_verify_keys("remote.test", ["ed25519:new"], self.now_ms()), {})
        self.assertEqual(await self.keyring.get_verify_keys("remote.test", ["ed25519:new"], self.now_ms()), {})
        self.assertEqual(self.fake.count("remote.test"), 1)
        new_key = generate_signing_key("new")
        self.publish(key=new_key)
        self.clock.advance(11)
        keys = await self.keyring.get_verify_keys("remote.test", ["ed25519:new"], self.now_ms())
        self.assertIn("ed25519:new", keys)
        self.assertEqual(self.fake.count("remote.test"), 2)

    async def test_expired_key_is_refetched(self) -> None:
        self.publish(valid_for_ms=60_000)
        await self.keyring.get_verify_keys("remote.test", [self.remote_kid], self.now_ms())
        self.clock.advance(120)
        self.publish(valid_for_ms=DAY_MS)
        self.assertIn(
            self.remote_kid, await self.keyring.get_verify_keys("remote.test", [self.remote_kid], self.now_ms())
        )
        self.assertEqual(self.fake.count("remote.test"), 2)


class NotaryEndpointTests(_KeyringCase):
    """The notary endpoints, served by a KeyServerServlet over the test's keyring."""

    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        servlet = KeyServerServlet(self.hs.server_name, self.hs.signing_key, self.keyring, self.clock)
        self.base_url = serve_servlets(self, "federation", [servlet])

    def check_item(self, item: dict, server_name: str, origin_key: Any) -> None:
        verify_signed_json(item, server_name, get_verify_key(origin_key))
        verify_signed_json(item, self.hs.server_name, get_verify_key(self.hs.signing_key))

    async def test_post_query_fetches_and_signs(self) -> None:
        self.publish()
        code, body = await self.post(
            QUERY_PATH, {"server_keys": {"remote.test": {self.remote_kid: {"minimum_valid_until_ts": self.now_ms()}}}}
        )
        self.assertEqual(code, 200, body)
        (item,) = body["server_keys"]
        self.assertEqual(item["server_name"], "remote.test")
        self.assertEqual(set(item["signatures"]), {"remote.test", self.hs.server_name})
        self.check_item(item, "remote.test", self.remote_key)
        # cached now: asked again, no new fetch
        code, body = await self.post(QUERY_PATH, {"server_keys": {"remote.test": {self.remote_kid: {}}}})
        self.assertEqual(len(body["server_keys"]), 1)
        self.assertEqual(self.fake.count("remote.test"), 1)

    async def test_get_query(self) -> None:
        self.publish()
        code, body = await self.get("/_matrix/key/v2/query/remote.test")
        self.assertEqual(code, 200, body)
        self.check_item(body["server_keys"][0], "remote.test", self.remote_key)
        code, body = await self.get(f"/_matrix/key/v2/query/remote.test?minimum_valid_until_ts={self.now_ms()}")
        self.assertEqual(len(body["server_keys"]), 1)
        self.assertEqual(self.fake.count("remote.test"), 1)

    async def test_specific_missing_key_is_fetched(self) -> None:
        self.publish()
        await self.post(QUERY_PATH, {"server_keys": {"remote.test": {}}})
        new_key = generate_signing_key("r2")
        self.publish(key=new_key)
        self.clock.advance(MIN_REFETCH_INTERVAL_S)  # remote.test may be asked again
        code, body = await self.post(QUERY_PATH, {"server_keys": {"remote.test": {"ed25519:r2": {}}}})
        self.assertEqual(self.fake.count("remote.test"), 2)
        kids = {kid for item in body["server_keys"] for kid in item["verify_keys"]}
        self.assertIn("ed25519:r2", kids)

    async def test_get_query_naming_a_key(self) -> None:
        """SyTest "Federation key API can act as a notary server via a GET request" (the
        /{keyId} form dropped from the spec, still used)."""
        self.publish()
        code, body = await self.get(f"/_matrix/key/v2/query/remote.test/{self.remote_kid}")
        self.assertEqual(code, 200, body)
        (item,) = body["server_keys"]
        self.assertIn(self.remote_kid, item["verify_keys"])
        self.check_item(item, "remote.test", self.remote_key)

    async def test_expired_key_refetched_at_once_and_kept(self) -> None:
        """SyTest "Key notary server should return an expired key if it can't find any others"
        and "... must not overwrite a valid key with a spurious result from the origin server"."""
        expired_at = self.now_ms() - DAY_MS
        self.publish(valid_for_ms=-DAY_MS)
        query = {"server_keys": {"remote.test": {self.remote_kid: {"minimum_valid_until_ts": 0}}}}
        code, body = await self.post(QUERY_PATH, query)
        self.assertEqual(body["server_keys"][0]["valid_until_ts"], expired_at)
        # a later minimum: asked again at once (no refetch throttle for notary queries) ...
        later = {"server_keys": {"remote.test": {self.remote_kid: {"minimum_valid_until_ts": expired_at + 1000}}}}
        self.publish(key=generate_signing_key("r2"))  # ... and the origin now publishes another key only
        code, body = await self.post(QUERY_PATH, later)
        self.assertEqual(self.fake.count("remote.test"), 2)
        # the expired key is still what we hold for that key ID, and only its response is answered
        (item,) = body["server_keys"]
        self.assertEqual((list(item["verify_keys"]), item["valid_until_ts"]), ([self.remote_kid], expired_at))
        # the origin unreachable: the expired key all the same
        del self.fake.answers[("remote.test", KEY_PATH)]
        code, body = await self.post(QUERY_PATH, later)
        self.assertEqual(self.fake.count("remote.test"), 3)
        self.assertEqual([list(i["verify_keys"]) for i in body["server_keys"]], [[self.remote_kid]])

    async def test_own_keys(self) -> None:
        code, body = await self.post(QUERY_PATH, {"server_keys": {self.hs.server_name: {}}})
        (item,) = body["server_keys"]
        verify_signed_json(item, self.hs.server_name, get_verify_key(self.hs.signing_key))
        self.assertIn(self.hs.signing_key_id, item["verify_keys"])
        code, body = await self.get(f"/_matrix/key/v2/query/{self.hs.server_name}")
        self.assertEqual(body["server_keys"][0]["server_name"], self.hs.server_name)
        self.assertEqual(self.fake.calls, [])

    async def test_unreachable_and_empty(self) -> None:
        code, body = await self.post(QUERY_PATH, {"server_keys": {"gone.test": {}}})
        self.assertEqual((code, body), (200, {"server_keys": []}))
        code, body = await self.post(QUERY_PATH, {"server_keys": {}})
        self.assertEqual((code, body), (200, {"server_keys": []}))
        code, body = await self.get("/_matrix/key/v2/query/gone.test")
        self.assertEqual((code, body), (200, {"server_keys": []}))

    async def test_bad_input(self) -> None:
        self.assertMatrixError(await self.post(QUERY_PATH, {}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(QUERY_PATH, {"server_keys": []}), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(QUERY_PATH, {"server_keys": {"a.test": []}}), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.post(QUERY_PATH, {"server_keys": {"a.test": {"ed25519:x": 5}}}), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(
            await self.post(QUERY_PATH, {"server_keys": {"a.test": {"ed25519:x": {"minimum_valid_until_ts": "soon"}}}}),
            400,
            "M_BAD_JSON",
        )
        self.assertMatrixError(
            await self.post(QUERY_PATH, {"server_keys": {"not a server!": {}}}), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(
            await self.post(QUERY_PATH, {"server_keys": {f"s{i}.test": {} for i in range(101)}}), 400, "M_BAD_JSON"
        )
        self.assertMatrixError(await self.request("POST", QUERY_PATH, raw=b"{nope"), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.get("/_matrix/key/v2/query/bad%20name"), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.get("/_matrix/key/v2/query/a.test?minimum_valid_until_ts=x"), 400, "M_INVALID_PARAM"
        )
        self.assertEqual(self.fake.calls, [])

    async def test_server_endpoint_unchanged(self) -> None:
        code, body = await self.get(KEY_PATH)
        self.assertEqual(code, 200)
        keys, _ = parse_key_response(self.hs.server_name, body, self.now_ms())
        self.assertEqual([k.key_id for k in keys], [self.hs.signing_key_id])


async def _settle() -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.05, d.callback, None)
    await d
