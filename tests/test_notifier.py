"""Stream tokens and the long-poll notifier."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from mxserver.errors import MatrixError
from mxserver.sync.notifier import Notifier
from mxserver.sync.sources import SyncRequest, SyncSection, SyncSources
from mxserver.sync.tokens import StreamToken


class TokenTests(unittest.SynchronousTestCase):
    def test_round_trip(self) -> None:
        t = StreamToken(room=120, typing=4, receipts=9, presence=0, account_data=31, to_device=2, device_lists=7)
        self.assertEqual(t.serialize(), "s120_4_9_0_31_2_7")
        self.assertEqual(StreamToken.parse(t.serialize()), t)

    def test_short_tokens_still_parse(self) -> None:
        self.assertEqual(StreamToken.parse("s5_1"), StreamToken(room=5, typing=1))

    def test_garbage_is_invalid_param(self) -> None:
        for bad in ["", "x1_2", "s1_a", "s" + "_".join(["1"] * 20), "s"]:
            with self.assertRaises(MatrixError) as cm:
                StreamToken.parse(bad)
            self.assertEqual(cm.exception.errcode, "M_INVALID_PARAM")

    def test_is_after(self) -> None:
        self.assertTrue(StreamToken(room=2).is_after(StreamToken(room=1)))
        self.assertFalse(StreamToken(room=1).is_after(StreamToken(room=1, typing=3)))


class NotifierTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sources = SyncSources()
        self.notifier = Notifier(self.clock, self.sources)

    def test_room_event_wakes_only_that_rooms_waiters(self) -> None:
        a = ensureDeferred(self.notifier.wait("@a:x", ["!r1:x"], 30_000))
        b = ensureDeferred(self.notifier.wait("@b:x", ["!r2:x"], 30_000))
        self.assertEqual(self.notifier.waiting, 2)
        self.notifier.notify(room_ids=["!r1:x"])
        self.assertTrue(a.called)
        self.assertFalse(b.called)
        self.assertEqual(self.notifier.waiting, 1)
        self.notifier.notify(user_ids=["@b:x"])
        self.assertTrue(b.called)
        self.assertEqual(self.notifier.waiting, 0)

    def test_timeout(self) -> None:
        d = ensureDeferred(self.notifier.wait("@a:x", ["!r1:x"], 5000))
        self.clock.advance(4.9)
        self.assertFalse(d.called)
        self.clock.advance(0.2)
        self.assertTrue(d.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_frees_the_waiter(self) -> None:
        d = ensureDeferred(self.notifier.wait("@a:x", ["!r1:x", "!r2:x"], 30_000))
        self.assertEqual(self.notifier.watched_rooms, 2)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(self.notifier.waiting, 0)
        self.assertEqual(self.notifier.watched_rooms, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_many_idle_waiters_are_cheap(self) -> None:
        ds = [ensureDeferred(self.notifier.wait(f"@u{i}:x", [f"!r{i % 100}:x"], 30_000)) for i in range(2000)]
        self.notifier.notify(room_ids=["!r7:x"])
        self.assertEqual(sum(1 for d in ds if d.called), 20)
        self.clock.advance(31)
        self.assertTrue(all(d.called for d in ds))

    def test_current_token(self) -> None:
        room, typing = _Source("room", 3), _Source("typing", 1)
        self.sources.register(typing)
        self.sources.register(room)
        self.assertEqual(self.notifier.current_token(), StreamToken(room=3, typing=1))
        room.position = 9
        self.assertEqual(self.notifier.current_token().room, 9)
        self.assertEqual([s.name for s in self.sources], ["room", "typing"])  # token order

    def test_sources_are_registered_once_by_known_name(self) -> None:
        self.sources.register(_Source("room", 0))
        with self.assertRaises(ValueError):
            self.sources.register(_Source("room", 1))
        with self.assertRaises(ValueError):
            self.sources.register(_Source("nonsense", 1))


class _Source:
    """A sync source with a settable position and nothing to say."""

    def __init__(self, name: str, position: int) -> None:
        self.name = name
        self.position = position

    def current_position(self) -> int:
        return self.position

    async def sync_section(self, request: SyncRequest) -> SyncSection:
        return SyncSection()
