"""What another server's /user/keys/query answer may hold that a client must not see (and the
server must not trip over): E2eKeysHandler built with a federation client the test scripts."""

from __future__ import annotations

from typing import Any

from mxserver.e2ee.keys import E2eKeysHandler
from tests.harness import HomeserverTestCase

REMOTE = "remote.example"
BOB = f"@bob:{REMOTE}"
GOOD_MASTER = {"user_id": BOB, "usage": ["master"], "keys": {"ed25519:abc": "abc"}}


class ScriptedKeysClient:
    """Answers every /user/keys/query with ``answer``."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.queries: list[Any] = []

    async def post_json(self, server: str, path: str, body: Any, timeout: float | None = None) -> Any:
        self.queries.append((server, path, body))
        return self.answer


class RemoteCrossSigningAnswerTests(HomeserverTestCase):
    def handler(self, answer: dict[str, Any]) -> E2eKeysHandler:
        hs = self.hs
        return E2eKeysHandler(hs.server_name, hs.e2e_key_store, hs.device_lists, ScriptedKeysClient(answer), hs.clock)

    async def test_non_string_master_key_value_is_skipped(self) -> None:
        # Used to raise TypeError (an unhashable list as a signature lookup key): now the bad
        # key is left out of the answer, the rest of it stands.
        for bad_keys in ({"ed25519:abc": ["abc"]}, {"ed25519:abc": {"k": 1}}, ["abc"], "abc", {}):
            bad_master = {"user_id": BOB, "usage": ["master"], "keys": bad_keys}
            answer = {
                "device_keys": {BOB: {"DEV": {"user_id": BOB, "device_id": "DEV", "keys": {}}}},
                "master_keys": {BOB: bad_master},
                "self_signing_keys": {BOB: {"user_id": BOB, "usage": ["self_signing"], "keys": {"ed25519:x": 5}}},
            }
            result = await self.handler(answer).query("@alice:test", {BOB: []}, 5.0)
            self.assertEqual(result["master_keys"], {}, bad_keys)
            self.assertEqual(result["self_signing_keys"], {})
            self.assertEqual(list(result["device_keys"][BOB]), ["DEV"])
            self.assertEqual(result["failures"], {})

    async def test_good_master_key_is_kept(self) -> None:
        answer = {"device_keys": {BOB: {}}, "master_keys": {BOB: GOOD_MASTER}}
        result = await self.handler(answer).query("@alice:test", {BOB: []}, 5.0)
        self.assertEqual(result["master_keys"], {BOB: GOOD_MASTER})
