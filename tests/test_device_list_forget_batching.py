"""DeviceListHandler: cached remote device lists dropped on joins are forgotten in coalesced
batches (a federation join adopting a 1,000-member state is one listener call per member)."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.trial import unittest

from mxserver.e2ee.device_lists import DeviceListHandler
from mxserver.storage.e2ee_device_lists import DeviceListStore
from mxserver.streams import DeviceListChange, Stream


class _Store:
    def __init__(self) -> None:
        self.cached = {"@a:remote.test", "@c:remote.test"}
        self.calls: list[list[str]] = []
        self.gates: list[Deferred[None]] = []
        self.forgotten: list[str] = []
        self.fail_next = False

    def tracked(self, user_ids: Any) -> Deferred[dict[str, int | None]]:
        users = list(user_ids)
        self.calls.append(users)
        if self.fail_next:
            self.fail_next = False
            return Deferred.fromCoroutine(self._fail())
        gate: Deferred[None] = Deferred()
        self.gates.append(gate)
        return gate.addCallback(lambda _: {u: None for u in users if u in self.cached})

    async def _fail(self) -> dict[str, int | None]:
        raise RuntimeError("database gone")

    def forget_remote(self, user_id: str) -> Deferred[None]:
        self.forgotten.append(user_id)
        return succeed(None)


class ForgetBatchingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = _Store()
        # Only the store takes part in forgetting: no other collaborator is called.
        unused: Any = None
        self.handler = DeviceListHandler(
            "us.test",
            cast(DeviceListStore, self.store),
            unused,
            unused,
            Stream[DeviceListChange]("device_lists"),
            unused,
            unused,
            unused,
            unused,
        )

    def test_joins_during_a_forget_go_as_one_batch(self) -> None:
        changed = self.handler.membership_changed
        changed("!r:remote.test", "@a:remote.test", True)
        for user in ("@b:remote.test", "@c:remote.test", "@b:remote.test", "@d:remote.test"):
            changed("!r:remote.test", user, True)
        changed("!r:remote.test", "@e:remote.test", False)  # a leave drops nothing
        # the first join is being looked up; the others wait for it, deduplicated, in order
        self.assertEqual(self.store.calls, [["@a:remote.test"]])
        self.store.gates[0].callback(None)
        self.assertEqual(self.store.calls[1], ["@b:remote.test", "@c:remote.test", "@d:remote.test"])
        self.store.gates[1].callback(None)
        self.assertEqual(self.store.forgotten, ["@a:remote.test", "@c:remote.test"])
        # no background work is left: settle() has nothing to wait for
        self.successResultOf(ensureDeferred(self.handler.settle()))
        # idle again: the next join starts a new batch at once
        changed("!r:remote.test", "@c:remote.test", True)
        self.assertEqual(self.store.calls[2], ["@c:remote.test"])
        self.store.gates[2].callback(None)
        self.assertEqual(self.store.forgotten[-1], "@c:remote.test")

    def test_a_failed_batch_does_not_stop_the_next(self) -> None:
        self.store.fail_next = True
        self.handler.membership_changed("!r:remote.test", "@a:remote.test", True)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.handler.membership_changed("!r:remote.test", "@c:remote.test", True)
        self.store.gates[0].callback(None)
        self.assertEqual(self.store.forgotten, ["@c:remote.test"])
