"""``PUT /_matrix/federation/v1/send/{txnId}`` (transactions.yaml): authenticate, hand to the receiver."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import MAX_TRANSACTION_BODY, JsonDict, json_body, route


class TransactionServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    @route("PUT", "/_matrix/federation/v1/send/{txn_id}")
    async def send(self, request: IRequest, txn_id: str) -> JsonDict:
        body = json_body(request, max_size=max(MAX_TRANSACTION_BODY, self.hs.config.limits.max_request_size))
        origin = await self.hs.federation_auth.authenticate_request(request, body)
        return await self.hs.federation_receiver.on_send(origin, txn_id, body)
