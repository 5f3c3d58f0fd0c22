"""The federation read endpoints, queried by fake remote servers: events, state, backfill,
missing events, auth chains, timestamps, queries and the public room directory.

Each has its happy path and its refusals: unauthenticated (401), not in the room or
denied by the ACL (403), unknown (404), bad parameters (400).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mxserver.rooms.room_server import EventSpec
from tests.harness import LOOPBACK, InboundTestCase

F = "/_matrix/federation/v1"


def q(value: str) -> str:
    return quote(value, safe="")


class EventsApiTests(InboundTestCase):
    async def setup_room(self, visibility: str = "shared") -> tuple[str, list[Any]]:
        """A room where remote's bob joined, then alice sent three messages."""
        room_id = await self.room(visibility=visibility)
        await self.join_remote_user(room_id)
        msgs = [await self.local_message(room_id, f"m{i}") for i in range(3)]
        return room_id, msgs

    async def test_get_event(self) -> None:
        room_id, msgs = await self.setup_room()
        code, body = await self.fed("GET", f"{F}/event/{q(msgs[0].event_id)}")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["origin"], self.hs.server_name)
        self.assertEqual(body["pdus"], [msgs[0].get_pdu_json()])
        # unknown event, bad ID, no auth, a server not in the room
        code, body = await self.fed("GET", f"{F}/event/{q('$nope')}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/event/nope")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        self.assertMatrixError(await self.get(f"{F}/event/{q(msgs[0].event_id)}"), 401, "M_UNAUTHORIZED")
        stranger = self.new_remote()
        code, body = await self.fed("GET", f"{F}/event/{q(msgs[0].event_id)}", remote=stranger)
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_history_visibility_for_servers(self) -> None:
        room_id = await self.room(visibility="joined")
        before = await self.local_message(room_id, "secret")
        await self.join_remote_user(room_id)
        after = await self.local_message(room_id, "visible")
        code, body = await self.fed("GET", f"{F}/event/{q(after.event_id)}")
        self.assertEqual(code, 200)
        code, body = await self.fed("GET", f"{F}/event/{q(before.event_id)}")
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
        # backfill walks past it, but gives it redacted
        code, body = await self.fed("GET", f"{F}/backfill/{q(room_id)}?v={q(after.event_id)}&limit=10")
        self.assertEqual(code, 200, body)
        by_id = {p.get("hashes", {}).get("sha256"): p for p in body["pdus"]}
        secret = by_id[before.get_pdu_json()["hashes"]["sha256"]]
        self.assertEqual(secret["content"], {})
        visible = by_id[after.get_pdu_json()["hashes"]["sha256"]]
        self.assertEqual(visible["content"]["body"], "visible")

    async def test_state_and_state_ids(self) -> None:
        room_id, msgs = await self.setup_room()
        expected = await self.hs.room_server.state_at_event(msgs[1].event_id, after=False)
        code, body = await self.fed("GET", f"{F}/state_ids/{q(room_id)}?event_id={q(msgs[1].event_id)}")
        self.assertEqual(code, 200, body)
        self.assertEqual(sorted(body["pdu_ids"]), sorted(expected.values()))
        # v12: the create event is in the state, and no longer cited as an auth event
        self.assertIn(expected[("m.room.power_levels", "")], body["auth_chain_ids"])
        self.assertIn(expected[("m.room.member", self.alice.user_id)], body["auth_chain_ids"])
        code, full = await self.fed("GET", f"{F}/state/{q(room_id)}?event_id={q(msgs[1].event_id)}")
        self.assertEqual(code, 200, full)
        self.assertEqual(len(full["pdus"]), len(expected))
        self.assertEqual({p["type"] for p in full["pdus"]} >= {"m.room.create", "m.room.member"}, True)
        self.assertEqual(len(full["auth_chain"]), len(body["auth_chain_ids"]))
        # refusals
        for path in (f"{F}/state_ids/{q(room_id)}", f"{F}/state/{q(room_id)}"):
            code, err = await self.fed("GET", path)
            self.assertEqual((code, err["errcode"]), (400, "M_MISSING_PARAM"))
            code, err = await self.fed("GET", f"{path}?event_id={q('$unknown')}")
            self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"))
            code, err = await self.fed("GET", f"{path}?event_id={q(msgs[1].event_id)}", remote=self.new_remote())
            self.assertEqual((code, err["errcode"]), (403, "M_FORBIDDEN"))
        code, err = await self.fed("GET", f"{F}/state_ids/{q('!unknown:test')}?event_id={q(msgs[1].event_id)}")
        self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"))

    async def test_backfill(self) -> None:
        room_id, msgs = await self.setup_room()
        code, body = await self.fed("GET", f"{F}/backfill/{q(room_id)}?v={q(msgs[2].event_id)}&limit=3")
        self.assertEqual(code, 200, body)
        self.assertEqual(len(body["pdus"]), 3)
        self.assertEqual([p["content"].get("body") for p in body["pdus"]], ["m2", "m1", "m0"])
        # the whole room, down to the create event
        code, body = await self.fed("GET", f"{F}/backfill/{q(room_id)}?v={q(msgs[2].event_id)}&limit=100")
        self.assertEqual(body["pdus"][-1]["type"], "m.room.create")
        self.assertEqual(len(body["pdus"]), 9)  # create, member, PL, join rules, visibility, bob, 3 messages
        for path, errcode in [
            (f"{F}/backfill/{q(room_id)}?limit=3", "M_MISSING_PARAM"),
            (f"{F}/backfill/{q(room_id)}?v={q(msgs[2].event_id)}", "M_MISSING_PARAM"),
            (f"{F}/backfill/{q(room_id)}?v={q(msgs[2].event_id)}&limit=x", "M_INVALID_PARAM"),
            (f"{F}/backfill/{q(room_id)}?v=bad&limit=1", "M_INVALID_PARAM"),
        ]:
            code, err = await self.fed("GET", path)
            self.assertEqual((code, err["errcode"]), (400, errcode), path)
        code, err = await self.fed("GET", f"{F}/backfill/{q(room_id)}?v={q(msgs[2].event_id)}&limit=3",
                                   remote=self.new_remote())
        self.assertEqual((code, err["errcode"]), (403, "M_FORBIDDEN"))

    async def test_get_missing_events(self) -> None:
        room_id, msgs = await self.setup_room()
        m4 = await self.local_message(room_id, "m3")
        body = {"earliest_events": [msgs[0].event_id], "latest_events": [m4.event_id], "limit": 10}
        code, resp = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}", body)
        self.assertEqual(code, 200, resp)
        self.assertEqual([p["content"]["body"] for p in resp["events"]], ["m1", "m2"])
        body["limit"] = 1
        code, resp = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}", body)
        self.assertEqual([p["content"]["body"] for p in resp["events"]], ["m2"])
        # min_depth cuts off older events
        body = {"earliest_events": [], "latest_events": [m4.event_id], "min_depth": msgs[2].depth}
        code, resp = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}", body)
        self.assertEqual([p["content"]["body"] for p in resp["events"]], ["m2"])
        # asking for nothing is answered with nothing (as Synapse does; SyTest's ACL test sends {})
        for nothing in [{}, {"latest_events": []}]:
            code, got = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}", nothing)
            self.assertEqual((code, got), (200, {"events": []}))
        for bad in [{"latest_events": "x"}, {"latest_events": [m4.event_id], "limit": "1"},
                    {"latest_events": [m4.event_id], "earliest_events": [1]}]:
            code, err = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}", bad)
            self.assertEqual(code, 400, bad)
        code, err = await self.fed("POST", f"{F}/get_missing_events/{q(room_id)}",
                                   {"latest_events": [m4.event_id]}, remote=self.new_remote())
        self.assertEqual((code, err["errcode"]), (403, "M_FORBIDDEN"))

    async def test_event_auth(self) -> None:
        room_id, msgs = await self.setup_room()
        code, body = await self.fed("GET", f"{F}/event_auth/{q(room_id)}/{q(msgs[0].event_id)}")
        self.assertEqual(code, 200, body)
        types = sorted(p["type"] for p in body["auth_chain"])
        self.assertEqual(types, ["m.room.member", "m.room.power_levels"])  # v12: no create event
        # v11: the create event is an auth event too
        room11 = await self.room(version="11")
        await self.join_remote_user(room11)
        msg = await self.local_message(room11)
        code, body = await self.fed("GET", f"{F}/event_auth/{q(room11)}/{q(msg.event_id)}")
        types = sorted(p["type"] for p in body["auth_chain"])
        self.assertEqual(types, ["m.room.create", "m.room.member", "m.room.power_levels"])
        code, err = await self.fed("GET", f"{F}/event_auth/{q(room_id)}/{q('$nope')}")
        self.assertEqual((code, err["errcode"]), (404, "M_NOT_FOUND"))
        code, err = await self.fed("GET", f"{F}/event_auth/{q(room_id)}/{q(msgs[0].event_id)}", remote=self.new_remote())
        self.assertEqual((code, err["errcode"]), (403, "M_FORBIDDEN"))

    async def test_timestamp_to_event(self) -> None:
        room_id, msgs = await self.setup_room()
        ts = msgs[1].origin_server_ts
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?ts={ts}&dir=f")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["origin_server_ts"], ts)
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?ts={ts + 10**9}&dir=b")
        self.assertEqual(body["event_id"], msgs[2].event_id)
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?ts={ts + 10**9}&dir=f")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?ts={ts}&dir=x")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?dir=f")
        self.assertEqual((code, body["errcode"]), (400, "M_MISSING_PARAM"))
        code, body = await self.fed("GET", f"{F}/timestamp_to_event/{q(room_id)}?ts={ts}&dir=f", remote=self.new_remote())
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_query_profile(self) -> None:
        code, _ = await self.put(f"/_matrix/client/v3/profile/{q(self.alice.user_id)}/displayname",
                                 {"displayname": "Alice"}, self.alice)
        self.assertEqual(code, 200)
        code, body = await self.fed("GET", f"{F}/query/profile?user_id={q(self.alice.user_id)}")
        self.assertEqual((code, body.get("displayname")), (200, "Alice"))
        code, body = await self.fed("GET", f"{F}/query/profile?user_id={q(self.alice.user_id)}&field=displayname")
        self.assertEqual((code, body), (200, {"displayname": "Alice"}))
        code, body = await self.fed("GET", f"{F}/query/profile?user_id={q(self.alice.user_id)}&field=avatar_url")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/query/profile?user_id={q('@nobody:test')}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/query/profile?user_id={q('@x:elsewhere.test')}")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        code, body = await self.fed("GET", f"{F}/query/profile")
        self.assertEqual((code, body["errcode"]), (400, "M_MISSING_PARAM"))
        self.assertMatrixError(await self.get(f"{F}/query/profile?user_id={q(self.alice.user_id)}"), 401, "M_UNAUTHORIZED")

    async def test_query_profile_serves_every_field(self) -> None:
        """query.yaml (v1.16): m.tz and custom fields, whole or by ``field``."""
        for key, value in (("m.tz", "Europe/Paris"), ("org.example.job", {"title": "Builder"})):
            code, _ = await self.put(f"/_matrix/client/v3/profile/{q(self.alice.user_id)}/{key}", {key: value}, self.alice)
            self.assertEqual(code, 200)
        base = f"{F}/query/profile?user_id={q(self.alice.user_id)}"
        code, body = await self.fed("GET", base)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["m.tz"], body["org.example.job"]), ("Europe/Paris", {"title": "Builder"}))
        code, body = await self.fed("GET", f"{base}&field=org.example.job")
        self.assertEqual((code, body), (200, {"org.example.job": {"title": "Builder"}}))
        code, body = await self.fed("GET", f"{base}&field=m.tz")
        self.assertEqual((code, body), (200, {"m.tz": "Europe/Paris"}))
        code, body = await self.fed("GET", f"{base}&field=org.example.unset")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))

    async def test_not_a_policy_server(self) -> None:
        """room_policy.yaml: a server that is not a policy server answers 404 M_UNRECOGNIZED
        (server-server-api §Unsupported endpoints)."""
        code, body = await self.fed("POST", "/_matrix/policy/v1/sign", {"type": "m.room.message"})
        self.assertEqual((code, body["errcode"]), (404, "M_UNRECOGNIZED"))
        self.assertMatrixError(await self.post("/_matrix/policy/v1/sign", {}), 404, "M_UNRECOGNIZED")

    async def test_query_directory_and_unknown_queries(self) -> None:
        room_id = await self.room()
        await self.join_remote_user(room_id)
        code, _ = await self.put(f"/_matrix/client/v3/directory/room/{q('#main:test')}", {"room_id": room_id}, self.alice)
        self.assertEqual(code, 200)
        code, body = await self.fed("GET", f"{F}/query/directory?room_alias={q('#main:test')}")
        self.assertEqual(code, 200, body)
        self.assertEqual(body["room_id"], room_id)
        self.assertEqual(body["servers"][0], self.hs.server_name)
        self.assertIn(self.remote.name, body["servers"])
        code, body = await self.fed("GET", f"{F}/query/directory?room_alias={q('#none:test')}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/query/directory?room_alias={q('#x:elsewhere.test')}")
        self.assertEqual((code, body["errcode"]), (404, "M_NOT_FOUND"))
        code, body = await self.fed("GET", f"{F}/query/directory?room_alias=bad")
        self.assertEqual((code, body["errcode"]), (400, "M_INVALID_PARAM"))
        code, body = await self.fed("GET", f"{F}/query/weather")
        self.assertEqual(body["errcode"], "M_UNRECOGNIZED")
        # The space hierarchy exists (tests/test_hierarchy.py): a public room is answered.
        code, body = await self.fed("GET", f"{F}/hierarchy/{q(room_id)}")
        self.assertEqual((code, body["room"]["room_id"], body["children"]), (200, room_id, []), body)

    async def test_public_rooms_off_by_default(self) -> None:
        code, body = await self.fed("GET", f"{F}/publicRooms")
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))
        code, body = await self.fed("POST", f"{F}/publicRooms", {"limit": 5})
        self.assertEqual((code, body["errcode"]), (403, "M_FORBIDDEN"))

    async def test_acl_denied_on_read_endpoints(self) -> None:
        room_id, msgs = await self.setup_room()
        acl = {"allow": ["*"], "deny": ["127.0.0.1"]}
        await self.hs.room_server.send(room_id, EventSpec("m.room.server_acl", acl, "", self.alice.user_id))
        for method, path, body in [
            ("GET", f"{F}/event/{q(msgs[0].event_id)}", None),
            ("GET", f"{F}/state_ids/{q(room_id)}?event_id={q(msgs[0].event_id)}", None),
            ("GET", f"{F}/backfill/{q(room_id)}?v={q(msgs[0].event_id)}&limit=1", None),
            ("GET", f"{F}/event_auth/{q(room_id)}/{q(msgs[0].event_id)}", None),
            ("POST", f"{F}/get_missing_events/{q(room_id)}", {"latest_events": [msgs[2].event_id]}),
        ]:
            code, err = await self.fed(method, path, body)
            self.assertEqual((code, err["errcode"]), (403, "M_FORBIDDEN"), path)
            self.assertIn("ACL", err["error"])


class PublicRoomsOverFederationTests(InboundTestCase):
    config_overrides = {"federation": LOOPBACK, "room_directory": {"public_rooms_over_federation": True}}

    async def test_public_rooms(self) -> None:
        room_id = await self.room()
        code, _ = await self.put(f"/_matrix/client/v3/directory/list/room/{q(room_id)}", {"visibility": "public"}, self.alice)
        self.assertEqual(code, 200)
        code, body = await self.fed("GET", f"{F}/publicRooms?limit=10")
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["chunk"]], [room_id])
        code, body = await self.fed("POST", f"{F}/publicRooms", {"limit": 10, "filter": {"generic_search_term": "zzz"}})
        self.assertEqual((code, body["chunk"]), (200, []))
        code, body = await self.fed("POST", f"{F}/publicRooms", {"limit": "x"})
        self.assertEqual(code, 400)
        self.assertMatrixError(await self.get(f"{F}/publicRooms"), 401, "M_UNAUTHORIZED")
