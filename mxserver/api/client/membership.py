"""Room membership routes: join, knock, invite, leave, forget, kick, ban, unban.

joining.yaml, knocking.yaml, inviting.yaml, leaving.yaml, kicking.yaml,
banning.yaml. Each parses the body, authenticates and calls one method of
the :class:`~mxserver.room_handlers.membership.MembershipHandler`.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_str, json_body, route
from mxserver.errors import invalid_param
from mxserver.identifier_checks import check_room_id
from mxserver.room_handlers.membership import MembershipHandler
from mxserver.room_handlers.third_party_invites import ThirdPartyInviteHandler, parse_third_party_id

_V3 = "/_matrix/client/v3"
_R0 = "/_matrix/client/r0"


def _paths(suffix: str) -> tuple[str, str]:
    return (_V3 + suffix, _R0 + suffix)


def _via(request: IRequest) -> list[str]:
    """``via`` (v1.12) and the older ``server_name`` query parameters: servers to join through."""
    out = []
    for name in (b"via", b"server_name"):
        for raw in (request.args or {}).get(name, []):
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid_param(f"Query parameter '{name.decode()}' is not valid UTF-8") from None
    return out


def _reason(body: JsonDict) -> str | None:
    return get_str(body, "reason", None)


def _extra_join_content(body: JsonDict) -> JsonDict:
    """Keys of a join body other than the ones joining.yaml defines, kept in the member event.

    The spec defines only ``reason`` and ``third_party_signed``; Synapse puts the rest of the
    body into the join event's content (SyTest "POST /join/:room_id can join a room with custom
    content"), and so does mxserver. The handler decides which keys it will not take.
    """
    return {k: v for k, v in body.items() if k not in ("reason", "third_party_signed")}


_THIRD_PARTY_KEYS = ("id_server", "id_access_token", "medium", "address")


class MembershipServlet:
    """Join, knock, leave, forget, invite, kick, ban, unban."""

    def __init__(self, auth: Auth, membership: MembershipHandler, third_party: ThirdPartyInviteHandler) -> None:
        self.auth = auth
        self.membership = membership
        self.third_party = third_party

    @route("POST", *_paths("/join/{room_id_or_alias}"))
    async def join(self, request: IRequest, room_id_or_alias: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request, allow_empty=True)
        if body.get("third_party_signed") is not None:
            room_id = await self.third_party.join(
                requester,
                room_id_or_alias,
                body["third_party_signed"],
                _reason(body),
                _via(request),
                extra_content=_extra_join_content(body),
            )
        else:
            room_id = await self.membership.join(
                requester, room_id_or_alias, _reason(body), _via(request), extra_content=_extra_join_content(body)
            )
        return {"room_id": room_id}

    @route("POST", *_paths("/rooms/{room_id}/join"))
    async def join_room_id(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request, allow_empty=True)
        if body.get("third_party_signed") is not None:
            room_id = await self.third_party.join(
                requester,
                check_room_id(room_id),
                body["third_party_signed"],
                _reason(body),
                extra_content=_extra_join_content(body),
            )
        else:
            room_id = await self.membership.join(
                requester, check_room_id(room_id), _reason(body), extra_content=_extra_join_content(body)
            )
        return {"room_id": room_id}

    @route("POST", *_paths("/knock/{room_id_or_alias}"))
    async def knock(self, request: IRequest, room_id_or_alias: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request, allow_empty=True)
        room_id = await self.membership.knock(requester, room_id_or_alias, _reason(body), _via(request))
        return {"room_id": room_id}

    @route("POST", *_paths("/rooms/{room_id}/leave"))
    async def leave(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        body = json_body(request, allow_empty=True)
        await self.membership.leave(requester, check_room_id(room_id), _reason(body))
        return {}

    @route("POST", *_paths("/rooms/{room_id}/forget"))
    async def forget(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        json_body(request, allow_empty=True)
        await self.membership.forget(requester, check_room_id(room_id))
        return {}

    @route("POST", *_paths("/rooms/{room_id}/invite"))
    async def invite(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        if "user_id" not in body and any(k in body for k in _THIRD_PARTY_KEYS):
            # third_party_membership.yaml: the invitee named by a 3PID
            await self.third_party.invite(requester, check_room_id(room_id), parse_third_party_id(body))
            return {}
        target = get_str(body, "user_id")
        await self.membership.invite(requester, check_room_id(room_id), target, _reason(body))
        return {}

    @route("POST", *_paths("/rooms/{room_id}/kick"))
    async def kick(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.membership.kick(requester, check_room_id(room_id), get_str(body, "user_id"), _reason(body))
        return {}

    @route("POST", *_paths("/rooms/{room_id}/ban"))
    async def ban(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.membership.ban(requester, check_room_id(room_id), get_str(body, "user_id"), _reason(body))
        return {}

    @route("POST", *_paths("/rooms/{room_id}/unban"))
    async def unban(self, request: IRequest, room_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        await self.membership.unban(requester, check_room_id(room_id), get_str(body, "user_id"), _reason(body))
        return {}
