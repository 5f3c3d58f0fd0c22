"""Bad input to every federation endpoint answers a Matrix error with the right status.

For each route of ``mxserver/api/federation/``, the key server (``/_matrix/key/v2``) and
federation media (``/_matrix/federation/v1/media``): missing or ill-typed query parameters,
malformed JSON bodies, identifiers that are not identifiers, users of other servers and
oversized bodies. Each request is signed by a fake remote that is in the room, so what is
refused is the input, not the caller; each answer is a 4xx ``{"errcode", "error"}`` as the
endpoint's yaml in ``api/server-server/`` says -- never a 500 -- and the server keeps serving.
"""

from __future__ import annotations

from typing import Any

from tests.harness import LOOPBACK, InboundTestCase, q

F = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
K = "/_matrix/key/v2"

#: a body that is not JSON at all, and JSON that is not an object
NOT_JSON = b"{not json"
ARRAY = b"[]"


class Case:
    """One bad request: its method, path (``{room}``, ``{event}``, ``{user}``, ``{remote_user}``
    are filled in), body (JSON value, or raw bytes) and the expected ``(status, errcode)``."""

    def __init__(self, method: str, path: str, status: int, errcode: str, body: Any = None) -> None:
        self.method, self.path, self.status, self.errcode, self.body = method, path, status, errcode, body


BAD_EVENT_ID = q("not-an-event-id")
BAD_ROOM_ID = q("not-a-room-id")


class FederationBadInputTests(InboundTestCase):
    config_overrides = {"federation": LOOPBACK, "room_directory": {"public_rooms_over_federation": True}}

    async def check(self, cases: list[Case]) -> None:
        """Send each case; collect every answer that is not the expected Matrix error."""
        room_id = await self.room()
        join = await self.join_remote_user(room_id)
        msg = await self.local_message(room_id, "hello")
        values = {
            "room": q(room_id),
            "event": q(msg.event_id),
            "join": q(join.event_id),
            "user": q(self.alice.user_id),
            "remote_user": q(self.remote.user("carol")),
        }
        wrong = []
        for case in cases:
            path = case.path.format(**values)
            if isinstance(case.body, bytes):
                code, body = await self.fed(case.method, path, raw=case.body)
            else:
                code, body = await self.fed(case.method, path, case.body)
            got = (code, body.get("errcode") if isinstance(body, dict) else body)
            if got != (case.status, case.errcode) or not isinstance(body.get("error"), str):
                wrong.append(f"{case.method} {path} {case.body!r:.60}: {code} {body!r:.200}")
        self.assertEqual(wrong, [], "\n".join(wrong))
        # ... and the server still serves
        code, body = await self.fed("GET", f"{F}/event/{q(msg.event_id)}")
        self.assertEqual(code, 200, body)

    async def test_event_and_state(self) -> None:
        await self.check([
            Case("GET", F + "/event/" + BAD_EVENT_ID, 400, "M_INVALID_PARAM"),
            Case("GET", F + "/event/" + q("$unknown"), 404, "M_NOT_FOUND"),
            Case("GET", F + "/event/%FF", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/state_ids/{room}?event_id=%FF", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/state/{room}", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/state/{room}?event_id=" + BAD_EVENT_ID, 400, "M_INVALID_PARAM"),
            Case("GET", F + "/state/" + BAD_ROOM_ID + "?event_id={event}", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/state_ids/{room}", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/state_ids/{room}?event_id=" + BAD_EVENT_ID, 400, "M_INVALID_PARAM"),
            Case("GET", F + "/state_ids/" + BAD_ROOM_ID + "?event_id={event}", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/event_auth/" + BAD_ROOM_ID + "/{event}", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/event_auth/{room}/" + BAD_EVENT_ID, 400, "M_INVALID_PARAM"),
        ])

    async def test_backfill(self) -> None:
        await self.check([
            Case("GET", F + "/backfill/{room}?limit=5", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/backfill/{room}?v={event}", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/backfill/{room}?v={event}&limit=five", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/backfill/{room}?v={event}&limit=-1", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/backfill/{room}?v={event}&limit=1.5", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/backfill/{room}?v=" + BAD_EVENT_ID + "&limit=5", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/backfill/{room}?v=%FF&limit=5", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/backfill/" + BAD_ROOM_ID + "?v={event}&limit=5", 400, "M_INVALID_PARAM"),
        ])

    async def test_get_missing_events(self) -> None:
        path = F + "/get_missing_events/{room}"
        await self.check([
            Case("POST", path, 400, "M_NOT_JSON", NOT_JSON),
            Case("POST", path, 400, "M_BAD_JSON", ARRAY),
            Case("POST", path, 400, "M_NOT_JSON", b"\xff\xfe{}"),
            Case("POST", path, 400, "M_NOT_JSON", b'{"latest_events": [], "limit": NaN}'),
            Case("POST", path, 400, "M_NOT_JSON", b"[" * 100_000 + b"]" * 100_000),
            Case("POST", path, 400, "M_BAD_JSON", {"latest_events": "{event}"}),
            Case("POST", path, 400, "M_BAD_JSON", {"latest_events": [1]}),
            Case("POST", path, 400, "M_BAD_JSON", {"earliest_events": {}, "latest_events": []}),
            Case("POST", path, 400, "M_INVALID_PARAM", {"latest_events": ["not-an-id"]}),
            Case("POST", path, 400, "M_BAD_JSON", {"latest_events": [], "limit": "10"}),
            Case("POST", path, 400, "M_BAD_JSON", {"latest_events": [], "limit": True}),
            Case("POST", path, 400, "M_BAD_JSON", {"latest_events": [], "min_depth": 1.5}),
            Case("POST", F + "/get_missing_events/" + BAD_ROOM_ID, 400, "M_INVALID_PARAM", {"latest_events": []}),
        ])

    async def test_timestamp_to_event(self) -> None:
        path = F + "/timestamp_to_event/{room}"
        await self.check([
            Case("GET", path + "?dir=f", 400, "M_MISSING_PARAM"),
            Case("GET", path + "?ts=1", 400, "M_MISSING_PARAM"),
            Case("GET", path + "?ts=yesterday&dir=f", 400, "M_INVALID_PARAM"),
            Case("GET", path + "?ts=-5&dir=f", 400, "M_INVALID_PARAM"),
            Case("GET", path + "?ts=1&dir=forward", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/timestamp_to_event/" + BAD_ROOM_ID + "?ts=1&dir=f", 400, "M_INVALID_PARAM"),
        ])

    async def test_hierarchy(self) -> None:
        await self.check([
            Case("GET", F + "/hierarchy/" + BAD_ROOM_ID, 400, "M_INVALID_PARAM"),
            Case("GET", F + "/hierarchy/{room}?suggested_only=perhaps", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/hierarchy/" + q("!unknown:test"), 404, "M_NOT_FOUND"),
        ])

    async def test_make_membership(self) -> None:
        cases = []
        for kind in ("make_join", "make_leave", "make_knock"):
            ver = "?ver=12" if kind == "make_knock" else ""
            cases += [
                Case("GET", f"{F}/{kind}/{BAD_ROOM_ID}/{{remote_user}}{ver}", 400, "M_INVALID_PARAM"),
                Case("GET", f"{F}/{kind}/{{room}}/{q('not-a-user')}{ver}", 400, "M_INVALID_PARAM"),
                # a user of another server than the caller's (joins-v1.yaml: 403)
                Case("GET", f"{F}/{kind}/{{room}}/{{user}}{ver}", 403, "M_FORBIDDEN"),
                Case("GET", f"{F}/{kind}/{q('!unknown:test')}/{{remote_user}}{ver}", 404, "M_NOT_FOUND"),
            ]
        cases += [
            # joins-v1.yaml: the room's version is not among ``ver``: 400 M_INCOMPATIBLE_ROOM_VERSION
            Case("GET", F + "/make_join/{room}/{remote_user}?ver=1&ver=2", 400, "M_INCOMPATIBLE_ROOM_VERSION"),
            Case("GET", F + "/make_join/{room}/{remote_user}?ver=%FF", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/make_knock/{room}/{remote_user}", 400, "M_MISSING_PARAM"),
        ]
        await self.check(cases)

    async def test_send_membership(self) -> None:
        cases = []
        for prefix in (F2 + "/send_join", F + "/send_join", F2 + "/send_leave", F + "/send_leave", F + "/send_knock"):
            path = prefix + "/{room}/{join}"
            cases += [
                Case("PUT", path, 400, "M_NOT_JSON", NOT_JSON),
                Case("PUT", path, 400, "M_BAD_JSON", ARRAY),
                # joins-v2.yaml, leaving-v2.yaml, knocks.yaml: a body that is not the membership
                # event the path names: "servers SHOULD return M_INVALID_PARAM"
                Case("PUT", path, 400, "M_INVALID_PARAM", {}),
                Case("PUT", path, 400, "M_INVALID_PARAM", {"type": "m.room.member", "content": "join"}),
                Case("PUT", prefix + "/" + BAD_ROOM_ID + "/{join}", 400, "M_INVALID_PARAM", {}),
                Case("PUT", prefix + "/{room}/" + BAD_EVENT_ID, 400, "M_INVALID_PARAM", {}),
            ]
        cases.append(Case("PUT", F2 + "/send_join/{room}/{join}?omit_members=perhaps", 400, "M_INVALID_PARAM", {}))
        await self.check(cases)

    async def test_invite(self) -> None:
        cases = []
        for version in (F2, F):
            path = version + "/invite/{room}/{join}"
            cases += [
                Case("PUT", path, 400, "M_NOT_JSON", NOT_JSON),
                Case("PUT", path, 400, "M_BAD_JSON", ARRAY),
                Case("PUT", version + "/invite/" + BAD_ROOM_ID + "/{join}", 400, "M_INVALID_PARAM", {}),
                Case("PUT", version + "/invite/{room}/" + BAD_EVENT_ID, 400, "M_INVALID_PARAM", {}),
            ]
        cases += [
            Case("PUT", F2 + "/invite/{room}/{join}", 400, "M_MISSING_PARAM", {}),
            Case("PUT", F2 + "/invite/{room}/{join}", 400, "M_MISSING_PARAM", {"room_version": "12"}),
            Case("PUT", F2 + "/invite/{room}/{join}", 400, "M_BAD_JSON", {"event": [], "room_version": "12"}),
            Case("PUT", F2 + "/invite/{room}/{join}", 400, "M_BAD_JSON", {"event": {}, "room_version": 12}),
            Case("PUT", F2 + "/invite/{room}/{join}", 400, "M_BAD_JSON",
                 {"event": {}, "room_version": "12", "invite_room_state": {}}),
            Case("PUT", F + "/exchange_third_party_invite/{room}", 400, "M_NOT_JSON", NOT_JSON),
        ]
        await self.check(cases)

    async def test_queries(self) -> None:
        await self.check([
            Case("GET", F + "/query/profile", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/query/profile?user_id=alice", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/query/profile?user_id={user}&field=", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/query/profile?user_id={user}&field=" + "x" * 300, 400, "M_INVALID_PARAM"),
            Case("GET", F + "/query/profile?user_id={user}&field=m.unknown", 404, "M_NOT_FOUND"),
            Case("GET", F + "/query/profile?user_id=%FF", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/query/directory", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/query/directory?room_alias=nothing", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/query/directory?room_alias=" + q("#none:test"), 404, "M_NOT_FOUND"),
        ])

    async def test_public_rooms(self) -> None:
        path = F + "/publicRooms"
        await self.check([
            Case("GET", path + "?limit=ten", 400, "M_INVALID_PARAM"),
            Case("GET", path + "?limit=-1", 400, "M_INVALID_PARAM"),
            Case("GET", path + "?since=garbage", 400, "M_INVALID_PARAM"),
            Case("GET", path + "?include_all_networks=perhaps", 400, "M_INVALID_PARAM"),
            Case("POST", path, 400, "M_NOT_JSON", NOT_JSON),
            Case("POST", path, 400, "M_BAD_JSON", ARRAY),
            Case("POST", path, 400, "M_BAD_JSON", {"limit": "ten"}),
            Case("POST", path, 400, "M_INVALID_PARAM", {"limit": -1}),
            Case("POST", path, 400, "M_BAD_JSON", {"since": 5}),
            Case("POST", path, 400, "M_INVALID_PARAM", {"since": "garbage"}),
            Case("POST", path, 400, "M_BAD_JSON", {"filter": "rooms"}),
            Case("POST", path, 400, "M_BAD_JSON", {"filter": {"generic_search_term": 5}}),
            Case("POST", path, 400, "M_BAD_JSON", {"include_all_networks": "yes"}),
        ])

    async def test_user_devices_and_keys(self) -> None:
        await self.check([
            Case("GET", F + "/user/devices/" + q("not-a-user"), 400, "M_INVALID_PARAM"),
            Case("GET", F + "/user/devices/{remote_user}", 400, "M_INVALID_PARAM"),
            Case("POST", F + "/user/keys/query", 400, "M_NOT_JSON", NOT_JSON),
            Case("POST", F + "/user/keys/query", 400, "M_BAD_JSON", ARRAY),
            Case("POST", F + "/user/keys/query", 400, "M_MISSING_PARAM", {}),
            Case("POST", F + "/user/keys/query", 400, "M_BAD_JSON", {"device_keys": []}),
            Case("POST", F + "/user/keys/query", 400, "M_BAD_JSON", {"device_keys": {"@alice:test": "DEV"}}),
            Case("POST", F + "/user/keys/query", 400, "M_BAD_JSON", {"device_keys": {"@alice:test": ["DEV", 1]}}),
            Case("POST", F + "/user/keys/query", 400, "M_INVALID_PARAM", {"device_keys": {"alice": []}}),
            Case("POST", F + "/user/keys/query", 400, "M_INVALID_PARAM", {"device_keys": {"@x:elsewhere.test": []}}),
            Case("POST", F + "/user/keys/claim", 400, "M_NOT_JSON", NOT_JSON),
            Case("POST", F + "/user/keys/claim", 400, "M_MISSING_PARAM", {}),
            Case("POST", F + "/user/keys/claim", 400, "M_BAD_JSON", {"one_time_keys": []}),
            Case("POST", F + "/user/keys/claim", 400, "M_BAD_JSON", {"one_time_keys": {"@alice:test": {"D": 1}}}),
            Case("POST", F + "/user/keys/claim", 400, "M_BAD_JSON", {"one_time_keys": {"@alice:test": []}}),
            Case("POST", F + "/user/keys/claim", 400, "M_INVALID_PARAM", {"one_time_keys": {"alice": {}}}),
            Case("POST", F + "/user/keys/claim", 400, "M_INVALID_PARAM",
                 {"one_time_keys": {"@x:elsewhere.test": {"D": "signed_curve25519"}}}),
        ])

    async def test_transactions(self) -> None:
        path = F + "/send/txn1"
        now = self._now()
        origin = self.remote.name
        await self.check([
            Case("PUT", path, 400, "M_NOT_JSON", NOT_JSON),
            Case("PUT", path, 400, "M_BAD_JSON", ARRAY),
            Case("PUT", path, 400, "M_BAD_JSON", {"origin": origin, "origin_server_ts": now, "pdus": {}}),
            Case("PUT", path, 400, "M_BAD_JSON", {"origin": origin, "origin_server_ts": now, "pdus": [], "edus": 1}),
            Case("PUT", path, 400, "M_BAD_JSON",
                 {"origin": origin, "origin_server_ts": now, "pdus": [{}] * 51}),
            Case("PUT", path, 400, "M_BAD_JSON", {"origin": origin, "origin_server_ts": "now", "pdus": []}),
            Case("PUT", path, 400, "M_BAD_JSON", {"origin": "other.example", "origin_server_ts": now, "pdus": []}),
            Case("PUT", F + "/send/" + "t" * 300, 400, "M_BAD_JSON", {"origin": origin, "origin_server_ts": now, "pdus": []}),
        ])

    async def test_keys(self) -> None:
        await self.check([
            Case("GET", K + "/query/" + q("not a server"), 400, "M_INVALID_PARAM"),
            Case("GET", K + "/query/example.org?minimum_valid_until_ts=soon", 400, "M_INVALID_PARAM"),
            Case("POST", K + "/query", 400, "M_NOT_JSON", NOT_JSON),
            Case("POST", K + "/query", 400, "M_BAD_JSON", ARRAY),
            Case("POST", K + "/query", 400, "M_BAD_JSON", {}),
            Case("POST", K + "/query", 400, "M_BAD_JSON", {"server_keys": []}),
            Case("POST", K + "/query", 400, "M_INVALID_PARAM", {"server_keys": {"not a server": {}}}),
            Case("POST", K + "/query", 400, "M_BAD_JSON", {"server_keys": {"example.org": []}}),
            Case("POST", K + "/query", 400, "M_BAD_JSON", {"server_keys": {"example.org": {"ed25519:a": 1}}}),
            Case("POST", K + "/query", 400, "M_BAD_JSON",
                 {"server_keys": {"example.org": {"ed25519:a": {"minimum_valid_until_ts": "soon"}}}}),
        ])

    async def test_media(self) -> None:
        await self.check([
            Case("GET", F + "/media/download/nomedia", 404, "M_NOT_FOUND"),
            Case("GET", F + "/media/download/nomedia?timeout_ms=soon", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/media/thumbnail/nomedia", 400, "M_MISSING_PARAM"),
            Case("GET", F + "/media/thumbnail/nomedia?width=big&height=1", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/media/thumbnail/nomedia?width=-1&height=1", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/media/thumbnail/nomedia?width=1&height=1&method=stretch", 400, "M_INVALID_PARAM"),
            Case("GET", F + "/media/thumbnail/nomedia?width=1&height=1&animated=perhaps", 400, "M_INVALID_PARAM"),
        ])

    async def test_openid_userinfo(self) -> None:
        await self.check([
            # openid.yaml: 401 "The token was not recognized or has expired."
            Case("GET", F + "/openid/userinfo", 401, "M_MISSING_TOKEN"),
            Case("GET", F + "/openid/userinfo?access_token=nope", 401, "M_UNKNOWN_TOKEN"),
        ])

    async def test_oversized_bodies(self) -> None:
        big = {"latest_events": [], "padding": "x" * (1024 * 1024 + 1)}
        await self.check([
            Case("POST", F + "/get_missing_events/{room}", 413, "M_TOO_LARGE", big),
            Case("PUT", F2 + "/send_join/{room}/{join}", 413, "M_TOO_LARGE", big),
            Case("POST", F + "/user/keys/query", 413, "M_TOO_LARGE", big),
            Case("POST", K + "/query", 413, "M_TOO_LARGE", big),
            Case("PUT", F + "/send/big", 413, "M_TOO_LARGE", {"pdus": [], "padding": "x" * (11 * 1024 * 1024)}),
        ])
