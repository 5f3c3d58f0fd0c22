"""Builds the account handlers (registration, login, devices, account management)."""

from __future__ import annotations

from typing import Any


def build_account_handlers(hs: Any) -> None:
    """Attach the account handlers to ``hs``.

    ``hs.uia``, ``hs.devices``, ``hs.registration``, ``hs.login``, ``hs.account``
    and ``hs.shared_secret_registration``. They use ``hs.accounts``,
    ``hs.passwords``, ``hs.auth``, ``hs.login_flows``, the rate limiters and
    ``hs.clock``, so those must exist first.
    """
    from mxserver.accounts.account import AccountHandler
    from mxserver.accounts.devices import DeviceHandler
    from mxserver.accounts.login import LoginHandler
    from mxserver.accounts.registration import RegistrationHandler
    from mxserver.accounts.shared_secret import SharedSecretRegistration
    from mxserver.accounts.uia import UserInteractiveAuth

    hs.uia = UserInteractiveAuth(hs)
    hs.devices = DeviceHandler(hs)
    hs.registration = RegistrationHandler(hs)
    hs.login = LoginHandler(hs)
    hs.account = AccountHandler(hs)
    hs.shared_secret_registration = SharedSecretRegistration(hs)
