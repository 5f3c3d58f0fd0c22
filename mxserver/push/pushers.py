"""The pushers API's logic (client-server-api §Pushers, pusher.yaml) and ``GET /notifications``
(notifications.yaml).

A pusher belongs to the device of the access token that set it: removing that device
(logout, device deletion, a password change that logs other devices out) removes its
pushers (:meth:`PushersHandler.devices_removed`, a device hook).

What is accepted (pusher.yaml): ``kind`` ``http`` (``data.url`` required: an ``https``
URL with the path ``/_matrix/push/v1/notify``; ``http`` only with
``push.allow_http_gateways``; an IP-literal host must pass the outbound IP filter,
``federation.ip_range_blacklist``/``ip_range_whitelist``), or ``null`` to delete.
``email`` pushers are refused: mxserver sends no email, so it cannot honour them.
``data.format`` may be any string; only ``event_id_only`` changes what is sent (SyTest
stores other values and reads them back).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Requester
from mxserver.errors import MatrixError, invalid_param, missing_param
from mxserver.federation.ip_filter import IPRangeFilter, parse_ip
from mxserver.push.gateway import NOTIFY_PATH
from mxserver.push.pusher_pool import PusherPool
from mxserver.storage.pushers import PusherRow, PusherStore

#: pusher.yaml: app_id and pushkey have maximum lengths
MAX_APP_ID = 64
MAX_PUSHKEY = 512
#: bounds for the free-form strings (not in the spec: keep rows small)
MAX_TEXT = 1024
MAX_DATA_BYTES = 8 * 1024
#: pushers per user (a bound on what one account can make the server send)
MAX_PUSHERS_PER_USER = 100


def _text(body: dict[str, Any], key: str, required: bool = True, max_length: int = MAX_TEXT) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            raise missing_param(f"Missing '{key}'")
        return None
    if not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' must be a string")
    if len(value) > max_length:
        raise invalid_param(f"'{key}' is longer than {max_length} characters")
    return value


class PushersHandler:
    """Setting, listing and removing pushers."""

    def __init__(
        self,
        store: PusherStore,
        pool: PusherPool,
        ip_filter: IPRangeFilter,
        allow_http: bool,
        current_position: Callable[[], int],
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._pool = pool
        self._ip_filter = ip_filter
        self._allow_http = allow_http
        self._current_position = current_position
        self._clock = clock

    async def get_pushers(self, user_id: str) -> list[dict[str, Any]]:
        """pusher.yaml ``GET /pushers``."""
        return [
            {
                "pushkey": r.pushkey,
                "kind": r.kind,
                "app_id": r.app_id,
                "app_display_name": r.app_display_name,
                "device_display_name": r.device_display_name,
                **({"profile_tag": r.profile_tag} if r.profile_tag is not None else {}),
                "lang": r.lang,
                "data": r.data,
            }
            for r in await self._store.user_pushers(user_id)
        ]

    async def set_pusher(self, requester: Requester, body: dict[str, Any]) -> None:
        """pusher.yaml ``POST /pushers/set``: validate everything, then store in one transaction."""
        kind = body.get("kind", ...)
        if kind is ...:
            raise missing_param("Missing 'kind'")
        app_id = _text(body, "app_id", max_length=MAX_APP_ID)
        pushkey = _text(body, "pushkey", max_length=MAX_PUSHKEY)
        if kind is None:
            # pusher.yaml: "If the kind is null, the pusher will be deleted."
            if await self._store.delete_pusher(requester.user_id, app_id, pushkey):
                self._pool.pusher_removed([(requester.user_id, app_id, pushkey)])
            return
        if not isinstance(kind, str):
            raise MatrixError(400, "M_BAD_JSON", "'kind' must be a string or null")
        if kind == "email":
            raise invalid_param("Email pushers are not supported: this server does not send email")
        if kind != "http":
            raise invalid_param(f"Unknown pusher kind {kind!r}: expected 'http' (or null to delete)")
        app_display_name = _text(body, "app_display_name")
        device_display_name = _text(body, "device_display_name")
        lang = _text(body, "lang", max_length=64)
        profile_tag = _text(body, "profile_tag", required=False)
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise MatrixError(400, "M_BAD_JSON", "'append' must be a boolean")
        data = body.get("data")
        if data is None:
            raise missing_param("Missing 'data'")
        if not isinstance(data, dict):
            raise MatrixError(400, "M_BAD_JSON", "'data' must be an object")
        self._check_data(data)
        existing = await self._store.user_pushers(requester.user_id)
        if len(existing) >= MAX_PUSHERS_PER_USER and not any(
            r.app_id == app_id and r.pushkey == pushkey for r in existing
        ):
            raise MatrixError(400, "M_LIMIT_EXCEEDED", f"A user may have at most {MAX_PUSHERS_PER_USER} pushers")
        row = PusherRow(
            user_id=requester.user_id,
            app_id=app_id,
            pushkey=pushkey,
            kind=kind,
            app_display_name=app_display_name,
            device_display_name=device_display_name,
            profile_tag=profile_tag,
            lang=lang,
            data=data,
            device_id=requester.device_id,
            pushkey_ts=int(self._clock.seconds() * 1000),
            # only what happens from now on is pushed
            last_stream_ordering=self._current_position(),
        )
        removed = await self._store.set_pusher(row, append)
        self._pool.pusher_removed(removed)
        self._pool.pusher_set(row)

    def _check_data(self, data: dict[str, Any]) -> None:
        if len(json.dumps(data)) > MAX_DATA_BYTES:
            raise invalid_param(f"'data' is larger than {MAX_DATA_BYTES} bytes")
        url = data.get("url")
        if url is None:
            raise missing_param("'data.url' is required for http pushers")
        if not isinstance(url, str) or not url.isascii():
            raise invalid_param("'data.url' must be an ASCII string")
        fmt = data.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise invalid_param("'data.format' must be a string")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a bad port
        except ValueError:
            raise invalid_param("'data.url' is not a valid URL") from None
        if parts.scheme != "https" and not (parts.scheme == "http" and self._allow_http):
            raise invalid_param(
                "'data.url' must be an https URL"
                + ("" if self._allow_http else " (http gateways need push.allow_http_gateways)")
            )
        if not parts.hostname:
            raise invalid_param("'data.url' has no host")
        if parts.path != NOTIFY_PATH or parts.query or parts.fragment or parts.username or parts.password:
            raise invalid_param(f"'data.url' must have the path {NOTIFY_PATH} (and no query or credentials)")
        ip = parse_ip(parts.hostname)
        if ip is not None and self._ip_filter.is_blocked(ip):
            raise invalid_param(
                f"'data.url' points at {parts.hostname}, an address outbound requests may not reach"
                " (federation.ip_range_blacklist)"
            )

    async def devices_removed(self, user_id: str, device_ids: list[str] | None) -> None:
        """Device hook: the pushers of removed devices go (None: of every device the user lost)."""
        self._pool.pusher_removed(await self._store.delete_for_devices(user_id, device_ids))
