"""The two-server test harness itself: both servers serve clients, and find each other over TLS."""

from __future__ import annotations

from mxserver.crypto.keys import get_verify_key
from tests.harness import C, TwoServerTestCase


class TwoServerHarnessTests(TwoServerTestCase):
    async def test_names_and_users(self) -> None:
        self.assertNotEqual(self.a.server_name, self.b.server_name)
        for server in (self.a, self.b):
            self.assertEqual(server.server_name, f"127.0.0.1:{server.federation_port}")
            user = await server.register("alice")
            self.assertEqual(user.user_id, server.user_id("alice"))
            code, body = await server.get(f"{C}/account/whoami", user)
            self.assertEqual((code, body["user_id"]), (200, user.user_id))
        # the base class helpers talk to A
        code, body = await self.get("/_matrix/client/versions")
        self.assertEqual(code, 200, body)

    async def test_a_fetches_b_keys_through_the_keyring(self) -> None:
        b = self.b.hs
        keys = await self.a.hs.keyring.get_verify_keys(self.b.server_name, [b.signing_key_id], self.now_ms())
        self.assertEqual(bytes(keys[b.signing_key_id]), bytes(get_verify_key(b.signing_key)))
        rows = await self.a.hs.server_keys.get_server_keys(self.b.server_name)
        self.assertEqual([r.key_id for r in rows], [b.signing_key_id])

    async def test_signed_request_from_b_to_a(self) -> None:
        body = await self.b.hs.federation_client.get_json(self.a.server_name, "/_matrix/federation/v1/version")
        self.assertIn("server", body)
