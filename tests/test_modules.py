"""Modules: entry-point discovery (first- and third-party), configuration, and the first-party defaults."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from mxserver.api.ratelimit import RateLimiter
from mxserver.errors import MatrixError
from mxserver.events.versions import get_room_version
from mxserver.interfaces import IEventChecker, IModule, INewEventListener, IPresence, ITyping
from mxserver.module_loader import ModuleLoadError, construct, find_entry_point
from mxserver.rooms.room_server import EventSpec
from tests.harness import HomeserverTestCase
from tests.test_room_server import basic_room

THIRD_PARTY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "thirdparty")


class _Api:
    def __init__(self, clock: Any) -> None:
        self.clock = clock


class LoaderTests(unittest.SynchronousTestCase):
    def test_first_party_defaults_are_entry_points(self) -> None:
        for group, name in [
            ("mxserver.storage", "sqlite"),
            ("mxserver.storage", "postgres"),
            ("mxserver.login", "password"),
            ("mxserver.presence", "default"),
            ("mxserver.typing", "default"),
        ]:
            self.assertEqual(find_entry_point(group, name).name, name)

    def test_unknown_module_is_a_clear_error(self) -> None:
        with self.assertRaisesRegex(ModuleLoadError, "no module 'nope' in entry-point group mxserver.typing"):
            construct("mxserver.typing", "nope", ITyping, {}, None)

    def test_wrong_interface_refused(self) -> None:
        with self.assertRaisesRegex(ModuleLoadError, "does not provide IPresence"):
            construct("mxserver.typing", "default", IPresence, {}, _Api(Clock()))


class TypingModuleTests(unittest.SynchronousTestCase):
    def test_expires_on_the_clock(self) -> None:
        clock = Clock()
        typing = construct("mxserver.typing", "default", ITyping, {"max_timeout_ms": 10_000}, _Api(clock))
        changes: list[str] = []
        typing.on_change = changes.append
        typing.set_typing("!r:x", "@a:x", True, 5000)
        typing.set_typing("!r:x", "@b:x", True, 60_000)  # capped at 10 s
        self.assertEqual(typing.typing_in("!r:x"), {"@a:x", "@b:x"})
        clock.advance(6)
        self.assertEqual(typing.typing_in("!r:x"), {"@b:x"})
        clock.advance(5)
        self.assertEqual(typing.typing_in("!r:x"), frozenset())
        self.assertEqual(len(changes), 4)
        typing.set_typing("!r:x", "@a:x", True, 5000)
        typing.set_typing("!r:x", "@a:x", False, 0)
        self.assertEqual(typing.typing_in("!r:x"), frozenset())
        self.assertEqual(clock.getDelayedCalls(), [])


class PresenceModuleTests(unittest.SynchronousTestCase):
    def test_idle_and_states(self) -> None:
        clock = Clock()
        presence = construct("mxserver.presence", "default", IPresence, {"idle_after_ms": 60_000}, _Api(clock))
        self.assertEqual(presence.get_state("@a:x")["presence"], "offline")
        presence.set_state("@a:x", "online", "hello")
        state = presence.get_state("@a:x")
        self.assertEqual((state["presence"], state["status_msg"], state["currently_active"]), ("online", "hello", True))
        clock.advance(120)
        self.assertEqual(presence.get_state("@a:x")["presence"], "unavailable")
        presence.user_active("@a:x")
        self.assertEqual(presence.get_state("@a:x")["presence"], "online")
        with self.assertRaises(ValueError):
            presence.set_state("@a:x", "busy", None)


class RateLimiterTests(unittest.SynchronousTestCase):
    def test_token_bucket(self) -> None:
        clock = Clock()
        rl = RateLimiter(clock, per_second=1.0, burst=3)
        for _ in range(3):
            rl.check("k")
        with self.assertRaises(MatrixError) as cm:
            rl.check("k")
        self.assertEqual(cm.exception.errcode, "M_LIMIT_EXCEEDED")
        self.assertEqual(cm.exception.extra["retry_after_ms"], 1000)
        rl.check("other")  # keys are independent
        clock.advance(1)
        rl.check("k")

    def test_disabled(self) -> None:
        rl = RateLimiter(Clock(), per_second=0.001, burst=1, enabled=False)
        for _ in range(100):
            rl.check("k")


class ThirdPartyLoginModuleTests(HomeserverTestCase):
    """A module from a tiny distribution under tests/fixtures, declared only by its entry point."""

    config_overrides = {
        "modules": [
            {"group": "mxserver.login", "name": "password"},
            {"group": "mxserver.login", "name": "magic", "config": {"word": "xyzzy"}},
        ]
    }

    def setUp(self) -> Any:
        sys.path.insert(0, THIRD_PARTY)
        importlib.invalidate_caches()
        self.addCleanup(sys.path.remove, THIRD_PARTY)
        return super().setUp()

    async def test_discovered_configured_and_called(self) -> None:
        import mxtest_magic_login

        await self.register("wizard")
        code, body = await self.get("/_matrix/client/v3/login")
        self.assertEqual(code, 200)
        self.assertIn("org.example.magic", [f["type"] for f in body["flows"]])
        self.assertIn("m.login.password", [f["type"] for f in body["flows"]])
        bad = await self.post("/_matrix/client/v3/login", {"type": "org.example.magic", "user": "wizard", "word": "abracadabra"})
        self.assertMatrixError(bad, 403, "M_FORBIDDEN")
        code, body = await self.post("/_matrix/client/v3/login", {"type": "org.example.magic", "user": "wizard", "word": "xyzzy"})
        self.assertEqual(code, 200, body)
        self.assertEqual(body["user_id"], "@wizard:test")
        self.assertEqual([c["word"] for c in mxtest_magic_login.CALLS[-2:]], ["abracadabra", "xyzzy"])
        code, body = await self.get("/_matrix/client/v3/account/whoami", token=body["access_token"])
        self.assertEqual(body["user_id"], "@wizard:test")


@implementer(IModule, IEventChecker, INewEventListener)
class _NoShouting:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def check_event_allowed(self, event: Any, state: Any) -> bool:
        return not str(event.content.get("body", "")).isupper()

    def on_new_event(self, event: Any) -> None:
        self.seen.append(event.content.get("body"))


class EventHookTests(HomeserverTestCase):
    async def test_check_event_allowed_refuses(self) -> None:
        hook = _NoShouting()
        self.hs.module_api.register_event_hook(hook)
        rv = get_room_version("11")
        room_id, _ = await self.hs.room_server.create_room("@a:test", rv, {}, basic_room(rv, "@a:test"))
        await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "hello"}, sender="@a:test"))
        with self.assertRaises(MatrixError) as cm:
            await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "HELLO"}, sender="@a:test"))
        self.assertEqual(cm.exception.errcode, "M_FORBIDDEN")
        # on_new_event saw every persisted event but not the refused one
        self.assertEqual(hook.seen[-1], "hello")
        self.assertNotIn("HELLO", hook.seen)

    async def test_hooks_are_called_as_declared(self) -> None:
        """Only the interfaces a hook declares are used: a listener is never asked to check."""

        @implementer(INewEventListener)
        class Listener:
            def __init__(self) -> None:
                self.seen: list[str] = []

            def check_event_allowed(self, event: Any, state: Any) -> bool:
                raise AssertionError("not declared: must not be called")

            def on_new_event(self, event: Any) -> None:
                self.seen.append(event.type)

        listener = Listener()
        self.hs.module_api.register_event_hook(listener)
        rv = get_room_version("11")
        room_id, _ = await self.hs.room_server.create_room("@a:test", rv, {}, basic_room(rv, "@a:test"))
        await self.hs.room_server.send(room_id, EventSpec("m.room.message", {"body": "hi"}, sender="@a:test"))
        self.assertEqual(listener.seen[-1], "m.room.message")
        with self.assertRaises(TypeError):
            self.hs.module_api.register_event_hook(object())


class MallocTuningTests(unittest.SynchronousTestCase):
    def test_tune_malloc_applies_on_linux(self) -> None:
        from mxserver.memory import tune_malloc

        self.assertEqual(tune_malloc(), sys.platform.startswith("linux"))
