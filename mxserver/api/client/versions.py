"""Discovery: /versions, /capabilities, /.well-known/matrix/client and /.well-known/matrix/support."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.accounts.protocols import LoginFlows
from mxserver.api.http import JsonDict, route
from mxserver.config import SupportContact
from mxserver.errors import not_found
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.storage.accounts import AccountStore

#: Spec versions advertised. Only versions whose required features exist here
#: may be listed; raise this as the implementation grows (v1.11 brought
#: authenticated media, served by mxserver.api.media; v1.12 account locking, v1.13
#: suspension, room reports and appservice ephemeral data, v1.14 user reports, v1.15 room
#: summaries; its OAuth 2.0 API is optional: auth_metadata answers 404 M_UNRECOGNIZED), v1.16
#: /sync's use_state_after, profile fields and room version 12, v1.17 appservice device
#: masquerading and management, v1.18 admin lock/suspend endpoints, invite blocking
#: (mxserver.accounts.invite_permission) and asking Policy Servers to sign our events
#: (mxserver.rooms.policy_server), v1.19 mutual_rooms and unsigned.replaces_state.
#: tests/test_spec_versions.py checks each version's headline features.
SUPPORTED_SPEC_VERSIONS = [
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
]

#: unstable features (MSCs) this server implements
UNSTABLE_FEATURES: dict[str, bool] = {
    # MSC4186 simplified sliding sync (mxserver.sliding_sync)
    "org.matrix.simplified_msc3575": True,
}


class VersionsServlet:
    """``/versions``, ``/capabilities`` and the client well-known."""

    def __init__(
        self,
        auth: Auth,
        accounts: AccountStore,
        login_flows: LoginFlows,
        default_room_version: str,
        client_base_url: str,
        support_contacts: Sequence[SupportContact] = (),
        support_page: str | None = None,
    ) -> None:
        self.auth = auth
        self.accounts = accounts
        self.login_flows = login_flows
        self.default_room_version = default_room_version
        #: /.well-known/matrix/client's m.homeserver base_url
        self.client_base_url = client_base_url
        #: /.well-known/matrix/support
        self.support_contacts = list(support_contacts)
        self.support_page = support_page

    @route("GET", "/_matrix/client/versions")
    def versions(self, request: IRequest) -> JsonDict:
        return {"versions": SUPPORTED_SPEC_VERSIONS, "unstable_features": UNSTABLE_FEATURES}

    @route("GET", "/_matrix/client/v3/capabilities", "/_matrix/client/r0/capabilities")
    async def capabilities(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request, allow_guest=True)
        capabilities: JsonDict = {
            "m.room_versions": {
                "default": self.default_room_version,
                "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
            },
            "m.change_password": {"enabled": "m.login.password" in self.login_flows},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": True},
            "m.get_login_token": {"enabled": not requester.is_guest},
            # v1.16: every field may be changed (profile.yaml; suspended accounts excepted)
            "m.profile_fields": {"enabled": True},
            # v1.18: left rooms are not forgotten automatically (POST /forget does that)
            "m.forget_forced_upon_leave": {"enabled": False},
        }
        user = await self.accounts.get_user(requester.user_id)
        if user is not None and user.is_admin:
            # v1.18: server admins may lock and suspend accounts (admin.yaml); omitted for others
            capabilities["m.account_moderation"] = {"lock": True, "suspend": True}
        return {"capabilities": capabilities}

    @route("GET", "/.well-known/matrix/client")
    def well_known_client(self, request: IRequest) -> JsonDict:
        return {"m.homeserver": {"base_url": self.client_base_url}}

    @route("GET", "/.well-known/matrix/support")
    def well_known_support(self, request: IRequest) -> JsonDict:
        """support.yaml (v1.10): the administrators' contacts and support page; 404 when the
        config names neither (the spec requires at least one)."""
        if not self.support_contacts and not self.support_page:
            raise not_found("No support information is configured")
        out: JsonDict = {}
        if self.support_contacts:
            out["contacts"] = [
                {k: v for k, v in attrs.asdict(c).items() if v is not None} for c in self.support_contacts
            ]
        if self.support_page:
            out["support_page"] = self.support_page
        return out
