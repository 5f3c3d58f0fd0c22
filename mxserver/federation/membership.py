"""The resident side of the federation membership handshakes, and invites of our users.

server-server-api §Joining Rooms, §Restricted rooms, §Knocking upon a room,
§Inviting to a room, §Leaving Rooms. Another server asks us (a server in the
room) for a template (``make_join``/``make_leave``/``make_knock``), signs it
and sends it back (``send_*``); we check it like any PDU
(:func:`~mxserver.federation.pdu_checks.check_pdu`), co-sign restricted
joins we authorised, and receive it into the room through the room server,
which authorises it. ``PUT /invite`` asks us to co-sign an invite of one of
our users to a room elsewhere; it is kept as an out-of-band membership so the
user sees it in /sync and can join or reject it.

A membership event of another server accepted here must also reach the room's
other servers: the handler publishes it on :attr:`FederationMembershipHandler.accepted`
(a :class:`RemoteMembershipAccepted`), which the Homeserver wires to the
federation sender (built later), rather than calling the sender itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import attrs
from signedjson.types import SigningKey
from twisted.logger import Logger

from mxserver.accounts.invite_permission import InvitePermissions
from mxserver.crypto.signing import SignatureError, signature_ids
from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.events.hashing import check_content_hash
from mxserver.events.model import Event
from mxserver.events.signing import add_event_signature, verify_event_signature
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxserver.federation.pdu_checks import InvalidPdu, check_pdu, check_pdu_format
from mxserver.federation.remote_rooms import MEMBER, RemoteRooms, event_template, stripped
from mxserver.federation.room_access import acl_allows
from mxserver.identifier_checks import is_room_id, server_of_user
from mxserver.ids import is_valid_event_id
from mxserver.rooms.power_levels import JOIN_RULES_KEY, POWER_LEVELS_KEY, get_named_level, get_user_power_level
from mxserver.rooms.room_server import EventSpec, MissingEventsError, MissingStateError
from mxserver.storage.events import RoomRecord
from mxserver.streams import Stream

if TYPE_CHECKING:
    from mxserver.federation.keyring import Keyring
    from mxserver.rooms.api import FederationRooms
    from mxserver.storage.accounts import AccountStore
    from mxserver.storage.events import EventStore
    from mxserver.storage.state import StateStore

log = Logger()


def _user_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith("@") and ":" in value


def incompatible_room_version(rv_id: str, msg: str) -> MatrixError:
    # joins-v1.yaml 400: "room_version ... Required if the errcode is M_INCOMPATIBLE_ROOM_VERSION"
    return MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", msg, room_version=rv_id)


def _depth_order(event: Event) -> tuple[int, str]:
    return event.depth, event.event_id


def _not_origin_user(origin: str) -> MatrixError:
    """A membership event of another server's user, sent by ``origin``: 403, as Synapse answers
    (SyTest "Inbound /v1/send_join rejects joins from other servers"); the spec mandates no
    code (joins-v2.yaml: "servers SHOULD return M_INVALID_PARAM")."""
    return forbidden(f"The event's sender is not a user of the requesting server {origin}")


@attrs.frozen
class RemoteMembershipAccepted:
    """Another server's join, leave or knock, newly accepted into a room we are in: the
    resident sends it on to the room's other servers (all but ``origin``, which has it)."""

    event: Event
    origin: str


class FederationMembershipHandler:
    """``hs.federation_membership``: answers make_*/send_* and invites from other servers."""

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        rooms: FederationRooms,
        events: EventStore,
        state: StateStore,
        accounts: AccountStore,
        keyring: Keyring,
        remote_rooms: RemoteRooms,
        invite_permissions: InvitePermissions,
    ) -> None:
        self.server_name = server_name
        self.invite_permissions = invite_permissions
        self.signing_key = signing_key
        self.room_server = rooms
        self.events = events
        self.state = state
        self.accounts = accounts
        self.keyring = keyring
        self.remote_rooms = remote_rooms
        #: membership events of other servers accepted here (not duplicates), to send on
        self.accepted: Stream[RemoteMembershipAccepted] = Stream("remote_membership_accepted")

    # -- shared checks ------------------------------------------------------------------------

    async def _resident_room(self, origin: str, room_id: str) -> RoomRecord:
        """The room, if we are in it and ``origin`` is not denied by its ACL."""
        if not is_room_id(room_id):
            raise invalid_param(f"Invalid room ID {room_id[:100]!r}")
        room = await self.room_server.get_room(room_id)
        if room is None or not await self.remote_rooms.is_host_in_room(room_id):
            raise not_found(f"Unknown room {room_id}: this server is not in it")
        if not await acl_allows(self.room_server, room_id, origin):
            raise forbidden(f"Server {origin} is denied by the room's server ACL")
        return room

    # -- make_join / make_leave / make_knock ------------------------------------------------------

    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, versions: Sequence[str]
    ) -> dict[str, Any]:
        """A template of ``user_id``'s ``membership`` event, if the auth rules allow it now."""
        if not _user_id(user_id):
            raise invalid_param(f"Invalid user ID {user_id[:100]!r}")
        if server_of_user(user_id) != origin:
            # joins-v1.yaml: "This MUST be a user ID on the origin server."
            raise forbidden(f"User {user_id} is not a user of the requesting server {origin}")
        room = await self._resident_room(origin, room_id)
        rv = room.room_version
        if membership != "leave" and rv.identifier not in versions:
            raise incompatible_room_version(
                rv.identifier, f"Room {room_id} is version {rv.identifier}, which your server does not support"
            )
        if membership == "knock" and not rv.knock_join_rule:
            raise incompatible_room_version(rv.identifier, f"Room version {rv.identifier} does not support knocking")
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            authoriser = await self._restricted_join_authoriser(room, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        event = await self.room_server.build_unpersisted(room_id, EventSpec(MEMBER, content, user_id, user_id))
        return {"room_version": rv.identifier, "event": event_template(event, self.server_name)}

    async def _restricted_join_authoriser(self, room: RoomRecord, user_id: str) -> str | None:
        """server-server-api §Restricted rooms: a local member who may invite, to vouch for a
        join by the allow conditions; None when the room is not restricted or the user needs none."""
        rv = room.room_version
        if not rv.restricted_join_rule:
            return None
        keys = [JOIN_RULES_KEY, POWER_LEVELS_KEY, ("m.room.create", ""), (MEMBER, user_id)]
        state = await self.room_server.current_state_events(room.room_id, keys)
        rule = state[JOIN_RULES_KEY].content if JOIN_RULES_KEY in state else {}
        restricted = ("restricted", "knock_restricted") if rv.knock_restricted_join_rule else ("restricted",)
        if rule.get("join_rule") not in restricted:
            return None
        own = state.get((MEMBER, user_id))
        if own is not None and own.membership in ("join", "invite"):
            return None  # joins-v1.yaml: "If the user is responding to an invite, this is not required."
        allow = rule.get("allow")
        rooms = [
            c["room_id"]
            for c in (allow if isinstance(allow, list) else [])
            if isinstance(c, dict) and c.get("type") == "m.room_membership" and isinstance(c.get("room_id"), str)
        ]
        known = [r for r in rooms if await self.remote_rooms.is_host_in_room(r)]
        if not known:
            raise MatrixError(
                400, "M_UNABLE_TO_AUTHORISE_JOIN", "This server is not in any of the rooms the join rule allows"
            )
        if not any([await self.room_server.membership(r, user_id) == "join" for r in known]):
            raise forbidden("You are not invited to this room and not joined to any room its join rule allows")
        ids = await self.room_server.current_state_ids(room.room_id)
        ours = self.server_name
        member_keys = [k for k in ids if k[0] == MEMBER and server_of_user(k[1]) == ours]
        members = await self.room_server.current_state_events(room.room_id, member_keys)
        pl = state.get(POWER_LEVELS_KEY)
        invite_level = get_named_level(pl.content if pl is not None else None, "invite", rv)
        candidates = [
            (-get_user_power_level(k[1], state, rv, create_event=state.get(("m.room.create", ""))), k[1])
            for k, ev in members.items()
            if ev.membership == "join"
        ]
        candidates = [c for c in candidates if -c[0] >= invite_level]
        if not candidates:
            raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "No member of the room on this server may invite you")
        return min(candidates)[1]

    # -- send_join / send_leave / send_knock ---------------------------------------------------------

    async def send_membership(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> tuple[RoomRecord, Event]:
        """Check another server's signed membership event and receive it into the room."""
        room = await self._resident_room(origin, room_id)
        rv = room.room_version
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be the signed event")
        content = pdu.get("content")
        sender = pdu.get("sender")
        # joins-v2.yaml / leaving-v2.yaml / knocks.yaml: these SHOULD be M_INVALID_PARAM.
        if pdu.get("type") != MEMBER:
            raise invalid_param("The event is not an m.room.member event")
        if not isinstance(content, dict) or content.get("membership") != membership:
            raise invalid_param(f"The event's membership is not {membership!r}")
        if not _user_id(sender) or server_of_user(sender) != origin:
            raise _not_origin_user(origin)
        if pdu.get("state_key") != sender:
            raise invalid_param("The event's state_key is not its sender")
        if pdu.get("room_id") != room_id:
            raise invalid_param("The event is for another room")
        if membership == "join":
            # Signed before the checks, which require the authorising server's signature: it
            # is only kept (persisted, returned) if the origin's signature checks out.
            pdu = self._cosign_restricted_join(pdu, rv)
        event = await self._checked(pdu, rv, origin)
        if event.event_id != event_id:
            raise invalid_param(f"The event's ID is {event.event_id}, not {event_id}")
        try:
            result = await self.room_server.receive_event(event)
        except (MissingEventsError, MissingStateError) as e:
            raise invalid_param(f"The event does not build on this room's events: {e}") from None
        if not result.accepted:
            raise forbidden(f"The {membership} was refused: {result.reason or result.status.value}")
        stored = await self.events.get_event(event.event_id)
        stored = stored if stored is not None else event
        if not result.duplicate:
            # §Joining Rooms: "The resident server must also send the event to other servers
            # participating in the room" (and likewise for leaves and knocks).
            self.accepted.publish(RemoteMembershipAccepted(stored, origin))
        return room, stored

    async def _checked(self, pdu: dict[str, Any], rv: RoomVersion, origin: str) -> Event:
        """The event of a membership PDU ``origin`` asks us to accept or co-sign, if it passes
        the checks -- a content hash mismatch included: we would otherwise sign (or serve)
        content its sender never signed.

        The errors: joins-v2.yaml and invites-v2.yaml mandate no error code ("servers SHOULD
        return M_INVALID_PARAM"). Where SyTest encodes Synapse's codes we match them: a PDU
        that is not JSON of its room version (v6-canonical-json: a float, an integer out of
        range) is 400 ``M_BAD_JSON``; a missing or bad signature of the origin is 403
        ``M_FORBIDDEN`` (checked before the format, so an unsigned template is refused as
        unsigned); any other failure is 400 ``M_INVALID_PARAM``.
        """
        try:
            check_pdu_format(pdu, rv)
        except InvalidPdu as e:
            if e.kind == "json":  # before the signature, which cannot be checked on such JSON
                raise MatrixError(400, "M_BAD_JSON", f"The event failed the checks: {e.reason}") from None
        await self._check_origin_signature(pdu, rv, origin)
        try:
            event = await check_pdu(self.keyring, pdu, rv)
        except InvalidPdu as e:
            msg = f"The event failed the checks: {e.reason}"
            if e.kind == "json":
                raise MatrixError(400, "M_BAD_JSON", msg) from None
            if e.kind == "signature":
                raise forbidden(msg) from None
            raise invalid_param(msg) from None
        if not check_content_hash(pdu):
            raise invalid_param("The event's content hash does not match its content")
        return event

    async def _check_origin_signature(self, pdu: dict[str, Any], rv: RoomVersion, origin: str) -> None:
        """403 unless ``origin`` signed the PDU (with any key it ever published: key validity
        and every other check are :func:`check_pdu`'s). Done first, so a PDU signed by nobody,
        or with a forged signature, is refused as such even if it is malformed too (SyTest
        "Inbound /v1/send_join rejects incorrectly-signed joins" sends the bare template)."""
        ids = signature_ids(pdu, origin)
        if not ids:
            raise forbidden(f"The event is not signed by {origin}")
        try:
            keys = await self.keyring.get_verify_keys(origin, ids, 0)
        except Exception:
            keys = {}
        if not keys:
            raise forbidden(f"No key of {origin} among {', '.join(sorted(ids))} is known")
        try:
            verify_event_signature(pdu, rv, origin, keys)
        except SignatureError as e:
            raise forbidden(f"The event's signature by {origin} does not check: {e}") from None
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # too malformed to encode: check_pdu says how

    def _cosign_restricted_join(self, pdu: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        """joins-v2.yaml: a join authorised via one of our users must carry our signature
        before it is persisted or sent on."""
        content = pdu.get("content")
        via = content.get("join_authorised_via_users_server") if isinstance(content, dict) else None
        if not rv.restricted_join_rule or not _user_id(via) or server_of_user(via) != self.server_name:
            return pdu
        try:
            return add_event_signature(pdu, rv, self.server_name, self.signing_key)
        except (TypeError, ValueError, KeyError):
            raise invalid_param("The event cannot be signed: it is malformed") from None

    async def send_join_answer(self, room: RoomRecord, event: Event) -> dict[str, Any]:
        """joins-v2.yaml 200: the state before the join, its auth chain, the (co-signed) event."""
        info = await self.events.get_event_info(event.event_id)
        state_ids = await self.state.get_state(info.state_before if info is not None else None)
        ids = list(state_ids.values())
        chain_ids = await self.events.get_auth_chain_ids([*ids, event.event_id])
        events = await self.events.get_events([*ids, *chain_ids])
        state = [events[e] for e in ids if e in events]
        servers = {
            server_of_user(ev.state_key)
            for ev in state
            if ev.type == MEMBER and ev.membership == "join" and isinstance(ev.state_key, str)
        }
        return {
            "state": [e.get_pdu_json() for e in state],
            # Oldest first (by depth): the spec gives no order, but a joining server that takes
            # the last event of each state key seen (SyTest's does) would otherwise end up with
            # an older power-levels event than the one in ``state``.
            "auth_chain": [
                ev.get_pdu_json() for ev in sorted((events[e] for e in chain_ids if e in events), key=_depth_order)
            ],
            "event": event.get_pdu_json(),
            "members_omitted": False,
            "servers_in_room": sorted(servers | {self.server_name}),
        }

    async def knock_room_state(self, room_id: str) -> list[dict[str, Any]]:
        return await self.remote_rooms.invite_room_state(room_id)

    # -- invites of our users ------------------------------------------------------------------------------

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """invites-v2.yaml: check, co-sign and remember an invite of one of our users."""
        if not is_room_id(room_id):
            raise invalid_param(f"Invalid room ID {room_id[:100]!r}")
        if not is_valid_event_id(event_id):
            raise invalid_param(f"Invalid event ID {event_id[:100]!r}")
        ver = body.get("room_version")
        if ver is None:
            raise MatrixError(400, "M_MISSING_PARAM", "'room_version' is required")
        if not isinstance(ver, str):
            raise MatrixError(400, "M_BAD_JSON", "'room_version' must be a string")
        rv = KNOWN_ROOM_VERSIONS.get(ver)
        if rv is None:
            raise incompatible_room_version(ver, f"This server does not support room version {ver[:50]!r}")
        pdu = body.get("event")
        if pdu is None:
            raise MatrixError(400, "M_MISSING_PARAM", "'event' is required")
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "'event' must be the invite event")
        given = body.get("invite_room_state", [])
        if not isinstance(given, list):
            raise MatrixError(400, "M_BAD_JSON", "'invite_room_state' must be an array")
        if not is_room_id(room_id) or pdu.get("room_id") != room_id:
            raise invalid_param("The event is for another room")
        content = pdu.get("content")
        sender, target = pdu.get("sender"), pdu.get("state_key")
        if pdu.get("type") != MEMBER or not isinstance(content, dict) or content.get("membership") != "invite":
            raise invalid_param("The event is not an invite")
        if not _user_id(sender) or server_of_user(sender) != origin:
            raise _not_origin_user(origin)
        if not _user_id(target) or server_of_user(target) != self.server_name:
            raise invalid_param("The invited user is not a user of this server")
        event = await self._checked(pdu, rv, origin)
        if event.event_id != event_id:
            raise invalid_param(f"The event's ID is {event.event_id}, not {event_id}")
        # server-server-api §Server Access Control Lists: a denied server gets 403 whatever
        # else is wrong with its request (checked before the invitee is looked up).
        if not await acl_allows(self.room_server, room_id, origin):
            raise forbidden(f"Server {origin} is denied by the room's server ACL")
        user = await self.accounts.get_user(target)
        if user is not None and user.deactivated:
            # invites-v2.yaml 403: "The sender is not allowed to send invites to the target user".
            raise forbidden(f"{target} is deactivated")
        # client-server-api §Invite permission (v1.18): 403 M_INVITE_BLOCKED on v1 and v2
        await self.invite_permissions.check_invitable(target)
        state = await self._invite_room_state(given, rv, room_id)
        signed = add_event_signature(pdu, rv, self.server_name, self.signing_key)
        if user is None:
            # invites-v2.yaml has no 404: an invite of a user that does not exist (yet) is
            # co-signed like any other, as Synapse does (SyTest's "Banned servers cannot /invite"
            # invites a made-up user as its control). Nobody here can see it, so it is not kept.
            return {"event": signed}
        if not await self.remote_rooms.is_host_in_room(room_id):
            # We are not in the room: the invite only reaches us here. Keep it out of band.
            current = await self.remote_rooms.local_membership(room_id, target)
            if current is not None and current.membership == "ban":
                raise forbidden(f"{target} is banned from the room")
            stored = dict(signed)
            unsigned = pdu.get("unsigned")
            stored["unsigned"] = {**(unsigned if isinstance(unsigned, dict) else {}), "invite_room_state": state}
            invite = Event(stored, rv, event_id=event.event_id)
            creator = next((s["sender"] for s in state if s["type"] == "m.room.create"), event.sender)
            await self.room_server.persist_out_of_band_membership(room_id, rv, creator, invite)
        # Otherwise it also arrives in a transaction of the room's events (invites-v2.yaml).
        return {"event": signed}

    async def on_invite_v1(self, origin: str, room_id: str, event_id: str, pdu: Any) -> dict[str, Any]:
        """invites-v1.yaml: the body is the invite event itself, and "servers which receive a
        v1 invite request must assume that the room version is either "1" or "2"" -- we take
        the one the m.room.create event in its ``unsigned.invite_room_state`` names, if it is
        one of those, else "1" (the two share the event format and auth rules). The stripped
        state comes from there too. Answered like v2 (the route adds v1's ``[200, ...]``)."""
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be the invite event")
        unsigned = pdu.get("unsigned")
        given = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
        given = given if isinstance(given, list) else []
        ver = "1"
        for s in given:
            if isinstance(s, dict) and s.get("type") == "m.room.create" and isinstance(s.get("content"), dict):
                if s["content"].get("room_version") in ("1", "2"):
                    ver = s["content"]["room_version"]
        body = {"room_version": ver, "event": pdu, "invite_room_state": given}
        return await self.on_invite(origin, room_id, event_id, body)

    async def _invite_room_state(self, given: list[Any], rv: RoomVersion, room_id: str) -> list[dict[str, Any]]:
        """The stripped form of ``invite_room_state``, checked as invites-v2.yaml asks.

        From room v12 the m.room.create event must be there and every entry that is a PDU
        must be a properly signed event of the room (M_INVALID_PARAM otherwise). Stripped
        entries, which servers not yet migrated still send (the spec's note on v1.16 asks to
        consider them), are accepted with a warning; for older versions only well-formed
        entries are kept.
        """
        out: list[dict[str, Any]] = []
        for entry in given:
            if not isinstance(entry, dict):
                if rv.hydra:
                    raise invalid_param("invite_room_state entries must be events")
                continue
            if rv.hydra and "signatures" not in entry:
                log.warn("invite to {room_id}: invite_room_state has a stripped event", room_id=room_id)
            elif rv.hydra:
                try:
                    ev = await check_pdu(self.keyring, entry, rv)
                except InvalidPdu as e:
                    raise invalid_param(f"An invite_room_state event failed the checks: {e.reason}") from None
                if ev.room_id != room_id:
                    raise invalid_param("An invite_room_state event is of another room")
            s = stripped(entry)
            if s is not None:
                out.append(s)
        if rv.hydra and not any(s["type"] == "m.room.create" for s in out):
            raise invalid_param("invite_room_state must contain the room's m.room.create event")
        return out
