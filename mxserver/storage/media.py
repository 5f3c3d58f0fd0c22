"""SQL for the media repository: tables ``local_media``, ``remote_media`` and
``media_thumbnails`` (schema 0016; quarantine and local access times, schema 0030). Rows
describe media; the bytes are kept by the media storage module under the keys these rows name."""

from __future__ import annotations

import json
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
    #: the admin who quarantined it (then it is served to nobody), or None
    quarantined_by: str | None = None
    #: skipped by bulk quarantines and deletions by date (the admin API's "protect")
    safe_from_quarantine: bool = False
    #: last download (coarse), or None
    last_access_ts: int | None = None

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
    #: the admin who quarantined it (then it is served to nobody), or None
    quarantined_by: str | None = None


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
#: what is read of a row: the written columns, then those the admin API sets
_LOCAL_READ = f"{_LOCAL_COLS}, quarantined_by, safe_from_quarantine, last_access_ts"
_REMOTE_READ = f"{_REMOTE_COLS}, quarantined_by"
#: the admin API's ``order_by`` values for a user's media and the column each sorts on
MEDIA_ORDER_COLUMNS = {
    "media_id": "media_id",
    "upload_name": "upload_name",
    "created_ts": "created_ts",
    "last_access_ts": "last_access_ts",
    "media_length": "size",
    "media_type": "content_type",
    "quarantined_by": "quarantined_by",
    "safe_from_quarantine": "safe_from_quarantine",
}
#: IDs per ``IN (...)`` list (SQLite allows 999 parameters at most)
_CHUNK = 500


def _opt_bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


def _local(row: Sequence[Any]) -> LocalMedia:
    return LocalMedia(  # type: ignore[call-arg]
        *row[:8], bool(row[8]), row[9], row[10], _opt_bool(row[11]), row[12], bool(row[13]), row[14]  # type: ignore[arg-type]
    )


def _remote(row: Sequence[Any]) -> RemoteMedia:
    return RemoteMedia(*row[:8], bool(row[8]), row[9], row[10], _opt_bool(row[11]), row[12])  # type: ignore[arg-type,call-arg]


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _collect_mxc(value: Any, found: dict[str, None]) -> None:
    if isinstance(value, str):
        if value.startswith("mxc://"):
            found[value] = None
    elif isinstance(value, dict):
        for v in value.values():
            _collect_mxc(v, found)
    elif isinstance(value, list):
        for v in value:
            _collect_mxc(v, found)


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _thumb(row: Sequence[Any]) -> Thumbnail:
    return Thumbnail(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8])


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- local media ----------------------------------------------------------------

    def get_local_media(self, media_id: str) -> Deferred[LocalMedia | None]:
        def txn(t: Txn) -> LocalMedia | None:
            row = t.query_one(f"SELECT {_LOCAL_READ} FROM local_media WHERE media_id = ?", (media_id,))
            return _local(row) if row else None

        return self.db.run_read("get_local_media", txn)

    def store_local_media(self, media: LocalMedia) -> Deferred[None]:
        """A complete upload (POST /upload) in one row."""
        return self.db.execute(
            "store_local_media",
            f"INSERT INTO local_media ({_LOCAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            *attrs.astuple(media)[:12],
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
                f"SELECT {_REMOTE_READ} FROM remote_media WHERE origin = ? AND media_id = ?", (origin, media_id)
            )
            return _remote(row) if row else None

        return self.db.run_read("get_remote_media", txn)

    def store_remote_media(self, media: RemoteMedia) -> Deferred[None]:
        """Record a fetched remote file; a newer fetch replaces an older row."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM remote_media WHERE origin = ? AND media_id = ?", (media.origin, media.media_id))
            t.execute(
                f"INSERT INTO remote_media ({_REMOTE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(media)[:12],
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
                f"SELECT {_REMOTE_READ} FROM remote_media WHERE last_access_ts < ? ORDER BY last_access_ts",
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

    # -- the admin API: access, quarantine, listing and deleting ------------------------------

    def touch_local_media(self, media_id: str, now_ms: int) -> Deferred[None]:
        return self.db.execute(
            "touch_local_media", "UPDATE local_media SET last_access_ts = ? WHERE media_id = ?", now_ms, media_id
        )

    def mxc_uris_in_room(self, room_nid: int) -> Deferred[list[str]]:
        """Every ``mxc://`` URI in the room's stored events (any key, any event type: messages,
        stickers, avatars, thumbnails, encrypted files), in the order first met: what quarantining
        a room's media quarantines. An admin action: it reads every event of the room that holds
        one (the text test narrows it in SQL)."""

        def txn(t: Txn) -> list[str]:
            found: dict[str, None] = {}
            for (raw,) in t.query(
                "SELECT json FROM events WHERE room_nid = ? AND json LIKE ? ORDER BY event_nid",
                (room_nid, "%mxc://%"),
            ):
                _collect_mxc(json.loads(raw), found)
            return list(found)

        return self.db.run_read("room_media", txn)

    def quarantine_media(
        self,
        local_ids: Sequence[str],
        remote: Sequence[tuple[str, str]],
        quarantined_by: str | None,
        *,
        skip_protected: bool = False,
    ) -> Deferred[int]:
        """Quarantine (``quarantined_by`` an admin's user ID) or release (None) local media by ID
        and cached remote media by ``(origin, media_id)``, in one transaction; how many rows
        changed. ``skip_protected``: local media marked safe is left alone (bulk quarantines: a
        user's media, a room's media). Media not stored here is ignored."""

        def txn(t: Txn) -> int:
            changed = 0
            protected = " AND safe_from_quarantine = ?" if skip_protected else ""
            for chunk in _chunks(sorted(set(local_ids))):
                t.execute(
                    f"UPDATE local_media SET quarantined_by = ? WHERE media_id IN ({_placeholders(len(chunk))})"
                    f"{protected}",
                    (quarantined_by, *chunk, *((False,) if skip_protected else ())),
                )
                changed += t.rowcount
            for origin, media_id in sorted(set(remote)):
                t.execute(
                    "UPDATE remote_media SET quarantined_by = ? WHERE origin = ? AND media_id = ?",
                    (quarantined_by, origin, media_id),
                )
                changed += t.rowcount
            return changed

        return self.db.run_interaction("quarantine_media", txn)

    def local_media_ids_of_user(self, user_id: str) -> Deferred[list[str]]:
        """Every local media ID ``user_id`` uploaded (or reserved)."""

        def txn(t: Txn) -> list[str]:
            return [r[0] for r in t.query("SELECT media_id FROM local_media WHERE user_id = ?", (user_id,))]

        return self.db.run_read("local_media_ids_of_user", txn)

    def set_protected(self, media_id: str, protected: bool) -> Deferred[bool]:
        """Mark local media safe from quarantine (or not); False if there is no such media."""

        def txn(t: Txn) -> bool:
            t.execute("UPDATE local_media SET safe_from_quarantine = ? WHERE media_id = ?", (protected, media_id))
            return t.rowcount > 0

        return self.db.run_interaction("set_media_protected", txn)

    def list_user_media(
        self, user_id: str, *, offset: int, limit: int, order_by: str, backwards: bool
    ) -> Deferred[tuple[list[LocalMedia], int]]:
        """A page of the local media ``user_id`` uploaded and how many in all (reservations whose
        bytes never came are not listed). ``order_by``: a key of :data:`MEDIA_ORDER_COLUMNS`;
        ties go by media ID."""
        column = MEDIA_ORDER_COLUMNS[order_by]
        direction = "DESC" if backwards else "ASC"
        # NULLs first going forwards on both backends (SQLite and Postgres disagree by default).
        order = (
            f"ORDER BY CASE WHEN {column} IS NULL THEN 0 ELSE 1 END {direction}, {column} {direction}, media_id ASC"
        )
        where = "WHERE user_id = ? AND uploaded_ts IS NOT NULL"

        def txn(t: Txn) -> tuple[list[LocalMedia], int]:
            count = t.query_one(f"SELECT COUNT(*) FROM local_media {where}", (user_id,))
            rows = t.query(f"SELECT {_LOCAL_READ} FROM local_media {where} {order} LIMIT ? OFFSET ?",
                           (user_id, limit, offset))
            return [_local(r) for r in rows], int(count[0]) if count else 0

        return self.db.run_read("list_user_media", txn)

    def local_media_to_delete(
        self, before_ts: int, size_gt: int, keep_prefix: str | None
    ) -> Deferred[list[str]]:
        """Local media last used (downloaded, else uploaded) before ``before_ts`` and larger than
        ``size_gt`` bytes, not protected. ``keep_prefix`` (``mxc://<server>/``): media in use as a
        user's or a room's current avatar is kept."""

        def txn(t: Txn) -> list[str]:
            ids = [
                r[0]
                for r in t.query(
                    "SELECT media_id FROM local_media WHERE uploaded_ts IS NOT NULL"
                    " AND COALESCE(last_access_ts, created_ts) < ? AND size > ? AND safe_from_quarantine = ?"
                    " ORDER BY media_id",
                    (before_ts, size_gt, False),
                )
            ]
            if keep_prefix is None or not ids:
                return ids
            avatars = self._avatars_txn(t, keep_prefix)
            return [m for m in ids if m not in avatars]

        return self.db.run_read("local_media_to_delete", txn)

    @staticmethod
    def _avatars_txn(t: Txn, prefix: str) -> set[str]:
        """Media IDs under ``prefix`` that are a user's avatar or a room's current avatar."""
        urls = [r[0] for r in t.query("SELECT avatar_url FROM profiles WHERE avatar_url IS NOT NULL")]
        for (raw,) in t.query(
            "SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id"
            " WHERE c.type = 'm.room.avatar' AND c.state_key = ''"
        ):
            try:
                url = json.loads(raw).get("content", {}).get("url")
            except (ValueError, AttributeError):
                continue
            if isinstance(url, str):
                urls.append(url)
        return {u[len(prefix) :] for u in urls if isinstance(u, str) and u.startswith(prefix)}

    def delete_local_media(self, media_ids: Sequence[str]) -> Deferred[dict[str, list[str]]]:
        """Forget local media and its thumbnails: for each media ID that existed, its thumbnails'
        storage keys (the caller deletes the stored files)."""

        def txn(t: Txn) -> dict[str, list[str]]:
            deleted: dict[str, list[str]] = {}
            for media_id in media_ids:
                t.execute("DELETE FROM local_media WHERE media_id = ?", (media_id,))
                if t.rowcount == 0:
                    continue
                deleted[media_id] = [
                    r[0]
                    for r in t.query(
                        "SELECT storage_key FROM media_thumbnails WHERE origin = ? AND media_id = ?", (LOCAL, media_id)
                    )
                ]
                t.execute("DELETE FROM media_thumbnails WHERE origin = ? AND media_id = ?", (LOCAL, media_id))
            return deleted

        return self.db.run_interaction("delete_local_media", txn)
