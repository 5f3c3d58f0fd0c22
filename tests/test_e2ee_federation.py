"""E2EE over federation between two real servers: remote key queries and claims, device lists kept
current by m.device_list_update / m.signing_key_update EDUs, gaps resynced with /user/devices,
deleted devices, and the federation endpoints' own checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from mxserver.config import HomeserverConfig
from mxserver.federation.client import FederationError
from mxserver.homeserver import Homeserver
from tests.harness import C, ControlledTransport, TestServer, TestUser, TwoServerTestCase
from tests.test_account import password_auth
from tests.test_keys import FakeDevice
from tests.test_keys_cross_signing import CrossSigningKeys


class E2eeFederationTests(TwoServerTestCase):
    def make_server(self, label: str, config: HomeserverConfig) -> Homeserver:
        if label != "b":
            return super().make_server(label, config)
        self.b_transport = ControlledTransport()
        return self.b_transport.attach(Homeserver(config, reactor, federation_transport=self.b_transport))

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = FakeDevice(await self.a.register("alice", device_id="ALICE1"))
        self.bob = FakeDevice(await self.b.register("bob", device_id="BOB1"))
        for server, device in ((self.a, self.alice), (self.b, self.bob)):
            await self.upload(server, device, device_keys=device.device_keys())
        self.room_id = await self.b.create_room(self.bob.user, {"preset": "public_chat"})
        code, body = await self.a.post(
            f"{C}/join/{quote(self.room_id)}?server_name={self.b.server_name}", {}, self.alice.user
        )
        self.assertEqual(code, 200, body)
        # Both servers know both members before anything else happens.
        await self.wait_until(lambda: self._joined(self.b, self.bob.user, self.alice.user_id), "Alice joined, at B")

    async def _joined(self, server: TestServer, user: TestUser, member: str) -> bool:
        code, body = await server.get(f"{C}/rooms/{quote(self.room_id)}/joined_members", user)
        return code == 200 and member in body["joined"]

    async def upload(self, server: TestServer, device: FakeDevice, **body: Any) -> dict[str, Any]:
        code, resp = await server.post(f"{C}/keys/upload", body, device.user)
        self.assertEqual(code, 200, resp)
        return resp

    async def query(self, server: TestServer, device: FakeDevice, user_id: str) -> dict[str, Any]:
        code, body = await server.post(f"{C}/keys/query", {"device_keys": {user_id: []}}, device.user)
        self.assertEqual(code, 200, body)
        return body

    async def claim(self, server: TestServer, device: FakeDevice, query: dict[str, Any]) -> dict[str, Any]:
        code, body = await server.post(f"{C}/keys/claim", {"one_time_keys": query}, device.user)
        self.assertEqual(code, 200, body)
        return body

    async def new_bob_device(self, device_id: str) -> FakeDevice:
        code, body = await self.b.post(
            f"{C}/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "bob"},
                "password": self.bob.user.password,
                "device_id": device_id,
            },
        )
        self.assertEqual(code, 200, body)
        device = FakeDevice(TestUser(body["user_id"], body["access_token"], body["device_id"], self.bob.user.password))
        await self.upload(self.b, device, device_keys=device.device_keys())
        return device

    async def bob_devices_on_a(self) -> set[str]:
        return set((await self.query(self.a, self.alice, self.bob.user_id))["device_keys"].get(self.bob.user_id, {}))

    def count_resyncs(self) -> list[str]:
        calls: list[str] = []
        handler = self.a.hs.device_lists
        original = handler.resync

        async def counting(user_id: str, timeout: float = 30) -> bool:
            calls.append(user_id)
            return await original(user_id, timeout)

        handler.resync = counting
        return calls

    # -- tests ----------------------------------------------------------------------------------

    async def test_query_and_claim_remote_keys(self) -> None:
        body = await self.query(self.a, self.alice, self.bob.user_id)
        self.assertEqual(body["failures"], {})
        got = body["device_keys"][self.bob.user_id]["BOB1"]
        self.assertEqual({k: v for k, v in got.items() if k != "unsigned"}, self.bob.device_keys())
        # The answer is cached (Alice shares a room with Bob): tracked, with no stream position yet.
        self.assertIn(self.bob.user_id, await self.a.hs.device_lists.store.tracked([self.bob.user_id]))

        otks = self.bob.one_time_keys(2)
        fallback = self.bob.fallback_keys()
        await self.upload(self.b, self.bob, one_time_keys=otks, fallback_keys=fallback)
        want = {self.bob.user_id: {"BOB1": "signed_curve25519"}}
        claimed = [
            (await self.claim(self.a, self.alice, want))["one_time_keys"][self.bob.user_id]["BOB1"] for _ in range(4)
        ]
        self.assertEqual({**claimed[0], **claimed[1]}, otks)
        self.assertNotEqual(claimed[0], claimed[1])
        self.assertEqual(claimed[2], fallback)
        self.assertEqual(claimed[3], fallback)

    async def test_unreachable_server_is_a_failure(self) -> None:
        dead = "127.0.0.1:1"
        body = await self.query(self.a, self.alice, f"@x:{dead}")
        self.assertIn(dead, body["failures"])
        code, body = await self.a.post(
            f"{C}/keys/claim",
            {"one_time_keys": {f"@x:{dead}": {"D": "signed_curve25519"}}, "timeout": 2000},
            self.alice.user,
        )
        self.assertEqual(code, 200, body)
        self.assertIn(dead, body["failures"])
        self.assertEqual(body["one_time_keys"], {})

    async def test_new_device_reaches_the_other_server(self) -> None:
        resyncs = self.count_resyncs()
        # Alice's query of Bob's whole list starts A's cache with GET /user/devices, which
        # gives the stream position later updates build on.
        await self.query(self.a, self.alice, self.bob.user_id)
        self.assertEqual(resyncs, [self.bob.user_id])
        tracked = await self.a.hs.device_lists.store.tracked([self.bob.user_id])
        self.assertIsNotNone(tracked[self.bob.user_id])
        since = (await self.a.sync(self.alice.user))["next_batch"]
        await self.new_bob_device("BOB2")
        # The update follows on from that position: applied without another resync.
        await self.until_devices({"BOB1", "BOB2"})
        self.assertEqual(resyncs, [self.bob.user_id])
        sync = await self.a.sync(self.alice.user, since)
        self.assertIn(self.bob.user_id, sync["device_lists"]["changed"])
        # The next change follows on from the last one: applied without a resync.
        await self.new_bob_device("BOB3")
        await self.until_devices({"BOB1", "BOB2", "BOB3"})
        self.assertEqual(resyncs, [self.bob.user_id])

    async def until_devices(self, wanted: set[str]) -> None:
        seen: list[Any] = []
        try:
            await self.wait_until(lambda: self._has_devices(wanted, seen), f"Bob's devices {sorted(wanted)} at A")
        except AssertionError as e:
            # What A held when it gave up: the cache, its position, and what a query answered.
            raise AssertionError(f"{e}; last seen at A (cached, tracked, queried): {seen[-1:]}") from None

    async def _has_devices(self, wanted: set[str], seen: list[Any] | None = None) -> bool:
        await self.a.hs.device_lists.settle()
        stored = await self.a.hs.device_lists.key_store.get_device_keys([(self.bob.user_id, None)])
        cached = {d: keys is not None for d, (keys, _) in stored.get(self.bob.user_id, {}).items()}
        queried = await self.bob_devices_on_a()
        if seen is not None:
            tracked = await self.a.hs.device_lists.store.tracked([self.bob.user_id])
            seen.append((cached, tracked, sorted(queried)))
        return set(cached) == wanted and queried == wanted

    async def test_gap_is_resynced(self) -> None:
        await self.query(self.a, self.alice, self.bob.user_id)
        await self.new_bob_device("BOB2")
        await self.until_devices({"BOB1", "BOB2"})
        resyncs = self.count_resyncs()
        # One update is lost on the way...
        sender = self.b.hs.federation_sender
        original = sender.send_edu
        dropped: list[dict[str, Any]] = []

        def lossy(destination: str, edu_type: str, content: dict[str, Any], key: Any = None, **kw: Any) -> None:
            if edu_type == "m.device_list_update" and not dropped:
                dropped.append(content)
                return
            original(destination, edu_type, content, key, **kw)

        sender.send_edu = lossy
        await self.new_bob_device("BOB3")
        await self.b.hs.outbound_device_lists.settle()  # the EDUs are built in the background
        self.assertEqual([c["device_id"] for c in dropped], ["BOB3"])
        # ...so the next one refers to a prev_id server A never saw: it fetches the whole list.
        await self.new_bob_device("BOB4")
        await self.until_devices({"BOB1", "BOB2", "BOB3", "BOB4"})
        self.assertEqual(resyncs, [self.bob.user_id])

    async def test_stale_update_is_ignored(self) -> None:
        # An update older than the list A holds (a retransmitted transaction, or one a resync
        # already covered) changes nothing and fetches nothing.
        await self.query(self.a, self.alice, self.bob.user_id)
        position = (await self.a.hs.device_lists.store.tracked([self.bob.user_id]))[self.bob.user_id]
        assert position is not None and position >= 2
        resyncs = self.count_resyncs()
        stale = {"user_id": self.bob.user_id, "device_id": "BOB1", "stream_id": position - 1, "prev_id": [position - 2]}
        self.a.hs.device_lists.on_device_list_update(self.b.server_name, stale)
        await self.a.hs.device_lists.settle()
        self.assertEqual(resyncs, [])
        self.assertEqual(await self.bob_devices_on_a(), {"BOB1"})

    async def test_deleted_device_propagates(self) -> None:
        await self.query(self.a, self.alice, self.bob.user_id)
        bob2 = await self.new_bob_device("BOB2")
        await self.until_devices({"BOB1", "BOB2"})
        path = f"{C}/devices/BOB2"
        code, resp = await self.b.request("DELETE", path, {}, token=bob2.user)
        code, resp = await self.b.request(
            "DELETE", path, {"auth": password_auth(self.bob.user, resp["session"])}, token=self.bob.user
        )
        self.assertEqual(code, 200, resp)
        await self.until_devices({"BOB1"})

    async def test_first_cached_answer_marks_the_user_changed(self) -> None:
        # Once A first caches Bob's list (Alice's query), its local users sharing a room with
        # Bob see him in device_lists.changed, as Synapse signals after its first resync.
        sync = await self.a.sync(self.alice.user)
        since = sync["next_batch"]
        self.assertEqual(await self.bob_devices_on_a(), {"BOB1"})
        await self.a.sync_until(
            self.alice.user,
            lambda s: self.bob.user_id in s.get("device_lists", {}).get("changed", []),
            "Bob in Alice's device_lists.changed",
            since=since,
        )

    async def test_cross_signing_keys_over_federation(self) -> None:
        await self.query(self.a, self.alice, self.bob.user_id)
        keys = CrossSigningKeys(self.bob.user_id)
        code, body = await self.b.post(f"{C}/keys/device_signing/upload", keys.upload_body(), self.bob.user)
        self.assertEqual(code, 200, body)

        async def seen() -> bool:
            await self.a.hs.device_lists.settle()
            body = await self.query(self.a, self.alice, self.bob.user_id)
            return (
                body["master_keys"].get(self.bob.user_id) == keys.master_key()
                and body["self_signing_keys"].get(self.bob.user_id) == keys.self_signing_key()
            )

        await self.wait_until(seen, "Bob's cross-signing keys at A")
        body = await self.query(self.a, self.alice, self.bob.user_id)
        self.assertNotIn(self.bob.user_id, body.get("user_signing_keys", {}))
        # Alice signs Bob's master key with her user-signing key: only she sees that signature.
        a_keys = CrossSigningKeys(self.alice.user_id)
        code, _ = await self.a.post(f"{C}/keys/device_signing/upload", a_keys.upload_body(), self.alice.user)
        self.assertEqual(code, 200)
        from tests.test_keys import public, sign

        signed = sign(keys.master_key(), self.alice.user_id, a_keys.key_id(a_keys.user_signing), a_keys.user_signing)
        code, resp = await self.a.post(
            f"{C}/keys/signatures/upload", {self.bob.user_id: {public(keys.master): signed}}, self.alice.user
        )
        self.assertEqual((code, resp), (200, {"failures": {}}))
        master = (await self.query(self.a, self.alice, self.bob.user_id))["master_keys"][self.bob.user_id]
        self.assertIn(a_keys.key_id(a_keys.user_signing), master["signatures"][self.alice.user_id])
        # Server B's own /user/keys/query answer never has user-signing keys.
        answer = await self.a.hs.federation_client.post_json(
            self.b.server_name, "/_matrix/federation/v1/user/keys/query", {"device_keys": {self.bob.user_id: []}}
        )
        self.assertNotIn("user_signing_keys", answer)
        self.assertEqual(answer["master_keys"][self.bob.user_id], keys.master_key())

    async def test_user_devices_endpoint(self) -> None:
        client = self.a.hs.federation_client
        path = "/_matrix/federation/v1/user/devices/" + quote(self.bob.user_id, safe="")
        body = await client.get_json(self.b.server_name, path)
        self.assertEqual(body["user_id"], self.bob.user_id)
        self.assertIsInstance(body["stream_id"], int)
        self.assertEqual([d["device_id"] for d in body["devices"]], ["BOB1"])
        self.assertEqual(body["devices"][0]["keys"], self.bob.device_keys())
        # Device names stay on their server.
        code, _ = await self.b.put(f"{C}/devices/BOB1", {"display_name": "Bob's work laptop"}, self.bob.user)
        self.assertEqual(code, 200)
        body = await client.get_json(self.b.server_name, path)
        self.assertNotIn("device_display_name", body["devices"][0])
        answer = await client.post_json(
            self.b.server_name, "/_matrix/federation/v1/user/keys/query", {"device_keys": {self.bob.user_id: []}}
        )
        self.assertEqual(answer["device_keys"][self.bob.user_id]["BOB1"]["unsigned"], {})
        # Only users of that server; only authenticated requests.
        other = "/_matrix/federation/v1/user/devices/" + quote(self.alice.user_id, safe="")
        with self.assertRaises(FederationError) as e:
            await client.get_json(self.b.server_name, other)
        self.assertEqual((e.exception.code, e.exception.errcode), (400, "M_INVALID_PARAM"))
        with self.assertRaises(FederationError) as e:
            await client.get_json(self.b.server_name, path, authenticate=False)
        self.assertEqual(e.exception.code, 401)
        with self.assertRaises(FederationError) as e:
            await client.post_json(
                self.b.server_name,
                "/_matrix/federation/v1/user/keys/claim",
                {"one_time_keys": {self.alice.user_id: {}}},
            )
        self.assertEqual(e.exception.code, 400)
        for path, body in (
            ("/_matrix/federation/v1/user/keys/query", {}),
            ("/_matrix/federation/v1/user/keys/query", {"device_keys": {self.bob.user_id: "x"}}),
            ("/_matrix/federation/v1/user/keys/claim", {"one_time_keys": []}),
        ):
            with self.assertRaises(FederationError) as e:
                await client.post_json(self.b.server_name, path, body)
            self.assertEqual(e.exception.code, 400, (path, body))
        # A claim for B's own user works and hands out the key once.
        otks = self.bob.one_time_keys(1)
        await self.upload(self.b, self.bob, one_time_keys=otks)
        claim = {"one_time_keys": {self.bob.user_id: {"BOB1": "signed_curve25519"}}}
        answer = await client.post_json(self.b.server_name, "/_matrix/federation/v1/user/keys/claim", claim)
        self.assertEqual(answer, {"one_time_keys": {self.bob.user_id: {"BOB1": otks}}})
        answer = await client.post_json(self.b.server_name, "/_matrix/federation/v1/user/keys/claim", claim)
        self.assertEqual(answer, {"one_time_keys": {}})

    async def test_user_devices_position_never_runs_ahead_of_its_devices(self) -> None:
        # A change committed while B is reading the devices for /user/devices must not be
        # claimed by the answer's stream_id: A would then drop that change's EDU as seen and
        # keep the device without its keys.
        key_store = self.b.hs.device_lists.key_store
        original = key_store.get_device_keys

        async def read_then_change(*args: Any, **kwargs: Any) -> Any:
            stored = await original(*args, **kwargs)
            key_store.get_device_keys = original  # type: ignore[method-assign]
            # A rename is a device-list change (other servers hear of it).
            code, body = await self.b.put(f"{C}/devices/BOB1", {"display_name": "renamed"}, self.bob.user)
            self.assertEqual(code, 200, body)
            return stored

        before = await self.b.hs.device_lists.store.latest_device_stream_id(self.bob.user_id)
        key_store.get_device_keys = read_then_change  # type: ignore[method-assign]
        path = "/_matrix/federation/v1/user/devices/" + quote(self.bob.user_id, safe="")
        body = await self.a.hs.federation_client.get_json(self.b.server_name, path)
        after = await self.b.hs.device_lists.store.latest_device_stream_id(self.bob.user_id)
        self.assertGreater(after, before)
        self.assertEqual(body["stream_id"], before)
        # The rename's EDU makes A (sharing a room with Bob, no cache yet) fetch Bob's list.
        await self.wait_until(self._a_tracks_bob, "A caches Bob's list")

    async def _a_tracks_bob(self) -> bool:
        await self.a.hs.device_lists.settle()
        return bool(await self.a.hs.device_lists.store.tracked([self.bob.user_id]))

    async def test_encrypted_to_device_passes_through(self) -> None:
        payload = {
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": self.alice.curve,
            "ciphertext": {self.bob.curve: {"type": 0, "body": "opaque+base64/ciphertext=="}},
        }
        since = (await self.b.sync(self.bob.user))["next_batch"]
        code, body = await self.a.put(
            f"{C}/sendToDevice/m.room.encrypted/t1",
            {"messages": {self.bob.user_id: {"BOB1": payload}}},
            self.alice.user,
        )
        self.assertEqual(code, 200, body)

        events = await self.b.sync_until(
            self.bob.user, lambda sync: sync["to_device"]["events"], "the to-device message at B", since
        )
        self.assertEqual(events, [{"type": "m.room.encrypted", "sender": self.alice.user_id, "content": payload}])

    async def test_updates_survive_the_peer_being_down(self) -> None:
        await self.query(self.a, self.alice, self.bob.user_id)
        await self.new_bob_device("BOB2")
        await self.until_devices({"BOB1", "BOB2"})
        # Server A becomes unreachable from B...
        self.b_transport.mode = "fail"
        await self.new_bob_device("BOB3")
        sender = self.b.hs.federation_sender

        async def backing_off() -> bool:
            status = {d["destination"]: d for d in sender.destinations_status()}
            entry = status.get(self.a.server_name)
            return entry is not None and entry["backing_off"]

        await self.wait_until(backing_off, "B backing off from A")
        self.assertEqual(await self.bob_devices_on_a(), {"BOB1", "BOB2"})
        # ...and comes back: the queued update arrives.
        self.b_transport.mode = "send"
        sender.destination_is_up(self.a.server_name)
        await self.until_devices({"BOB1", "BOB2", "BOB3"})

    async def test_deactivated_user_devices_disappear(self) -> None:
        await self.query(self.a, self.alice, self.bob.user_id)
        await self.new_bob_device("BOB2")
        await self.until_devices({"BOB1", "BOB2"})
        path = f"{C}/account/deactivate"
        code, resp = await self.b.post(path, {}, self.bob.user)
        self.assertEqual(code, 401, resp)
        code, resp = await self.b.post(path, {"auth": password_auth(self.bob.user, resp["session"])}, self.bob.user)
        self.assertEqual(code, 200, resp)
        await self.until_devices(set())

    # -- starting the cache (SyTest 50federation/40devicelists.pl) ------------------------------

    async def _a_caches(self, wanted: set[str]) -> bool:
        await self.a.hs.device_lists.settle()
        if not await self.a.hs.device_lists.store.tracked([self.bob.user_id]):
            return False
        stored = await self.a.hs.device_lists.key_store.get_device_keys([(self.bob.user_id, None)])
        return set(stored.get(self.bob.user_id, {})) == wanted

    async def test_update_for_an_uncached_user_starts_the_cache(self) -> None:
        # Nobody at A asked for Bob's keys: the first update A hears of (Bob shares a room
        # with Alice) starts the cache with the whole list, and Alice is told.
        since = (await self.a.sync(self.alice.user))["next_batch"]
        resyncs = self.count_resyncs()
        await self.new_bob_device("BOB2")
        await self.wait_until(lambda: self._a_caches({"BOB1", "BOB2"}), "A caches Bob's list")
        self.assertEqual(resyncs, [self.bob.user_id])
        await self.a.sync_until(
            self.alice.user,
            lambda s: self.bob.user_id in s.get("device_lists", {}).get("changed", []),
            "Bob in Alice's device_lists.changed",
            since=since,
        )

    async def test_query_waits_for_an_update_being_applied(self) -> None:
        # An EDU for a user A holds no list of starts a resync; a /keys/query meanwhile (even
        # for named devices) waits for it and answers from the list, not /user/keys/query.
        handler = self.a.hs.device_lists
        original = handler.resync
        gate: Deferred[None] = Deferred()
        resyncs: list[str] = []

        async def held(user_id: str, timeout: float = 30) -> bool:
            resyncs.append(user_id)
            await gate
            return await original(user_id, timeout)

        handler.resync = held  # type: ignore[method-assign]
        keys = self.a.hs.e2e_keys
        fetch = keys._fetch_keys
        fetched: list[str] = []

        async def counting(server: str, users: dict[str, list[str]], timeout: float) -> Any:
            fetched.append(server)
            return await fetch(server, users, timeout)

        keys._fetch_keys = counting  # type: ignore[method-assign]
        await self.new_bob_device("BOB2")
        await self.wait_until(lambda: succeed(resyncs == [self.bob.user_id]), "A resyncs Bob's list")
        query = ensureDeferred(
            self.a.post(f"{C}/keys/query", {"device_keys": {self.bob.user_id: ["BOB2"]}}, self.alice.user)
        )
        gate.callback(None)
        code, body = await query
        self.assertEqual(code, 200, body)
        self.assertEqual(set(body["device_keys"][self.bob.user_id]), {"BOB2"})
        self.assertEqual(fetched, [])

    async def test_rejoining_refetches_the_list(self) -> None:
        resyncs = self.count_resyncs()
        self.assertEqual(await self.bob_devices_on_a(), {"BOB1"})
        code, body = await self.a.post(f"{C}/rooms/{quote(self.room_id)}/leave", {}, self.alice.user)
        self.assertEqual(code, 200, body)
        await self.wait_until(lambda: self._left(), "Alice left, at B")
        # While A shares no room with Bob, B tells it nothing of his new device...
        await self.new_bob_device("BOB2")
        code, body = await self.a.post(
            f"{C}/join/{quote(self.room_id)}?server_name={self.b.server_name}", {}, self.alice.user
        )
        self.assertEqual(code, 200, body)
        await self.a.hs.device_lists.settle()
        # ...so the rejoin dropped A's cache and the next query fetches the list again.
        self.assertEqual(await self.bob_devices_on_a(), {"BOB1", "BOB2"})
        self.assertEqual(resyncs, [self.bob.user_id, self.bob.user_id])

    async def _left(self) -> bool:
        return not await self._joined(self.b, self.bob.user, self.alice.user_id)

    async def test_partial_key_objects_are_relayed(self) -> None:
        # A remote server may answer with key objects that lack fields (SyTest's fake servers
        # do): the device is still listed with what its server gave, its name following the
        # updates; an object naming another user or device is dropped.
        client = self.a.hs.federation_client
        original = client.get_json
        devices_path = "/_matrix/federation/v1/user/devices/"

        async def fake_user_devices(destination: str, path: str, *args: Any, **kwargs: Any) -> Any:
            if not path.startswith(devices_path):
                return await original(destination, path, *args, **kwargs)
            return {
                "user_id": self.bob.user_id,
                "stream_id": 1,
                "devices": [
                    {"device_id": "PARTIAL", "keys": {"device_keys": {}}},
                    {"device_id": "LIAR", "keys": {"user_id": self.alice.user_id, "device_id": "LIAR"}},
                ],
            }

        client.get_json = fake_user_devices  # type: ignore[method-assign]
        sender = self.b.hs.federation_sender
        update = {"user_id": self.bob.user_id, "device_id": "PARTIAL", "stream_id": 1, "keys": {"device_keys": {}}}
        sender.send_edu(self.a.server_name, "m.device_list_update", update)
        await self.wait_until(lambda: self._a_caches({"PARTIAL", "LIAR"}), "A caches Bob's list")
        code, body = await self.a.post(
            f"{C}/keys/query", {"device_keys": {self.bob.user_id: ["PARTIAL", "LIAR"]}}, self.alice.user
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(body["device_keys"][self.bob.user_id], {"PARTIAL": {"device_keys": {}, "unsigned": {}}})

        renamed = {**update, "stream_id": 2, "prev_id": [1], "device_display_name": "test display name"}
        sender.send_edu(self.a.server_name, "m.device_list_update", renamed)

        async def named() -> bool:
            await self.a.hs.device_lists.settle()
            stored = await self.a.hs.device_lists.key_store.get_device_keys([(self.bob.user_id, "PARTIAL")])
            return stored[self.bob.user_id]["PARTIAL"][1] == "test display name"

        await self.wait_until(named, "the rename applied at A")
        code, body = await self.a.post(
            f"{C}/keys/query", {"device_keys": {self.bob.user_id: ["PARTIAL"]}}, self.alice.user
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(
            body["device_keys"][self.bob.user_id]["PARTIAL"],
            {"device_keys": {}, "unsigned": {"device_display_name": "test display name"}},
        )
