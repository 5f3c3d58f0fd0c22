"""Device management: list, get, rename, delete (with UIA), bulk delete."""

from __future__ import annotations

from tests.harness import C
from tests.test_account import UIAMixin, password_auth


class DeviceTests(UIAMixin):
    async def test_list_and_get(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        await self.login("alice", alice.password, device_id="LAPTOP", initial_device_display_name="Laptop")
        code, body = await self.get(f"{C}/devices", alice)
        self.assertEqual(code, 200)
        devices = {d["device_id"]: d for d in body["devices"]}
        self.assertEqual(set(devices), {"PHONE", "LAPTOP"})
        self.assertEqual(devices["LAPTOP"]["display_name"], "Laptop")
        # A name never set is null: clients such as matrix-nio require the key.
        self.assertIsNone(devices["PHONE"]["display_name"])
        code, device = await self.get(f"{C}/devices/LAPTOP", alice)
        self.assertEqual((code, device["device_id"], device["display_name"]), (200, "LAPTOP", "Laptop"))

    async def test_last_seen(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        await self.get(f"{C}/account/whoami", alice)
        # "last seen" is written in the background (the request does not wait for it)
        await self.hs.auth.settle()
        code, device = await self.get(f"{C}/devices/PHONE", alice)
        self.assertEqual(device["last_seen_ip"], "127.0.0.1")
        self.assertIsInstance(device["last_seen_ts"], int)

    async def test_unknown_and_foreign_devices_are_not_found(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="BOBS")
        self.assertMatrixError(await self.get(f"{C}/devices/NOPE", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{C}/devices/BOBS", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.put(f"{C}/devices/NOPE", {"display_name": "x"}, alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.put(f"{C}/devices/BOBS", {"display_name": "mine now"}, alice), 404, "M_NOT_FOUND"
        )
        self.assertMatrixError(await self.put(f"{C}/devices/BOBS", {}, alice), 404, "M_NOT_FOUND")
        code, device = await self.get(f"{C}/devices/BOBS", bob)
        self.assertIsNone(device["display_name"])

    async def test_rename(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        self.assertEqual(await self.put(f"{C}/devices/PHONE", {"display_name": "My phone"}, alice), (200, {}))
        self.assertEqual((await self.get(f"{C}/devices/PHONE", alice))[1]["display_name"], "My phone")
        # No display_name: unchanged.
        self.assertEqual(await self.put(f"{C}/devices/PHONE", {}, alice), (200, {}))
        self.assertEqual((await self.get(f"{C}/devices/PHONE", alice))[1]["display_name"], "My phone")

    async def test_rename_bad_input(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        path = f"{C}/devices/PHONE"
        self.assertMatrixError(await self.request("PUT", path, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("PUT", path, raw=b"null", token=alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"display_name": 5}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"display_name": "x" * 1000}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.put(path, {"display_name": "x"}), 401, "M_MISSING_TOKEN")
        self.assertIsNone((await self.get(path, alice))[1]["display_name"])

    async def test_device_id_with_slash(self) -> None:
        alice = await self.register("alice", device_id="A/B")
        code, device = await self.get(f"{C}/devices/A%2FB", alice)
        self.assertEqual((code, device["device_id"]), (200, "A/B"))

    async def test_delete_device(self) -> None:
        alice = await self.register("alice", device_id="PHONE")
        code, other = await self.login("alice", alice.password, device_id="LAPTOP")
        await self.get(f"{C}/account/whoami", other["access_token"])  # cached
        code, body = await self.with_password_uia("DELETE", f"{C}/devices/LAPTOP", {}, alice)
        self.assertEqual((code, body), (200, {}))
        self.assertMatrixError(await self.get(f"{C}/account/whoami", other["access_token"]), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.get(f"{C}/devices/LAPTOP", alice), 404, "M_NOT_FOUND")
        # Deleting it again is fine (device_management.yaml: "or had been removed previously").
        self.assertEqual((await self.with_password_uia("DELETE", f"{C}/devices/LAPTOP", {}, alice))[0], 200)

    async def test_delete_without_body_asks_for_auth(self) -> None:
        alice = await self.register("alice")
        code, body = await self.request("DELETE", f"{C}/devices/{alice.device_id}", token=alice)
        self.assertEqual(code, 401)
        self.assertEqual(body["flows"], [{"stages": ["m.login.password"]}])

    async def test_delete_own_current_device(self) -> None:
        alice = await self.register("alice")
        self.assertEqual((await self.with_password_uia("DELETE", f"{C}/devices/{alice.device_id}", {}, alice))[0], 200)
        self.assertMatrixError(await self.get(f"{C}/account/whoami", alice), 401, "M_UNKNOWN_TOKEN")

    async def test_delete_wrong_password_then_right(self) -> None:
        alice = await self.register("alice")
        await self.login("alice", alice.password, device_id="LAPTOP")
        path = f"{C}/devices/LAPTOP"
        session = await self.uia_session("DELETE", path, {}, alice)
        code, body = await self.delete(path, {"auth": password_auth(alice, session, "wrong")}, alice)
        self.assertEqual((code, body["errcode"], body["session"]), (401, "M_FORBIDDEN", session))
        self.assertEqual((await self.get(path, alice))[0], 200)
        self.assertEqual(await self.delete(path, {"auth": password_auth(alice, session)}, alice), (200, {}))

    async def test_another_users_credentials_are_refused_with_403(self) -> None:
        # A stolen access token is not enough: UIA with someone else's (valid) password is a
        # plain 403, and the device stays (SyTest "DELETE /device/{deviceId} requires UI auth
        # user to match device owner").
        alice = await self.register("alice")
        eve = await self.register("eve")
        await self.login("alice", alice.password, device_id="LAPTOP")
        path = f"{C}/devices/LAPTOP"
        self.assertMatrixError(await self.delete(path, {"auth": password_auth(eve)}, alice), 403, "M_FORBIDDEN")
        self.assertEqual((await self.get(path, alice))[0], 200)
        self.assertEqual(await self.delete(path, {"auth": password_auth(alice)}, alice), (200, {}))
        self.assertMatrixError(await self.get(path, alice), 404, "M_NOT_FOUND")

    async def test_someone_elses_device_is_untouched(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob", device_id="BOBS")
        self.assertEqual((await self.with_password_uia("DELETE", f"{C}/devices/BOBS", {}, alice))[0], 200)
        self.assertEqual((await self.get(f"{C}/account/whoami", bob))[0], 200)
        self.assertEqual((await self.get(f"{C}/devices/BOBS", bob))[0], 200)
        body = {"devices": ["BOBS"]}
        self.assertEqual((await self.with_password_uia("POST", f"{C}/delete_devices", body, alice))[0], 200)
        self.assertEqual((await self.get(f"{C}/account/whoami", bob))[0], 200)

    async def test_session_is_bound_to_its_device(self) -> None:
        alice = await self.register("alice")
        await self.login("alice", alice.password, device_id="ONE")
        await self.login("alice", alice.password, device_id="TWO")
        session = await self.uia_session("DELETE", f"{C}/devices/ONE", {}, alice)
        result = await self.delete(f"{C}/devices/TWO", {"auth": password_auth(alice, session)}, alice)
        self.assertMatrixError(result, 403, "M_FORBIDDEN")
        self.assertEqual((await self.get(f"{C}/devices/TWO", alice))[0], 200)

    async def test_delete_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/devices/{alice.device_id}"
        self.assertMatrixError(await self.request("DELETE", path, raw=b"{", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.delete(path, {"auth": 1}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.delete(path, {}), 401, "M_MISSING_TOKEN")
        self.assertEqual((await self.get(f"{C}/account/whoami", alice))[0], 200)

    async def test_bulk_delete(self) -> None:
        alice = await self.register("alice", device_id="KEEP")
        tokens = []
        for device_id in ("ONE", "TWO"):
            code, resp = await self.login("alice", alice.password, device_id=device_id)
            tokens.append(resp["access_token"])
            await self.get(f"{C}/account/whoami", resp["access_token"])  # cached
        body = {"devices": ["ONE", "TWO", "NEVER-EXISTED"]}
        self.assertEqual(await self.with_password_uia("POST", f"{C}/delete_devices", body, alice), (200, {}))
        for token in tokens:
            self.assertMatrixError(await self.get(f"{C}/account/whoami", token), 401, "M_UNKNOWN_TOKEN")
        code, listing = await self.get(f"{C}/devices", alice)
        self.assertEqual([d["device_id"] for d in listing["devices"]], ["KEEP"])

    async def test_bulk_delete_bad_input(self) -> None:
        alice = await self.register("alice")
        path = f"{C}/delete_devices"
        self.assertMatrixError(await self.request("POST", path, raw=b"devices", token=alice), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.post(path, {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"devices": "ONE"}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"devices": [1, 2]}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"devices": []}), 401, "M_MISSING_TOKEN")


class GuestDeviceTests(UIAMixin):
    config_overrides = {"registration": {"allow_guests": True}}

    async def test_guests_may_list_and_rename_but_not_delete(self) -> None:
        code, guest = await self.post(f"{C}/register?kind=guest", {})
        token = guest["access_token"]
        self.assertEqual((await self.get(f"{C}/devices", token))[0], 200)
        self.assertEqual((await self.put(f"{C}/devices/{guest['device_id']}", {"display_name": "g"}, token))[0], 200)
        self.assertMatrixError(
            await self.delete(f"{C}/devices/{guest['device_id']}", {}, token), 403, "M_GUEST_ACCESS_FORBIDDEN"
        )
