"""The inbound federation API between two real servers over TLS on loopback: gap filling
through the other server's get_missing_events and state_ids, and its read endpoints."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import reactor

from mxserver.config import HomeserverConfig
from mxserver.federation.pdu_checks import check_pdu
from mxserver.homeserver import Homeserver
from tests.harness import ControlledTransport, TwoServerTestCase
from tests.test_federation_joins import FederationTestMixin

F1 = "/_matrix/federation/v1"


def q(value: str) -> str:
    return quote(value, safe="")


class InboundEndToEndTests(FederationTestMixin, TwoServerTestCase):
    def make_server(self, label: str, config: HomeserverConfig) -> Homeserver:
        if label != "b":
            return super().make_server(label, config)
        self.b_transport = ControlledTransport()
        return self.b_transport.attach(Homeserver(config, reactor, federation_transport=self.b_transport))

    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.a.register("alice")
        self.bob = await self.b.register("bob")
        # bob's room lives on B; alice (on A) joins it
        self.room_id = await self.public_room(self.b, self.bob, name="gaps")
        code, body = await self.join(self.a, self.alice, self.room_id, self.b.server_name)
        self.assertEqual(code, 200, body)

    async def b_events_a_never_got(self, *texts: str) -> list[str]:
        """Messages bob sends while B's transactions are dropped: A does not hear of them."""
        await self.settle()  # what B sent before (the join's echoes) has arrived
        self.b_transport.mode = "drop"
        return [await self.send_text(self.b, self.bob, self.room_id, t) for t in texts]

    async def pdu_of_b(self, event_id: str) -> dict:
        ev = await self.b.hs.event_store.get_event(event_id)
        assert ev is not None
        return ev.get_pdu_json()

    async def test_gap_filled_through_get_missing_events(self) -> None:
        m1, m2, m3 = await self.b_events_a_never_got("one", "two", "three")
        self.assertIsNone(await self.a.hs.event_store.get_event(m1))
        # A hears of the last one only (as from B's /send) and fetches the others from B
        answer = await self.a.hs.federation_receiver.on_send(
            self.b.server_name, "gap-1", {"origin": self.b.server_name, "origin_server_ts": 0, "pdus": [await self.pdu_of_b(m3)]}
        )
        self.assertEqual(answer, {"pdus": {m3: {}}})
        bodies = await self.timeline_bodies(self.a, self.alice, self.room_id)
        self.assertEqual(bodies[:3], ["three", "two", "one"])
        for event_id in (m1, m2, m3):
            ev = await self.a.hs.event_store.get_event(event_id)
            assert ev is not None
            self.assertIsNotNone(ev.metadata.stream_ordering)

    async def test_state_fetched_through_state_ids(self) -> None:
        (m1, m2) = await self.b_events_a_never_got("before", "after")
        room = await self.a.hs.room_server.get_room(self.room_id)
        assert room is not None
        event = await check_pdu(self.a.hs.keyring, await self.pdu_of_b(m2), room.room_version)
        result = await self.a.hs.federation_receiver.gaps.receive_with_fetched_state(self.b.server_name, room, event)
        self.assertTrue(result.accepted, result)
        before = await self.a.hs.event_store.get_event(m1)
        assert before is not None
        self.assertTrue(before.metadata.outlier)
        self.assertEqual(
            await self.a.hs.room_server.state_at_event(m2, after=False),
            await self.b.hs.room_server.state_at_event(m2, after=False),
        )
        self.assertIn("after", await self.timeline_bodies(self.a, self.alice, self.room_id))

    async def test_read_endpoints_between_servers(self) -> None:
        m1 = await self.send_text(self.b, self.bob, self.room_id, "readable")
        await self.wait_until(lambda: self._has_event(m1), f"A has {m1}")
        client = self.a.hs.federation_client
        body = await client.get_json(self.b.server_name, f"{F1}/event/{q(m1)}")
        self.assertEqual(body["pdus"][0]["content"]["body"], "readable")
        body = await client.get_json(self.b.server_name, f"{F1}/state_ids/{q(self.room_id)}", {"event_id": m1})
        self.assertEqual(
            sorted(body["pdu_ids"]), sorted((await self.b.hs.room_server.state_at_event(m1, after=False)).values())
        )
        body = await client.get_json(self.b.server_name, f"{F1}/backfill/{q(self.room_id)}", {"v": [m1], "limit": 2})
        self.assertEqual(len(body["pdus"]), 2)
        self.assertEqual(body["pdus"][0]["content"]["body"], "readable")
        body = await client.get_json(
            self.b.server_name, f"{F1}/timestamp_to_event/{q(self.room_id)}", {"ts": 0, "dir": "f"}
        )
        self.assertTrue(body["event_id"].startswith("$"))

    async def _has_event(self, event_id: str) -> bool:
        return await self.a.hs.event_store.get_event(event_id) is not None
