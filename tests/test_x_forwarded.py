"""Listeners behind a reverse proxy (``x_forwarded: true``): the client's address is the one the
proxy puts last in X-Forwarded-For, so per-IP rate limits and device "last seen" addresses are
the clients', not the proxy's. Without the flag the header is ignored (anyone could send it)."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mxserver.api.resource import forwarded_client
from tests.harness import C, HomeserverTestCase

LISTENER = {"host": "127.0.0.1", "port": 0, "resources": ["client", "federation", "media"]}


class ForwardedForTests(HomeserverTestCase):
    config_overrides = {"listeners": [{**LISTENER, "x_forwarded": True}], "rate_limits": {"enabled": True}}

    async def bad_login(self, user: str, forwarded_for: str | None) -> int:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "wrong"}
        headers: dict[str, Any] = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        code, _ = await self.request("POST", f"{C}/login", body, headers=headers)
        return code

    async def test_rate_limits_count_per_forwarded_client(self) -> None:
        # login: a burst of 5 per IP; each attempt names another user (the per-user limit stays out of it)
        codes = [await self.bad_login(f"u{i}", "10.9.9.9, 203.0.113.1") for i in range(6)]
        self.assertEqual(codes, [403] * 5 + [429])
        # another client behind the same proxy is not held back by the first one's attempts
        self.assertEqual(await self.bad_login("v0", "203.0.113.2"), 403)
        # what the client itself put first in the header does not matter
        self.assertEqual(await self.bad_login("v1", "203.0.113.2, 203.0.113.1"), 429)

    async def test_device_last_seen_is_the_forwarded_address(self) -> None:
        alice = await self.register("alice")
        code, _ = await self.request("GET", f"{C}/account/whoami", token=alice, headers={"X-Forwarded-For": "2001:db8::7"})
        self.assertEqual(code, 200)
        # "last seen" is written in the background (the request does not wait for it)
        await self.hs.auth.settle()
        code, body = await self.get(f"{C}/devices/{alice.device_id}", alice)
        self.assertEqual((code, body.get("last_seen_ip")), (200, "2001:db8::7"))


class NotForwardedTests(HomeserverTestCase):
    config_overrides = {"listeners": [LISTENER], "rate_limits": {"enabled": True}}

    async def test_the_header_is_ignored_without_x_forwarded(self) -> None:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "x"}, "password": "wrong"}
        codes = []
        for i in range(6):
            body["identifier"]["user"] = f"u{i}"
            code, _ = await self.request("POST", f"{C}/login", body, headers={"X-Forwarded-For": f"203.0.113.{i}"})
            codes.append(code)
        self.assertEqual(codes, [403] * 5 + [429])  # all from 127.0.0.1


class ParseTests(unittest.SynchronousTestCase):
    def test_the_last_entry_if_it_is_an_address(self) -> None:
        self.assertEqual(forwarded_client("1.2.3.4"), "1.2.3.4")
        self.assertEqual(forwarded_client("1.2.3.4,  5.6.7.8 "), "5.6.7.8")
        self.assertEqual(forwarded_client("2001:DB8::1"), "2001:db8::1")
        for bad in (None, "", "unknown", "1.2.3.4, ", "1.2.3.4:80", "[::1]"):
            self.assertIsNone(forwarded_client(bad), bad)
