"""Federation membership routes: make/send join, leave and knock, invites.

joins-v1.yaml, joins-v2.yaml, leaving-v1.yaml, leaving-v2.yaml, knocks.yaml,
invites-v2.yaml (third_party_invite.yaml is in ``third_party_invite``). Every route authenticates the
X-Matrix request first and calls one method of the
:class:`~mxserver.federation.membership.FederationMembershipHandler`.

The v1 ``send_join``/``send_leave``/``invite`` are served too, with their
historical ``[200, body]`` answers, for servers that still use them (a v1
invite is of a room of version 1 or 2: invites-v1.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, query_bool, route
from mxserver.errors import MatrixError, missing_param

if TYPE_CHECKING:
    from mxserver.federation.auth import FederationAuth
    from mxserver.federation.membership import FederationMembershipHandler

_V1 = "/_matrix/federation/v1"
_V2 = "/_matrix/federation/v2"


def _versions(request: IRequest, default: list[str] | None) -> list[str]:
    raw = (request.args or {}).get(b"ver")
    if not raw:
        if default is None:
            raise missing_param("Query parameter 'ver' is required")
        return default
    try:
        return [v.decode("utf-8") for v in raw]
    except UnicodeDecodeError:
        raise MatrixError(400, "M_INVALID_PARAM", "Query parameter 'ver' is not valid UTF-8") from None


class FederationMembershipServlet:
    def __init__(self, federation_auth: FederationAuth, handler: FederationMembershipHandler) -> None:
        self.federation_auth = federation_auth
        self.handler = handler

    async def _origin(self, request: IRequest, body: Any = None) -> str:
        return await self.federation_auth.authenticate_request(request, body)

    # -- joins ---------------------------------------------------------------------------------

    @route("GET", _V1 + "/make_join/{room_id}/{user_id}")
    async def make_join(self, request: IRequest, room_id: str, user_id: str) -> JsonDict:
        origin = await self._origin(request)
        # joins-v1.yaml: ver "Defaults to [1]".
        versions = _versions(request, ["1"])
        return await self.handler.make_membership(origin, room_id, user_id, "join", versions)

    async def _send_join(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        body = json_body(request, max_size=1024 * 1024)
        origin = await self._origin(request, body)
        # omit_members (joins-v2.yaml, a boolean) is checked and accepted; the answer is always
        # the full state (members_omitted: false).
        query_bool(request, "omit_members", False)
        room, event = await self.handler.send_membership(origin, room_id, event_id, body, "join")
        return await self.handler.send_join_answer(room, event)

    @route("PUT", _V2 + "/send_join/{room_id}/{event_id}")
    async def send_join_v2(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        return await self._send_join(request, room_id, event_id)

    @route("PUT", _V1 + "/send_join/{room_id}/{event_id}")
    async def send_join_v1(self, request: IRequest, room_id: str, event_id: str) -> Any:
        answer = await self._send_join(request, room_id, event_id)
        return 200, [200, {"state": answer["state"], "auth_chain": answer["auth_chain"]}]

    # -- leaves -----------------------------------------------------------------------------------

    @route("GET", _V1 + "/make_leave/{room_id}/{user_id}")
    async def make_leave(self, request: IRequest, room_id: str, user_id: str) -> JsonDict:
        origin = await self._origin(request)
        return await self.handler.make_membership(origin, room_id, user_id, "leave", [])

    async def _send_leave(self, request: IRequest, room_id: str, event_id: str) -> None:
        body = json_body(request)
        origin = await self._origin(request, body)
        await self.handler.send_membership(origin, room_id, event_id, body, "leave")

    @route("PUT", _V2 + "/send_leave/{room_id}/{event_id}")
    async def send_leave_v2(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        await self._send_leave(request, room_id, event_id)
        return {}

    @route("PUT", _V1 + "/send_leave/{room_id}/{event_id}")
    async def send_leave_v1(self, request: IRequest, room_id: str, event_id: str) -> Any:
        await self._send_leave(request, room_id, event_id)
        return 200, [200, {}]

    # -- knocks ---------------------------------------------------------------------------------------

    @route("GET", _V1 + "/make_knock/{room_id}/{user_id}")
    async def make_knock(self, request: IRequest, room_id: str, user_id: str) -> JsonDict:
        origin = await self._origin(request)
        versions = _versions(request, None)  # knocks.yaml: ver is required
        return await self.handler.make_membership(origin, room_id, user_id, "knock", versions)

    @route("PUT", _V1 + "/send_knock/{room_id}/{event_id}")
    async def send_knock(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        body = json_body(request)
        origin = await self._origin(request, body)
        await self.handler.send_membership(origin, room_id, event_id, body, "knock")
        return {"knock_room_state": await self.handler.knock_room_state(room_id)}

    # -- invites -----------------------------------------------------------------------------------------

    @route("PUT", _V2 + "/invite/{room_id}/{event_id}")
    async def invite_v2(self, request: IRequest, room_id: str, event_id: str) -> JsonDict:
        body = json_body(request)
        origin = await self._origin(request, body)
        return await self.handler.on_invite(origin, room_id, event_id, body)

    @route("PUT", _V1 + "/invite/{room_id}/{event_id}")
    async def invite_v1(self, request: IRequest, room_id: str, event_id: str) -> Any:
        body = json_body(request)
        origin = await self._origin(request, body)
        answer = await self.handler.on_invite_v1(origin, room_id, event_id, body)
        return 200, [200, answer]
