"""SQL for the media repository: tables ``local_media``, ``remote_media`` and
``media_thumbnails`` (schema 0016). Rows describe media; the bytes are kept by
the media storage module under the keys these rows name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

#: origin value of local media in ``media_thumbnails``
LOCAL = ""


@attrs.frozen
class LocalMedia:
    media_id: str
    user_id: str
    content_type: str | None
    upload_name: str | None
    size: int | None
    created_ts: int
    uploaded_ts: int | None
    unused_expires_ts: int | None
    authenticated: bool
    width: int | None
    height: int | None
    animated: bool | None

    @property
    def pending(self) -> bool:
        """Created by /create and not uploaded yet."""
        return self.uploaded_ts is None


@attrs.frozen
class RemoteMedia:
    origin: str
    media_id: str
    filesystem_id: str
    content_type: str | None
    upload_name: str | None
    size: int
    fetched_ts: int
    last_access_ts: int
    authenticated: bool
    width: int | None
    height: int | None
    animated: bool | None


@attrs.frozen
class Thumbnail:
    origin: str
    media_id: str
    width: int
    height: int
    method: str
    animated: bool
    content_type: str
    size: int
    storage_key: str


_LOCAL_COLS = (
    "media_id, user_id, content_type, upload_name, size, created_ts, uploaded_ts, unused_expires_ts,"
    " authenticated, width, height, animated"
)
_REMOTE_COLS = (
    "origin, media_id, filesystem_id, content_type, upload_name, size, fetched_ts, last_access_ts,"
    " authenticated, width, height, animated"
)
_THUMB_COLS = "origin, media_id, width, height, method, animated, content_type, size, storage_key"


def _opt_bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


def _local(row: Sequence[Any]) -> LocalMedia:
    return LocalMedia(*row[:8], bool(row[8]), row[9], row[10], _opt_bool(row[11]))  # type: ignore[arg-type,call-arg]


def _remote(row: Sequence[Any]) -> RemoteMedia:
    return RemoteMedia(*row[:8], bool(row[8]), row[9], row[10], _opt_bool(row[11]))  # type: ignore[arg-type,call-arg]


def _thumb(row: Sequence[Any]) -> Thumbnail:
    return Thumbnail(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8])


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- local media ----------------------------------------------------------------

    def get_local_media(self, media_id: str) -> Deferred[LocalMedia | None]:
        def txn(t: Txn) -> LocalMedia | None:
            row = t.query_one(f"SELECT {_LOCAL_COLS} FROM local_media WHERE media_id = ?", (media_id,))
            return _local(row) if row else None

        return self.db.run_read("get_local_media", txn)

    def store_local_media(self, media: LocalMedia) -> Deferred[None]:
        """A complete upload (POST /upload) in one row."""
        return self.db.execute(
            "store_local_media",
            f"INSERT INTO local_media ({_LOCAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            *attrs.astuple(media),
        )

    def reserve_local_media(
        self, media_id: str, user_id: str, now_ms: int, expires_ts: int, max_pending: int, authenticated: bool
    ) -> Deferred[int | None]:
        """Reserve ``media_id`` for a later upload by ``user_id`` (POST /create).

        Answers None when reserved, else the earliest expiry among the user's
        ``max_pending`` unexpired reservations (the limit is reached). Count and
        insert share one transaction so concurrent creates cannot both pass.
        """

        def txn(t: Txn) -> int | None:
            row = t.query_one(
                "SELECT COUNT(*), MIN(unused_expires_ts) FROM local_media"
                " WHERE user_id = ? AND uploaded_ts IS NULL AND unused_expires_ts > ?",
                (user_id, now_ms),
            )
            if row is not None and row[0] >= max_pending:
                return int(row[1])
            t.execute(
                f"INSERT INTO local_media ({_LOCAL_COLS}) VALUES (?, ?, NULL, NULL, NULL, ?, NULL, ?, ?, NULL, NULL, NULL)",
                (media_id, user_id, now_ms, expires_ts, authenticated),
            )
            return None

        return self.db.run_interaction("reserve_local_media", txn)

    def complete_upload(
        self,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        size: int,
        now_ms: int,
        width: int | None,
        height: int | None,
        animated: bool | None,
    ) -> Deferred[bool]:
        """Fill in a reservation; False if it was already uploaded meanwhile."""

        def txn(t: Txn) -> bool:
            t.execute(
                "UPDATE local_media SET content_type = ?, upload_name = ?, size = ?, uploaded_ts = ?,"
                " width = ?, height = ?, animated = ? WHERE media_id = ? AND uploaded_ts IS NULL",
                (content_type, upload_name, size, now_ms, width, height, animated, media_id),
            )
            return t.rowcount > 0

        return self.db.run_interaction("complete_upload", txn)

    def user_upload_total(self, user_id: str) -> Deferred[int]:
        """Bytes ``user_id`` has uploaded (for the optional quota)."""

        def txn(t: Txn) -> int:
            row = t.query_one("SELECT COALESCE(SUM(size), 0) FROM local_media WHERE user_id = ?", (user_id,))
            return int(row[0]) if row else 0

        return self.db.run_read("user_upload_total", txn)

    def delete_expired_reservations(self, now_ms: int) -> Deferred[int]:
        def txn(t: Txn) -> int:
            t.execute(
                "DELETE FROM local_media WHERE uploaded_ts IS NULL AND unused_expires_ts <= ?", (now_ms,)
            )
            return t.rowcount

        return self.db.run_interaction("delete_expired_reservations", txn)

    # -- remote media ------------------------------------------------------------------

    def get_remote_media(self, origin: str, media_id: str) -> Deferred[RemoteMedia | None]:
        def txn(t: Txn) -> RemoteMedia | None:
            row = t.query_one(
                f"SELECT {_REMOTE_COLS} FROM remote_media WHERE origin = ? AND media_id = ?", (origin, media_id)
            )
            return _remote(row) if row else None

        return self.db.run_read("get_remote_media", txn)

    def store_remote_media(self, media: RemoteMedia) -> Deferred[None]:
        """Record a fetched remote file; a newer fetch replaces an older row."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM remote_media WHERE origin = ? AND media_id = ?", (media.origin, media.media_id))
            t.execute(
                f"INSERT INTO remote_media ({_REMOTE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(media),
            )

        return self.db.run_interaction("store_remote_media", txn)

    def touch_remote_media(self, origin: str, media_id: str, now_ms: int) -> Deferred[None]:
        return self.db.execute(
            "touch_remote_media",
            "UPDATE remote_media SET last_access_ts = ? WHERE origin = ? AND media_id = ?",
            now_ms,
            origin,
            media_id,
        )

    def remote_media_older_than(self, before_ts: int) -> Deferred[list[RemoteMedia]]:
        """Cached remote media not accessed since ``before_ts`` (retention)."""

        def txn(t: Txn) -> list[RemoteMedia]:
            rows = t.query(
                f"SELECT {_REMOTE_COLS} FROM remote_media WHERE last_access_ts < ? ORDER BY last_access_ts",
                (before_ts,),
            )
            return [_remote(r) for r in rows]

        return self.db.run_read("remote_media_older_than", txn)

    def delete_remote_media(self, origin: str, media_id: str) -> Deferred[list[str]]:
        """Forget a cached remote file and its thumbnails; the thumbnails' storage keys."""

        def txn(t: Txn) -> list[str]:
            keys = [r[0] for r in t.query(
                "SELECT storage_key FROM media_thumbnails WHERE origin = ? AND media_id = ?", (origin, media_id)
            )]
            t.execute("DELETE FROM media_thumbnails WHERE origin = ? AND media_id = ?", (origin, media_id))
            t.execute("DELETE FROM remote_media WHERE origin = ? AND media_id = ?", (origin, media_id))
            return keys

        return self.db.run_interaction("delete_remote_media", txn)

    def delete_fetched_thumbnails(self) -> Deferred[list[str]]:
        """Forget thumbnails fetched from origins for uncached originals; their storage keys."""

        def txn(t: Txn) -> list[str]:
            where = "origin <> '' AND method LIKE 'fetched-%'"
            keys = [r[0] for r in t.query(f"SELECT storage_key FROM media_thumbnails WHERE {where}")]
            t.execute(f"DELETE FROM media_thumbnails WHERE {where}")
            return keys

        return self.db.run_interaction("delete_fetched_thumbnails", txn)

    # -- thumbnails -----------------------------------------------------------------------

    def get_thumbnails(self, origin: str, media_id: str) -> Deferred[list[Thumbnail]]:
        def txn(t: Txn) -> list[Thumbnail]:
            rows = t.query(
                f"SELECT {_THUMB_COLS} FROM media_thumbnails WHERE origin = ? AND media_id = ?", (origin, media_id)
            )
            return [_thumb(r) for r in rows]

        return self.db.run_read("get_thumbnails", txn)

    def store_thumbnails(self, thumbs: Sequence[Thumbnail]) -> Deferred[None]:
        """Record thumbnails (a thumbnail of the same geometry is replaced)."""

        def txn(t: Txn) -> None:
            for th in thumbs:
                t.execute(
                    "DELETE FROM media_thumbnails WHERE origin = ? AND media_id = ? AND width = ? AND height = ?"
                    " AND method = ? AND animated = ?",
                    (th.origin, th.media_id, th.width, th.height, th.method, th.animated),
                )
                t.execute(
                    f"INSERT INTO media_thumbnails ({_THUMB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    attrs.astuple(th),
                )

        return self.db.run_interaction("store_thumbnails", txn)
