"""Room aliases and the published room directory (client-server-api §Room aliases,
§Published room directory).

Aliases live on the server named in them: this server creates and deletes
only its own (``#local:<server_name>``). Another server's alias is resolved by
asking that server (federation ``GET /query/directory``, through
:class:`~mxserver.federation.remote_rooms.RemoteRooms`).

:meth:`DirectoryHandler.validate_canonical_alias` is what the send path calls for
``m.room.canonical_alias`` events (room_state.yaml: ``M_BAD_ALIAS``).

Application services (application-service-api.md): a local alias that does not exist but lies
in a service's alias namespace is asked of the service before the answer is 404 (§Querying);
an alias or room in a service's exclusive namespace is the service's alone to create, delete or
publish (400 ``M_EXCLUSIVE`` for anyone else, §Registration); each service may publish rooms in
its own directory per network (appservice_room_directory.yaml), which ``publicRooms`` lists with
``third_party_instance_id`` (``{service id}|{network id}``, Synapse's form) or
``include_all_networks``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.interfaces import IReactorTime

from mxserver.accounts.auth import Requester
from mxserver.appservice.registration import AppService, parse_instance_id
from mxserver.config import RoomDirectoryConfig
from mxserver.errors import MatrixError, forbidden, invalid_param, not_found
from mxserver.identifier_checks import (
    check_room_alias,
    check_room_id,
    is_room_alias,
    server_of_alias,
    server_of_user,
)
from mxserver.room_handlers.permissions import is_server_admin, may_send_state, membership_in, power_state
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.room_server import EventSpec
from mxserver.storage.accounts import AccountStore
from mxserver.storage.directory import ALL_NETWORKS, DirectoryStore, PublishedRoom
from mxserver.storage.memberships import MembershipStore
from mxserver.streams import Stream

if TYPE_CHECKING:
    # Types only: the federation package imports room_handlers.identifiers at run time.
    from mxserver.federation.remote_queries import RemoteQueries
    from mxserver.federation.remote_rooms import RemoteRooms

CANONICAL_ALIAS = "m.room.canonical_alias"

#: the largest page of /publicRooms (also the page size when the client gives no limit)
MAX_PUBLIC_ROOMS_LIMIT = 500


def federation_unavailable(what: str) -> MatrixError:
    """The answer to anything that would need federation, until federation exists."""
    return not_found(f"{what}: talking to other servers (federation) is not available yet on this server")


def room_alias_in_use(alias: str) -> MatrixError:
    # directory.yaml: 409 M_UNKNOWN "Room alias ... already exists."
    return MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists.")


def canonical_alias_aliases(content: Any) -> list[str]:
    """Every alias an m.room.canonical_alias content names (alias and alt_aliases), checked for syntax."""
    if not isinstance(content, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be an object")
    aliases: list[str] = []
    alias = content.get("alias")
    if alias is not None and alias != "":
        if not is_room_alias(alias):
            raise invalid_param("'alias' is not a valid room alias")
        aliases.append(alias)
    alt = content.get("alt_aliases")
    if alt is not None:
        if not isinstance(alt, list) or not all(is_room_alias(a) for a in alt):
            raise invalid_param("'alt_aliases' must be an array of valid room aliases")
        aliases.extend(alt)
    return aliases


class AppServiceNamespaces(Protocol):
    """Application services' exclusive namespaces (the appservice registry)."""

    def alias_reserved(self, alias: str, by: AppService | None = None) -> bool: ...

    def room_reserved(self, room_id: str, by: AppService | None = None) -> bool: ...


class AliasQueries(Protocol):
    """Asks application services about aliases in their namespaces (appservice queries)."""

    async def alias_exists(self, alias: str) -> bool: ...


class _NoAppServices:
    def alias_reserved(self, alias: str, by: AppService | None = None) -> bool:
        return False

    def room_reserved(self, room_id: str, by: AppService | None = None) -> bool:
        return False

    async def alias_exists(self, alias: str) -> bool:
        return False


def exclusive(msg: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", msg)


@attrs.frozen
class PublicRoomsQuery:
    limit: int | None = None
    since: str | None = None
    server: str | None = None
    search_term: str | None = None
    #: None: every room type; otherwise the types wanted (None in the list: rooms without a type)
    room_types: Sequence[str | None] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


class DirectoryHandler:
    """Aliases (create, resolve, delete, list) and directory visibility, and the public room list."""

    def __init__(
        self,
        store: DirectoryStore,
        memberships: MembershipStore,
        room_server: ClientRooms,
        accounts: AccountStore,
        remote_rooms: RemoteRooms,
        remote_queries: RemoteQueries,
        config: RoomDirectoryConfig,
        clock: IReactorTime,
        server_name: str,
        namespaces: AppServiceNamespaces | None = None,
        alias_queries: AliasQueries | None = None,
    ) -> None:
        self.store = store
        self.namespaces: AppServiceNamespaces = namespaces or _NoAppServices()
        self.alias_queries: AliasQueries = alias_queries or _NoAppServices()
        #: a room's local aliases changed (its ID is published): the appservice reader listens
        self.alias_changes: Stream[str] = Stream("alias_changes")
        self.memberships = memberships
        self.room_server = room_server
        self.accounts = accounts
        self.remote_rooms = remote_rooms
        self.remote_queries = remote_queries
        self.config = config
        self.clock = clock
        self.server_name = server_name
        # Aliases a createRoom is about to create: no concurrent request may take them meanwhile.
        self._reserved: set[str] = set()

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def is_local_alias(self, alias: str) -> bool:
        return server_of_alias(alias) == self.server_name

    async def _known_room(self, room_id: str) -> None:
        if await self.room_server.get_room(check_room_id(room_id)) is None:
            raise not_found(f"Unknown room {room_id}")

    async def validate_canonical_alias(self, room_id: str, content: Any) -> None:
        """Refuse an m.room.canonical_alias content whose local aliases do not point to ``room_id``.

        400 ``M_INVALID_PARAM`` for malformed aliases, 400 ``M_BAD_ALIAS`` for a
        local alias that is missing or maps to another room (room_state.yaml).
        Other servers' aliases cannot be resolved without federation and are
        accepted as they are.
        """
        for alias in dict.fromkeys(canonical_alias_aliases(content)):
            if not self.is_local_alias(alias):
                continue
            record = await self.store.get_alias(alias)
            if record is None or record.room_id != room_id:
                raise MatrixError(400, "M_BAD_ALIAS", f"The alias '{alias}' does not point to this room.")

    # -- resolving ----------------------------------------------------------------------

    async def resolve_alias(self, alias: str) -> str:
        """The room ID ``alias`` maps to (404 if none)."""
        return (await self.resolve_alias_with_servers(alias))[0]

    async def resolve_alias_with_servers(self, alias: str) -> tuple[str, list[str]]:
        """The room ID ``alias`` maps to and the servers in that room (404 if none)."""
        check_room_alias(alias)
        if not self.is_local_alias(alias):
            return await self.remote_rooms.query_alias(alias)
        record = await self.store.get_alias(alias)
        if record is None and await self.alias_queries.alias_exists(alias):
            # application-service-api §Querying: the service created it while we waited.
            record = await self.store.get_alias(alias)
        if record is None:
            raise not_found(f"Room alias {alias} not found.")
        return record.room_id, await self.servers_in_room(record.room_id)

    async def get_alias(self, alias: str) -> dict[str, Any]:
        room_id, servers = await self.resolve_alias_with_servers(alias)
        return {"room_id": room_id, "servers": servers}

    async def servers_in_room(self, room_id: str) -> list[str]:
        """Servers with joined users, this one first (the alias answer's ``servers``)."""
        room = await self.room_server.get_room(room_id)
        servers = {self.server_name}
        if room is not None:
            servers.update(server_of_user(u) for u in await self.memberships.get_joined_users(room.room_nid))
        return [self.server_name] + sorted(servers - {self.server_name})

    # -- creating and deleting --------------------------------------------------------------

    def _check_creatable(self, alias: str, requester: Requester | None = None) -> None:
        check_room_alias(alias)
        if not self.is_local_alias(alias):
            raise invalid_param(f"Room alias {alias} is not on this server ({self.server_name})")
        if requester is not None:
            self._check_namespace(alias, requester)

    def _check_namespace(self, alias: str, requester: Requester) -> None:
        """application-service-api §Server admin style permissions: an application service
        manages the aliases of its namespace, and only it may touch an exclusive one."""
        service = requester.app_service
        if service is not None and not service.is_interested_in_alias(alias):
            raise exclusive(f"{alias} is not in the alias namespaces of application service {service.id}")
        if self.namespaces.alias_reserved(alias, service):
            raise exclusive(f"{alias} is reserved by an application service")

    async def create_alias(self, requester: Requester, alias: str, room_id: str) -> None:
        self._check_creatable(alias, requester)
        check_room_id(room_id)
        await self._known_room(room_id)
        if alias in self._reserved:
            raise room_alias_in_use(alias)
        # An application service need not be in the room (as in Synapse): it owns the alias.
        if requester.app_service is None:
            state = await power_state(self.room_server, room_id, requester.user_id)
            joined = membership_in(state, requester.user_id) == "join"
            if not joined and not await is_server_admin(self.accounts, requester.user_id):
                raise forbidden("You must be joined to the room to give it an alias")
        if not await self.store.create_alias(alias, room_id, requester.user_id, self._now_ms()):
            raise room_alias_in_use(alias)
        self.alias_changes.publish(room_id)

    @asynccontextmanager
    async def reserve_alias(self, alias: str, requester: Requester | None = None) -> AsyncIterator[None]:
        """Hold ``alias`` free while a room is created for it (400 M_ROOM_IN_USE if taken;
        M_EXCLUSIVE if an application service's namespace forbids ``requester`` to take it)."""
        self._check_creatable(alias, requester)
        if alias in self._reserved or await self.store.get_alias(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already in use")
        self._reserved.add(alias)
        try:
            yield
        finally:
            self._reserved.discard(alias)

    async def create_reserved_alias(self, alias: str, room_id: str, creator: str) -> None:
        """Map an alias held by :meth:`reserve_alias` (createRoom)."""
        if not await self.store.create_alias(alias, room_id, creator, self._now_ms()):
            raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already in use")
        self.alias_changes.publish(room_id)

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        check_room_alias(alias)
        if not self.is_local_alias(alias):
            raise invalid_param(f"Room alias {alias} is not on this server ({self.server_name})")
        self._check_namespace(alias, requester)
        record = await self.store.get_alias(alias)
        if record is None:
            raise not_found(f"Room alias {alias} not found.")
        user_id = requester.user_id
        state = await power_state(self.room_server, record.room_id, user_id)
        # directory.yaml: "room aliases can only be deleted by their creator or a server
        # administrator"; room moderators who may edit the canonical alias may too; and the
        # application service whose namespace holds it (as in Synapse).
        allowed = (
            requester.app_service is not None
            or record.creator == user_id
            or may_send_state(state, user_id, CANONICAL_ALIAS)
            or await is_server_admin(self.accounts, user_id)
        )
        if not allowed:
            raise forbidden("You may not delete this alias: you did not create it and cannot edit the room's aliases")
        if await self.store.delete_alias(alias) is None:
            raise not_found(f"Room alias {alias} not found.")
        self.alias_changes.publish(record.room_id)
        await self._drop_from_canonical_alias(record.room_id, alias, user_id)

    async def _drop_from_canonical_alias(self, room_id: str, alias: str, user_id: str) -> None:
        """Remove a deleted alias from the room's m.room.canonical_alias, if the user may edit it."""
        event = await self.room_server.current_state_event(room_id, CANONICAL_ALIAS)
        if event is None:
            return
        content = dict(event.content)
        changed = False
        if content.get("alias") == alias:
            del content["alias"]
            changed = True
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if not changed:
            return
        try:
            await self.room_server.send(room_id, EventSpec(CANONICAL_ALIAS, content, "", user_id))
        except MatrixError as e:
            # directory.yaml note: the alias is deleted even when the canonical alias cannot be updated.
            if e.code != 403:
                raise

    async def local_aliases(self, requester: Requester, room_id: str) -> list[str]:
        check_room_id(room_id)
        await self._known_room(room_id)
        user_id = requester.user_id
        if await self.room_server.membership(room_id, user_id) != "join":
            hv = await self.room_server.current_state_event(room_id, "m.room.history_visibility")
            # directory.yaml: members only, unless the room's history is world_readable.
            if hv is None or hv.content.get("history_visibility") != "world_readable":
                if not await is_server_admin(self.accounts, user_id):
                    raise forbidden("You are not a member of the room.")
        return await self.store.get_aliases_for_room(room_id)

    async def remove_room_aliases(self, room_id: str) -> list[str]:
        """Remove every local alias of a room being shut down (admin API); those removed."""
        removed = await self.store.delete_aliases_for_room(room_id)
        self.alias_changes.publish(room_id)
        return removed

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> list[str]:
        moved = await self.store.move_aliases(old_room_id, new_room_id)
        self.alias_changes.publish(old_room_id)
        self.alias_changes.publish(new_room_id)
        return moved

    # -- directory visibility -------------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        check_room_id(room_id)
        await self._known_room(room_id)
        return "public" if await self.store.is_published(room_id) else "private"

    async def set_visibility(self, requester: Requester, room_id: str, visibility: str) -> None:
        check_room_id(room_id)
        if visibility not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        await self._known_room(room_id)
        user_id = requester.user_id
        admin = await is_server_admin(self.accounts, user_id)
        if visibility == "public" and not self.config.publication_allowed and not admin:
            raise forbidden("Publishing rooms to the room directory is not allowed on this server")
        if self.namespaces.room_reserved(room_id, requester.app_service):
            # An exclusive rooms namespace: the service manages those rooms' publication.
            raise exclusive(f"{room_id} is in an application service's exclusive namespace")
        state = await power_state(self.room_server, room_id, user_id)
        if not may_send_state(state, user_id, CANONICAL_ALIAS) and not admin:
            raise forbidden("You need to be joined with the power to change the room's aliases to publish it")
        await self.publish(room_id, visibility == "public")

    async def set_appservice_visibility(
        self, requester: Requester, network_id: str, room_id: str, visibility: str
    ) -> None:
        """appservice_room_directory.yaml: an application service publishes a room in (or removes
        it from) its own directory for ``network_id``. Only application services may."""
        service = requester.app_service
        if service is None:
            raise forbidden("Only application services may edit their published room directories")
        check_room_id(room_id)
        if visibility not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        if not network_id:
            raise invalid_param("The network ID must not be empty")
        await self._known_room(room_id)
        await self.store.set_appservice_listed(service.id, network_id, room_id, visibility == "public")

    async def publish(self, room_id: str, published: bool) -> None:
        await self.store.set_published(room_id, published, self._now_ms())

    async def is_published(self, room_id: str) -> bool:
        return await self.store.is_published(room_id)

    # -- the public room list -----------------------------------------------------------------

    async def public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        if query.third_party_instance_id is not None and query.include_all_networks:
            raise invalid_param("third_party_instance_id can only be used if include_all_networks is false")
        if query.server is not None and query.server != self.server_name:
            # list_public_rooms.yaml `server`: another server's directory, over federation.
            return await self.remote_queries.public_rooms(
                query.server,
                limit=query.limit if query.limit and query.limit > 0 else None,
                since=query.since or None,
                search_term=query.search_term,
                room_types=query.room_types,
                include_all_networks=query.include_all_networks,
                third_party_instance_id=query.third_party_instance_id,
            )
        limit = query.limit if query.limit and query.limit > 0 else MAX_PUBLIC_ROOMS_LIMIT
        limit = min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        direction, after = _parse_since(query.since)
        if query.include_all_networks:
            scope: Any = ALL_NETWORKS
        elif query.third_party_instance_id is not None:
            try:
                scope = parse_instance_id(query.third_party_instance_id)
            except ValueError as e:
                raise invalid_param(str(e)) from None
        else:
            scope = None
        entries = [room_summary_chunk(r) for r in await self.store.get_published_rooms(scope)]
        entries = [e for e in entries if _matches(e, query)]
        entries.sort(key=_sort_key)
        total = len(entries)
        keys = [_sort_key(e) for e in entries]
        if after is None:
            start = 0
        elif direction == "n":
            start = next((i for i, k in enumerate(keys) if k > after), total)
        else:
            end = next((i for i, k in enumerate(keys) if k >= after), total)
            start = max(0, end - limit)
            entries = entries[:end]
        page = entries[start : start + limit]
        body: dict[str, Any] = {"chunk": page, "total_room_count_estimate": total}
        if page and start + len(page) < total:
            body["next_batch"] = _token("n", _sort_key(page[-1]))
        if page and start > 0:
            body["prev_batch"] = _token("p", _sort_key(page[0]))
        return body


# -- public room list helpers ---------------------------------------------------------------------


def room_summary_chunk(room: PublishedRoom) -> dict[str, Any]:
    """public_rooms_chunk.yaml from a room's summary state."""
    state = room.state
    entry: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": state.get("m.room.history_visibility", {}).get("history_visibility") == "world_readable",
        "guest_can_join": state.get("m.room.guest_access", {}).get("guest_access") == "can_join",
    }
    name = state.get("m.room.name", {}).get("name")
    if isinstance(name, str) and name:
        entry["name"] = name
    topic = _plain_topic(state.get("m.room.topic", {}))
    if topic:
        entry["topic"] = topic
    alias = state.get(CANONICAL_ALIAS, {}).get("alias")
    if isinstance(alias, str) and alias:
        entry["canonical_alias"] = alias
    avatar = state.get("m.room.avatar", {}).get("url")
    if isinstance(avatar, str) and avatar:
        entry["avatar_url"] = avatar
    join_rule = state.get("m.room.join_rules", {}).get("join_rule")
    if isinstance(join_rule, str):
        entry["join_rule"] = join_rule
    room_type = state.get("m.room.create", {}).get("type")
    if isinstance(room_type, str):
        entry["room_type"] = room_type
    alt = state.get(CANONICAL_ALIAS, {}).get("alt_aliases")
    # Kept aside for the search filter; removed before the entry is returned.
    entry["_search"] = " ".join(
        s.casefold()
        for s in [entry.get("name"), entry.get("topic"), entry.get("canonical_alias"), *(alt if isinstance(alt, list) else [])]
        if isinstance(s, str)
    )
    return entry


def _plain_topic(content: dict[str, Any]) -> str | None:
    """The text/plain topic (m.room.topic: ``m.topic`` block first, else ``topic``)."""
    block = content.get("m.topic")
    if isinstance(block, dict) and isinstance(block.get("m.text"), list):
        for rep in block["m.text"]:
            if isinstance(rep, dict) and rep.get("mimetype", "text/plain") == "text/plain":
                body = rep.get("body")
                if isinstance(body, str) and body:
                    return body
    topic = content.get("topic")
    return topic if isinstance(topic, str) and topic else None


def _matches(entry: dict[str, Any], query: PublicRoomsQuery) -> bool:
    search = entry.pop("_search")
    if query.search_term and query.search_term.strip().casefold() not in search:
        return False
    if query.room_types is not None and entry.get("room_type") not in query.room_types:
        return False
    return True


def _sort_key(entry: dict[str, Any]) -> tuple[int, str]:
    # Largest rooms first, then by room ID: a stable order (list_public_rooms.yaml).
    return (-entry["num_joined_members"], entry["room_id"])


def _token(direction: str, key: tuple[int, str]) -> str:
    raw = json.dumps([direction, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_since(since: str | None) -> tuple[str, tuple[int, str] | None]:
    if since is None or since == "":
        return "n", None
    try:
        raw = base64.urlsafe_b64decode(since + "=" * (-len(since) % 4))
        direction, count, room_id = json.loads(raw)
        if direction not in ("n", "p") or not isinstance(count, int) or not isinstance(room_id, str):
            raise ValueError(since)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid_param("Invalid 'since' pagination token") from None
    return direction, (count, room_id)
