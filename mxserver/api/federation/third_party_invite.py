"""Federation third-party invite routes (third_party_invite.yaml).

``PUT /exchange_third_party_invite/{roomId}``: another server (the invitee's) asks us,
the inviter's server, to issue an invite from an identity server's proof; X-Matrix
authenticated. ``PUT /3pid/onbind``: an identity server tells us one of our users
bound a 3PID, with the invites pending for it. Identity servers have no X-Matrix
identity, so onbind is not authenticated: each invite's ``signed`` proof is what is
trusted, and the inviting server checks it against the room's
``m.room.third_party_invite`` keys. SyTest's identity server (like Sydent) POSTs
onbind, so POST is served as well as the spec's PUT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, json_body, route

if TYPE_CHECKING:
    from mxserver.federation.auth import FederationAuth
    from mxserver.room_handlers.third_party_invites import ThirdPartyInviteHandler

_V1 = "/_matrix/federation/v1"


class FederationThirdPartyInviteServlet:
    def __init__(self, federation_auth: FederationAuth, handler: ThirdPartyInviteHandler) -> None:
        self.federation_auth = federation_auth
        self.handler = handler

    @route("PUT", _V1 + "/exchange_third_party_invite/{room_id}")
    async def exchange_third_party_invite(self, request: IRequest, room_id: str) -> JsonDict:
        body = json_body(request)
        origin = await self.federation_auth.authenticate_request(request, body)
        await self.handler.on_exchange(origin, room_id, body)
        return {}

    @route("PUT", _V1 + "/3pid/onbind")
    @route("POST", _V1 + "/3pid/onbind")
    async def on_bind(self, request: IRequest) -> JsonDict:
        await self.handler.on_bind(json_body(request))
        return {}
