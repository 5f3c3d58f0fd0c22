"""Client-Server API routes (Klein servlets); :func:`client_servlets` lists them all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxserver.homeserver import Homeserver


def client_servlets(hs: Homeserver) -> list[Any]:
    from mxserver.api.client import account, admin, devices, login, register, versions

    return [
        versions.VersionsServlet(hs),
        register.RegisterServlet(hs),
        login.LoginServlet(hs),
        account.AccountServlet(hs),
        devices.DevicesServlet(hs),
        admin.AdminRegisterServlet(hs),
    ]
