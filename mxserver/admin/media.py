"""Managing media as a server admin (Synapse's media admin API shapes): users' and rooms' media, quarantine,
protection, deletion.

Quarantine works on local media and on the cached copies of remote media (a remote file not
cached here has nothing to quarantine); the repository then serves it to nobody. Deletion is of
local media only and goes through :meth:`MediaRepository.delete_local_media` (rows, stored
files and thumbnails). :meth:`MediaStore.quarantine_media` takes lists of media, so quarantining
a room's media can use it too.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from mxserver.accounts.auth import Requester
from mxserver.admin.users import AdminUsers
from mxserver.errors import MatrixError, not_found
from mxserver.media.repository import MediaRepository, check_media_id
from mxserver.storage.media import MEDIA_ORDER_COLUMNS, LocalMedia

#: the ``order_by`` values of a user's media list
MEDIA_ORDERS = frozenset(MEDIA_ORDER_COLUMNS)


@attrs.frozen
class MediaPage:
    """Which of a user's media to list or delete: Synapse's paging and order parameters."""

    offset: int = 0
    limit: int = 100
    #: default (neither order_by nor dir given): the newest first
    order_by: str = "created_ts"
    backwards: bool = True


def media_json(media: LocalMedia) -> dict[str, Any]:
    """A local media item in the admin API's shape."""
    return {
        "media_id": media.media_id,
        "media_type": media.content_type,
        "media_length": media.size,
        "upload_name": media.upload_name,
        "created_ts": media.created_ts,
        "last_access_ts": media.last_access_ts,
        "quarantined_by": media.quarantined_by,
        "safe_from_quarantine": media.safe_from_quarantine,
    }


class Rooms(Protocol):
    async def get_room(self, room_id: str) -> Any: ...


class AdminMedia:
    """What the media admin API does (see the module docstring)."""

    def __init__(self, server_name: str, repository: MediaRepository, users: AdminUsers, rooms: Rooms) -> None:
        self._server_name = server_name
        self._repo = repository
        self._store = repository.store
        self._users = users
        self._rooms = rooms

    # -- a room's media -----------------------------------------------------------------------

    async def room_media(self, room_id: str) -> dict[str, list[str]]:
        """``GET /v1/room/{roomId}/media``: the ``mxc://`` URIs in the room's events, ``local``
        (this server's) and ``remote``; 404 for a room unknown here."""
        uris = await self._store.mxc_uris_in_room(await self._room_nid(room_id))
        prefix = f"mxc://{self._server_name}/"
        return {"local": [u for u in uris if u.startswith(prefix)], "remote": [u for u in uris if not u.startswith(prefix)]}

    async def quarantine_room_media(self, requester: Requester, room_id: str) -> int:
        """``POST /v1/room/{roomId}/media/quarantine``: every media item the room's events name,
        local and cached remote (but protected local media); how many were quarantined."""
        uris = await self._store.mxc_uris_in_room(await self._room_nid(room_id))
        local: list[str] = []
        remote: list[tuple[str, str]] = []
        for uri in uris:
            origin, _, media_id = uri[len("mxc://") :].partition("/")
            if not origin or not media_id or "/" in media_id:
                continue  # not a media URI this server could have stored
            if origin == self._server_name:
                local.append(media_id)
            else:
                remote.append((origin, media_id))
        return await self._store.quarantine_media(local, remote, requester.user_id, skip_protected=True)

    async def _room_nid(self, room_id: str) -> int:
        room = await self._rooms.get_room(room_id)
        if room is None:
            raise not_found("Room not found")
        return int(room.room_nid)

    # -- a user's media -----------------------------------------------------------------------

    async def list_user_media(self, user_id: str, page: MediaPage) -> dict[str, Any]:
        """``GET /v1/users/{userId}/media``: a page, ``total``, and ``next_token`` if there are more."""
        await self._users.existing(user_id)
        media, total = await self._store.list_user_media(
            user_id, offset=page.offset, limit=page.limit, order_by=page.order_by, backwards=page.backwards
        )
        body: dict[str, Any] = {"media": [media_json(m) for m in media], "total": total}
        if page.offset + len(media) < total:
            body["next_token"] = page.offset + len(media)
        return body

    async def delete_user_media(self, user_id: str, page: MediaPage) -> dict[str, Any]:
        """``DELETE /v1/users/{userId}/media``: the page that listing would show, deleted."""
        await self._users.existing(user_id)
        media, _ = await self._store.list_user_media(
            user_id, offset=page.offset, limit=page.limit, order_by=page.order_by, backwards=page.backwards
        )
        deleted = await self._repo.delete_local_media([m.media_id for m in media])
        return {"deleted_media": deleted, "total": len(deleted)}

    async def quarantine_user_media(self, requester: Requester, user_id: str) -> int:
        """``POST /v1/user/{userId}/media/quarantine``: every local media the user uploaded
        (but protected media); how many were quarantined."""
        self._users.check_local(user_id)
        media_ids = await self._store.local_media_ids_of_user(user_id)
        return await self._store.quarantine_media(media_ids, [], requester.user_id, skip_protected=True)

    # -- one media item ---------------------------------------------------------------------

    async def set_quarantined(self, requester: Requester, server_name: str, media_id: str, quarantine: bool) -> None:
        """``POST /v1/media/(un)quarantine/{serverName}/{mediaId}``: media not stored here is ignored."""
        check_media_id(server_name, media_id)
        by = requester.user_id if quarantine else None
        if server_name == self._server_name:
            await self._store.quarantine_media([media_id], [], by)
        else:
            await self._store.quarantine_media([], [(server_name, media_id)], by)

    async def set_protected(self, media_id: str, protected: bool) -> None:
        """``POST /v1/media/(un)protect/{mediaId}`` (local media): 404 if unknown."""
        check_media_id(self._server_name, media_id)
        if not await self._store.set_protected(media_id, protected):
            raise not_found("Unknown media")

    async def delete_media(self, server_name: str, media_id: str) -> dict[str, Any]:
        """``DELETE /v1/media/{serverName}/{mediaId}``: local media only; 404 if unknown."""
        check_media_id(server_name, media_id)
        self._check_local_server(server_name)
        deleted = await self._repo.delete_local_media([media_id])
        if not deleted:
            raise not_found("Unknown media")
        return {"deleted_media": deleted, "total": len(deleted)}

    async def delete_old_media(
        self, before_ts: int, size_gt: int, keep_profiles: bool, server_name: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/media/delete``: local media last used before ``before_ts`` (ms) and larger than
        ``size_gt`` bytes, except protected media and (``keep_profiles``) current avatars."""
        if server_name is not None:
            self._check_local_server(server_name)
        prefix = f"mxc://{self._server_name}/" if keep_profiles else None
        media_ids = await self._store.local_media_to_delete(before_ts, size_gt, prefix)
        deleted = await self._repo.delete_local_media(media_ids)
        return {"deleted_media": deleted, "total": len(deleted)}

    def _check_local_server(self, server_name: str) -> None:
        if server_name != self._server_name:
            raise MatrixError(400, "M_UNKNOWN", "Can only delete local media")
