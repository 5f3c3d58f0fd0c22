"""Third-party invites: inviting by e-mail address (or another 3PID) through an identity server.

client-server-api §Third-party invites, server-server-api §Third-party invites,
identity-service-api §Invitation storage. Three steps, possibly on three servers:

1. The inviter's server (:meth:`ThirdPartyInviteHandler.invite`) looks the 3PID up on the
   identity server the client names. A bound 3PID is invited like any user; otherwise the
   identity server stores the invitation and the inviter sends an
   ``m.room.third_party_invite`` state event keyed by the token it got, holding the
   identity server's public keys.
2. When the 3PID is bound, the identity server calls ``/3pid/onbind`` on the new owner's
   server (:meth:`ThirdPartyInviteHandler.on_bind`) with a ``signed`` block per pending
   invite: ``{mxid, token, signatures}`` signed by the identity server. A client joining
   with ``third_party_signed`` hands in the same proof
   (:meth:`ThirdPartyInviteHandler.join`).
3. The proof becomes an ``m.room.member`` invite carrying ``third_party_invite``. It is
   made by the inviter's server (:meth:`ThirdPartyInviteHandler.issue`): here when the
   inviter is one of ours, else by asking the inviter's server through
   ``/exchange_third_party_invite`` (the client-server prose: "If the invitee is on a
   different homeserver than the inviting user, the invitee's homeserver makes a request
   to ..."), which then invites the user the usual way (co-signed by the invitee's server).
   Before that, the inviting server checks the signature against the room's
   ``m.room.third_party_invite`` and asks the key's ``key_validity_url`` whether the
   identity server still stands by the key (server-server-api: "H1 MUST verify the request
   from H3 ... as well as the key_validity_url as still being valid"); the auth rules
   (v1 §5.3.1) check the signature again when the event enters the room.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.accounts.identity_lookup import IdentityLookup, check_id_server
from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.events.model import Event
from mxserver.identifier_checks import check_room_id, check_user_id, is_room_id, server_of_user
from mxserver.room_handlers.membership import MEMBER, MembershipHandler
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.auth import third_party_verifying_key
from mxserver.rooms.room_server import EventSpec

if TYPE_CHECKING:
    from mxserver.federation.client import FederationClient
    from mxserver.federation.remote_rooms import RemoteRooms

log = Logger()

THIRD_PARTY_INVITE = "m.room.third_party_invite"


@attrs.frozen
class ThirdPartyId:
    """An invitee named by a 3PID (invite_3pid.yaml), and the identity server to ask."""

    id_server: str
    id_access_token: str
    medium: str
    address: str


def parse_third_party_id(body: Any, where: str = "") -> ThirdPartyId:
    """invite_3pid.yaml's four keys, type-checked (400 M_BAD_JSON / M_MISSING_PARAM / M_INVALID_PARAM)."""
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{where or 'The body'} must be an object")
    values: dict[str, str] = {}
    for key in ("id_server", "id_access_token", "medium", "address"):
        value = body.get(key)
        if value is None:
            raise MatrixError(400, "M_MISSING_PARAM", f"{where}{key} is required")
        if not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", f"{where}{key} must be a string")
        if not value or len(value) > 512:
            raise invalid_param(f"{where}{key} must be a non-empty string of at most 512 characters")
        values[key] = value
    check_id_server(values["id_server"])
    return ThirdPartyId(**values)


def check_signed(signed: Any, what: str) -> dict[str, Any]:
    """A ``signed`` block (signed_third_party_invite.yaml): ``mxid``, ``token`` and ``signatures``."""
    if not isinstance(signed, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must be an object")
    if not isinstance(signed.get("mxid"), str) or not isinstance(signed.get("token"), str):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must have string mxid and token")
    if not isinstance(signed.get("signatures"), dict):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must have signatures")
    return signed


class ThirdPartyInviteHandler:
    """Invites by 3PID, the binding callback, joins with a third-party proof and the exchange."""

    def __init__(
        self,
        room_server: ClientRooms,
        membership: MembershipHandler,
        remote_rooms: RemoteRooms,
        federation: FederationClient,
        identity: IdentityLookup,
        server_name: str,
    ) -> None:
        self.room_server = room_server
        self.membership = membership
        self.remote_rooms = remote_rooms
        self.federation = federation
        self.identity = identity
        self.server_name = server_name

    # -- 1. inviting a 3PID -----------------------------------------------------------------------

    async def invite(self, requester: Requester, room_id: str, invitee: ThirdPartyId) -> None:
        """POST /rooms/{roomId}/invite with a 3PID (third_party_membership.yaml)."""
        await self.membership.local_room(room_id)
        sender = requester.user_id
        # Refused before the identity server hears of it: only members invite (the auth rules
        # check the power level when the event is sent).
        if await self.room_server.membership(room_id, sender) != "join":
            raise forbidden("You are not in the room")
        mxid = await self.identity.lookup(invitee.id_server, invitee.id_access_token, invitee.medium, invitee.address)
        if mxid is not None:
            # §Server behaviour: "If the lookup yields a result ... the normal invite process".
            await self.membership.invite(requester, room_id, mxid)
            return
        stored = await self.identity.store_invite(
            invitee.id_server, invitee.id_access_token, await self._store_invite_body(room_id, sender, invitee)
        )
        await self.room_server.send(
            room_id, EventSpec(THIRD_PARTY_INVITE, stored.event_content(), stored.token, sender)
        )

    async def _store_invite_body(self, room_id: str, sender: str, invitee: ThirdPartyId) -> dict[str, Any]:
        """v2_store_invite.yaml: the required keys and the optional room and sender details
        ("Optional fields in the request should be populated to the best of the server's ability")."""
        body: dict[str, Any] = {
            "medium": invitee.medium,
            "address": invitee.address,
            "room_id": room_id,
            "sender": sender,
        }
        keys = [(t, "") for t in ("m.room.create", "m.room.canonical_alias", "m.room.avatar", "m.room.join_rules", "m.room.name")]
        state = await self.room_server.current_state_events(room_id, keys)

        def field(etype: str, key: str) -> Any:
            ev = state.get((etype, ""))
            return ev.content.get(key) if ev is not None and isinstance(ev.content, dict) else None

        for out, etype, key in (
            ("room_alias", "m.room.canonical_alias", "alias"),
            ("room_avatar_url", "m.room.avatar", "url"),
            ("room_join_rules", "m.room.join_rules", "join_rule"),
            ("room_name", "m.room.name", "name"),
            ("room_type", "m.room.create", "type"),
        ):
            value = field(etype, key)
            if isinstance(value, str) and value:
                body[out] = value
        profile = await self.membership.profile_content(sender)
        if isinstance(profile.get("displayname"), str):
            body["sender_display_name"] = profile["displayname"]
        if isinstance(profile.get("avatar_url"), str):
            body["sender_avatar_url"] = profile["avatar_url"]
        return body

    # -- 2. the identity server's binding callback, and joins with a proof -------------------------------

    async def on_bind(self, body: Any) -> None:
        """PUT /_matrix/federation/v1/3pid/onbind: turn each pending invite into a member invite.

        Every invite is tried; if one could not be issued, the answer is the last such error
        (as Synapse answers), so the identity server learns the notification did not fully
        succeed.
        """
        if not isinstance(body, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be an object")
        for key in ("medium", "address", "mxid"):
            if not isinstance(body.get(key), str):
                raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
        mxid = check_user_id(body["mxid"])
        if server_of_user(mxid) != self.server_name:
            raise invalid_param(f"{mxid} is not a user of this server")
        await self.membership.check_invitee(mxid)  # 404 for an unknown or deactivated account
        invites = body.get("invites", [])
        if not isinstance(invites, list):
            raise MatrixError(400, "M_BAD_JSON", "invites must be an array")
        failure: MatrixError | None = None
        for i, invite in enumerate(invites):
            try:
                if not isinstance(invite, dict):
                    raise MatrixError(400, "M_BAD_JSON", f"invites[{i}] must be an object")
                room_id = invite.get("room_id")
                if not isinstance(room_id, str) or not is_room_id(room_id):
                    raise invalid_param(f"invites[{i}].room_id is not a room ID")
                sender = check_user_id(invite.get("sender"))
                if invite.get("mxid", mxid) != mxid:
                    raise invalid_param(f"invites[{i}].mxid is not the bound user")
                signed = check_signed(invite.get("signed"), f"invites[{i}].signed")
                await self.accept(room_id, sender, mxid, signed)
            except MatrixError as e:
                log.warn("3pid/onbind: invite {i} for {mxid} not issued: {e}", i=i, mxid=mxid, e=e.msg)
                failure = e
        if failure is not None:
            raise failure

    async def join(
        self,
        requester: Requester,
        room_id_or_alias: str,
        third_party_signed: Any,
        reason: str | None,
        via: Sequence[str] = (),
        extra_content: dict[str, Any] | None = None,
    ) -> str:
        """POST /join with ``third_party_signed`` (joining.yaml): the proof becomes an invite
        (if the user is not invited or joined yet), then the user joins."""
        signed = check_signed(third_party_signed, "third_party_signed")
        sender = signed.get("sender")
        if not isinstance(sender, str):
            raise MatrixError(400, "M_BAD_JSON", "third_party_signed.sender must be a string")
        sender = check_user_id(sender)
        user_id = requester.user_id
        if signed["mxid"] != user_id:
            raise forbidden("third_party_signed is for another user")
        room_id, _ = await self.membership.resolve_room_and_servers(room_id_or_alias, via)
        own = await self.remote_rooms.local_membership(room_id, user_id)
        if own is None or own.membership not in ("invite", "join"):
            await self.accept(room_id, sender, user_id, signed)
        return await self.membership.join(requester, room_id, reason, via, extra_content=extra_content)

    async def accept(self, room_id: str, sender: str, target: str, signed: dict[str, Any]) -> None:
        """Have the inviter's server make ``target``'s invite from the proof ``signed``."""
        if server_of_user(sender) == self.server_name:
            await self.issue(room_id, sender, target, signed)
            return
        # We are the invitee's server: the inviter's server authorises and sends the invite.
        destination = server_of_user(sender)
        display_name = ""
        if await self.room_server.get_room(room_id) is not None:
            tpi = await self.room_server.current_state_event(room_id, THIRD_PARTY_INVITE, signed["token"])
            if tpi is not None and isinstance(tpi.content.get("display_name"), str):
                display_name = tpi.content["display_name"]
        body = {
            "type": MEMBER,
            "room_id": room_id,
            "sender": sender,
            "state_key": target,
            "content": {
                "membership": "invite",
                "third_party_invite": {"display_name": display_name, "signed": signed},
            },
        }
        from mxserver.federation.client import FederationError
        from mxserver.federation.remote_rooms import q

        try:
            await self.federation.put_json(
                destination, f"/_matrix/federation/v1/exchange_third_party_invite/{q(room_id)}", body
            )
        except FederationError as e:
            raise e.to_matrix_error() from None

    # -- 3. the inviting server makes the invite --------------------------------------------------------

    async def on_exchange(self, origin: str, room_id: str, body: Any) -> None:
        """PUT /exchange_third_party_invite/{roomId} (third_party_invite.yaml): the invitee's
        server ``origin`` asks us, the inviter's server, to issue the invite."""
        if not isinstance(body, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be an object")
        room_id = check_room_id(room_id)
        if body.get("room_id") != room_id:
            raise invalid_param("room_id does not match the path")
        if body.get("type") != MEMBER:
            raise invalid_param("type must be m.room.member")
        content = body.get("content")
        if not isinstance(content, dict) or content.get("membership") != "invite":
            raise invalid_param("content.membership must be invite")
        tpi = content.get("third_party_invite")
        if not isinstance(tpi, dict):
            raise MatrixError(400, "M_BAD_JSON", "content.third_party_invite must be an object")
        signed = check_signed(tpi.get("signed"), "content.third_party_invite.signed")
        sender, target = check_user_id(body.get("sender")), check_user_id(body.get("state_key"))
        if server_of_user(sender) != self.server_name:
            raise invalid_param(f"{sender} is not a user of this server")
        if server_of_user(target) != origin:
            # Only the invitee's server holds the proof the identity server sent it.
            raise forbidden(f"{target} is not a user of the requesting server {origin}")
        await self.issue(room_id, sender, target, signed)

    async def issue(self, room_id: str, sender: str, target: str, signed: dict[str, Any]) -> None:
        """Invite ``target`` on behalf of our user ``sender`` with the proof ``signed``.

        Checked first as the auth rules will (v1 §5.3.1: the token's
        ``m.room.third_party_invite`` exists, was sent by ``sender``, and a signature in
        ``signed`` verifies under one of its keys), then the key's validity URL is asked.
        """
        if not await self.remote_rooms.is_host_in_room(room_id):
            raise not_found(f"Unknown room {room_id}: this server is not in it")
        if signed["mxid"] != target:
            raise forbidden("The proof is for another user")
        tpi = await self.room_server.current_state_event(room_id, THIRD_PARTY_INVITE, signed["token"])
        if tpi is None:
            raise forbidden("The room has no third-party invite with this token")
        if tpi.sender != sender:
            raise forbidden(f"The third-party invite was not sent by {sender}")
        key = third_party_verifying_key(signed, tpi.content)
        if key is None:
            raise forbidden("The proof is not signed by a key of the third-party invite")
        await self._check_key_valid(tpi, key)
        membership = await self.room_server.membership(room_id, target)
        if membership in ("invite", "join"):
            return
        if membership == "ban":
            raise forbidden(f"{target} is banned from the room")
        display_name = tpi.content.get("display_name")
        content: dict[str, Any] = {
            "membership": "invite",
            **await self.membership.profile_content(target),
            "third_party_invite": {
                "display_name": display_name if isinstance(display_name, str) else "",
                "signed": signed,
            },
        }
        if server_of_user(target) == self.server_name:
            await self.membership.check_invitee(target)
            await self.room_server.send(room_id, EventSpec(MEMBER, content, target, sender))
        else:
            await self.remote_rooms.invite(room_id, sender, target, content)

    async def _check_key_valid(self, tpi: Event, key: str) -> None:
        """Every validity URL the invite gives for ``key`` (its ``public_keys`` entries, and
        ``key_validity_url`` when it is the ``public_key``) says it is still valid; a
        ``public_keys`` entry without one is "valid indefinitely" (event schema)."""
        content = tpi.content
        urls: list[str] = []
        if content.get("public_key") == key and isinstance(content.get("key_validity_url"), str):
            urls.append(content["key_validity_url"])
        entries = content.get("public_keys")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("public_key") == key:
                url = entry.get("key_validity_url")
                if isinstance(url, str):
                    urls.append(url)
        for url in dict.fromkeys(urls):
            try:
                valid = await self.identity.key_is_valid(url, key)
            except MatrixError as e:  # no answer, a refused address, or a refusal
                raise forbidden(f"Could not check that the identity server's key is still valid: {e.msg}") from None
            if not valid:
                raise forbidden("The identity server's key that signed the proof is no longer valid")
