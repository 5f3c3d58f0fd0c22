"""The client-facing room handlers: creation, membership, aliases and the directory, history, sending, upgrades, spaces.

They are writers (through the room server) and readers (through the stores); the
room server itself lives in :mod:`mxserver.rooms`.
"""

from __future__ import annotations

from typing import Any


def build_room_handlers(hs: Any) -> None:
    """Attach ``hs.directory_store``, ``hs.membership_store``, ``hs.directory``,
    ``hs.room_membership``, ``hs.room_creation`` and ``hs.room_upgrade``.

    They use ``hs.room_server``, ``hs.accounts``, ``hs.config`` and ``hs.clock``,
    so those must exist first.
    """
    from mxserver.room_handlers.creation import RoomCreationHandler
    from mxserver.room_handlers.directory import DirectoryHandler
    from mxserver.room_handlers.membership import MembershipHandler
    from mxserver.room_handlers.upgrade import RoomUpgradeHandler
    from mxserver.storage.directory import DirectoryStore
    from mxserver.storage.memberships import MembershipStore

    hs.directory_store = DirectoryStore(hs.db)
    hs.membership_store = MembershipStore(hs.db)
    hs.directory = DirectoryHandler(hs)
    hs.room_membership = MembershipHandler(hs)
    hs.room_creation = RoomCreationHandler(hs)
    hs.room_upgrade = RoomUpgradeHandler(hs)
