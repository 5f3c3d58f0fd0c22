"""The media admin API in Synapse's shapes (``docs/admin_api/media_admin_api.md`` and the user
media part of ``user_admin_api.md``). Server admins only; every change is audited.

Quarantining a room's media (``/room/{roomId}/media/quarantine``) and listing a room's media
belong with the rooms admin API.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.admin.media import MEDIA_ORDERS, AdminMedia, MediaPage
from mxserver.api.admin import AdminGate
from mxserver.api.http import JsonDict, json_body, query_bool, query_int, query_str, route
from mxserver.errors import invalid_param, missing_param

V1 = "/_synapse/admin/v1"


def _page(request: IRequest) -> MediaPage:
    """``from``, ``limit``, ``order_by`` and ``dir``; with neither of the last two, the newest first."""
    order_by = query_str(request, "order_by")
    direction = query_str(request, "dir")
    if order_by is not None and order_by not in MEDIA_ORDERS:
        raise invalid_param(f"Query parameter 'order_by' must be one of {', '.join(sorted(MEDIA_ORDERS))}")
    if direction not in (None, "f", "b"):
        raise invalid_param("Query parameter 'dir' must be 'f' or 'b'")
    return MediaPage(
        offset=query_int(request, "from", 0, minimum=0),
        limit=query_int(request, "limit", 100, minimum=1, maximum=1000),
        order_by=order_by or "created_ts",
        backwards=direction == "b" if (order_by or direction) else True,
    )


def _body(request: IRequest) -> None:
    """These POSTs take ``{}`` (or nothing): a body that is there must be a JSON object."""
    json_body(request, allow_empty=True)


class AdminMediaServlet:
    """Users' media, quarantine, protection and deletion of media."""

    def __init__(self, gate: AdminGate, media: AdminMedia) -> None:
        self.gate = gate
        self.media = media

    # -- a user's media -------------------------------------------------------------------------

    @route("GET", f"{V1}/users/{{user_id}}/media")
    async def list_user_media(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.media.list_user_media(user_id, _page(request))

    @route("DELETE", f"{V1}/users/{{user_id}}/media")
    async def delete_user_media(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        result = await self.media.delete_user_media(user_id, _page(request))
        self.gate.audit(requester, "delete_user_media", user_id=user_id, media_ids=result["deleted_media"])
        return result

    @route("POST", f"{V1}/user/{{user_id}}/media/quarantine")
    async def quarantine_user_media(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        count = await self.media.quarantine_user_media(requester, user_id)
        self.gate.audit(requester, "quarantine_user_media", user_id=user_id, num_quarantined=count)
        return {"num_quarantined": count}

    # -- a room's media -------------------------------------------------------------------------

    @route("GET", f"{V1}/room/{{room_id}}/media")
    async def room_media(self, request: IRequest, room_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.media.room_media(room_id)

    @route("POST", f"{V1}/room/{{room_id}}/media/quarantine", f"{V1}/quarantine_media/{{room_id}}")
    async def quarantine_room_media(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        count = await self.media.quarantine_room_media(requester, room_id)
        self.gate.audit(requester, "quarantine_room_media", room_id=room_id, num_quarantined=count)
        return {"num_quarantined": count}

    # -- one media item -------------------------------------------------------------------------

    @route("POST", f"{V1}/media/quarantine/{{server_name}}/{{media_id}}")
    async def quarantine(self, request: IRequest, server_name: str, media_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        await self.media.set_quarantined(requester, server_name, media_id, True)
        self.gate.audit(requester, "quarantine_media", server_name=server_name, media_id=media_id)
        return {}

    @route("POST", f"{V1}/media/unquarantine/{{server_name}}/{{media_id}}")
    async def unquarantine(self, request: IRequest, server_name: str, media_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        await self.media.set_quarantined(requester, server_name, media_id, False)
        self.gate.audit(requester, "unquarantine_media", server_name=server_name, media_id=media_id)
        return {}

    @route("POST", f"{V1}/media/protect/{{media_id}}")
    async def protect(self, request: IRequest, media_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        await self.media.set_protected(media_id, True)
        self.gate.audit(requester, "protect_media", media_id=media_id)
        return {}

    @route("POST", f"{V1}/media/unprotect/{{media_id}}")
    async def unprotect(self, request: IRequest, media_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        await self.media.set_protected(media_id, False)
        self.gate.audit(requester, "unprotect_media", media_id=media_id)
        return {}

    @route("DELETE", f"{V1}/media/{{server_name}}/{{media_id}}")
    async def delete_media(self, request: IRequest, server_name: str, media_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        result = await self.media.delete_media(server_name, media_id)
        self.gate.audit(requester, "delete_media", server_name=server_name, media_id=media_id)
        return result

    @route("POST", f"{V1}/media/delete", f"{V1}/media/{{server_name}}/delete")
    async def delete_old_media(self, request: IRequest, server_name: str | None = None) -> JsonDict:
        requester = await self.gate.require(request)
        _body(request)
        before_ts = query_int(request, "before_ts", None, minimum=0)
        if before_ts is None:
            raise missing_param("Missing query parameter 'before_ts'")
        size_gt = query_int(request, "size_gt", 0, minimum=0)
        keep_profiles = query_bool(request, "keep_profiles", True)
        result = await self.media.delete_old_media(before_ts, size_gt, keep_profiles, server_name)
        self.gate.audit(
            requester,
            "delete_old_media",
            before_ts=before_ts,
            size_gt=size_gt,
            keep_profiles=keep_profiles,
            media_ids=result["deleted_media"],
        )
        return result
