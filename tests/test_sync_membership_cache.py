"""The /sync room source's per-user membership cache: a read that overlapped a member event
of that user is answered but not kept (it may predate the event: an invite that arrived while
the invitee's first /sync was reading would otherwise stay invisible until the next change)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from mxserver.sync.source_adapters import RoomStreamSource


class _Store:
    def __init__(self) -> None:
        self.reads: list[Deferred[list[Any]]] = []

    def memberships(self, user_id: str) -> Deferred[list[Any]]:
        d: Deferred[list[Any]] = Deferred()
        self.reads.append(d)
        return d


def _member_event(user_id: str, position: int) -> Any:
    return SimpleNamespace(
        type="m.room.member", state_key=user_id, room_id="!r:test", metadata=SimpleNamespace(stream_ordering=position)
    )


class MembershipCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = _Store()
        self.source = RoomStreamSource(SimpleNamespace(current_position=0), self.store)  # type: ignore[arg-type]

    async def test_read_overlapping_a_member_event_is_not_kept(self) -> None:
        first = Deferred.fromCoroutine(self.source.memberships("@carol:test"))
        self.source.on_room_events([_member_event("@carol:test", 5)])  # the invite commits meanwhile
        self.store.reads[0].callback(["before the invite"])
        self.assertEqual(await first, ["before the invite"])
        # The next /sync reads again, and sees it.
        second = Deferred.fromCoroutine(self.source.memberships("@carol:test"))
        self.assertEqual(len(self.store.reads), 2)
        self.store.reads[1].callback(["invited"])
        self.assertEqual(await second, ["invited"])
        # That read overlapped nothing: kept.
        self.assertEqual(await self.source.memberships("@carol:test"), ["invited"])
        self.assertEqual(len(self.store.reads), 2)

    async def test_other_users_events_do_not_spoil_a_read(self) -> None:
        first = Deferred.fromCoroutine(self.source.memberships("@carol:test"))
        self.source.on_room_events([_member_event("@dave:test", 5)])
        self.store.reads[0].callback(["carol's"])
        self.assertEqual(await first, ["carol's"])
        self.assertEqual(await self.source.memberships("@carol:test"), ["carol's"])
        self.assertEqual(len(self.store.reads), 1)
