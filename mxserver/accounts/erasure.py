"""Erased users: accounts deactivated with ``erase: true`` (account_deactivation.yaml).

The spec: "any users (or servers) which join the room after the erasure request are
served redacted copies of the events sent by this account. Users which had visibility on
those events prior to the erasure are still able to see unredacted copies." Who saw an
event before the erasure is not recorded, so, as Synapse does (and SyTest "Only original
members of the room can see messages from erased users" expects), a user sees an erased
sender's event unredacted only if they were joined to the room when it was sent; everyone
else, and every other server, gets the redacted form. The erasure is not shared over
federation and sends no redaction events.

The set of erased users is small (only accounts deactivated that way), so it is read once
and kept in memory; every visibility check asks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from twisted.internet.defer import Deferred

from mxserver.streams import Invalidation, Stream


class ErasedUsersStore(Protocol):
    def get_erased_users(self) -> Deferred[list[str]]: ...


class ErasedUsers:
    """Which users are erased (read once from the store, then kept up to date in memory)."""

    def __init__(self, store: ErasedUsersStore, invalidations: Stream[Invalidation] | None = None) -> None:
        """``invalidations``: where changes are announced (a cluster's other processes)."""
        self._store = store
        self._invalidations = invalidations
        self._loaded: frozenset[str] | None = None
        #: erased since start-up: kept apart, so a load racing an erasure cannot lose it
        self._added: set[str] = set()

    def erased(self, user_id: str) -> None:
        """``user_id`` was just erased (its row is committed)."""
        self._added.add(user_id)
        if self._invalidations is not None:
            self._invalidations.publish(Invalidation("erased", (user_id,)))

    def not_erased(self, user_id: str) -> None:
        """``user_id`` is no longer erased (an admin reactivated the account; its row is gone)."""
        self._added.discard(user_id)
        if self._loaded is not None and user_id in self._loaded:
            self._loaded = self._loaded - {user_id}
        if self._invalidations is not None:
            self._invalidations.publish(Invalidation("not_erased", (user_id,)))

    async def erased_among(self, user_ids: Iterable[str]) -> frozenset[str]:
        """The users of ``user_ids`` who are erased."""
        if self._loaded is None:
            self._loaded = frozenset(await self._store.get_erased_users())
        loaded, added = self._loaded, self._added
        return frozenset(u for u in user_ids if u in loaded or u in added)
