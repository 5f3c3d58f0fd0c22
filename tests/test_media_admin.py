"""Media retention: ``python -m mxserver purge-remote-media`` on a server's data, with progress."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import yaml
from twisted.internet.threads import deferToThread

from mxserver.media.storage import remote_key
from mxserver.storage.media import RemoteMedia
from tests.harness import HomeserverTestCase

DAY_MS = 86_400_000


class PurgeRemoteMediaCommandTests(HomeserverTestCase):
    async def cache(self, media_id: str, data: bytes, last_access_ts: int) -> None:
        repo = self.hs.media_repository
        fs_id = f"fs{media_id}"
        await repo.storage.store(remote_key("remote.example", fs_id), data)
        await repo.store.store_remote_media(
            RemoteMedia("remote.example", media_id, fs_id, "text/plain", None, len(data), last_access_ts,
                        last_access_ts, False, None, None, None)
        )

    def cli(self, *args: str) -> Any:
        config = {"server_name": self.server_name, "data_dir": self.data_dir}
        if self.backend == "postgres":
            config["database"] = {"backend": "postgres", "dsn": self.pg_dsn}
        path = os.path.join(self.data_dir, "hs.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return deferToThread(
            subprocess.run, [sys.executable, "-m", "mxserver", "purge-remote-media", "--config", path, *args],
            capture_output=True, text=True, timeout=120,
        )

    async def test_purge_older_than_days(self) -> None:
        now = int(self.hs.clock.seconds() * 1000)
        await self.cache("old1", b"a" * 10, now - 40 * DAY_MS)
        await self.cache("old2", b"b" * 20, now - 31 * DAY_MS)
        await self.cache("recent", b"c" * 30, now - 5 * DAY_MS)
        proc = await self.cli("--days", "30")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("purged 2/2 remote files (30 bytes)", proc.stdout)
        self.assertIn("done: 2 remote files", proc.stdout)
        store, storage = self.hs.media_store, self.hs.media_repository.storage
        self.assertIsNone(await store.get_remote_media("remote.example", "old1"))
        self.assertIsNone(await storage.fetch(remote_key("remote.example", "fsold1")))
        self.assertIsNotNone(await store.get_remote_media("remote.example", "recent"))
        self.assertEqual(await storage.fetch(remote_key("remote.example", "fsrecent")), b"c" * 30)
        # Local media is never touched by a remote-cache purge.
        alice = await self.register("alice")
        code, body = await self.request("POST", "/_matrix/media/v3/upload", raw=b"mine", token=alice)
        proc = await self.cli("--days", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        code, data = await self.get(f"/_matrix/client/v1/media/download/{body['content_uri'][6:]}", alice)
        self.assertEqual((code, data), (200, b"mine"))
        bad = await self.cli("--days", "-1")
        self.assertNotEqual(bad.returncode, 0)
