"""GET /voip/turnServer (client-server-api §Voice over IP): credentials from a shared secret
(the TURN REST API convention coturn checks), static credentials, guests, no TURN server, and
the config's refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from twisted.trial import unittest

from mxserver.config import ConfigError, load_config_dict
from tests.harness import HomeserverTestCase

TURN = "/_matrix/client/v3/voip/turnServer"
URIS = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"]


class SharedSecretTests(HomeserverTestCase):
    config_overrides = {
        "registration": {"allow_guests": True},
        "voip": {"turn_uris": URIS, "turn_shared_secret": "s3cret", "turn_user_lifetime_s": 600},
    }

    async def test_time_limited_credentials_the_turn_server_can_check(self) -> None:
        alice = await self.register("alice")
        before = int(time.time())
        code, body = await self.get(TURN, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["uris"], URIS)
        self.assertEqual(body["ttl"], 600)
        expiry, _, user = body["username"].partition(":")
        self.assertEqual(user, alice.user_id)
        self.assertTrue(before + 600 <= int(expiry) <= int(time.time()) + 600)
        # What coturn computes from the username and its static-auth-secret:
        expected = base64.b64encode(hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()).decode()
        self.assertEqual(body["password"], expected)

    async def test_guests_and_no_token(self) -> None:
        code, guest = await self.post("/_matrix/client/v3/register?kind=guest", {})
        self.assertEqual(code, 200, guest)
        code, body = await self.get(TURN, guest["access_token"])
        self.assertEqual(code, 200, body)
        self.assertTrue(body["username"].endswith(":" + guest["user_id"]))
        self.assertMatrixError(await self.get(TURN), 401, "M_MISSING_TOKEN")


class NoGuestsTests(HomeserverTestCase):
    config_overrides = {
        "registration": {"allow_guests": True},
        "voip": {"turn_uris": URIS, "turn_username": "u", "turn_password": "p", "turn_allow_guests": False},
    }

    async def test_static_credentials_and_guests_refused(self) -> None:
        alice = await self.register("alice")
        code, body = await self.get(TURN, alice)
        self.assertEqual((code, body), (200, {"username": "u", "password": "p", "uris": URIS, "ttl": 3600}))
        code, guest = await self.post("/_matrix/client/v3/register?kind=guest", {})
        self.assertMatrixError(await self.get(TURN, guest["access_token"]), 403, "M_FORBIDDEN")


class NoTurnServerTests(HomeserverTestCase):
    async def test_empty_answer_without_a_turn_server(self) -> None:
        # As Synapse: voip.yaml has no refusal for "no TURN server"; clients then call without one.
        alice = await self.register("alice")
        self.assertEqual(await self.get(TURN, alice), (200, {}))


class ConfigTests(unittest.TestCase):
    def test_refusals(self) -> None:
        with self.assertRaisesRegex(ConfigError, "voip.turn_uris"):
            load_config_dict({"voip": {"turn_uris": URIS}})
        with self.assertRaisesRegex(ConfigError, "turn: or turns:"):
            load_config_dict({"voip": {"turn_uris": ["stun:x"], "turn_shared_secret": "s"}})
        with self.assertRaisesRegex(ConfigError, "turn_user_lifetime_s"):
            load_config_dict({"voip": {"turn_uris": URIS, "turn_shared_secret": "s", "turn_user_lifetime_s": 0}})
