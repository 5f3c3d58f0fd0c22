"""Room creation (create_room.yaml): from a createRoom request to a room, in one transaction.

Every event of a new room — create, the creator's join, power levels,
canonical alias, the preset's join rules / history visibility / guest access,
``initial_state``, name, topic and the invites — is built and authorised by
the room server in one ``create_room`` call and persisted in one database
transaction: a refused event leaves no half-made room, and creating a room
costs one commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.config import RoomDirectoryConfig
from mxserver.errors import MatrixError, bad_json, forbidden, invalid_param
from mxserver.events.versions import RoomVersion, get_room_version
from mxserver.identifier_checks import check_user_id, is_room_alias, is_room_id, server_of_alias, server_of_user
from mxserver.room_handlers.directory import CANONICAL_ALIAS, DirectoryHandler, canonical_alias_aliases
from mxserver.room_handlers.membership import MembershipHandler
from mxserver.room_handlers.permissions import is_server_admin
from mxserver.room_handlers.third_party_invites import ThirdPartyId, ThirdPartyInviteHandler
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.power_levels import default_power_levels_content
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.accounts import AccountStore

if TYPE_CHECKING:
    # Types only: the federation package imports room_handlers.identifiers at run time.
    from mxserver.federation.remote_rooms import RemoteRooms

log = Logger()

PRESETS = ("private_chat", "trusted_private_chat", "public_chat")

#: create_room.yaml preset table: (join_rule, history_visibility, guest_access)
PRESET_STATE: dict[str, tuple[str, str, str]] = {
    "private_chat": ("invite", "shared", "can_join"),
    "trusted_private_chat": ("invite", "shared", "can_join"),
    "public_chat": ("public", "shared", "forbidden"),
}

#: state initial_state may not set: the server creates these itself
RESERVED_INITIAL_STATE = ("m.room.create", "m.room.member")


@attrs.frozen
class CreateRoomRequest:
    """A createRoom body, its types already checked."""

    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: Sequence[str] = ()
    room_version: str | None = None
    creation_content: dict[str, Any] = attrs.field(factory=dict)
    #: (type, state_key, content) in request order
    initial_state: Sequence[tuple[str, str, dict[str, Any]]] = ()
    preset: str | None = None
    is_direct: bool = False
    power_level_content_override: dict[str, Any] | None = None
    #: ``invite_3pid``: invitees named by a 3PID, invited once the room exists
    invite_3pid: Sequence[ThirdPartyId] = ()


def unsupported_room_version(version: str) -> MatrixError:
    return MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"This server does not support room version {version!r}")


def topic_content(topic: str) -> dict[str, Any]:
    """m.room.topic content: plain ``topic`` and the v1.15 ``m.topic`` text/plain block."""
    return {"topic": topic, "m.topic": {"m.text": [{"mimetype": "text/plain", "body": topic}]}}


class RoomCreationHandler:
    """createRoom: checks the request, builds the initial events, creates the room, maps the alias."""

    def __init__(
        self,
        room_server: ClientRooms,
        accounts: AccountStore,
        membership: MembershipHandler,
        directory: DirectoryHandler,
        remote_rooms: RemoteRooms,
        directory_config: RoomDirectoryConfig,
        default_room_version: str,
        server_name: str,
        third_party: ThirdPartyInviteHandler | None = None,
    ) -> None:
        self.third_party = third_party
        self.room_server = room_server
        self.accounts = accounts
        self.membership = membership
        self.directory = directory
        self.remote_rooms = remote_rooms
        self.directory_config = directory_config
        self.default_room_version = default_room_version
        self.server_name = server_name

    async def create_room(self, requester: Requester, req: CreateRoomRequest) -> dict[str, Any]:
        """Create the room; the createRoom response (``room_id``, and ``room_alias`` if one was made)."""
        requester.check_not_suspended()  # §Account suspension: it would join the room
        creator = requester.user_id
        version = req.room_version if req.room_version is not None else self.default_room_version
        rv = get_room_version(version)
        if rv is None:
            raise unsupported_room_version(version)
        if req.visibility not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        if req.preset is not None and req.preset not in PRESETS:
            raise invalid_param(f"'preset' must be one of {', '.join(PRESETS)}")
        if req.visibility == "public" and not self.directory_config.publication_allowed:
            if not await is_server_admin(self.accounts, creator):
                raise forbidden("Publishing rooms to the room directory is not allowed on this server")
        preset = req.preset or ("public_chat" if req.visibility == "public" else "private_chat")

        invitees = list(dict.fromkeys(check_user_id(u) for u in req.invite if u != creator))
        for user in invitees:
            await self.membership.check_invitee(user)

        alias = None
        if req.room_alias_name is not None:
            alias = self._alias_for(req.room_alias_name)

        trusted = preset == "trusted_private_chat"
        create_content = self._create_content(rv, creator, req.creation_content, invitees if trusted else [])
        creators = {creator, *create_content.get("additional_creators", ())} if rv.hydra else {creator}
        power_levels = default_power_levels_content(
            rv,
            creator,
            additional_creators=creators - {creator},
            extra_admins=invitees if trusted and not rv.hydra else (),
        )
        if req.power_level_content_override is not None:
            power_levels.update(req.power_level_content_override)
            users = power_levels.get("users")
            if rv.hydra and isinstance(users, dict) and creators & set(users):
                raise MatrixError(
                    400,
                    "M_INVALID_ROOM_STATE",
                    f"Room version {rv.identifier}: room creators have unlimited power and may not be listed in "
                    "power levels 'users'",
                )

        # Users of other servers are invited once the room exists: their servers co-sign the invites.
        ours = self.server_name
        remote_invitees = [u for u in invitees if server_of_user(u) != ours]
        local_invitees = [u for u in invitees if server_of_user(u) == ours]
        events = await self._initial_events(req, rv, creator, preset, alias, power_levels, local_invitees)

        if alias is None:
            room_id = await self._create(rv, creator, create_content, events)
        else:
            async with self.directory.reserve_alias(alias, requester):
                room_id = await self._create(rv, creator, create_content, events)
                await self.directory.create_reserved_alias(alias, room_id, creator)
        if req.visibility == "public":
            await self.directory.publish(room_id, True)
        blocked: MatrixError | None = None
        for user in remote_invitees:
            content = await self.membership.invite_content(user, None, req.is_direct)
            try:
                await self.remote_rooms.invite(room_id, creator, user, content)
            except MatrixError as e:
                # The room exists: a failed remote invite does not undo it (Synapse does the same).
                log.warn("createRoom: inviting {user} failed: {e}", user=user, e=e.msg)
                if e.errcode == "M_INVITE_BLOCKED":
                    blocked = e
        for invitee in req.invite_3pid:
            if self.third_party is None:
                raise invalid_param("invite_3pid is not supported by this server")
            try:
                await self.third_party.invite(requester, room_id, invitee)
            except MatrixError as e:
                # As for remote invitees: the room exists, a failed invite does not undo it.
                log.warn("createRoom: inviting a 3PID failed: {e}", e=e.msg)
        if blocked is not None:
            # client-server-api §Invite permission (v1.18): createRoom answers 403 M_INVITE_BLOCKED
            # for a blocked invitee, though "the room creation as a whole succeeds" (local
            # invitees are checked before the room is made: nothing is created for those).
            raise blocked
        response: dict[str, Any] = {"room_id": room_id}
        if alias is not None:
            response["room_alias"] = alias
        return response

    def _alias_for(self, localpart: str) -> str:
        if not localpart or ":" in localpart or "\x00" in localpart or localpart.startswith("#"):
            raise invalid_param("'room_alias_name' must be the local part of an alias (no '#', ':' or NUL)")
        alias = f"#{localpart}:{self.server_name}"
        if not is_room_alias(alias):
            raise invalid_param("'room_alias_name' is too long or not valid in a room alias")
        return alias

    def _create_content(
        self, rv: RoomVersion, creator: str, requested: dict[str, Any], trusted_invitees: Sequence[str]
    ) -> dict[str, Any]:
        """creation_content with the server's keys (creator, room_version) overwritten, checked."""
        content = dict(requested)
        # create_room.yaml: "The server will overwrite the following keys: creator, room_version".
        content.pop("creator", None)
        content.pop("room_version", None)
        if "m.federate" in content and not isinstance(content["m.federate"], bool):
            raise bad_json("creation_content 'm.federate' must be a boolean")
        if "type" in content and not isinstance(content["type"], str):
            raise bad_json("creation_content 'type' must be a string")
        if "predecessor" in content:
            pred = content["predecessor"]
            if not isinstance(pred, dict) or not is_room_id(pred.get("room_id")):
                raise bad_json("creation_content 'predecessor' must be an object with a valid 'room_id'")
            if "event_id" in pred and not isinstance(pred["event_id"], str):
                raise bad_json("creation_content 'predecessor.event_id' must be a string")
        if rv.hydra:
            extra = content.get("additional_creators", [])
            if not isinstance(extra, list) or not all(isinstance(u, str) for u in extra):
                raise bad_json("creation_content 'additional_creators' must be an array of user IDs")
            for u in extra:
                check_user_id(u)
            # create_room.yaml: trusted_private_chat invitees SHOULD become additional creators (v12+).
            merged = [u for u in dict.fromkeys([*extra, *trusted_invitees]) if u != creator]
            if merged:
                content["additional_creators"] = merged
            else:
                content.pop("additional_creators", None)
        return content

    async def _initial_events(
        self,
        req: CreateRoomRequest,
        rv: RoomVersion,
        creator: str,
        preset: str,
        alias: str | None,
        power_levels: dict[str, Any],
        invitees: Sequence[str],
    ) -> list[EventSpec]:
        """Events 2-8 of create_room.yaml's order (the room server makes the create event)."""
        membership = self.membership

        def state(etype: str, content: dict[str, Any], state_key: str = "") -> EventSpec:
            return EventSpec(etype, content, state_key, creator)

        initial_keys = {(t, k) for t, k, _ in req.initial_state}
        join_rule, history, guests = PRESET_STATE[preset]
        events = [
            state("m.room.member", {"membership": "join", **await membership.profile_content(creator)}, creator),
            state("m.room.power_levels", power_levels),
        ]
        if alias is not None:
            events.append(state(CANONICAL_ALIAS, {"alias": alias}))
        for etype, content in (
            ("m.room.join_rules", {"join_rule": join_rule}),
            ("m.room.history_visibility", {"history_visibility": history}),
            ("m.room.guest_access", {"guest_access": guests}),
        ):
            # initial_state "takes precedence over events set by preset".
            if (etype, "") not in initial_keys:
                events.append(state(etype, content))
        for etype, state_key, content in req.initial_state:
            if etype in RESERVED_INITIAL_STATE:
                raise MatrixError(400, "M_INVALID_ROOM_STATE", f"initial_state may not contain {etype} events")
            if etype == CANONICAL_ALIAS and state_key == "":
                for a in canonical_alias_aliases(content):
                    if a != alias and server_of_alias(a) == self.server_name:
                        raise MatrixError(400, "M_BAD_ALIAS", f"The alias '{a}' does not point to this room.")
            # name and topic "overwrite" initial_state's m.room.name / m.room.topic.
            if state_key == "" and (
                (etype == "m.room.name" and req.name is not None) or (etype == "m.room.topic" and req.topic is not None)
            ):
                continue
            events.append(state(etype, content, state_key))
        if req.name is not None:
            events.append(state("m.room.name", {"name": req.name}))
        if req.topic is not None:
            events.append(state("m.room.topic", topic_content(req.topic)))
        for user in invitees:
            events.append(state("m.room.member", await membership.invite_content(user, None, req.is_direct), user))
        return events

    async def _create(
        self, rv: RoomVersion, creator: str, create_content: dict[str, Any], events: list[EventSpec]
    ) -> str:
        try:
            room_id, _ = await self.room_server.create_room(creator, rv, create_content, events)
        except MatrixError as e:
            if e.code == 403:
                # create_room.yaml: the initial state implied by the request is invalid.
                raise MatrixError(400, "M_INVALID_ROOM_STATE", f"Invalid initial room state: {e.msg}") from None
            raise
        return room_id
