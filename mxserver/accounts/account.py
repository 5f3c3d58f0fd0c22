"""Account management (client-server-api §Account management): ``hs.account``.

Changing the password and deactivating both need the requester to prove,
through UIA, that they own the account.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.accounts.registration import check_password_strength
from mxserver.accounts.uia import UIARequest

log = Logger()


class AccountHandler:
    """``hs.account``."""

    def __init__(self, hs: Any) -> None:
        self._hs = hs
        self._store = hs.accounts

    async def change_password(
        self, requester: Requester, new_password: str, logout_devices: bool, uia: UIARequest
    ) -> None:
        """password_management.yaml: the requester's token survives; with ``logout_devices``
        every other device (and its tokens) is removed."""
        check_password_strength(self._hs, new_password)
        await self._hs.uia.authenticate(uia, self._hs.uia.reauth_flows(), requester.user_id)
        password_hash = await self._hs.passwords.hash(new_password)
        removed = await self._store.change_password(
            requester.user_id, password_hash, logout_devices, requester.device_id
        )
        self._hs.auth.invalidate(removed)
        await self._hs.to_device.delete_device_queues(requester.user_id)
        await self._hs.device_lists.devices_removed(requester.user_id, None)

    async def deactivate(self, requester: Requester, uia: UIARequest) -> dict[str, Any]:
        """account_deactivation.yaml: the account can never log in again; every token goes.

        mxserver binds no third-party identifiers, so there is nothing to unbind
        and the spec requires ``success`` in that case.
        """
        await self._hs.uia.authenticate(uia, self._hs.uia.reauth_flows(), requester.user_id)
        await self._store.deactivate_user(requester.user_id)
        await self._hs.to_device.delete_device_queues(requester.user_id)
        await self._hs.device_lists.devices_removed(requester.user_id, None)
        self._hs.auth.invalidate_user(requester.user_id)
        log.info("Deactivated {user_id}", user_id=requester.user_id)
        return {"id_server_unbind_result": "success"}
