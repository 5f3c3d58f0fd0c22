"""Which role serves a request: the one routing table of a cluster (issue 19).

The router of ``python -m mxserver cluster`` and the reverse-proxy configurations shipped in
``contrib/`` are all made from :data:`ROUTES`, so they cannot disagree. Rules are tried in
order, first match wins; a request no rule claims goes to ``main``, the writer, which can
serve everything.

The ``sync`` role serves the long-polling client reads: ``/sync``, simplified sliding sync and
the legacy ``/events`` and ``/initialSync``. They are where a busy server's connections and
CPU go (every client holds one open), and they never write a room: a sync worker is woken by
main's writes through the replication bus. Reads that may write on the way (``/messages``
backfills from other servers, a remote profile is fetched and cached) stay on main in this
slice.

Requests of one user to one role go to one instance of it (:func:`pick_instance`, keyed by
the access token): a user's long-polls meet the same warm caches each time.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import attrs

#: the role of requests no rule claims
DEFAULT_ROLE = "main"


@attrs.frozen
class Route:
    """Requests with one of ``methods`` whose path matches ``pattern`` go to ``role``."""

    methods: frozenset[str]
    pattern: str
    role: str

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and re.fullmatch(self.pattern, path) is not None


_CLIENT = r"/_matrix/client/(?:r0|v3)"

#: the routing table, in order (first match wins)
ROUTES: tuple[Route, ...] = (
    Route(frozenset({"GET"}), _CLIENT + r"/sync", "sync"),
    Route(frozenset({"POST"}), r"/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync", "sync"),
    Route(frozenset({"GET"}), _CLIENT + r"/events", "sync"),
    Route(frozenset({"GET"}), _CLIENT + r"/initialSync", "sync"),
)


def role_for(method: str, path: str, routes: Sequence[Route] = ROUTES) -> str:
    """The role that serves ``method path`` (the raw path, without the query string)."""
    for route in routes:
        if route.matches(method, path):
            return route.role
    return DEFAULT_ROLE


def pick_instance(instances: Sequence[str], key: str | bytes | None) -> str:
    """One of ``instances`` (the names of a role's workers), the same one for the same ``key``
    as long as the instances do not change; the first one without a key."""
    if not instances:
        raise ValueError("no instances to pick from")
    if key is None:
        return instances[0]
    raw = key.encode() if isinstance(key, str) else key
    return instances[zlib.crc32(raw) % len(instances)]
