"""Each application service's sender user exists (registration.yaml ``sender_localpart``).

Created at start-up and after a reload for every registration whose sender has no account
yet, as Synapse does: the service acts as it by default (§Identity assertion), and other
users see it in rooms.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.appservice.registration import AppService
from mxserver.storage.accounts import AccountStore

log = Logger()


async def ensure_sender_users(services: Iterable[AppService], accounts: AccountStore, clock: IReactorTime) -> None:
    for service in services:
        if await accounts.get_user(service.sender) is not None:
            continue
        localpart = service.sender[1:].split(":", 1)[0]
        if await accounts.create_user(service.sender, None, int(clock.seconds() * 1000), displayname=localpart):
            log.info("created {user}, the sender of application service {id}", user=service.sender, id=service.id)
