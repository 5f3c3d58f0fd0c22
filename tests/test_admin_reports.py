"""The admin API's event reports (``/_synapse/admin/v1/event_reports``): listing with paging
and filters, one report with its event, deleting; admins only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tests.harness import C, HomeserverTestCase, TestUser, q

A = "/_synapse/admin/v1/event_reports"


class EventReportTests(HomeserverTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.admin = await self.register("root")
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")
        self.bob = await self.register("bob")
        self.room = await self.create_room(self.alice, preset="public_chat", name="Reported", room_alias_name="rep")
        await self.set_state(self.alice, self.room, "m.room.canonical_alias", {"alias": "#rep:test"})
        await self.join(self.bob, self.room)
        self.other = await self.create_room(self.bob)
        self.bad = await self.send_message(self.alice, self.room, "offensive")
        self.worse = await self.send_message(self.bob, self.room, "worse")
        self.own = await self.send_message(self.bob, self.other, "in the other room")

    async def report(self, user: TestUser, room: str, event_id: str, reason: str | None = None, **extra: Any) -> None:
        body = {"reason": reason, **extra} if reason is not None else dict(extra)
        code, resp = await self.post(f"{C}/rooms/{q(room)}/report/{q(event_id)}", body, user)
        self.assertEqual(code, 200, resp)

    async def listing(self, **params: Any) -> dict[str, Any]:
        code, body = await self.get(f"{A}?{urlencode(params)}", self.admin)
        self.assertEqual(code, 200, body)
        return body

    async def test_list_page_and_filter(self) -> None:
        await self.report(self.bob, self.room, self.bad, "rude", score=-100)
        await self.report(self.alice, self.room, self.worse, "worse")
        await self.report(self.bob, self.other, self.own, None)
        # a room report is not an event report
        self.assertEqual((await self.post(f"{C}/rooms/{q(self.room)}/report", {"reason": "x"}, self.bob))[0], 200)

        everything = await self.listing()
        self.assertEqual(everything["total"], 3)
        self.assertNotIn("next_token", everything)
        reports = everything["event_reports"]
        # newest first by default
        self.assertEqual([r["event_id"] for r in reports], [self.own, self.worse, self.bad])
        first = reports[2]
        self.assertEqual(
            {k: first[k] for k in ("room_id", "name", "canonical_alias", "event_id", "user_id", "reason", "score", "sender")},
            {
                "room_id": self.room,
                "name": "Reported",
                "canonical_alias": "#rep:test",
                "event_id": self.bad,
                "user_id": self.bob.user_id,
                "reason": "rude",
                "score": -100,
                "sender": self.alice.user_id,
            },
        )
        self.assertIsInstance(first["id"], int)
        self.assertIsInstance(first["received_ts"], int)
        self.assertEqual((reports[0]["reason"], reports[0]["name"], reports[0]["canonical_alias"]), (None, None, None))

        oldest_first = await self.listing(dir="f")
        self.assertEqual([r["event_id"] for r in oldest_first["event_reports"]], [self.bad, self.worse, self.own])
        page = await self.listing(dir="f", limit=2)
        self.assertEqual([r["event_id"] for r in page["event_reports"]], [self.bad, self.worse])
        self.assertEqual((page["next_token"], page["total"]), (2, 3))
        rest = await self.listing(dir="f", limit=2, **{"from": page["next_token"]})
        self.assertEqual([r["event_id"] for r in rest["event_reports"]], [self.own])
        self.assertNotIn("next_token", rest)

        by_room = await self.listing(room_id=self.room)
        self.assertEqual({r["event_id"] for r in by_room["event_reports"]}, {self.bad, self.worse})
        self.assertEqual(by_room["total"], 2)
        by_part_of_room = await self.listing(room_id=self.other[1:6])
        self.assertEqual([r["event_id"] for r in by_part_of_room["event_reports"]], [self.own])
        by_reporter = await self.listing(user_id="alice")
        self.assertEqual([r["event_id"] for r in by_reporter["event_reports"]], [self.worse])
        by_sender = await self.listing(sender_user_id=self.bob.user_id)
        self.assertEqual({r["event_id"] for r in by_sender["event_reports"]}, {self.worse, self.own})
        # LIKE wildcards in a filter are plain characters
        self.assertEqual((await self.listing(user_id="%"))["total"], 0)
        self.assertEqual((await self.listing(user_id="b_b"))["total"], 0)  # "b_b" would match "bob"

    async def test_get_and_delete(self) -> None:
        await self.report(self.bob, self.room, self.bad, "rude")
        [entry] = (await self.listing())["event_reports"]
        code, report = await self.get(f"{A}/{entry['id']}", self.admin)
        self.assertEqual(code, 200, report)
        self.assertEqual({k: v for k, v in report.items() if k != "event_json"}, entry)
        event = report["event_json"]
        self.assertEqual((event["type"], event["sender"], event["content"]["body"]), ("m.room.message", self.alice.user_id, "offensive"))
        self.assertIn("hashes", event)
        self.assertEqual(await self.delete(f"{A}/{entry['id']}", None, self.admin), (200, {}))
        self.assertMatrixError(await self.get(f"{A}/{entry['id']}", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{A}/{entry['id']}", None, self.admin), 404, "M_NOT_FOUND")
        self.assertEqual((await self.listing())["total"], 0)

    async def test_room_report_is_not_an_event_report(self) -> None:
        self.assertEqual((await self.post(f"{C}/rooms/{q(self.room)}/report", {"reason": "x"}, self.bob))[0], 200)
        [room_report] = await self.hs.reports.recent(1)
        self.assertMatrixError(await self.get(f"{A}/{room_report.report_id}", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{A}/{room_report.report_id}", None, self.admin), 404, "M_NOT_FOUND")

    async def test_permissions_and_bad_input(self) -> None:
        await self.report(self.bob, self.room, self.bad, "rude")
        [entry] = (await self.listing())["event_reports"]
        for method, path in (("GET", A), ("GET", f"{A}/{entry['id']}"), ("DELETE", f"{A}/{entry['id']}")):
            self.assertMatrixError(await self.request(method, path), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request(method, path, token=self.bob), 403, "M_FORBIDDEN")
        self.assertEqual((await self.listing())["total"], 1)  # not deleted by those
        for query in ("limit=-1", "from=-3", "from=x", "dir=up"):
            self.assertMatrixError(await self.get(f"{A}?{query}", self.admin), 400, "M_INVALID_PARAM")
        for bad in ("abc", "-1", "1.5", "99999999999999999999999"):
            self.assertMatrixError(await self.get(f"{A}/{q(bad)}", self.admin), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.delete(f"{A}/{q(bad)}", None, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{A}/123456", self.admin), 404, "M_NOT_FOUND")
