"""A bounded in-memory map filled by one batched read for the keys it misses.

Push evaluation asks for something of every member of a room at once (their compiled
rules, their ignored-users lists): the keys not in memory are read together, in one
query, not one each. A change (:meth:`BatchedCache.invalidate`) drops a key, and a read
that was in flight across any change is used once but not kept: it may hold what the
change replaced.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BatchedCache(Generic[K, V]):
    """Values by key, least recently used dropped beyond ``size``; misses read by ``load``.

    ``load(keys)`` answers a value for each key it was given (a key it leaves out is not
    answered, and not cached).
    """

    def __init__(self, load: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], size: int) -> None:
        self._load = load
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        #: bumped by every invalidation: reads that crossed one are not kept
        self._generation = 0

    def get_cached(self, key: K) -> V | None:
        """The value in memory, if any (no read)."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[K]) -> dict[K, V]:
        """Every key's value; those not in memory read in one ``load``."""
        out: dict[K, V] = {}
        missing: list[K] = []
        for key in keys:
            value = self.get_cached(key)
            if value is None:
                missing.append(key)
            else:
                out[key] = value
        if not missing:
            return out
        generation = self._generation
        loaded = await self._load(missing)
        for key in missing:
            if key not in loaded:
                continue
            out[key] = value = loaded[key]
            if generation == self._generation:
                self._values[key] = value
        while len(self._values) > self._size:
            self._values.popitem(last=False)
        return out

    def invalidate(self, key: K) -> None:
        """``key``'s value changed: read it again next time (and keep no read in flight)."""
        self._values.pop(key, None)
        self._generation += 1

    def invalidate_many(self, keys: Iterable[K]) -> None:
        """Each of ``keys`` changed (one generation step for them all)."""
        for key in keys:
            self._values.pop(key, None)
        self._generation += 1

    def clear(self) -> None:
        self._values.clear()
        self._generation += 1
