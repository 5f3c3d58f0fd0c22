"""``PUT /_matrix/federation/v1/send/{txnId}`` (transactions.yaml): authenticate, hand to the receiver."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.api.http import MAX_TRANSACTION_BODY, JsonDict, json_body, route
from mxserver.config import LimitsConfig
from mxserver.federation.auth import FederationAuth
from mxserver.federation.receiver import TransactionReceiver


class TransactionServlet:
    """Inbound transactions."""

    def __init__(self, auth: FederationAuth, receiver: TransactionReceiver, limits: LimitsConfig) -> None:
        self.auth = auth
        self.receiver = receiver
        self.limits = limits

    @route("PUT", "/_matrix/federation/v1/send/{txn_id}")
    async def send(self, request: IRequest, txn_id: str) -> JsonDict:
        body = json_body(request, max_size=max(MAX_TRANSACTION_BODY, self.limits.max_request_size))
        origin = await self.auth.authenticate_request(request, body)
        return await self.receiver.on_send(origin, txn_id, body)
