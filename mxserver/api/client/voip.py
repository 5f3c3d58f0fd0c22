"""``GET /voip/turnServer``: TURN credentials (client-server-api §Voice over IP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, route

if TYPE_CHECKING:
    from mxserver.accounts.auth import Auth
    from mxserver.voip import TurnCredentials


class VoipServlet:
    def __init__(self, auth: Auth, turn: TurnCredentials) -> None:
        self.auth = auth
        self.turn = turn

    @route("GET", "/_matrix/client/v3/voip/turnServer")
    async def turn_server(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        return self.turn.for_user(requester)
