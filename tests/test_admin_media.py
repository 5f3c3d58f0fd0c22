"""The media admin API (``/_synapse/admin``): users' media (list, delete), quarantine (one item,
a user's media, a room's media) and what it does to downloads and thumbnails, protection, deleting media (one,
by date and size) with its stored files and thumbnails."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from mxserver.media.storage import local_key, remote_key
from mxserver.storage.media import RemoteMedia
from tests.harness import TestUser, q
from tests.test_admin_users import ADMIN, AdminTestCase
from tests.test_media import png

DOWNLOAD = "/_matrix/client/v1/media/download"
THUMBNAIL = "/_matrix/client/v1/media/thumbnail"
LEGACY_DOWNLOAD = "/_matrix/media/v3/download"


class MediaAdminTestCase(AdminTestCase):
    async def upload(self, user: TestUser, data: bytes, content_type: str = "text/plain",
                     filename: str | None = None) -> str:
        path = "/_matrix/media/v3/upload" + (f"?filename={q(filename)}" if filename else "")
        code, body = await self.request("POST", path, raw=data, token=user, headers={"Content-Type": content_type})
        self.assertEqual(code, 200, body)
        return str(body["content_uri"]).rsplit("/", 1)[1]

    async def download(self, media_id: str, server: str = "test", token: TestUser | None = None) -> int:
        code, _ = await self.get(f"{DOWNLOAD}/{server}/{media_id}", token or self.alice)
        return code

    async def thumbnail(self, media_id: str, server: str = "test") -> tuple[int, Any]:
        return await self.get(f"{THUMBNAIL}/{server}/{media_id}?width=32&height=32&method=scale", self.alice)

    async def stored(self, media_id: str) -> bool:
        return await self.hs.media_repository.storage.fetch(local_key(media_id)) is not None

    async def cache_remote(self, media_id: str, data: bytes = b"remote bytes") -> None:
        repo = self.hs.media_repository
        now = int(self.hs.clock.seconds() * 1000)
        await repo.storage.store(remote_key("remote.example", f"fs{media_id}"), data)
        await repo.store.store_remote_media(
            RemoteMedia("remote.example", media_id, f"fs{media_id}", "text/plain", None, len(data), now, now,
                        False, None, None, None)
        )


class UserMediaTests(MediaAdminTestCase):
    async def test_list_shape_and_default_order(self) -> None:
        first = await self.upload(self.alice, b"first", "text/plain", "one.txt")
        second = await self.upload(self.alice, b"second!", "image/x-thing")
        await self.upload(self.admin, b"not alice's")
        code, body = await self.get(f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media", self.admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["total"], 2)
        self.assertNotIn("next_token", body)
        by_id = {m["media_id"]: m for m in body["media"]}
        self.assertEqual(set(by_id), {first, second})
        self.assertEqual(
            {k: v for k, v in by_id[first].items() if k not in ("created_ts", "last_access_ts")},
            {"media_id": first, "media_type": "text/plain", "media_length": 5, "upload_name": "one.txt",
             "quarantined_by": None, "safe_from_quarantine": False},
        )
        self.assertIsInstance(by_id[first]["created_ts"], int)
        # the newest first by default
        created = [m["created_ts"] for m in body["media"]]
        self.assertEqual(created, sorted(created, reverse=True))

    async def test_order_and_paging(self) -> None:
        ids = [await self.upload(self.alice, b"x" * n) for n in (3, 1, 2)]
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media"
        code, body = await self.get(f"{path}?order_by=media_length", self.admin)
        self.assertEqual([m["media_length"] for m in body["media"]], [1, 2, 3])
        code, body = await self.get(f"{path}?order_by=media_length&dir=b&limit=2", self.admin)
        self.assertEqual([m["media_length"] for m in body["media"]], [3, 2])
        self.assertEqual((body["total"], body["next_token"]), (3, 2))
        code, body = await self.get(f"{path}?order_by=media_length&dir=b&limit=2&from=2", self.admin)
        self.assertEqual([m["media_id"] for m in body["media"]], [ids[1]])
        self.assertNotIn("next_token", body)
        code, body = await self.get(f"{path}?order_by=media_id", self.admin)
        self.assertEqual([m["media_id"] for m in body["media"]], sorted(ids))

    async def test_delete_user_media(self) -> None:
        small = await self.upload(self.alice, b"x")
        image = await self.upload(self.alice, png(200, 200), "image/png")
        thumbs = await self.hs.media_store.get_thumbnails("", image)
        self.assertTrue(thumbs)
        other = await self.upload(self.admin, b"admin's")
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media"
        code, body = await self.delete(f"{path}?order_by=media_length&limit=1", None, self.admin)
        self.assertEqual((code, body), (200, {"deleted_media": [small], "total": 1}))
        code, body = await self.delete(path, None, self.admin)
        self.assertEqual((code, body), (200, {"deleted_media": [image], "total": 1}))
        for media_id in (small, image):
            self.assertEqual(await self.download(media_id), 404)
            self.assertFalse(await self.stored(media_id))
        for thumb in thumbs:
            self.assertIsNone(await self.hs.media_repository.storage.fetch(thumb.storage_key))
        self.assertEqual(await self.hs.media_store.get_thumbnails("", image), [])
        self.assertEqual(await self.download(other), 200)
        self.assertEqual((await self.get(path, self.admin))[1], {"media": [], "total": 0})

    async def test_bad_input(self) -> None:
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media"
        for query in ("?from=-1", "?limit=x", "?limit=0", "?order_by=size", "?dir=x"):
            self.assertMatrixError(await self.get(f"{path}{query}", self.admin), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.delete(f"{path}{query}", None, self.admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/users/{q('@ghost:test')}/media", self.admin),
                               404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/users/{q('@a:remote.example')}/media", self.admin),
                               400, "M_UNKNOWN")
        self.assertMatrixError(await self.delete(f"{ADMIN}/v1/users/{q('@a:remote.example')}/media", None,
                                                 self.admin), 400, "M_UNKNOWN")

    async def test_admins_only(self) -> None:
        media_id = await self.upload(self.alice, b"keep me")
        path = f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media"
        await self.assert_admin_only("GET", path)
        await self.assert_admin_only("DELETE", path)
        self.assertEqual(await self.download(media_id), 200)


class QuarantineTests(MediaAdminTestCase):
    async def test_quarantine_local_media(self) -> None:
        image = await self.upload(self.alice, png(100, 100), "image/png")
        self.assertEqual((await self.thumbnail(image))[0], 200)
        code, body = await self.post(f"{ADMIN}/v1/media/quarantine/test/{image}", {}, self.admin)
        self.assertEqual((code, body), (200, {}))
        # refused to everyone, admins too, on every download path: 404 M_NOT_FOUND
        for token in (self.alice, self.admin):
            self.assertMatrixError(await self.get(f"{DOWNLOAD}/test/{image}", token), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{DOWNLOAD}/test/{image}/name.png", self.alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.thumbnail(image), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{LEGACY_DOWNLOAD}/test/{image}"), 404, "M_NOT_FOUND")
        # the bytes are kept, and the listing says who quarantined it
        self.assertTrue(await self.stored(image))
        body = (await self.get(f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media", self.admin))[1]
        self.assertEqual(body["media"][0]["quarantined_by"], self.admin.user_id)
        code, body = await self.post(f"{ADMIN}/v1/media/unquarantine/test/{image}", {}, self.admin)
        self.assertEqual((code, body), (200, {}))
        self.assertEqual(await self.download(image), 200)
        self.assertEqual([(admin, action, details["media_id"]) for admin, action, details in self.audited],
                         [("@root:test", "quarantine_media", image), ("@root:test", "unquarantine_media", image)])
        self.assertEqual((await self.thumbnail(image))[0], 200)

    async def test_quarantine_cached_remote_media(self) -> None:
        await self.cache_remote("remoteid")
        self.assertEqual(await self.download("remoteid", "remote.example"), 200)
        self.assertEqual((await self.post(f"{ADMIN}/v1/media/quarantine/remote.example/remoteid", {}, self.admin))[0],
                         200)
        self.assertMatrixError(await self.get(f"{DOWNLOAD}/remote.example/remoteid", self.alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.thumbnail("remoteid", "remote.example"), 404, "M_NOT_FOUND")
        await self.post(f"{ADMIN}/v1/media/unquarantine/remote.example/remoteid", {}, self.admin)
        self.assertEqual(await self.download("remoteid", "remote.example"), 200)

    async def test_quarantine_user_media_and_protection(self) -> None:
        a = await self.upload(self.alice, b"a")
        b = await self.upload(self.alice, b"b")
        protected = await self.upload(self.alice, b"sticker")
        mine = await self.upload(self.admin, b"admin's")
        self.assertEqual(await self.post(f"{ADMIN}/v1/media/protect/{protected}", {}, self.admin), (200, {}))
        code, body = await self.post(f"{ADMIN}/v1/user/{q(self.alice.user_id)}/media/quarantine", {}, self.admin)
        self.assertEqual((code, body), (200, {"num_quarantined": 2}))
        self.assertEqual([await self.download(m) for m in (a, b, protected, mine)], [404, 404, 200, 200])
        listed = (await self.get(f"{ADMIN}/v1/users/{q(self.alice.user_id)}/media", self.admin))[1]["media"]
        self.assertEqual({m["media_id"]: m["safe_from_quarantine"] for m in listed},
                         {a: False, b: False, protected: True})
        # a single quarantine by ID is not held back by protection; unprotect works too
        self.assertEqual(await self.post(f"{ADMIN}/v1/media/unprotect/{protected}", {}, self.admin), (200, {}))
        code, body = await self.post(f"{ADMIN}/v1/user/{q(self.alice.user_id)}/media/quarantine", {}, self.admin)
        self.assertEqual(body, {"num_quarantined": 3})
        self.assertEqual(await self.download(protected), 404)
        self.assertMatrixError(await self.post(f"{ADMIN}/v1/media/protect/unknownmedia", {}, self.admin),
                               404, "M_NOT_FOUND")

    async def test_bad_input(self) -> None:
        self.assertMatrixError(await self.post(f"{ADMIN}/v1/media/quarantine/bad%20server/abc", {}, self.admin),
                               400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{ADMIN}/v1/media/quarantine/test/a%2Fb", {}, self.admin),
                               400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.request("POST", f"{ADMIN}/v1/media/quarantine/test/abc", raw=b"[",
                                                  token=self.admin), 400, "M_NOT_JSON")
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/user/{q('@x:remote.example')}/media/quarantine", {}, self.admin),
            400, "M_UNKNOWN",
        )
        # unknown media: nothing to do, and no error (Synapse's answer)
        self.assertEqual(await self.post(f"{ADMIN}/v1/media/quarantine/test/nosuchmedia", {}, self.admin), (200, {}))

    async def test_admins_only(self) -> None:
        media_id = await self.upload(self.alice, b"x")
        await self.assert_admin_only("POST", f"{ADMIN}/v1/media/quarantine/test/{media_id}", {})
        await self.assert_admin_only("POST", f"{ADMIN}/v1/media/unquarantine/test/{media_id}", {})
        await self.assert_admin_only("POST", f"{ADMIN}/v1/user/{q(self.alice.user_id)}/media/quarantine", {})
        await self.assert_admin_only("POST", f"{ADMIN}/v1/media/protect/{media_id}", {})
        await self.assert_admin_only("POST", f"{ADMIN}/v1/media/unprotect/{media_id}", {})
        self.assertEqual(await self.download(media_id), 200)


class RoomMediaTests(MediaAdminTestCase):
    async def test_list_and_quarantine_a_rooms_media(self) -> None:
        room = await self.create_room(self.alice, preset="public_chat")
        other_room = await self.create_room(self.alice, preset="public_chat")
        image = await self.upload(self.alice, b"an image", "image/x-thing")
        thumb = await self.upload(self.alice, b"its thumbnail", "image/x-thing")
        avatar = await self.upload(self.alice, b"room avatar", "image/x-thing")
        protected = await self.upload(self.alice, b"a sticker", "image/x-thing")
        elsewhere = await self.upload(self.alice, b"in the other room")
        await self.cache_remote("remoteid")
        C = "/_matrix/client/v3"
        for i, content in enumerate([
            {"msgtype": "m.image", "body": "pic", "url": f"mxc://test/{image}",
             "info": {"thumbnail_url": f"mxc://test/{thumb}"}},
            {"msgtype": "m.file", "body": "remote", "url": "mxc://remote.example/remoteid"},
            {"msgtype": "m.image", "body": "sticker", "url": f"mxc://test/{protected}"},
        ]):
            code, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/t{i}", content, self.alice)
            self.assertEqual(code, 200, body)
        code, body = await self.put(f"{C}/rooms/{q(room)}/state/m.room.avatar/", {"url": f"mxc://test/{avatar}"}, self.alice)
        self.assertEqual(code, 200, body)
        await self.put(f"{C}/rooms/{q(other_room)}/send/m.room.message/o", {"msgtype": "m.file", "body": "x",
                                                                           "url": f"mxc://test/{elsewhere}"}, self.alice)
        code, listed = await self.get(f"{ADMIN}/v1/room/{q(room)}/media", self.admin)
        self.assertEqual(code, 200, listed)
        self.assertEqual(sorted(listed["local"]), sorted(f"mxc://test/{m}" for m in (image, thumb, avatar, protected)))
        self.assertEqual(listed["remote"], ["mxc://remote.example/remoteid"])
        self.assertEqual(await self.post(f"{ADMIN}/v1/media/protect/{protected}", {}, self.admin), (200, {}))
        code, body = await self.post(f"{ADMIN}/v1/room/{q(room)}/media/quarantine", {}, self.admin)
        self.assertEqual((code, body), (200, {"num_quarantined": 4}))  # three local, one remote copy
        self.assertEqual([await self.download(m) for m in (image, thumb, avatar, protected, elsewhere)],
                         [404, 404, 404, 200, 200])
        self.assertEqual(await self.download("remoteid", "remote.example"), 404)
        # Synapse's older path does the same
        code, body = await self.post(f"{ADMIN}/v1/quarantine_media/{q(other_room)}", {}, self.admin)
        self.assertEqual((code, body), (200, {"num_quarantined": 1}))
        self.assertEqual(await self.download(elsewhere), 404)

    async def test_unknown_room_and_admins_only(self) -> None:
        self.assertMatrixError(await self.get(f"{ADMIN}/v1/room/{q('!nope:test')}/media", self.admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(
            await self.post(f"{ADMIN}/v1/room/{q('!nope:test')}/media/quarantine", {}, self.admin), 404, "M_NOT_FOUND"
        )
        room = await self.create_room(self.alice, preset="public_chat")
        await self.assert_admin_only("GET", f"{ADMIN}/v1/room/{q(room)}/media")
        await self.assert_admin_only("POST", f"{ADMIN}/v1/room/{q(room)}/media/quarantine", {})


class DeleteMediaTests(MediaAdminTestCase):
    async def test_delete_one(self) -> None:
        image = await self.upload(self.alice, png(200, 200), "image/png")
        thumbs = await self.hs.media_store.get_thumbnails("", image)
        self.assertTrue(thumbs)
        code, body = await self.delete(f"{ADMIN}/v1/media/test/{image}", None, self.admin)
        self.assertEqual((code, body), (200, {"deleted_media": [image], "total": 1}))
        self.assertEqual(await self.download(image), 404)
        self.assertFalse(await self.stored(image))
        for thumb in thumbs:
            self.assertIsNone(await self.hs.media_repository.storage.fetch(thumb.storage_key))
        self.assertMatrixError(await self.delete(f"{ADMIN}/v1/media/test/{image}", None, self.admin),
                               404, "M_NOT_FOUND")

    async def test_delete_one_refusals(self) -> None:
        await self.cache_remote("remoteid")
        self.assertMatrixError(await self.delete(f"{ADMIN}/v1/media/remote.example/remoteid", None, self.admin),
                               400, "M_UNKNOWN")
        self.assertEqual(await self.download("remoteid", "remote.example"), 200)
        self.assertMatrixError(await self.delete(f"{ADMIN}/v1/media/test/a%2Fb", None, self.admin),
                               400, "M_INVALID_PARAM")
        media_id = await self.upload(self.alice, b"x")
        await self.assert_admin_only("DELETE", f"{ADMIN}/v1/media/test/{media_id}")
        self.assertEqual(await self.download(media_id), 200)

    async def test_delete_by_date_and_size(self) -> None:
        old_small = await self.upload(self.alice, b"x")
        old_big = await self.upload(self.alice, b"x" * 100)
        avatar = await self.upload(self.alice, b"y" * 100)
        await self.set_profile(self.alice, avatar_url=f"mxc://test/{avatar}")
        room = await self.create_room(self.alice)
        room_avatar = await self.upload(self.alice, b"z" * 100)
        await self.set_state(self.alice, room, "m.room.avatar", {"url": f"mxc://test/{room_avatar}"})
        protected = await self.upload(self.alice, b"p" * 100)
        await self.post(f"{ADMIN}/v1/media/protect/{protected}", {}, self.admin)
        cutoff = int(self.hs.clock.seconds() * 1000) + 1
        await self.wait_a_millisecond()
        new = await self.upload(self.alice, b"n" * 100)
        code, body = await self.post(f"{ADMIN}/v1/media/delete?before_ts={cutoff}&size_gt=50", {}, self.admin)
        self.assertEqual((code, body), (200, {"deleted_media": [old_big], "total": 1}))
        self.assertFalse(await self.stored(old_big))
        self.assertEqual([await self.download(m) for m in (old_small, avatar, room_avatar, protected, new)],
                         [200] * 5)
        # downloads count as use: media downloaded since the cut-off stays
        code, body = await self.post(f"{ADMIN}/v1/media/delete?before_ts={cutoff}", {}, self.admin)
        self.assertEqual(body, {"deleted_media": [], "total": 0})
        later = int(self.hs.clock.seconds() * 1000) + 1
        await self.wait_a_millisecond()
        code, body = await self.post(f"{ADMIN}/v1/media/delete?before_ts={later}&keep_profiles=false", {},
                                     self.admin)
        self.assertEqual(sorted(body["deleted_media"]), sorted([old_small, avatar, room_avatar, new]))
        self.assertEqual(await self.download(protected), 200)
        # the deprecated form with the server name
        self.assertMatrixError(await self.post(f"{ADMIN}/v1/media/remote.example/delete?before_ts=1", {}, self.admin),
                               400, "M_UNKNOWN")
        code, body = await self.post(f"{ADMIN}/v1/media/test/delete?before_ts={later}", {}, self.admin)
        self.assertEqual((code, body), (200, {"deleted_media": [], "total": 0}))

    async def wait_a_millisecond(self) -> None:
        await deferLater(reactor, 0.005)

    async def test_delete_by_date_bad_input(self) -> None:
        media_id = await self.upload(self.alice, b"x")
        path = f"{ADMIN}/v1/media/delete"
        self.assertMatrixError(await self.post(path, {}, self.admin), 400, "M_MISSING_PARAM")
        for query in ("?before_ts=x", "?before_ts=-1", "?before_ts=1&size_gt=-1", "?before_ts=1&keep_profiles=x"):
            self.assertMatrixError(await self.post(f"{path}{query}", {}, self.admin), 400, "M_INVALID_PARAM")
        await self.assert_admin_only("POST", f"{path}?before_ts=99999999999999", {})
        self.assertEqual(await self.download(media_id), 200)
