"""mxserver.batched_cache: one read for the misses, bounded, and no stale value kept across a change."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial import unittest

from mxserver.batched_cache import BatchedCache


class Loader:
    """A load the test answers by hand: each call waits until :meth:`answer`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.pending: list[Deferred[dict[str, int]]] = []

    def __call__(self, keys: Sequence[str]) -> Deferred[dict[str, int]]:
        self.calls.append(list(keys))
        d: Deferred[dict[str, int]] = Deferred()
        self.pending.append(d)
        return d

    def answer(self, values: dict[str, int]) -> None:
        self.pending.pop(0).callback(values)


class BatchedCacheTests(unittest.TestCase):
    def test_misses_are_read_together_then_kept(self) -> None:
        load = Loader()
        cache: BatchedCache[str, int] = BatchedCache(load, size=10)
        d = ensureDeferred(cache.get_many(["a", "b", "c"]))
        load.answer({"a": 1, "b": 2, "c": 3})
        self.assertEqual(self.successResultOf(d), {"a": 1, "b": 2, "c": 3})
        d = ensureDeferred(cache.get_many(["b", "d"]))
        self.assertEqual(load.calls, [["a", "b", "c"], ["d"]])  # only the miss is read
        load.answer({"d": 4})
        self.assertEqual(self.successResultOf(d), {"b": 2, "d": 4})
        self.assertEqual(cache.get_cached("c"), 3)

    def test_a_read_crossing_a_change_is_used_but_not_kept(self) -> None:
        load = Loader()
        cache: BatchedCache[str, int] = BatchedCache(load, size=10)
        d = ensureDeferred(cache.get_many(["a"]))
        cache.invalidate("a")  # a change committed while the read was in flight
        load.answer({"a": 1})
        self.assertEqual(self.successResultOf(d), {"a": 1})
        self.assertIsNone(cache.get_cached("a"))
        d = ensureDeferred(cache.get_many(["a"]))
        load.answer({"a": 2})
        self.assertEqual(self.successResultOf(d), {"a": 2})
        self.assertEqual(cache.get_cached("a"), 2)

    def test_bounded_least_recently_used_first(self) -> None:
        load = Loader()
        cache: BatchedCache[str, int] = BatchedCache(load, size=2)
        d = ensureDeferred(cache.get_many(["a", "b"]))
        load.answer({"a": 1, "b": 2})
        self.successResultOf(d)
        cache.get_cached("a")  # a is now the most recently used
        d = ensureDeferred(cache.get_many(["c"]))
        load.answer({"c": 3})
        self.successResultOf(d)
        self.assertEqual((cache.get_cached("a"), cache.get_cached("b"), cache.get_cached("c")), (1, None, 3))

    def test_keys_the_load_leaves_out_are_not_answered(self) -> None:
        load = Loader()
        cache: BatchedCache[str, int] = BatchedCache(load, size=10)
        d = ensureDeferred(cache.get_many(["a", "ghost"]))
        load.answer({"a": 1})
        self.assertEqual(self.successResultOf(d), {"a": 1})
        self.assertIsNone(cache.get_cached("ghost"))
