"""Logging in and out (client-server-api §Login, login.yaml, login_token.yaml, logout.yaml).

``POST /login`` dispatches on ``type`` to a login flow module (the login flows)
or to the built-in ``m.login.token``, whose tokens ``POST /login/get_token``
issues: single-use, stored hashed, valid for two minutes.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Auth, Requester, hash_token
from mxserver.accounts.devices import DeviceHandler, DeviceHooks
from mxserver.accounts.identifiers import resolve_thirdparty
from mxserver.accounts.protocols import LoginFlows, RateLimit, ThreepidSessions
from mxserver.accounts.uia import UIARequest, UserInteractiveAuth
from mxserver.appservice.registration import AppService
from mxserver.config import WellKnownConfig
from mxserver.errors import (
    MatrixError,
    bad_json,
    forbidden,
    missing_param,
    unknown_token,
    user_deactivated,
    user_locked,
)
from mxserver.storage.accounts import AccountStore

LOGIN_TOKEN = "m.login.token"
#: application-service-api §Server admin style permissions (v1.2)
APPSERVICE_LOGIN = "m.login.application_service"
#: login_token.yaml recommends two minutes
LOGIN_TOKEN_LIFETIME_MS = 120_000
#: longer than any refresh token this server makes: unknown without a database look-up
MAX_REFRESH_TOKEN_LENGTH = 256


class LoginHandler:
    """``/login``, ``/login/get_token``, ``/logout`` and ``/logout/all``."""

    def __init__(
        self,
        store: AccountStore,
        login_flows: LoginFlows,
        *,
        server_name: str,
        well_known: WellKnownConfig,
        auth: Auth,
        uia: UserInteractiveAuth,
        devices: DeviceHandler,
        device_hooks: DeviceHooks,
        ratelimit_login: RateLimit,
        clock: IReactorTime,
        threepids: ThreepidSessions | None = None,
    ) -> None:
        self._threepids = threepids
        self._store = store
        self._login_flows = login_flows
        self._server_name = server_name
        self._well_known = well_known
        self._auth = auth
        self._uia = uia
        self._devices = devices
        self._device_hooks = device_hooks
        self._ratelimit_login = ratelimit_login
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def flows(self) -> list[dict[str, Any]]:
        """``GET /login``: every login flow module, then ``m.login.token``."""
        flows: list[dict[str, Any]] = [{"type": t} for t in self._login_flows]
        if LOGIN_TOKEN not in self._login_flows:
            flows.append({"type": LOGIN_TOKEN, "get_login_token": True})
        # Listed as Synapse lists it: application services look for it.
        flows.append({"type": APPSERVICE_LOGIN})
        return flows

    async def login(
        self,
        submission: dict[str, Any],
        login_type: str,
        device_id: str | None,
        device_display_name: str | None,
        ip: str,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """``POST /login``: authenticate ``submission`` and open a session on a device (with a
        refresh token and an expiring access token if the client asked with ``refresh``)."""
        self._ratelimit_login.check(ip)
        submission = await resolve_thirdparty(submission, self._threepids)
        claimed = self._claimed_user(submission)
        if claimed is not None:
            self._ratelimit_login.check(claimed)

        flow = self._login_flows.get(login_type)
        if flow is not None:
            try:
                user_id = await flow.check_login(submission)
            except MatrixError as e:
                # login.yaml: a deactivated user learns why, rather than "wrong password".
                if e.errcode == "M_FORBIDDEN" and claimed is not None and await self._is_deactivated(claimed):
                    raise user_deactivated() from None
                raise
        elif login_type == LOGIN_TOKEN:
            user_id = await self._consume_login_token(submission.get("token"))
        else:
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type}")
        if claimed is None:
            self._ratelimit_login.check(user_id)

        user = await self._store.get_user(user_id)
        if user is None:
            raise forbidden("Invalid username or password")
        if user.deactivated:
            raise user_deactivated()
        if user.locked:
            # §Soft logout: a locked account "cannot obtain a new access token until the account
            # has been unlocked".
            raise user_locked()
        session = await self._devices.open_session(user_id, device_id, device_display_name, refresh)
        response: dict[str, Any] = {"user_id": user_id, **session.to_json(), "home_server": self._server_name}
        base_url = self._well_known.client_base_url
        if base_url:
            response["well_known"] = {"m.homeserver": {"base_url": base_url}}
        return response

    async def login_appservice(
        self,
        service: AppService,
        submission: dict[str, Any],
        device_id: str | None,
        device_display_name: str | None,
    ) -> dict[str, Any]:
        """``POST /login`` with ``m.login.application_service``: a session for one of the service's
        users, without a password (not rate limited: the service is trusted by the admin)."""
        if service.device_management:
            # MSC4190: such a service creates its users' devices with PUT /devices (Synapse's rule).
            raise MatrixError(
                400, "M_APPSERVICE_LOGIN_UNSUPPORTED", "This application service manages its users' devices itself"
            )
        user_id = self._claimed_user(submission)
        if user_id is None:
            raise missing_param("Missing 'identifier'")
        if not service.is_interested_in_user(user_id):
            # application-service-api: logging in "as users outside of their defined namespaces"
            raise MatrixError(403, "M_EXCLUSIVE", f"{user_id} is not in the namespaces of this application service")
        user = await self._store.get_user(user_id)
        if user is None:
            raise forbidden(f"{user_id} is not registered")
        if user.deactivated:
            raise user_deactivated()
        if user.locked:
            raise user_locked()
        device_id, token = await self._devices.create_session(user_id, device_id, device_display_name)
        return {"user_id": user_id, "access_token": token, "device_id": device_id, "home_server": self._server_name}

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """``POST /refresh``: see :meth:`DeviceHandler.refresh`."""
        if len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH:
            raise unknown_token()
        return await self._devices.refresh(refresh_token)

    async def logout(self, requester: Requester) -> None:
        """``POST /logout``: the token and its device go."""
        if requester.device_id is not None:
            await self._devices.remove_devices(requester.user_id, [requester.device_id])
        elif requester.token_hash is not None:
            await self._store.delete_token(requester.token_hash)
            self._auth.invalidate([requester.token_hash])

    async def logout_all(self, requester: Requester) -> None:
        """``POST /logout/all``: every token and every device of the user."""
        self._auth.invalidate(await self._store.delete_all_devices(requester.user_id))
        await self._device_hooks.devices_removed(requester.user_id, None)
        self._auth.invalidate_user(requester.user_id)

    async def get_login_token(self, requester: Requester, uia: UIARequest) -> dict[str, Any]:
        """``POST /login/get_token``: after UIA (always asked: sessions are single-use), a fresh token."""
        await self._uia.authenticate(uia, self._uia.reauth_flows(), requester.user_id)
        # login_token.yaml: stricter limits are encouraged for this endpoint.
        self._ratelimit_login.check("get_token " + requester.user_id)
        token = "mxl_" + secrets.token_urlsafe(32)
        await self._store.add_login_token(
            hash_token(token), requester.user_id, self._now_ms() + LOGIN_TOKEN_LIFETIME_MS
        )
        return {"login_token": token, "expires_in_ms": LOGIN_TOKEN_LIFETIME_MS}

    # -- internals -------------------------------------------------------------------------

    async def _consume_login_token(self, token: Any) -> str:
        if not isinstance(token, str):
            raise bad_json("'token' must be a string")
        user_id = await self._store.consume_login_token(hash_token(token), self._now_ms())
        if user_id is None:
            # §Login: an invalid token is 403 M_FORBIDDEN.
            raise forbidden("Invalid or expired login token")
        return user_id

    def _claimed_user(self, submission: dict[str, Any]) -> str | None:
        """The local user a submission names (``m.id.user`` or the deprecated ``user``), if any.

        Used only as a rate-limit key and to recognise deactivated accounts; the
        login flow itself decides who is authenticated.
        """
        identifier = submission.get("identifier")
        if isinstance(identifier, dict) and identifier.get("type") == "m.id.user":
            user = identifier.get("user")
        else:
            user = submission.get("user")
        if not isinstance(user, str) or not user:
            return None
        if user.startswith("@"):
            return user
        return f"@{user.lower()}:{self._server_name}"

    async def _is_deactivated(self, user_id: str) -> bool:
        user = await self._store.get_user(user_id)
        return user is not None and user.deactivated
