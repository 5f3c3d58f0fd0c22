"""Remote queries from the client API: profiles of remote users, another server's room
directory (``publicRooms?server=``), remote members in the user directory.

The remote is a scripted HTTPS server on loopback (``127.0.0.1:<port>``, so it is
contacted directly, server-server-api §Resolving server names): it answers the
federation endpoints as a test wants, including with errors, and records requests.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from twisted.web import server

from mxserver.crypto.keys import generate_signing_key
from mxserver.events.builder import build_event
from mxserver.federation.remote_queries import PROFILE_CACHE_S
from mxserver.rooms.auth import auth_types_for_event
from tests.harness import (
    C,
    HomeserverTestCase,
    ScriptedServer,
    TestUser,
    TwoServerTestCase,
    free_port,
    listen_tls,
    make_cert,
    temp_dir,
)

PROFILE = b"/_matrix/federation/v1/query/profile"
PUBLIC_ROOMS = b"/_matrix/federation/v1/publicRooms"


def q(value: str) -> str:
    return quote(value, safe="")


def query_args(request: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.uri.decode()).query)


class _RemoteTestCase(HomeserverTestCase):
    config_overrides = {"federation": {"verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]}}

    async def _set_up(self) -> None:
        await super()._set_up()
        self.remote = ScriptedServer()
        cert_path, key_path = make_cert(temp_dir(self))
        port = listen_tls(server.Site(self.remote), cert_path, key_path)
        self.addCleanup(port.stopListening)
        self.remote_name = f"127.0.0.1:{port.getHost().port}"
        self.alice: TestUser = await self.register("alice")


class RemoteProfileTests(_RemoteTestCase):
    def bob(self) -> str:
        return f"@bob:{self.remote_name}"

    async def test_profile_of_a_remote_user(self) -> None:
        bob = self.bob()
        self.remote.routes[PROFILE] = lambda r: (
            (200, {"displayname": "Bob", "avatar_url": "mxc://remote/abc", "m.tz": "Europe/Paris", "bad": 5,
                   "displayname.x": None, "org.example.job": {"title": "Builder"}, "m.tz.x": 5})
            if query_args(r).get("user_id") == [bob]
            else (404, {"errcode": "M_NOT_FOUND", "error": "no"})
        )
        code, body = await self.get(f"{C}/profile/{q(bob)}")
        self.assertEqual(code, 200, body)
        # the spec's fields are passed on as strings, custom (namespaced) keys with any value;
        # other keys and null values are dropped
        self.assertEqual(body, {"displayname": "Bob", "avatar_url": "mxc://remote/abc", "m.tz": "Europe/Paris",
                                "org.example.job": {"title": "Builder"}, "m.tz.x": 5})
        code, body = await self.get(f"{C}/profile/{q(bob)}/displayname")
        self.assertEqual((code, body), (200, {"displayname": "Bob"}))
        code, body = await self.get(f"{C}/profile/{q(bob)}/avatar_url")
        self.assertEqual((code, body), (200, {"avatar_url": "mxc://remote/abc"}))
        # answered from the cache: one federation request for the three look-ups
        self.assertEqual(self.remote.hits(PROFILE), 1)
        request = self.remote.requests[0]
        auth = request.headers[b"authorization"][0].decode()
        self.assertTrue(auth.startswith("X-Matrix "), auth)
        self.assertIn(f'origin="{self.hs.server_name}"', auth)
        self.assertIn(f'destination="{self.remote_name}"', auth)

    async def test_field_not_set(self) -> None:
        self.remote.routes[PROFILE] = (200, {"displayname": "Bob", "avatar_url": None})
        code, body = await self.get(f"{C}/profile/{q(self.bob())}/avatar_url")
        self.assertMatrixError((code, body), 404, "M_NOT_FOUND")

    async def test_remote_says_not_found(self) -> None:
        self.remote.routes[PROFILE] = (404, {"errcode": "M_NOT_FOUND", "error": "Profile was not found"})
        for path in ("", "/displayname", "/avatar_url"):
            self.assertMatrixError(await self.get(f"{C}/profile/{q(self.bob())}{path}"), 404, "M_NOT_FOUND")
        # "no such user" is cached too
        self.assertEqual(self.remote.hits(PROFILE), 1)

    async def test_remote_refuses(self) -> None:
        self.remote.routes[PROFILE] = (403, {"errcode": "M_FORBIDDEN", "error": "Profile lookup over federation is disabled"})
        self.assertMatrixError(await self.get(f"{C}/profile/{q(self.bob())}"), 403, "M_FORBIDDEN")

    async def test_remote_errors(self) -> None:
        self.remote.routes[PROFILE] = (500, {"errcode": "M_UNKNOWN", "error": "oops"})
        self.assertMatrixError(await self.get(f"{C}/profile/{q(self.bob())}"), 502, "M_UNKNOWN")
        self.remote.routes[PROFILE] = (200, b"not json", {b"content-type": b"application/json"})
        self.assertMatrixError(await self.get(f"{C}/profile/{q(self.bob())}"), 502, "M_UNKNOWN")
        # failures are not cached: the remote is asked again each time
        self.assertEqual(self.remote.hits(PROFILE), 2)

    async def test_unreachable_server(self) -> None:
        nobody = f"@bob:127.0.0.1:{free_port()}"
        code, body = await self.get(f"{C}/profile/{q(nobody)}")
        self.assertMatrixError((code, body), 502, "M_UNKNOWN")
        # a private address that is not whitelisted is refused, never contacted
        self.assertMatrixError(await self.get(f"{C}/profile/{q('@bob:10.0.0.1:8448')}"), 502, "M_UNKNOWN")

    async def test_bad_user_ids(self) -> None:
        for bad in ("bob", "@bob", "@bob:bad server", "@:" + self.remote_name):
            code, body = await self.get(f"{C}/profile/{q(bad)}")
            self.assertEqual(code, 400, (bad, body))
        self.assertEqual(self.remote.requests, [])

    async def test_cannot_set_a_remote_profile(self) -> None:
        result = await self.put(f"{C}/profile/{q(self.bob())}/displayname", {"displayname": "x"}, self.alice)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertEqual(self.remote.requests, [])


class RemoteProfileCacheTests(_RemoteTestCase):
    """The cache of remote profiles, on the server's (fake) clock."""

    use_fake_clock = True

    async def test_cache_expires(self) -> None:
        bob = f"@bob:{self.remote_name}"
        names = iter(["First", "Second"])
        self.remote.routes[PROFILE] = lambda r: (200, {"displayname": next(names)})
        self.assertEqual((await self.get(f"{C}/profile/{q(bob)}"))[1], {"displayname": "First"})
        self.clock.advance(PROFILE_CACHE_S - 1)
        self.assertEqual((await self.get(f"{C}/profile/{q(bob)}"))[1], {"displayname": "First"})
        self.assertEqual(self.remote.hits(PROFILE), 1)
        self.clock.advance(2)  # past the cache period
        self.assertEqual((await self.get(f"{C}/profile/{q(bob)}"))[1], {"displayname": "Second"})
        self.assertEqual(self.remote.hits(PROFILE), 2)


class RemotePublicRoomsTests(_RemoteTestCase):
    ROOMS = {
        "chunk": [
            {"room_id": "!a:remote", "num_joined_members": 3, "world_readable": False, "guest_can_join": False,
             "name": "Alpha"},
            {"room_id": 5},  # malformed: dropped
        ],
        "next_batch": "tok2",
        "total_room_count_estimate": 7,
    }

    async def test_get(self) -> None:
        self.remote.routes[PUBLIC_ROOMS] = (200, self.ROOMS)
        code, body = await self.get(f"{C}/publicRooms?server={q(self.remote_name)}&limit=5&since=tok1", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([r["room_id"] for r in body["chunk"]], ["!a:remote"])
        self.assertEqual(body["next_batch"], "tok2")
        self.assertEqual(body["total_room_count_estimate"], 7)
        request = self.remote.requests[0]
        self.assertEqual(request.method, b"GET")
        args = query_args(request)
        self.assertEqual((args["limit"], args["since"]), (["5"], ["tok1"]))

    async def test_post_with_filter(self) -> None:
        self.remote.routes[PUBLIC_ROOMS] = (200, self.ROOMS)
        body = {"limit": 2, "filter": {"generic_search_term": "alp", "room_types": [None, "m.space"]}}
        code, resp = await self.post(f"{C}/publicRooms?server={q(self.remote_name)}", body, self.alice)
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["chunk"][0]["name"], "Alpha")
        request = self.remote.requests[0]
        self.assertEqual(request.method, b"POST")
        sent = json.loads(request.body)
        self.assertEqual(sent["filter"], {"generic_search_term": "alp", "room_types": [None, "m.space"]})
        self.assertEqual(sent["limit"], 2)

    async def test_errors(self) -> None:
        self.remote.routes[PUBLIC_ROOMS] = (403, {"errcode": "M_FORBIDDEN", "error": "not over federation"})
        result = await self.get(f"{C}/publicRooms?server={q(self.remote_name)}", self.alice)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.remote.routes[PUBLIC_ROOMS] = (200, {"chunk": "nope"})
        self.assertMatrixError(await self.get(f"{C}/publicRooms?server={q(self.remote_name)}", self.alice), 502, "M_UNKNOWN")
        unreachable = f"127.0.0.1:{free_port()}"
        self.assertMatrixError(await self.get(f"{C}/publicRooms?server={q(unreachable)}", self.alice), 502, "M_UNKNOWN")
        self.assertMatrixError(await self.get(f"{C}/publicRooms?server={q('bad server!')}", self.alice), 400, "M_INVALID_PARAM")

    async def test_own_server_name_is_local(self) -> None:
        code, body = await self.get(f"{C}/publicRooms?server={q(self.hs.server_name)}", self.alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(self.remote.requests, [])


class RemoteMembersInUserDirectoryTests(_RemoteTestCase):
    """Remote users sharing a room are found, with the profile of their member event."""

    remote_key = generate_signing_key("r1")

    async def remote_member(self, room_id: str, user_id: str, content: dict[str, Any]) -> None:
        rs = self.hs.room_server
        head = await rs.get_head(room_id)
        rv = head.room.room_version
        wanted = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
        event = build_event(
            rv,
            type="m.room.member",
            sender=user_id,
            content=content,
            room_id=room_id,
            state_key=user_id,
            prev_event_ids=list(head.extremities),
            auth_event_ids=[head.state[k] for k in sorted(wanted) if k in head.state],
            depth=head.depth + 1,
            origin_server_ts=int(self.hs.clock.seconds() * 1000),
            server_name=self.remote_name,
            signing_key=self.remote_key,
        )
        result = await rs.receive_event(event)
        self.assertTrue(result.accepted, result)

    async def search(self, term: str) -> list[dict[str, Any]]:
        code, body = await self.post(f"{C}/user_directory/search", {"search_term": term}, self.alice)
        self.assertEqual(code, 200, body)
        return body["results"]

    async def test_remote_member_found_with_member_event_profile(self) -> None:
        bob = f"@bob:{self.remote_name}"
        code, body = await self.post(f"{C}/createRoom", {"preset": "private_chat"}, self.alice)
        self.assertEqual(code, 200, body)
        room_id = body["room_id"]
        await self.put(f"{C}/rooms/{q(room_id)}/state/m.room.join_rules/", {"join_rule": "public"}, self.alice)
        self.assertEqual(await self.search("bob"), [])
        await self.remote_member(room_id, bob, {"membership": "join", "displayname": "Bobby Remote"})
        self.assertEqual(await self.search("bobby"), [{"user_id": bob, "display_name": "Bobby Remote"}])
        # a later member event with a new name replaces it
        await self.remote_member(
            room_id, bob, {"membership": "join", "displayname": "Roberto", "avatar_url": "mxc://r/x"}
        )
        self.assertEqual(await self.search("bobby"), [])
        self.assertEqual(
            await self.search("roberto"), [{"user_id": bob, "display_name": "Roberto", "avatar_url": "mxc://r/x"}]
        )
        # the directory asked no one: profiles come from the room
        self.assertEqual(self.remote.requests, [])
        # after a restart (no cached profiles), the profile is read from the room's state
        await self.restart()
        self.assertEqual(await self.search("roberto"), [{"user_id": bob, "display_name": "Roberto", "avatar_url": "mxc://r/x"}])
        await self.remote_member(room_id, bob, {"membership": "leave"})
        self.assertEqual(await self.search("roberto"), [])


class TwoServerQueryTests(TwoServerTestCase):
    """The same queries between two real servers: B answers A's federation requests."""

    def server_overrides(self, label: str) -> dict[str, Any]:
        return {"room_directory": {"public_rooms_over_federation": True}}

    async def test_profile_and_directory_of_the_other_server(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        code, body = await self.b.put(f"{C}/profile/{q(bob.user_id)}/displayname", {"displayname": "Bob of B"}, bob)
        self.assertEqual(code, 200, body)
        code, body = await self.a.get(f"{C}/profile/{q(bob.user_id)}", alice)
        self.assertEqual((code, body), (200, {"displayname": "Bob of B"}))
        code, body = await self.a.get(f"{C}/profile/{q(bob.user_id)}/avatar_url", alice)
        self.assertEqual(code, 404, body)
        code, body = await self.a.get(f"{C}/profile/{q('@nobody:' + self.b.server_name)}", alice)
        self.assertEqual((code, body.get("errcode")), (404, "M_NOT_FOUND"), body)

        room_id = await self.b.create_room(bob, {"preset": "public_chat", "name": "Published", "visibility": "public"})
        code, body = await self.a.get(f"{C}/publicRooms?server={q(self.b.server_name)}", alice)
        self.assertEqual(code, 200, body)
        self.assertEqual([(r["room_id"], r.get("name")) for r in body["chunk"]], [(room_id, "Published")])
        code, body = await self.a.post(
            f"{C}/publicRooms?server={q(self.b.server_name)}", {"filter": {"generic_search_term": "nothing"}}, alice
        )
        self.assertEqual((code, body["chunk"]), (200, []), body)

        # joined to the same room, bob is in A's user directory with his member event's name
        code, body = await self.a.post(f"{C}/join/{q(room_id)}?server_name={q(self.b.server_name)}", {}, alice)
        self.assertEqual(code, 200, body)
        code, body = await self.a.post(f"{C}/user_directory/search", {"search_term": "bob"}, alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["results"], [{"user_id": bob.user_id, "display_name": "Bob of B"}])
