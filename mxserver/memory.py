"""Process memory and garbage-collector tuning, applied when mxserver runs under twistd.

Two glibc defaults make a Twisted server's memory grow and never come back:

- every thread that allocates gets its own malloc arena (up to 8 per core),
  and the database and hashing thread pools are many threads;
- the mmap threshold rises to the size of the largest block freed, so after
  the first password hash (several MiB, argon2id) such blocks come from the
  arenas and stay there.

Fixing the mmap threshold (which also turns off its dynamic adjustment) and
capping the arenas keeps the resident size close to what is in use (measured:
100 hashes in 10 threads left 70 MiB behind by default, under 1 MiB tuned).
Embedding applications decide for their own process and may call
:func:`tune_malloc` themselves.

The collector: a full (generation 2) collection walks every tracked object,
and right after start-up that is the whole of what start-up built (modules,
routes, compiled rules, caches): measured 30-45 ms, a pause every request in
flight waits out (it was the p99 of the send benchmark, 4x the median).
:func:`freeze_startup_heap` moves what exists once the server is ready into
the permanent generation, which collections skip, so later full collections
walk only what was made since.
"""

from __future__ import annotations

import ctypes
import gc
import sys

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 256 * 1024, arena_max: int = 2) -> bool:
    """Apply the tuning; returns False where it does not apply (not Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_ARENA_MAX, arena_max))


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later collections
    (``gc.freeze``); returns how many objects were frozen. For the process owner:
    frozen objects are never collected, so call it once, when start-up is done."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
