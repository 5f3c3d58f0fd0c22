"""Server-side key backup (key_backup.yaml): versions, keys, the replacement rules, etag and count."""

from __future__ import annotations

from typing import Any

from tests.harness import HomeserverTestCase, TestUser

RK = "/_matrix/client/v3/room_keys"
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test"


def key(fmi: int = 0, fc: int = 0, verified: bool = False, tag: str = "a") -> dict[str, Any]:
    return {
        "first_message_index": fmi,
        "forwarded_count": fc,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    }


class KeyBackupTests(HomeserverTestCase):
    async def new_version(self, user: TestUser, auth_data: dict[str, Any] | None = None) -> str:
        code, body = await self.post(
            f"{RK}/version", {"algorithm": ALG, "auth_data": auth_data or {"public_key": "pk"}}, user
        )
        self.assertEqual(code, 200, body)
        self.assertIsInstance(body["version"], str)
        return body["version"]

    async def test_version_crud(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.get(f"{RK}/version", alice), 404, "M_NOT_FOUND")
        v1 = await self.new_version(alice)
        code, body = await self.get(f"{RK}/version", alice)
        self.assertEqual(code, 200)
        self.assertEqual(
            body, {"algorithm": ALG, "auth_data": {"public_key": "pk"}, "count": 0, "etag": body["etag"], "version": v1}
        )
        self.assertEqual((await self.get(f"{RK}/version/{v1}", alice))[1]["version"], v1)
        v2 = await self.new_version(alice, {"public_key": "pk2"})
        self.assertNotEqual(v1, v2)
        self.assertEqual((await self.get(f"{RK}/version", alice))[1]["version"], v2)
        # Update: only auth_data, algorithm must match, body version must match the path.
        self.assertEqual(
            await self.put(f"{RK}/version/{v2}", {"algorithm": ALG, "auth_data": {"public_key": "new"}}, alice),
            (200, {}),
        )
        self.assertEqual((await self.get(f"{RK}/version/{v2}", alice))[1]["auth_data"], {"public_key": "new"})
        self.assertMatrixError(
            await self.put(f"{RK}/version/{v2}", {"algorithm": ALG, "auth_data": {}, "version": v1}, alice),
            400,
            "M_INVALID_PARAM",
        )
        self.assertMatrixError(
            await self.put(f"{RK}/version/999", {"algorithm": ALG, "auth_data": {}}, alice), 404, "M_NOT_FOUND"
        )
        # Delete: twice is fine; the previous version becomes current again; unknown is 404.
        self.assertEqual(await self.delete(f"{RK}/version/{v2}", None, alice), (200, {}))
        self.assertEqual(await self.delete(f"{RK}/version/{v2}", None, alice), (200, {}))
        self.assertEqual((await self.get(f"{RK}/version", alice))[1]["version"], v1)
        self.assertMatrixError(await self.get(f"{RK}/version/{v2}", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{RK}/version/999", None, alice), 404, "M_NOT_FOUND")
        # Versions are never reused.
        v3 = await self.new_version(alice)
        self.assertNotIn(v3, (v1, v2))
        # Other users see none of it.
        bob = await self.register("bob")
        self.assertMatrixError(await self.get(f"{RK}/version", bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{RK}/version/{v1}", bob), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.delete(f"{RK}/version/{v1}", None, bob), 404, "M_NOT_FOUND")

    async def test_bad_input(self) -> None:
        alice = await self.register("alice")
        for body in (
            {},
            {"algorithm": ALG},
            {"auth_data": {}},
            {"algorithm": 1, "auth_data": {}},
            {"algorithm": ALG, "auth_data": []},
        ):
            code, resp = await self.post(f"{RK}/version", body, alice)
            self.assertEqual(code, 400, (body, resp))
        self.assertMatrixError(
            await self.post(f"{RK}/version", {"algorithm": "m.other", "auth_data": {}}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.get(f"{RK}/version/notanumber", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{RK}/version"), 401, "M_MISSING_TOKEN")
        v = await self.new_version(alice)
        for body in (
            {"first_message_index": 0},
            {**key(), "is_verified": "yes"},
            {**key(), "first_message_index": -1},
            {**key(), "session_data": "x"},
        ):
            code, resp = await self.put(f"{RK}/keys/{ROOM}/s1?version={v}", body, alice)
            self.assertEqual(code, 400, (body, resp))
        self.assertMatrixError(await self.put(f"{RK}/keys/{ROOM}/s1", key(), alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(f"{RK}/keys?version={v}", {"rooms": []}, alice), 400, "M_BAD_JSON")
        self.assertMatrixError(
            await self.put(f"{RK}/keys/notaroom?version={v}", {"sessions": {}}, alice), 400, "M_INVALID_PARAM"
        )
        self.assertMatrixError(await self.get(f"{RK}/keys", alice), 400, "M_MISSING_PARAM")
        # Nothing was stored.
        self.assertEqual((await self.get(f"{RK}/version", alice))[1]["count"], 0)

    async def test_keys_put_get_delete_and_counts(self) -> None:
        alice = await self.register("alice")
        v = await self.new_version(alice)
        etag0 = (await self.get(f"{RK}/version", alice))[1]["etag"]
        code, body = await self.put(f"{RK}/keys/{ROOM}/s1?version={v}", key(tag="one"), alice)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["count"], 1)
        self.assertNotEqual(body["etag"], etag0)
        code, body = await self.put(f"{RK}/keys/{ROOM}?version={v}", {"sessions": {"s2": key(), "s3": key()}}, alice)
        self.assertEqual(body["count"], 3)
        code, body = await self.put(
            f"{RK}/keys?version={v}", {"rooms": {"!other:test": {"sessions": {"s1": key()}}}}, alice
        )
        self.assertEqual(body["count"], 4)
        info = (await self.get(f"{RK}/version", alice))[1]
        self.assertEqual((info["count"], info["etag"]), (4, body["etag"]))

        self.assertEqual(await self.get(f"{RK}/keys/{ROOM}/s1?version={v}", alice), (200, key(tag="one")))
        code, body = await self.get(f"{RK}/keys/{ROOM}?version={v}", alice)
        self.assertEqual(set(body["sessions"]), {"s1", "s2", "s3"})
        code, body = await self.get(f"{RK}/keys?version={v}", alice)
        self.assertEqual(set(body["rooms"]), {ROOM, "!other:test"})
        self.assertEqual(await self.get(f"{RK}/keys/!none:test?version={v}", alice), (200, {"sessions": {}}))
        self.assertMatrixError(await self.get(f"{RK}/keys/{ROOM}/nope?version={v}", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{RK}/keys?version=99", alice), 404, "M_NOT_FOUND")

        code, body = await self.delete(f"{RK}/keys/{ROOM}/s1?version={v}", None, alice)
        self.assertEqual((code, body["count"]), (200, 3))
        code, body = await self.delete(f"{RK}/keys/{ROOM}?version={v}", None, alice)
        self.assertEqual(body["count"], 1)
        code, body = await self.delete(f"{RK}/keys?version={v}", None, alice)
        self.assertEqual(body["count"], 0)
        self.assertMatrixError(await self.delete(f"{RK}/keys?version=99", None, alice), 404, "M_NOT_FOUND")

    async def test_only_current_version_is_writable(self) -> None:
        alice = await self.register("alice")
        self.assertMatrixError(await self.put(f"{RK}/keys/{ROOM}/s1?version=1", key(), alice), 404, "M_NOT_FOUND")
        v1 = await self.new_version(alice)
        await self.put(f"{RK}/keys/{ROOM}/s1?version={v1}", key(), alice)
        v2 = await self.new_version(alice)
        code, body = await self.put(f"{RK}/keys/{ROOM}/s1?version={v1}", key(), alice)
        self.assertEqual((code, body["errcode"], body["current_version"]), (403, "M_WRONG_ROOM_KEYS_VERSION", v2))
        # The old version's keys are still readable; deleting a version deletes its keys.
        self.assertEqual((await self.get(f"{RK}/keys/{ROOM}/s1?version={v1}", alice))[0], 200)
        await self.delete(f"{RK}/version/{v1}", None, alice)
        self.assertMatrixError(await self.get(f"{RK}/keys/{ROOM}/s1?version={v1}", alice), 404, "M_NOT_FOUND")

    async def test_replacement_rules(self) -> None:
        alice = await self.register("alice")
        v = await self.new_version(alice)
        path = f"{RK}/keys/{ROOM}/s1?version={v}"

        async def stored() -> dict[str, Any]:
            return (await self.get(path, alice))[1]

        await self.put(path, key(fmi=5, fc=2, verified=False, tag="first"), alice)
        etag = (await self.get(f"{RK}/version", alice))[1]["etag"]
        # A verified key wins over an unverified one, whatever its index.
        await self.put(path, key(fmi=9, fc=9, verified=True, tag="verified"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "verified")
        # An unverified key never replaces a verified one, even with a lower index.
        await self.put(path, key(fmi=0, fc=0, verified=False, tag="unverified"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "verified")
        # Same verification: the lower first_message_index wins.
        await self.put(path, key(fmi=3, fc=9, verified=True, tag="lower-index"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "lower-index")
        await self.put(path, key(fmi=4, fc=0, verified=True, tag="higher-index"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "lower-index")
        # Same index: the lower forwarded_count wins; an equal one does not replace.
        await self.put(path, key(fmi=3, fc=1, verified=True, tag="fewer-forwards"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "fewer-forwards")
        code, body = await self.put(path, key(fmi=3, fc=1, verified=True, tag="same"), alice)
        self.assertEqual((await stored())["session_data"]["ciphertext"], "fewer-forwards")
        # A rejected upload leaves the etag alone; an accepted one changed it.
        self.assertNotEqual(body["etag"], etag)
        self.assertEqual(body["etag"], (await self.get(f"{RK}/version", alice))[1]["etag"])
        self.assertEqual(body["count"], 1)
