"""Token-bucket rate limiting per key (user ID or IP), on the reactor clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mxserver.errors import limit_exceeded


class RateLimiter:
    """``per_second`` sustained, ``burst`` at once; ``enabled=False`` allows everything.

    ``exempt(key)`` true: the key is never limited (application services' users, see
    :meth:`mxserver.appservice.registration.AppServiceRegistry.rate_limit_exempt`).
    """

    def __init__(
        self,
        clock: Any,
        per_second: float,
        burst: int,
        enabled: bool = True,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._exempt = exempt
        self._rate = per_second
        self._burst = float(burst)
        self._enabled = enabled and per_second > 0
        # key -> (tokens, last update time)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket or raise M_LIMIT_EXCEEDED."""
        if not self._enabled or (self._exempt is not None and self._exempt(key)):
            return
        now = self._clock.seconds()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            retry = math.ceil((cost - tokens) / self._rate * 1000)
            raise limit_exceeded(retry)
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > 10_000:
            self._prune(now)

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no information.
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self._rate >= self._burst]
        for k in full:
            del self._buckets[k]
