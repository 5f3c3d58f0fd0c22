"""Builds the client-facing room handlers: creation, membership, aliases/directory, upgrades."""

from __future__ import annotations

from typing import Any


def build_room_handlers(hs: Any) -> None:
    """Attach ``hs.directory_store``, ``hs.membership_store``, ``hs.directory``,
    ``hs.room_membership``, ``hs.room_creation`` and ``hs.room_upgrade``.

    They use ``hs.room_server``, ``hs.accounts``, ``hs.config`` and ``hs.clock``,
    so those must exist first.
    """
    from mxserver.rooms.creation import RoomCreationHandler
    from mxserver.rooms.directory import DirectoryHandler
    from mxserver.rooms.membership import MembershipHandler
    from mxserver.rooms.upgrade import RoomUpgradeHandler
    from mxserver.storage.directory import DirectoryStore
    from mxserver.storage.memberships import MembershipStore

    hs.directory_store = DirectoryStore(hs.db)
    hs.membership_store = MembershipStore(hs.db)
    hs.directory = DirectoryHandler(hs)
    hs.room_membership = MembershipHandler(hs)
    hs.room_creation = RoomCreationHandler(hs)
    hs.room_upgrade = RoomUpgradeHandler(hs)
