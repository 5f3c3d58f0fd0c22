"""Each process's ``GET /health``, and the worker registry with its admin API
(``GET /_mxserver/admin/v1/workers``, issue 19), on SQLite and Postgres."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.cluster.registry import ALIVE_WITHIN, HEARTBEAT_INTERVAL
from tests.harness import HomeserverTestCase, TestUser

PATH = "/_mxserver/admin/v1/workers"


class WorkerRegistryTests(HomeserverTestCase):
    use_fake_clock = True

    async def _set_up(self) -> None:
        await super()._set_up()
        user_id = await self.hs.registrar.register_user("root", "correct horse", admin=True)
        _, token = await self.hs.devices.create_session(user_id, None, None)
        self.admin = TestUser(user_id, token, "", "correct horse")
        plain = await self.hs.registrar.register_user("alice", "correct horse")
        _, token = await self.hs.devices.create_session(plain, None, None)
        self.alice = TestUser(plain, token, "", "correct horse")
        # The heartbeats the clock sets off, to wait for each one's write.
        self.beats: list[Deferred[None]] = []
        store = self.hs.worker_registry.store
        heartbeat = store.heartbeat

        def recorded(*args: Any) -> Deferred[None]:
            d = heartbeat(*args)
            self.beats.append(d)
            return d

        store.heartbeat = recorded  # type: ignore[method-assign]

    async def workers(self) -> list[dict[str, Any]]:
        code, body = await self.get(PATH, self.admin)
        self.assertEqual(code, 200, body)
        return list(body["workers"])

    async def test_a_single_process_lists_itself_as_main(self) -> None:
        self.assertEqual(
            await self.workers(),
            [{"name": "main", "role": "main", "pid": os.getpid(), "started_ts": 0, "last_seen_ts": 0, "alive": True}],
        )

    async def test_heartbeats_keep_a_process_alive_on_the_clock(self) -> None:
        for beat in range(1, 5):
            self.clock.advance(HEARTBEAT_INTERVAL)
            self.assertEqual(len(self.beats), beat)
            await self.beats[-1]
            [main] = await self.workers()
            self.assertEqual((main["last_seen_ts"], main["started_ts"], main["alive"]), (int(beat * HEARTBEAT_INTERVAL * 1000), 0, True))

    async def test_a_process_not_seen_for_a_while_is_not_alive(self) -> None:
        store = self.hs.worker_registry.store
        self.clock.advance(100)
        await self.beats[-1]
        await store.record_start("sync1", "sync", 4242, int((100 - ALIVE_WITHIN - 1) * 1000))
        await store.record_start("sync2", "sync", 4243, int((100 - ALIVE_WITHIN + 1) * 1000))
        listed = {w["name"]: (w["role"], w["pid"], w["alive"]) for w in await self.workers()}
        self.assertEqual(listed, {"main": ("main", os.getpid(), True), "sync1": ("sync", 4242, False), "sync2": ("sync", 4243, True)})
        # A process started again under the same name replaces the row; the old one's
        # heartbeats no longer touch it.
        await store.record_start("sync1", "sync", 5000, 100_000)
        await store.heartbeat("sync1", 4242, 200_000)
        [sync1] = [w for w in await self.workers() if w["name"] == "sync1"]
        self.assertEqual((sync1["pid"], sync1["started_ts"], sync1["last_seen_ts"], sync1["alive"]), (5000, 100_000, 100_000, True))

    async def test_admins_only(self) -> None:
        self.assertMatrixError(await self.get(PATH, self.alice), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.get(PATH), 401, "M_MISSING_TOKEN")

    async def test_health(self) -> None:
        code, body = await self.get("/health")
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual(self.last_headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        # Before the server is ready (a resource embedded elsewhere serves early): 503.
        self.hs.is_ready = False
        try:
            code, body = await self.get("/health")
        finally:
            self.hs.is_ready = True
        self.assertEqual(code, 503)
