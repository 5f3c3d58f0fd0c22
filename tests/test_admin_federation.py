"""The admin API's federation destinations in Synapse's shape
(``/_synapse/admin/v1/federation/destinations``), on the sender's state, against a fake transport."""

from __future__ import annotations

from typing import Any

from mxserver.federation.client import RequestFailed
from tests.harness import TestUser, q
from tests.test_federation_sender import R1, R2, SenderTestCase, settle

PATH = "/_synapse/admin/v1/federation/destinations"


class AdminDestinationsTests(SenderTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, resp = await self.request(method, path, body, token=self.admin)
        self.assertEqual(code, 200, resp)
        return resp

    async def two_destinations(self) -> tuple[str, str]:
        """R1 failing (backing off), R2 delivered to; a room with both and one with R1 only."""
        both = await self.room_with(self.alice, R1, R2)
        r1_only = await self.room_with(self.alice, R1)
        self.transport.auto.add(R2)
        await self.say(self.alice, both, "hello")
        await self.say(self.alice, r1_only, "hi")
        await self.until(lambda: len(self.transport.to(R1)) >= 1, "a transaction to R1")
        self.answer(self.transport.pending(R1)[0], error=RequestFailed(R1, "connection refused"))
        await self.until(lambda: self.status(R1)["backing_off"], "R1 backing off")
        await self.until(lambda: self.status(R2)["last_successful_stream"] > 0, "R2 delivered")
        await self.sender.routed()
        await self.sender.flush_writes()
        return both, r1_only

    async def test_list_and_details(self) -> None:
        both, r1_only = await self.two_destinations()
        body = await self.ok("GET", PATH)
        self.assertEqual(body["total"], 2)
        self.assertNotIn("next_token", body)
        r1, r2 = body["destinations"]
        self.assertEqual((r1["destination"], r2["destination"]), (R1, R2))
        self.assertGreater(r1["retry_interval"], 0)
        self.assertGreater(r1["retry_last_ts"], 0)
        self.assertIsInstance(r1["failure_ts"], int)
        self.assertIsNone(r1["last_successful_stream_ordering"])
        self.assertEqual((r2["retry_interval"], r2["retry_last_ts"], r2["failure_ts"]), (0, 0, None))
        self.assertIsInstance(r2["last_successful_stream_ordering"], int)
        # the same destinations as mxserver's own view
        mine = (await self.ok("GET", "/_mxserver/admin/v1/federation/destinations"))["destinations"]
        self.assertEqual([d["destination"] for d in mine], [R1, R2])
        # details
        self.assertEqual(await self.ok("GET", f"{PATH}/{R1}"), r1)
        self.assertEqual(await self.ok("GET", f"{PATH}/{R2}"), r2)
        # paging, ordering, filter
        page = await self.ok("GET", f"{PATH}?limit=1")
        self.assertEqual(([d["destination"] for d in page["destinations"]], page["next_token"]), ([R1], "1"))
        page = await self.ok("GET", f"{PATH}?limit=1&from=1")
        self.assertEqual([d["destination"] for d in page["destinations"]], [R2])
        self.assertNotIn("next_token", page)
        self.assertEqual([d["destination"] for d in (await self.ok("GET", f"{PATH}?dir=b"))["destinations"]], [R2, R1])
        by_interval = await self.ok("GET", f"{PATH}?order_by=retry_interval&dir=b")
        self.assertEqual([d["destination"] for d in by_interval["destinations"]], [R1, R2])
        by_stream = await self.ok("GET", f"{PATH}?order_by=last_successful_stream_ordering")
        self.assertEqual([d["destination"] for d in by_stream["destinations"]], [R2, R1])
        for order in ("destination", "retry_last_ts", "failure_ts"):
            self.assertEqual((await self.ok("GET", f"{PATH}?order_by={order}"))["total"], 2)
        filtered = await self.ok("GET", f"{PATH}?destination=R2.EX")
        self.assertEqual(([d["destination"] for d in filtered["destinations"]], filtered["total"]), ([R2], 1))

    async def test_rooms(self) -> None:
        both, r1_only = await self.two_destinations()
        rooms = await self.ok("GET", f"{PATH}/{R1}/rooms")
        self.assertEqual(rooms["total"], 2)
        self.assertEqual([r["room_id"] for r in rooms["rooms"]], sorted([both, r1_only]))
        self.assertTrue(all(isinstance(r["stream_ordering"], int) for r in rooms["rooms"]))
        backwards = await self.ok("GET", f"{PATH}/{R1}/rooms?dir=b")
        self.assertEqual([r["room_id"] for r in backwards["rooms"]], sorted([both, r1_only], reverse=True))
        page = await self.ok("GET", f"{PATH}/{R1}/rooms?limit=1")
        self.assertEqual((len(page["rooms"]), page["next_token"], page["total"]), (1, "1", 2))
        r2_rooms = await self.ok("GET", f"{PATH}/{R2}/rooms")
        self.assertEqual(([r["room_id"] for r in r2_rooms["rooms"]], r2_rooms["total"]), ([both], 1))

    async def test_reset_connection(self) -> None:
        await self.two_destinations()
        before = await self.ok("GET", f"{PATH}/{R1}")
        self.assertGreater(before["retry_interval"], 0)
        calls = len(self.transport.to(R1))
        # no backoff to reset on a healthy destination
        self.assertMatrixError(await self.post(f"{PATH}/{R2}/reset_connection", {}, self.admin), 400, "M_UNKNOWN")
        # this time R1 answers every transaction
        self.transport.auto.add(R1)
        self.assertEqual(await self.ok("POST", f"{PATH}/{R1}/reset_connection", {}), {})
        # the retry goes at once (the clock did not move) and everything queued follows
        await self.until(lambda: len(self.transport.to(R1)) > calls, "the retry")
        await self.until(lambda: not self.status(R1)["backing_off"] and not self.transport.pending(R1), "R1 healthy")
        await self.sender.flush_writes()
        after = await self.ok("GET", f"{PATH}/{R1}")
        self.assertEqual((after["retry_interval"], after["retry_last_ts"], after["failure_ts"]), (0, 0, None))
        # persisted: a restart finds it healthy
        await self.restart()
        await settle(2)
        self.assertEqual((await self.ok("GET", f"{PATH}/{R1}"))["retry_interval"], 0)

    async def test_permissions_and_bad_input(self) -> None:
        await self.two_destinations()
        for method, path in (
            ("GET", PATH),
            ("GET", f"{PATH}/{R1}"),
            ("GET", f"{PATH}/{R1}/rooms"),
            ("POST", f"{PATH}/{R1}/reset_connection"),
        ):
            self.assertMatrixError(await self.request(method, path, {} if method == "POST" else None), 401, "M_MISSING_TOKEN")
            user: TestUser = self.alice
            self.assertMatrixError(await self.request(method, path, {} if method == "POST" else None, token=user), 403, "M_FORBIDDEN")
        self.assertGreater((await self.ok("GET", f"{PATH}/{R1}"))["retry_interval"], 0)  # not reset by those
        for query in ("limit=-1", "from=x", "order_by=nope", "dir=sideways"):
            self.assertMatrixError(await self.get(f"{PATH}?{query}", self.admin), 400, "M_INVALID_PARAM")
        for sub in ("", "/rooms"):
            self.assertMatrixError(await self.get(f"{PATH}/unknown.example{sub}", self.admin), 404, "M_NOT_FOUND")
            self.assertMatrixError(await self.get(f"{PATH}/{q('bad name!')}{sub}", self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{PATH}/{R1}/rooms?limit=-2", self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{PATH}/unknown.example/reset_connection", {}, self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{PATH}/test/reset_connection", {}, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.request("POST", f"{PATH}/{R1}/reset_connection", raw=b"[", token=self.admin), 400, "M_NOT_JSON")
