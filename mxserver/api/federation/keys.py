"""Publishing this server's signing keys: GET /_matrix/key/v2/server."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.api.http import JsonDict, route
from mxserver.crypto.keys import verify_key_base64
from mxserver.crypto.signing import sign_json

#: How long other servers may cache our key response (server-server-api §Publishing Keys).
KEY_VALIDITY_MS = 24 * 3600 * 1000


class KeyServerServlet:
    def __init__(self, hs: Any) -> None:
        self.hs = hs

    @route("GET", "/_matrix/key/v2/server", "/_matrix/key/v2/server/{key_id}")
    def server_keys(self, request: IRequest, key_id: str | None = None) -> JsonDict:
        # The {key_id} form is deprecated; the answer is the same: all current keys.
        hs = self.hs
        now_ms = int(hs.clock.seconds() * 1000)
        body = {
            "server_name": hs.server_name,
            "verify_keys": {hs.signing_key_id: {"key": verify_key_base64(hs.signing_key)}},
            "old_verify_keys": {},
            "valid_until_ts": now_ms + KEY_VALIDITY_MS,
        }
        return sign_json(body, hs.server_name, hs.signing_key)
