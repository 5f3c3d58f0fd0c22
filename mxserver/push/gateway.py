"""Talking to push gateways: the ``/_matrix/push/v1/notify`` request (push-gateway-api
§POST /_matrix/push/v1/notify) and how its answer is judged.

Requests go out through the same IP-filtered agent as URL previews and media redirects
(:class:`~mxserver.media.preview.SafeFetcher`: every address passes
``federation.ip_range_blacklist``/``ip_range_whitelist``), so a pusher URL cannot reach
the server's own network unless the operator allowed that range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import treq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from mxserver.crypto.canonical import encode_json
from mxserver.federation.responses import read_body

#: the longest a gateway may take to answer (seconds)
NOTIFY_TIMEOUT_S = 30.0
#: the largest answer read from a gateway
MAX_ANSWER_BYTES = 64 * 1024
#: the path every HTTP pusher URL must have (pusher.yaml ``data.url``)
NOTIFY_PATH = "/_matrix/push/v1/notify"


class GatewayUnavailable(Exception):
    """The gateway could not be reached, timed out, or answered 5xx/429: try again later."""


class GatewayRefused(Exception):
    """The gateway answered another 4xx: it is up, but this request will never succeed."""


def tweaks_of(actions: list[Any]) -> dict[str, Any]:
    """The ``set_tweak`` actions as a ``tweaks`` object (client-server-api §Actions)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            # §Tweaks: "highlight" without a value means true
            tweaks[action["set_tweak"]] = action.get("value", True) if action["set_tweak"] == "highlight" else action.get("value")
    return tweaks


def device_entry(app_id: str, pushkey: str, pushkey_ts: int, data: dict[str, Any], tweaks: dict[str, Any]) -> dict[str, Any]:
    """One ``devices`` entry: the pusher's ``data`` goes along, minus ``url`` (push-gateway-api)."""
    return {
        "app_id": app_id,
        "pushkey": pushkey,
        "pushkey_ts": pushkey_ts // 1000,  # push-gateway-api: "in seconds"
        "data": {k: v for k, v in data.items() if k != "url"},
        "tweaks": tweaks,
    }


class PushGatewayClient:
    """POSTs notifications to gateways and returns the pushkeys they rejected."""

    def __init__(
        self, agent: IAgent, clock: IReactorTime, close: Callable[[], Deferred[None]] | None = None
    ) -> None:
        """``close`` closes the connections ``agent`` keeps open (at shutdown)."""
        self._http = treq.client.HTTPClient(agent)
        self._clock = clock
        self._close = close

    def close(self) -> Deferred[None]:
        """Close the connections kept open for the next notifications."""
        return self._close() if self._close is not None else succeed(None)

    async def notify(self, url: str, notification: dict[str, Any]) -> list[str]:
        """Send ``{"notification": ...}``; the answer's ``rejected`` pushkeys.

        :class:`GatewayUnavailable` or :class:`GatewayRefused` when it did not go through.
        """
        d: Deferred[list[str]] = Deferred.fromCoroutine(self._post(url, {"notification": notification}))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._clock.callLater(NOTIFY_TIMEOUT_S, expire)
        try:
            return await d
        except (GatewayUnavailable, GatewayRefused):
            raise
        except Exception as e:
            raise GatewayUnavailable("timed out" if expired else f"{type(e).__name__}: {e}") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _post(self, url: str, body: dict[str, Any]) -> list[str]:
        response = await self._http.post(
            url.encode("ascii"),
            data=encode_json(body),
            headers=Headers({b"Content-Type": [b"application/json"]}),
        )
        answer = await read_body(response, MAX_ANSWER_BYTES)
        if response.code >= 500 or response.code == 429:
            raise GatewayUnavailable(f"answered HTTP {response.code}")
        if not 200 <= response.code < 300:
            raise GatewayRefused(f"answered HTTP {response.code}")
        try:
            parsed = json.loads(answer) if answer else {}
        except ValueError:
            parsed = {}
        rejected = parsed.get("rejected") if isinstance(parsed, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []
