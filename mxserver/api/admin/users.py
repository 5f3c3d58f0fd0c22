"""The user admin API in Synapse's shapes (``docs/admin_api/user_admin_api.md``): what synadm and
synapse-admin use. Server admins only; every change is audited.

``PUT /_synapse/admin/v2/users/{userId}`` accepts ``threepids`` and ``external_ids`` (they must be
arrays) and ignores them: mxserver binds no third-party IDs and has no SSO. ``user_type`` may only
be null (mxserver has no user types). ``locked`` locks and unlocks, and ``PUT /v1/suspend/{userId}``
suspends: the same state as the client API's ``admin/lock`` and ``admin/suspend``
(:mod:`mxserver.api.client.account_moderation`).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.iweb import IRequest

from mxserver.accounts.devices import MAX_DISPLAY_NAME_LENGTH
from mxserver.admin.users import USER_ORDERS, AdminUsers, UserChanges, UserListQuery
from mxserver.api.admin import AdminGate
from mxserver.api.http import (
    JsonDict,
    get_bool,
    get_int,
    get_list,
    get_str,
    get_str_list,
    json_body,
    query_bool,
    query_int,
    query_str,
    route,
)
from mxserver.errors import invalid_param, missing_param, not_found

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
V3 = "/_synapse/admin/v3"

#: longest filter string accepted in a user list query
MAX_FILTER_LENGTH = 255


def _optional_bool(request: IRequest, name: str) -> bool | None:
    return query_bool(request, name) if query_str(request, name) is not None else None


def _direction(request: IRequest) -> bool:
    """Whether ``dir`` asks for the backwards order (``b``); ``f`` by default."""
    direction = query_str(request, "dir", "f")
    if direction not in ("f", "b"):
        raise invalid_param("Query parameter 'dir' must be 'f' or 'b'")
    return bool(direction == "b")


def _filter(request: IRequest, name: str) -> str | None:
    value = query_str(request, name)
    if value is not None and len(value) > MAX_FILTER_LENGTH:
        raise invalid_param(f"Query parameter '{name}' is too long")
    return value or None


class UserPushers(Protocol):
    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]: ...


class AdminUsersServlet:
    """Users, their devices, sessions, rooms, pushers and passwords; logging in as them."""

    def __init__(self, gate: AdminGate, users: AdminUsers, pushers: UserPushers) -> None:
        self.gate = gate
        self.users = users
        self.pushers = pushers

    # -- users --------------------------------------------------------------------------------

    @route("GET", f"{V2}/users", f"{V3}/users")
    async def list_users(self, request: IRequest) -> JsonDict:
        """v2 and v3 differ in ``deactivated``: v2 lists deactivated users too if true (the
        others always), v3 lists only them if true, only the others if false, everyone if absent."""
        await self.gate.require(request)
        if request.path.startswith(V3.encode()):
            deactivated = _optional_bool(request, "deactivated")
        else:
            deactivated = None if query_bool(request, "deactivated", False) else False
        order_by = query_str(request, "order_by", "name")
        if order_by not in USER_ORDERS:
            raise invalid_param(f"Query parameter 'order_by' must be one of {', '.join(sorted(USER_ORDERS))}")
        query = UserListQuery(
            offset=query_int(request, "from", 0, minimum=0),
            limit=query_int(request, "limit", 100, minimum=1, maximum=1000),
            user_id=_filter(request, "user_id"),
            name=_filter(request, "name"),
            guests=query_bool(request, "guests", True),
            deactivated=deactivated,
            admins=_optional_bool(request, "admins"),
            order_by=order_by,
            backwards=_direction(request),
        )
        return await self.users.list_users(query)

    @route("GET", f"{V2}/users/{{user_id}}")
    async def get_user(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.users.get_user(user_id)

    @route("PUT", f"{V2}/users/{{user_id}}")
    async def put_user(self, request: IRequest, user_id: str) -> tuple[int, JsonDict]:
        requester = await self.gate.require(request)
        body = json_body(request)
        # Accepted for compatibility, ignored (see the module docstring).
        get_list(body, "threepids", None)
        get_list(body, "external_ids", None)
        if get_str(body, "user_type", None) is not None:
            raise invalid_param("'user_type' is not supported")
        changes = UserChanges(
            password=get_str(body, "password", None),
            logout_devices=get_bool(body, "logout_devices", True),
            displayname=get_str(body, "displayname", None),
            avatar_url=get_str(body, "avatar_url", None),
            admin=get_bool(body, "admin", None),
            deactivated=get_bool(body, "deactivated", None),
            locked=get_bool(body, "locked", None),
        )
        created, user = await self.users.put_user(requester, user_id, changes)
        self.gate.audit(
            requester,
            "create_user" if created else "modify_user",
            user_id=user_id,
            fields=sorted(body),
        )
        return (201 if created else 200), user

    @route("PUT", f"{V1}/suspend/{{user_id}}")
    async def suspend(self, request: IRequest, user_id: str) -> JsonDict:
        """Synapse's suspension API: ``{"suspend": bool}``, answered with
        ``{"user_{userId}_suspended": bool}``."""
        requester = await self.gate.require(request)
        suspend = get_bool(json_body(request), "suspend")
        user = await self.users.existing(user_id)
        if user.deactivated:
            raise not_found("User not found")
        await self.users.set_moderation(user_id, suspended=suspend)
        self.gate.audit(requester, "suspend_user", user_id=user_id, suspended=suspend)
        return {f"user_{user_id}_suspended": suspend}

    @route("POST", f"{V1}/deactivate/{{user_id}}")
    async def deactivate(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        # An empty body is allowed (Synapse's documented backwards compatibility).
        erase = get_bool(json_body(request, allow_empty=True), "erase", False)
        result = await self.users.deactivate(user_id, erase)
        self.gate.audit(requester, "deactivate_user", user_id=user_id, erase=erase)
        return result

    @route("POST", f"{V1}/reset_password/{{user_id}}")
    async def reset_password(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        body = json_body(request)
        new_password = get_str(body, "new_password")
        logout_devices = get_bool(body, "logout_devices", True)
        await self.users.reset_password(user_id, new_password, logout_devices)
        self.gate.audit(requester, "reset_password", user_id=user_id, logout_devices=logout_devices)
        return {}

    @route("GET", f"{V1}/whois/{{user_id}}")
    async def whois(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        return await self.users.whois(requester, user_id)

    @route("GET", f"{V1}/users/{{user_id}}/admin")
    async def is_admin(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.users.is_admin(user_id)

    @route("PUT", f"{V1}/users/{{user_id}}/admin")
    async def set_admin(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        admin = get_bool(json_body(request), "admin")
        await self.users.set_admin(requester, user_id, admin)
        self.gate.audit(requester, "set_admin", user_id=user_id, admin=admin)
        return {}

    @route("GET", f"{V1}/users/{{user_id}}/pushers")
    async def user_pushers(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        await self.users.existing(user_id)
        pushers = await self.pushers.get_pushers(user_id)
        return {"pushers": pushers, "total": len(pushers)}

    @route("GET", f"{V1}/username_available")
    async def username_available(self, request: IRequest) -> JsonDict:
        await self.gate.require(request)
        username = query_str(request, "username")
        if username is None:
            raise missing_param("Missing query parameter 'username'")
        return await self.users.username_available(username)

    @route("GET", f"{V1}/users/{{user_id}}/joined_rooms")
    async def joined_rooms(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.users.joined_rooms(user_id)

    @route("POST", f"{V1}/users/{{user_id}}/login")
    async def login_as(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        valid_until_ms = get_int(json_body(request, allow_empty=True), "valid_until_ms", None)
        token = await self.users.login_as(requester, user_id, valid_until_ms)
        self.gate.audit(requester, "login_as_user", user_id=user_id, valid_until_ms=valid_until_ms)
        return {"access_token": token}

    # -- devices --------------------------------------------------------------------------

    @route("GET", f"{V2}/users/{{user_id}}/devices")
    async def list_devices(self, request: IRequest, user_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.users.list_devices(user_id)

    @route("POST", f"{V2}/users/{{user_id}}/devices")
    async def add_device(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        device_id = get_str(json_body(request), "device_id")
        await self.users.add_device(user_id, device_id)
        self.gate.audit(requester, "add_device", user_id=user_id, device_id=device_id)
        return {}

    @route("GET", f"{V2}/users/{{user_id}}/devices/{{device_id}}")
    async def get_device(self, request: IRequest, user_id: str, device_id: str) -> JsonDict:
        await self.gate.require(request)
        return await self.users.get_device(user_id, device_id)

    @route("PUT", f"{V2}/users/{{user_id}}/devices/{{device_id}}")
    async def update_device(self, request: IRequest, user_id: str, device_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        body = json_body(request)
        display_name = get_str(body, "display_name", None, max_length=MAX_DISPLAY_NAME_LENGTH)
        await self.users.rename_device(user_id, device_id, display_name)
        self.gate.audit(requester, "rename_device", user_id=user_id, device_id=device_id)
        return {}

    @route("DELETE", f"{V2}/users/{{user_id}}/devices/{{device_id}}")
    async def delete_device(self, request: IRequest, user_id: str, device_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        await self.users.delete_devices(user_id, [device_id])
        self.gate.audit(requester, "delete_devices", user_id=user_id, device_ids=[device_id])
        return {}

    @route("POST", f"{V2}/users/{{user_id}}/delete_devices")
    async def delete_devices(self, request: IRequest, user_id: str) -> JsonDict:
        requester = await self.gate.require(request)
        device_ids = get_str_list(json_body(request), "devices")
        await self.users.delete_devices(user_id, device_ids)
        self.gate.audit(requester, "delete_devices", user_id=user_id, device_ids=device_ids)
        return {}
