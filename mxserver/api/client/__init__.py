"""Client-Server API routes (Klein servlets); :func:`client_servlets` lists them all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxserver.homeserver import Homeserver


def client_servlets(hs: Homeserver) -> list[Any]:
    from mxserver.api.client import (
        account,
        account_data,
        admin,
        devices,
        directory,
        federation_admin,
        filters,
        hierarchy,
        keys,
        login,
        membership,
        presence,
        profile,
        push_rules,
        receipts,
        register,
        room_events,
        room_keys,
        rooms_create,
        sync,
        to_device,
        typing,
        user_directory,
        versions,
    )
    from mxserver.api.media import client_media_servlets

    return [
        versions.VersionsServlet(hs),
        register.RegisterServlet(hs),
        login.LoginServlet(hs),
        account.AccountServlet(hs),
        devices.DevicesServlet(hs),
        admin.AdminRegisterServlet(hs),
        federation_admin.FederationAdminServlet(hs),
        room_events.RoomEventsServlet(hs),
        rooms_create.CreateRoomServlet(hs),
        membership.MembershipServlet(hs),
        directory.DirectoryServlet(hs),
        account_data.AccountDataServlet(hs),
        filters.FilterServlet(hs),
        to_device.ToDeviceServlet(hs),
        push_rules.PushRulesServlet(hs),
        room_keys.RoomKeysServlet(hs),
        keys.KeysServlet(hs),
        keys.DehydratedDeviceServlet(hs),
        typing.TypingServlet(hs),
        receipts.ReceiptsServlet(hs),
        presence.PresenceServlet(hs),
        profile.ProfileServlet(hs),
        user_directory.UserDirectoryServlet(hs),
        sync.SyncServlet(hs),
        hierarchy.HierarchyServlet(hs),
        *client_media_servlets(hs),
    ]
