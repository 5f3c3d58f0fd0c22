"""TURN credentials for VoIP calls (client-server-api §Voice over IP, ``GET /voip/turnServer``).

With a shared secret (the TURN REST API convention that coturn's ``static-auth-secret``
implements, as Synapse does): a username of ``<expiry, seconds since the epoch>:<user ID>``
and, as password, the base64 HMAC-SHA1 of that username under the secret, so the TURN
server checks them without asking this one and they stop working at the expiry. Without one,
the configured static username and password. With no TURN URIs configured the answer is an
empty object, as Synapse answers (voip.yaml has no error for "no TURN server"; clients then
call without TURN).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Requester
from mxserver.config import VoipConfig
from mxserver.errors import forbidden


class TurnCredentials:
    """Hands out TURN credentials to users (and guests, if allowed)."""

    def __init__(self, config: VoipConfig, clock: IReactorTime) -> None:
        self._config = config
        self._clock = clock

    def for_user(self, requester: Requester) -> dict[str, Any]:
        config = self._config
        if not config.turn_uris:
            return {}
        if requester.is_guest and not config.turn_allow_guests:
            raise forbidden("Guest users may not use the TURN server")
        lifetime = config.turn_user_lifetime_s
        if config.turn_shared_secret:
            expiry = int(self._clock.seconds()) + lifetime
            username = f"{expiry}:{requester.user_id}"
            mac = hmac.new(config.turn_shared_secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1)
            password = base64.b64encode(mac.digest()).decode("ascii")
        else:
            assert config.turn_username is not None and config.turn_password is not None  # the config checks
            username, password = config.turn_username, config.turn_password
        return {"username": username, "password": password, "uris": list(config.turn_uris), "ttl": lifetime}
