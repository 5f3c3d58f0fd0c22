"""Application services on the client-server side (application-service-api §Client-Server API
Extensions): as_token authentication and masquerading, registration and login of namespace
users, exclusive namespaces, device management (MSC4190), rate limits, the sender user,
queries for unknown users and aliases, third-party lookups, the ping, the appservice room
directory, and reloading the registrations.

The application service is a real HTTP server on loopback (:class:`FakeAppService`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from mxserver.appservice.queries import PROTOCOL_CACHE_SECONDS
from tests.harness import C, q
from tests.harness.appservice import AS_TOKEN, HS_TOKEN, AppServiceTestCase, Received, registration

WHOAMI = f"{C}/account/whoami"
PING = "/_matrix/client/v1/appservice/{}/ping"


class AuthTests(AppServiceTestCase):
    async def test_as_token_acts_as_the_sender_created_at_start_up(self) -> None:
        code, body = await self.get(WHOAMI, AS_TOKEN)
        self.assertEqual((code, body["user_id"]), (200, "@_bridge_bot:test"))
        self.assertNotIn("device_id", body)
        # the sender exists: it has a profile (its localpart as display name)
        code, profile = await self.get(f"{C}/profile/{q('@_bridge_bot:test')}")
        self.assertEqual((code, profile.get("displayname")), (200, "_bridge_bot"))

    async def test_masquerading(self) -> None:
        alice = await self.register_as_user("_bridge_alice")
        code, body = await self.get(self.as_path(WHOAMI, alice), AS_TOKEN)
        self.assertEqual((code, body["user_id"]), (200, alice))
        # the sender is accepted as user_id too
        code, body = await self.get(self.as_path(WHOAMI, "@_bridge_bot:test"), AS_TOKEN)
        self.assertEqual(body["user_id"], "@_bridge_bot:test")
        # in the namespace but never registered
        result = await self.get(self.as_path(WHOAMI, "@_bridge_ghost:test"), AS_TOKEN)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        # outside the namespace: a real user, a remote one, garbage
        human = await self.register("human")
        for user_id in (human.user_id, "@_bridge_x:elsewhere.org", "not a user"):
            self.assertMatrixError(await self.get(self.as_path(WHOAMI, user_id), AS_TOKEN), 403, "M_FORBIDDEN")
        # a user's own token ignores user_id
        code, body = await self.get(self.as_path(WHOAMI, alice), human)
        self.assertEqual(body["user_id"], human.user_id)
        # unknown tokens
        self.assertMatrixError(await self.get(WHOAMI, "as-wrong"), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.get(WHOAMI, HS_TOKEN), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.get(WHOAMI), 401, "M_MISSING_TOKEN")

    async def test_masqueraded_user_acts_in_rooms(self) -> None:
        alice = await self.register_as_user("_bridge_alice")
        human = await self.register("human")
        room = await self.create_room(human, preset="public_chat")
        code, body = await self.post(self.as_path(f"{C}/join/{q(room)}", alice), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        path = self.as_path(f"{C}/rooms/{q(room)}/send/m.room.message/t1", alice)
        code, sent = await self.put(path, {"msgtype": "m.text", "body": "from the bridge"}, AS_TOKEN)
        self.assertEqual(code, 200, sent)
        # the same transaction ID again is the same event (scoped to the service and the user)
        code, again = await self.put(path, {"msgtype": "m.text", "body": "from the bridge"}, AS_TOKEN)
        self.assertEqual(again["event_id"], sent["event_id"])
        events = await self.room_events(human, room)
        [message] = [e for e in events if e["type"] == "m.room.message"]
        self.assertEqual((message["sender"], message["event_id"]), (alice, sent["event_id"]))

    async def test_device_masquerading_and_management(self) -> None:
        """MSC4190 (spec v1.17 §Device management) and §Identity assertion's device_id."""
        alice = await self.register_as_user("_bridge_alice")
        devices = f"{C}/devices"
        result = await self.get(self.as_path(WHOAMI, alice, "PHONE"), AS_TOKEN)
        self.assertMatrixError(result, 400, "M_UNKNOWN_DEVICE")
        # PUT /devices/{id} creates the device (201), then renames it (200)
        code, body = await self.put(self.as_path(f"{devices}/PHONE", alice), {"display_name": "bridged"}, AS_TOKEN)
        self.assertEqual((code, body), (201, {}))
        code, body = await self.put(self.as_path(f"{devices}/PHONE", alice), {"display_name": "renamed"}, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))
        code, body = await self.get(self.as_path(WHOAMI, alice, "PHONE"), AS_TOKEN)
        self.assertEqual((code, body["user_id"], body["device_id"]), (200, alice, "PHONE"))
        code, body = await self.get(self.as_path(f"{devices}/PHONE", alice), AS_TOKEN)
        self.assertEqual(body["display_name"], "renamed")
        # the device belongs to alice only
        bob = await self.register_as_user("_bridge_bob")
        self.assertMatrixError(await self.get(self.as_path(WHOAMI, bob, "PHONE"), AS_TOKEN), 400, "M_UNKNOWN_DEVICE")
        # keys need a device: with device_id the upload works
        keys = {"one_time_keys": {"signed_curve25519:AAAA": {"key": "k", "signatures": {}}}}
        code, body = await self.post(self.as_path(f"{C}/keys/upload", alice, "PHONE"), keys, AS_TOKEN)
        self.assertEqual(code, 200, body)
        # deleting needs no user-interactive auth for an application service
        code, body = await self.delete(self.as_path(f"{devices}/PHONE", alice), None, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))
        self.assertMatrixError(await self.get(self.as_path(WHOAMI, alice, "PHONE"), AS_TOKEN), 400, "M_UNKNOWN_DEVICE")
        for name in ("A", "B"):
            await self.put(self.as_path(f"{devices}/{name}", alice), {}, AS_TOKEN)
        code, body = await self.post(self.as_path(f"{C}/delete_devices", alice), {"devices": ["A", "B"]}, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))
        code, body = await self.get(self.as_path(devices, alice), AS_TOKEN)
        self.assertEqual(body["devices"], [])
        # a human still needs UIA, and cannot create devices by PUT
        human = await self.register("human")
        self.assertMatrixError(await self.put(f"{devices}/NEW", {}, human), 404, "M_NOT_FOUND")
        code, body = await self.delete(f"{devices}/{human.device_id}", None, human)
        self.assertEqual(code, 401, body)
        self.assertIn("flows", body)
        # bad input
        long_id = "X" * 300
        self.assertMatrixError(await self.put(self.as_path(f"{devices}/{long_id}", alice), {}, AS_TOKEN), 400, "M_INVALID_PARAM")
        self.assertMatrixError(
            await self.put(self.as_path(f"{devices}/D", alice), {"display_name": 5}, AS_TOKEN), 400, "M_BAD_JSON"
        )

    async def test_cross_signing_replacement_without_uia(self) -> None:
        alice = await self.register_as_user("_bridge_alice")

        def master(key: str) -> dict[str, Any]:
            return {"master_key": {"user_id": alice, "usage": ["master"], "keys": {f"ed25519:{key}": key}}}

        path = self.as_path(f"{C}/keys/device_signing/upload", alice)
        code, body = await self.post(path, master("a" * 43), AS_TOKEN)
        self.assertEqual(code, 200, body)
        code, body = await self.post(path, master("b" * 43), AS_TOKEN)
        self.assertEqual(code, 200, body)


class RateLimitTests(AppServiceTestCase):
    appservice_config = {
        "app_service_ip_range_whitelist": ["127.0.0.0/8"],
        "rate_limits": {"enabled": True, "message": {"per_second": 0.1, "burst": 2}, "register": {"per_second": 0.01, "burst": 1}},
    }

    def registrations(self) -> list[dict[str, Any]]:
        limited = registration(
            None,
            id="limited",
            as_token="as-limited",
            hs_token="hs-limited",
            sender_localpart="_limited_bot",
            namespaces={"users": [{"exclusive": True, "regex": "@_limited_.*"}]},
            rate_limited=True,
        )
        return [registration(self.appservice.url), limited]

    async def send(self, token: str, user_id: str | None, room: str, n: int) -> list[int]:
        codes = []
        for i in range(n):
            path = self.as_path(f"{C}/rooms/{q(room)}/send/m.room.message/r{i}", user_id)
            code, _ = await self.put(path, {"msgtype": "m.text", "body": str(i)}, token)
            codes.append(code)
        return codes

    async def test_rate_limited_false_exempts_the_services_users_and_the_sender_always(self) -> None:
        # registration by application services ignores the registration rate limit
        free = await self.register_as_user("_bridge_free")
        code, body = await self.post(
            f"{C}/register", {"type": "m.login.application_service", "username": "_limited_user", "inhibit_login": True}, "as-limited"
        )
        self.assertEqual(code, 200, body)
        limited = body["user_id"]
        owner = await self.register("owner")
        room = await self.create_room(owner, preset="public_chat")
        for token, user in ((AS_TOKEN, free), ("as-limited", limited), (AS_TOKEN, None), ("as-limited", None)):
            code, body = await self.post(self.as_path(f"{C}/join/{q(room)}", user), {}, token)
            self.assertEqual(code, 200, body)
        self.assertEqual(await self.send(AS_TOKEN, free, room, 6), [200] * 6)
        self.assertEqual(await self.send(AS_TOKEN, None, room, 6), [200] * 6)
        self.assertEqual(await self.send("as-limited", None, room, 6), [200] * 6)  # the sender is excluded
        self.assertIn(429, await self.send("as-limited", limited, room, 6))
        self.assertIn(429, await self.send(owner.access_token, None, room, 6))


class RegistrationTests(AppServiceTestCase):
    def registrations(self) -> list[dict[str, Any]]:
        managed = registration(
            None,
            id="managed",
            as_token="as-managed",
            hs_token="hs-managed",
            sender_localpart="_managed_bot",
            namespaces={"users": [{"exclusive": False, "regex": "@_managed_.*"}]},
            **{"io.element.msc4190": True},
        )
        return [registration(self.appservice.url), managed]

    async def test_registering_namespace_users(self) -> None:
        body = {"type": "m.login.application_service", "username": "_bridge_alice"}
        code, resp = await self.post(f"{C}/register", body, AS_TOKEN)
        self.assertEqual(code, 200, resp)
        self.assertEqual(resp["user_id"], "@_bridge_alice:test")
        code, me = await self.get(WHOAMI, resp["access_token"])
        self.assertEqual(me["user_id"], "@_bridge_alice:test")
        # inhibit_login: no session; the older `user` key works too
        code, resp = await self.post(
            f"{C}/register", {"type": "m.login.application_service", "user": "_bridge_bob", "inhibit_login": True}, AS_TOKEN
        )
        self.assertEqual((code, resp), (200, {"user_id": "@_bridge_bob:test"}))
        self.assertMatrixError(await self.post(f"{C}/register", body, AS_TOKEN), 400, "M_USER_IN_USE")
        # outside the service's namespace
        outside = {"type": "m.login.application_service", "username": "alice"}
        self.assertMatrixError(await self.post(f"{C}/register", outside, AS_TOKEN), 400, "M_EXCLUSIVE")
        # in another service's exclusive namespace
        other = {"type": "m.login.application_service", "username": "_bridge_carol", "inhibit_login": True}
        self.assertMatrixError(await self.post(f"{C}/register", other, "as-managed"), 400, "M_EXCLUSIVE")
        # without a valid as_token
        self.assertMatrixError(await self.post(f"{C}/register", body), 401, "M_MISSING_TOKEN")
        human = await self.register("human")
        self.assertMatrixError(await self.post(f"{C}/register", body, human), 401, "M_UNKNOWN_TOKEN")
        # bad input
        for bad, errcode in (
            ({"type": "m.login.application_service"}, "M_MISSING_PARAM"),
            ({"type": "m.login.application_service", "username": 3}, "M_BAD_JSON"),
            ({"type": "m.login.application_service", "username": "_bridge_UPPER"}, "M_INVALID_USERNAME"),
            ({"type": "m.login.application_service", "username": "_bridge_x", "inhibit_login": "yes"}, "M_BAD_JSON"),
        ):
            self.assertMatrixError(await self.post(f"{C}/register", bad, AS_TOKEN), 400, errcode)

    async def test_humans_cannot_take_exclusive_user_ids(self) -> None:
        body = {"username": "_bridge_dave", "password": "correct horse", "auth": {"type": "m.login.dummy"}}
        self.assertMatrixError(await self.post(f"{C}/register", body), 400, "M_EXCLUSIVE")
        result = await self.get(f"{C}/register/available?username=_bridge_dave")
        self.assertMatrixError(result, 400, "M_EXCLUSIVE")
        code, body = await self.get(f"{C}/register/available?username=_managed_dave")  # not exclusive
        self.assertEqual((code, body), (200, {"available": True}))
        # nor as the admin CLI would
        from mxserver.errors import MatrixError

        with self.assertRaises(MatrixError) as caught:
            await self.hs.registrar.register_user("_bridge_eve", "correct horse")
        self.assertEqual(caught.exception.errcode, "M_EXCLUSIVE")

    async def test_appservice_login(self) -> None:
        await self.register_as_user("_bridge_alice")
        body = {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_bridge_alice"}}
        code, resp = await self.post(f"{C}/login", body, AS_TOKEN)
        self.assertEqual(code, 200, resp)
        code, me = await self.get(WHOAMI, resp["access_token"])
        self.assertEqual((me["user_id"], me["device_id"]), ("@_bridge_alice:test", resp["device_id"]))
        human = await self.register("human")
        outside = {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "human"}}
        self.assertMatrixError(await self.post(f"{C}/login", outside, AS_TOKEN), 403, "M_EXCLUSIVE")
        ghost = {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_bridge_ghost"}}
        self.assertMatrixError(await self.post(f"{C}/login", ghost, AS_TOKEN), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/login", body), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.post(f"{C}/login", body, human), 401, "M_UNKNOWN_TOKEN")
        code, flows = await self.get(f"{C}/login")
        self.assertIn({"type": "m.login.application_service"}, flows["flows"])

    async def test_device_managing_service_gets_no_tokens(self) -> None:
        """MSC4190: io.element.msc4190 services must inhibit login, and cannot log in."""
        body = {"type": "m.login.application_service", "username": "_managed_alice"}
        self.assertMatrixError(await self.post(f"{C}/register", body, "as-managed"), 400, "M_APPSERVICE_LOGIN_UNSUPPORTED")
        code, resp = await self.post(f"{C}/register", {**body, "inhibit_login": True}, "as-managed")
        self.assertEqual((code, resp), (200, {"user_id": "@_managed_alice:test"}))
        login = {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_managed_alice"}}
        self.assertMatrixError(await self.post(f"{C}/login", login, "as-managed"), 400, "M_APPSERVICE_LOGIN_UNSUPPORTED")


class ExclusiveAliasTests(AppServiceTestCase):
    async def test_aliases_in_an_exclusive_namespace(self) -> None:
        human = await self.register("human")
        room = await self.create_room(human, preset="public_chat")
        alias = "#_bridge_chan:test"
        # a human may not create it, directly or with createRoom
        self.assertMatrixError(await self.put(f"{C}/directory/room/{q(alias)}", {"room_id": room}, human), 400, "M_EXCLUSIVE")
        result = await self.post(f"{C}/createRoom", {"room_alias_name": "_bridge_chan"}, human)
        self.assertMatrixError(result, 400, "M_EXCLUSIVE")
        # the service may, without being in the room; but not outside its namespace
        code, body = await self.put(f"{C}/directory/room/{q(alias)}", {"room_id": room}, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))
        result = await self.put(f"{C}/directory/room/{q('#other:test')}", {"room_id": room}, AS_TOKEN)
        self.assertMatrixError(result, 400, "M_EXCLUSIVE")
        code, body = await self.get(f"{C}/directory/room/{q(alias)}")
        self.assertEqual(body["room_id"], room)
        # a human may not delete it (even the room's admin); the service may
        self.assertMatrixError(await self.delete(f"{C}/directory/room/{q(alias)}", None, human), 400, "M_EXCLUSIVE")
        code, body = await self.delete(f"{C}/directory/room/{q(alias)}", None, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))
        # createRoom by the service (masquerading) with an alias of its namespace
        alice = await self.register_as_user("_bridge_alice")
        code, body = await self.post(self.as_path(f"{C}/createRoom", alice), {"room_alias_name": "_bridge_new"}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["room_alias"], "#_bridge_new:test")

    async def test_reload_reserves_a_room_and_a_bad_file_is_refused(self) -> None:
        admin = await self.register("admin")
        await self.hs.accounts.set_admin(admin.user_id, True)
        human = await self.register("human")
        room = await self.create_room(human, preset="public_chat")
        reload_path = "/_mxserver/admin/v1/appservices/reload"
        self.assertMatrixError(await self.post(reload_path, {}, human), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(reload_path, {}, AS_TOKEN), 403, "M_FORBIDDEN")
        # a bad file: refused with the file named, the registration in force stays
        self.write_registration(0, {**registration(self.appservice.url), "namespaces": "nope"})
        result = await self.post(reload_path, {}, admin)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        self.assertIn("registration-0.yaml", result[1]["error"])
        code, body = await self.get(WHOAMI, AS_TOKEN)
        self.assertEqual(code, 200, body)
        # the room becomes the service's exclusively, and a new token is in force
        rooms_ns = {"rooms": [{"exclusive": True, "regex": room.replace("!", "\\!").replace(".", "\\.")}]}
        new = registration(self.appservice.url, as_token="as-new", sender_localpart="_bridge_newbot")
        new["namespaces"] = {**new["namespaces"], **rooms_ns}
        self.write_registration(0, new)
        code, body = await self.post(reload_path, {}, admin)
        self.assertEqual((code, body), (200, {"added": [], "removed": [], "changed": ["bridge"]}))
        self.assertMatrixError(await self.get(WHOAMI, AS_TOKEN), 401, "M_UNKNOWN_TOKEN")
        code, body = await self.get(WHOAMI, "as-new")
        self.assertEqual(body["user_id"], "@_bridge_newbot:test")  # the new sender exists at once
        visibility = f"{C}/directory/list/room/{q(room)}"
        self.assertMatrixError(await self.put(visibility, {"visibility": "public"}, human), 400, "M_EXCLUSIVE")
        # the status list for admins
        code, body = await self.get("/_mxserver/admin/v1/appservices", admin)
        self.assertEqual([s["id"] for s in body["appservices"]], ["bridge"])
        # ... and a line each in the destinations view, beside the federation destinations
        code, body = await self.get("/_mxserver/admin/v1/federation/destinations", admin)
        self.assertEqual(code, 200, body)
        self.assertEqual([(s["id"], s["retry_interval_ms"]) for s in body["appservices"]], [("bridge", 0)])


class SighupTests(AppServiceTestCase):
    async def test_sighup_reloads_the_registrations(self) -> None:
        """Under twistd (mxserver.tap) SIGHUP reads the registration files again."""
        import os
        import signal

        from mxserver.tap import _reload_on_sighup

        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        _reload_on_sighup(self.hs)
        self.write_registration(0, registration(self.appservice.url, as_token="as-after-sighup"))
        os.kill(os.getpid(), signal.SIGHUP)
        await self.appservice.wait_until(lambda: self.hs.appservices.by_token("as-after-sighup"), "the reload")
        code, body = await self.get(WHOAMI, "as-after-sighup")
        self.assertEqual((code, body["user_id"]), (200, "@_bridge_bot:test"))
        # a bad file is logged; the registration in force stays
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        self.write_registration(0, {"id": "broken"})
        os.kill(os.getpid(), signal.SIGHUP)
        await deferLater(reactor, 0.2, lambda: None)  # the reload runs in the reactor's next turn
        code, body = await self.get(WHOAMI, "as-after-sighup")
        self.assertEqual(code, 200, body)


class QueryTests(AppServiceTestCase):
    async def test_unknown_user_in_the_namespace_is_asked_of_the_service(self) -> None:
        ghost = "@_bridge_ghost:test"
        profile = f"{C}/profile/{q(ghost)}"
        self.assertMatrixError(await self.get(profile), 404, "M_NOT_FOUND")
        [asked] = [r for r in self.appservice.received if r.path.startswith("/_matrix/app/v1/users/")]
        self.assertEqual((asked.method, asked.path, asked.authorization), ("GET", f"/_matrix/app/v1/users/{ghost}", f"Bearer {HS_TOKEN}"))

        async def create(request: Received) -> tuple[int, Any]:
            await self.register_as_user("_bridge_ghost")
            return 200, {}

        self.appservice.answers["/users/"] = create
        code, body = await self.get(profile)
        self.assertEqual((code, body.get("displayname")), (200, "_bridge_ghost"))
        # users outside every namespace are not asked about
        before = len(self.queries())
        self.assertMatrixError(await self.get(f"{C}/profile/{q('@nobody:test')}"), 404, "M_NOT_FOUND")
        self.assertEqual(len(self.queries()), before)

    async def test_inviting_an_unknown_user_in_the_namespace_asks_the_service(self) -> None:
        # application-service-api §Querying users: "such as a room invite"
        human = await self.register("human")
        room = await self.create_room(human)
        ghost = "@_bridge_invitee:test"
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": ghost}, human), 404, "M_NOT_FOUND")
        self.assertEqual(self.queries()[-1].path, f"/_matrix/app/v1/users/{ghost}")

        async def create(request: Received) -> tuple[int, Any]:
            await self.register_as_user("_bridge_invitee")
            return 200, {}

        self.appservice.answers["/users/"] = create
        await self.invite(human, room, ghost)
        self.assertEqual(await self.membership(room, ghost), "invite")
        # so does an invite in createRoom
        other = "@_bridge_other:test"
        self.assertMatrixError(await self.post(f"{C}/createRoom", {"invite": [other]}, human), 404, "M_NOT_FOUND")
        self.assertEqual(self.queries()[-1].path, f"/_matrix/app/v1/users/{other}")

    async def test_unknown_alias_in_the_namespace_is_asked_of_the_service(self) -> None:
        alias = "#_bridge_portal:test"
        self.assertMatrixError(await self.get(f"{C}/directory/room/{q(alias)}"), 404, "M_NOT_FOUND")
        self.assertEqual(self.appservice.received[-1].path, f"/_matrix/app/v1/rooms/{alias}")

        async def create(request: Received) -> tuple[int, Any]:
            code, body = await self.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "_bridge_portal"}, AS_TOKEN)
            assert code == 200, body
            return 200, {}

        self.appservice.answers["/rooms/"] = create
        human = await self.register("human")
        # a join by alias makes the service create the room
        room = await self.join(human, alias)
        self.assertEqual(await self.membership(room, human), "join")
        code, body = await self.get(f"{C}/directory/room/{q(alias)}")
        self.assertEqual(body["room_id"], room)
        # an alias outside every namespace is not asked about (transactions of the room's
        # events may still arrive meanwhile: only queries count)
        before = len(self.queries())
        self.assertMatrixError(await self.get(f"{C}/directory/room/{q('#nothing:test')}"), 404, "M_NOT_FOUND")
        self.assertEqual(len(self.queries()), before)

    def queries(self) -> list[Received]:
        return [r for r in self.appservice.received if not r.path.startswith("/_matrix/app/v1/transactions/")]


GITTER = {
    "user_fields": ["username"],
    "location_fields": ["room"],
    "icon": "mxc://example.org/gitter",
    "field_types": {"username": {"regexp": "@\\S+", "placeholder": "@user"}, "room": {"regexp": ".+", "placeholder": "org/room"}},
    "instances": [{"network_id": "gitter", "desc": "Gitter", "fields": {}}],
}


class ThirdPartyTests(AppServiceTestCase):
    def registrations(self) -> list[dict[str, Any]]:
        second = registration(
            self.appservice.url,
            id="second",
            as_token="as-second",
            hs_token="hs-second",
            sender_localpart="_second_bot",
            namespaces={},
            protocols=["gitter", "irc"],
        )
        return [registration(self.appservice.url), second]

    async def test_protocols_and_lookups(self) -> None:
        human = await self.register("human")

        def protocol(request: Received) -> tuple[int, Any]:
            name = request.path.rsplit("/", 1)[1]
            if name != "gitter":
                return 404, {}
            network = "gitter" if request.authorization == f"Bearer {HS_TOKEN}" else "gitter2"
            return 200, {**GITTER, "instances": [{"network_id": network, "desc": network, "fields": {}}]}

        self.appservice.answers["/thirdparty/protocol/"] = protocol
        code, body = await self.get(f"{C}/thirdparty/protocols", human)
        self.assertEqual(code, 200, body)
        self.assertEqual(sorted(body), ["gitter"])  # irc: its service described nothing
        instances = sorted(i["instance_id"] for i in body["gitter"]["instances"])
        self.assertEqual(instances, ["bridge|gitter", "second|gitter2"])
        self.assertEqual(body["gitter"]["user_fields"], ["username"])
        code, one = await self.get(f"{C}/thirdparty/protocol/gitter", human)
        self.assertEqual((code, len(one["instances"])), (200, 2))
        self.assertMatrixError(await self.get(f"{C}/thirdparty/protocol/irc", human), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/thirdparty/protocol/nope", human), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/thirdparty/protocols"), 401, "M_MISSING_TOKEN")

        portal = {"alias": "#_bridge_matrix:test", "protocol": "gitter", "fields": {"room": "matrix-org/matrix"}}

        def location(request: Received) -> tuple[int, Any]:
            if request.authorization != f"Bearer {HS_TOKEN}":
                return 200, [{"alias": 5}]  # the second service answers garbage: dropped
            return 200, [portal, "junk"]

        self.appservice.answers["/thirdparty/location"] = location
        code, found = await self.get(f"{C}/thirdparty/location/gitter?room=matrix-org%2Fmatrix", human)
        self.assertEqual((code, found), (200, [portal]))
        asked = [r for r in self.appservice.received if r.path == "/_matrix/app/v1/thirdparty/location/gitter"]
        self.assertEqual(asked[-1].args, {"room": ["matrix-org/matrix"]})  # fields passed on
        code, found = await self.get(f"{C}/thirdparty/location?alias={q(portal['alias'])}", human)
        self.assertEqual((code, found), (200, [portal]))
        asked = [r for r in self.appservice.received if r.path == "/_matrix/app/v1/thirdparty/location"]
        self.assertEqual(asked[-1].args, {"alias": [portal["alias"]]})
        self.assertMatrixError(await self.get(f"{C}/thirdparty/location", human), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.get(f"{C}/thirdparty/location/irc?room=x", human), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/thirdparty/location/nope?room=x", human), 404, "M_NOT_FOUND")

        remote_user = {"userid": "@_bridge_gitter_joe:test", "protocol": "gitter", "fields": {"username": "@joe"}}
        self.appservice.answers["/thirdparty/user"] = (200, [remote_user])
        code, found = await self.get(f"{C}/thirdparty/user/gitter?username=%40joe", human)
        self.assertEqual((code, found), (200, [remote_user, remote_user]))  # both services answered
        code, found = await self.get(f"{C}/thirdparty/user?userid={q(remote_user['userid'])}", human)
        self.assertEqual(code, 200, found)
        self.assertMatrixError(await self.get(f"{C}/thirdparty/user", human), 400, "M_MISSING_PARAM")
        self.appservice.answers["/thirdparty/user"] = (500, {})
        self.assertMatrixError(await self.get(f"{C}/thirdparty/user/gitter?username=x", human), 404, "M_NOT_FOUND")


class ProtocolCacheTests(AppServiceTestCase):
    use_fake_clock = True

    def registrations(self) -> list[dict[str, Any]]:
        return [registration(self.appservice.url, protocols=["gitter"])]

    async def test_a_protocol_description_is_kept_for_a_while(self) -> None:
        human = await self.register("human")
        self.appservice.answers["/thirdparty/protocol/"] = (200, GITTER)
        code, body = await self.get(f"{C}/thirdparty/protocols", human)
        self.assertEqual((code, body["gitter"]["icon"]), (200, GITTER["icon"]))
        asked = len(self.protocol_queries())
        # the service now answers nonsense, but the description it gave is still used
        self.appservice.answers["/thirdparty/protocol/"] = (200, [])
        code, one = await self.get(f"{C}/thirdparty/protocol/gitter", human)
        self.assertEqual((code, one["instances"][0]["instance_id"]), (200, "bridge|gitter"))
        self.assertEqual(len(self.protocol_queries()), asked)
        # until it is old: then the service is asked again
        self.clock.advance(PROTOCOL_CACHE_SECONDS)
        self.assertMatrixError(await self.get(f"{C}/thirdparty/protocol/gitter", human), 404, "M_NOT_FOUND")
        self.assertEqual(len(self.protocol_queries()), asked + 1)

    def protocol_queries(self) -> list[Received]:
        return [r for r in self.appservice.received if r.path.startswith("/_matrix/app/v1/thirdparty/protocol/")]


class PingTests(AppServiceTestCase):
    def registrations(self) -> list[dict[str, Any]]:
        quiet = registration(None, id="quiet", as_token="as-quiet", hs_token="hs-quiet", sender_localpart="_quiet_bot", namespaces={})
        return [registration(self.appservice.url), quiet]

    async def test_ping(self) -> None:
        self.appservice.answers["/ping"] = (200, {})
        code, body = await self.post(PING.format("bridge"), {"transaction_id": "meow"}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        self.assertIsInstance(body["duration_ms"], int)
        [ping] = [r for r in self.appservice.received if r.path == "/_matrix/app/v1/ping"]
        self.assertEqual((ping.method, ping.body, ping.authorization), ("POST", {"transaction_id": "meow"}, f"Bearer {HS_TOKEN}"))
        code, body = await self.post(PING.format("bridge"), {}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        # the service refuses our hs_token
        self.appservice.answers["/ping"] = (403, {"errcode": "M_FORBIDDEN"})
        code, body = await self.post(PING.format("bridge"), {"transaction_id": "x"}, AS_TOKEN)
        self.assertEqual((code, body["errcode"], body["status"]), (502, "M_BAD_STATUS", 403))
        self.assertEqual(body["body"], '{"errcode": "M_FORBIDDEN"}')
        # who may ping what
        human = await self.register("human")
        self.assertMatrixError(await self.post(PING.format("bridge"), {}, human), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(PING.format("quiet"), {}, AS_TOKEN), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(PING.format("nope"), {}, AS_TOKEN), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(PING.format("quiet"), {}, "as-quiet"), 400, "M_URL_NOT_SET")
        # bad input
        self.assertMatrixError(await self.post(PING.format("bridge"), {"transaction_id": 1}, AS_TOKEN), 400, "M_BAD_JSON")
        result = await self.request("POST", PING.format("bridge"), raw=b"not json", token=AS_TOKEN)
        self.assertMatrixError(result, 400, "M_NOT_JSON")
        # the service is gone
        await self.appservice.stop()
        code, body = await self.post(PING.format("bridge"), {}, AS_TOKEN)
        self.assertEqual((code, body["errcode"]), (502, "M_CONNECTION_FAILED"), body)


class BlockedAddressTests(AppServiceTestCase):
    """Without app_service_ip_range_whitelist a service on loopback is refused (federation's
    blacklist applies): the ping says so instead of connecting."""

    appservice_config: dict[str, Any] = {}

    async def test_loopback_is_refused_unless_whitelisted(self) -> None:
        self.appservice.answers["/ping"] = (200, {})
        code, body = await self.post(PING.format("bridge"), {}, AS_TOKEN)
        self.assertEqual((code, body["errcode"]), (502, "M_CONNECTION_FAILED"), body)
        self.assertEqual(self.appservice.received, [])


class PingTimeoutTests(AppServiceTestCase):
    use_fake_clock = True

    async def test_timeout(self) -> None:
        hanging: Deferred[tuple[int, Any]] = Deferred()
        self.addCleanup(lambda: hanging.called or hanging.callback((200, {})))
        self.appservice.answers["/ping"] = lambda request: hanging
        d = Deferred.fromCoroutine(self.post(PING.format("bridge"), {}, AS_TOKEN))
        await self.appservice.wait_until(lambda: any(r.path.endswith("/ping") for r in self.appservice.received), "the ping")
        self.clock.advance(31)
        code, body = await d
        self.assertEqual((code, body["errcode"]), (504, "M_CONNECTION_TIMEOUT"), body)


class AppServiceDirectoryTests(AppServiceTestCase):
    async def test_publishing_in_a_network_directory(self) -> None:
        human = await self.register("human")
        bridged = await self.create_room(human, preset="public_chat", name="Bridged")
        ours = await self.create_room(human, preset="public_chat", name="Ours", visibility="public")
        path = f"{C}/directory/list/appservice/gitter/{q(bridged)}"
        code, body = await self.put(path, {"visibility": "public"}, AS_TOKEN)
        self.assertEqual((code, body), (200, {}))

        async def listed(body: dict[str, Any] | None = None, query: str = "") -> list[str]:
            if body is None:
                code, resp = await self.get(f"{C}/publicRooms{query}", human)
            else:
                code, resp = await self.post(f"{C}/publicRooms", body, human)
            self.assertEqual(code, 200, resp)
            return sorted(e["room_id"] for e in resp["chunk"])

        self.assertEqual(await listed({}), [ours])
        self.assertEqual(await listed({"third_party_instance_id": "bridge|gitter"}), [bridged])
        self.assertEqual(await listed({"third_party_instance_id": "bridge|other"}), [])
        self.assertEqual(await listed({"include_all_networks": True}), sorted([ours, bridged]))
        self.assertEqual(await listed(query="?third_party_instance_id=bridge%7Cgitter"), [bridged])
        self.assertEqual(await listed(query="?include_all_networks=true"), sorted([ours, bridged]))
        result = await self.post(f"{C}/publicRooms", {"include_all_networks": True, "third_party_instance_id": "bridge|gitter"}, human)
        self.assertMatrixError(result, 400, "M_INVALID_PARAM")
        # only application services; bad input
        self.assertMatrixError(await self.put(path, {"visibility": "public"}, human), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.put(path, {"visibility": "shown"}, AS_TOKEN), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(path, {}, AS_TOKEN), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(path, {"visibility": 1}, AS_TOKEN), 400, "M_BAD_JSON")
        unknown = f"{C}/directory/list/appservice/gitter/{q('!nope:test')}"
        self.assertMatrixError(await self.put(unknown, {"visibility": "public"}, AS_TOKEN), 404, "M_NOT_FOUND")
        invalid = f"{C}/directory/list/appservice/gitter/{q('nope')}"
        self.assertMatrixError(await self.put(invalid, {"visibility": "public"}, AS_TOKEN), 400, "M_INVALID_PARAM")
        # private takes it out again
        code, body = await self.put(path, {"visibility": "private"}, AS_TOKEN)
        self.assertEqual(code, 200, body)
        self.assertEqual(await listed({"third_party_instance_id": "bridge|gitter"}), [])
