"""Questions our clients ask about other servers, answered over federation.

* Profiles of remote users (client-server-api §Profiles → server-server-api
  ``GET /_matrix/federation/v1/query/profile``). Answers are cached briefly
  (query.yaml: "Requesting servers MAY wish to cache the response"), a "no
  such user" as well, so a client rendering a member list does not send one
  request per look-up; failures are not cached.
* Another server's published room directory (``GET/POST /publicRooms?server=``
  → ``GET/POST /_matrix/federation/v1/publicRooms``).

Remote failures become clean client errors: the remote's 404 is our 404
M_NOT_FOUND, its 403 our 403 M_FORBIDDEN, anything else (unreachable,
timeout, 5xx, a malformed answer) a 502.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.errors import MatrixError, invalid_param, not_found
from mxserver.federation.client import FederationClient, FederationError
from mxserver.federation.responses import SharedCalls
from mxserver.identifier_checks import PROFILE_KEYS, is_profile_key
from mxserver.ids import is_valid_server_name

log = Logger()

#: how long a remote profile (or its absence) is reused
PROFILE_CACHE_S = 30.0
PROFILE_CACHE_SIZE = 10_000
#: query and directory answers are small: a bound well below the client's default
MAX_PROFILE_SIZE = 64 * 1024
MAX_DIRECTORY_SIZE = 4 * 1024 * 1024
QUERY_TIMEOUT_S = 15.0
#: profile values we pass on must be short strings (a remote is not trusted with our clients)
MAX_FIELD_LENGTH = 1000
_NOT_FOUND = object()


def _remote_error(e: FederationError, what: str) -> MatrixError:
    if e.code == 404:
        return not_found(f"{what} not found on {e.destination}")
    if e.code == 403:
        return MatrixError(403, "M_FORBIDDEN", f"{e.destination} refused to answer: {e.msg}")
    return MatrixError(502, "M_UNKNOWN", f"Could not get the {what.lower()} from {e.destination}: {e.msg}")


class RemoteQueries:
    """Remote profiles (cached) and other servers' room directories, for our clients."""

    def __init__(self, client: FederationClient, clock: IReactorTime) -> None:
        self.client = client
        self.clock = clock
        self._profiles: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._fetching = SharedCalls()

    # -- profiles ---------------------------------------------------------------------------

    async def profile(self, user_id: str) -> dict[str, Any]:
        """The public profile of a remote user: 404 M_NOT_FOUND if the remote has none."""
        now = self.clock.seconds()
        cached = self._profiles.get(user_id)
        if cached is not None and cached[0] > now:
            self._profiles.move_to_end(user_id)
            result = cached[1]
        else:
            result = await self._fetching.run(user_id, lambda: self._fetch_profile(user_id))
        if result is _NOT_FOUND:
            raise not_found("Profile not found")
        return dict(result)

    async def _fetch_profile(self, user_id: str) -> Any:
        server = user_id.split(":", 1)[1]
        try:
            answer = await self.client.get_json(
                server,
                "/_matrix/federation/v1/query/profile",
                {"user_id": user_id},
                timeout=QUERY_TIMEOUT_S,
                max_size=MAX_PROFILE_SIZE,
            )
        except FederationError as e:
            if e.code != 404:
                raise _remote_error(e, "Profile") from None
            result: Any = _NOT_FOUND
        else:
            result = _clean_profile(answer)
        self._remember(user_id, result)
        return result

    def _remember(self, user_id: str, result: Any) -> None:
        self._profiles[user_id] = (self.clock.seconds() + PROFILE_CACHE_S, result)
        self._profiles.move_to_end(user_id)
        while len(self._profiles) > PROFILE_CACHE_SIZE:
            self._profiles.popitem(last=False)

    # -- the room directory of another server ------------------------------------------------------

    async def public_rooms(
        self,
        server: str,
        *,
        limit: int | None = None,
        since: str | None = None,
        search_term: str | None = None,
        room_types: Any = None,
        include_all_networks: bool = False,
        third_party_instance_id: str | None = None,
    ) -> dict[str, Any]:
        """public_rooms.yaml (server-server): ``server``'s directory page, checked and passed on."""
        if not is_valid_server_name(server):
            raise invalid_param(f"Invalid server name {server!r}")
        client = self.client
        path = "/_matrix/federation/v1/publicRooms"
        try:
            if search_term is None and room_types is None:
                # The GET form has no filter: the simpler request every server understands.
                args: dict[str, Any] = {"include_all_networks": include_all_networks}
                if limit is not None:
                    args["limit"] = limit
                if since is not None:
                    args["since"] = since
                if third_party_instance_id is not None:
                    args["third_party_instance_id"] = third_party_instance_id
                answer = await client.get_json(server, path, args, timeout=QUERY_TIMEOUT_S, max_size=MAX_DIRECTORY_SIZE)
            else:
                body: dict[str, Any] = {"include_all_networks": include_all_networks, "filter": {}}
                if limit is not None:
                    body["limit"] = limit
                if since is not None:
                    body["since"] = since
                if third_party_instance_id is not None:
                    body["third_party_instance_id"] = third_party_instance_id
                if search_term is not None:
                    body["filter"]["generic_search_term"] = search_term
                if room_types is not None:
                    body["filter"]["room_types"] = list(room_types)
                answer = await client.post_json(server, path, body, timeout=QUERY_TIMEOUT_S, max_size=MAX_DIRECTORY_SIZE)
        except FederationError as e:
            raise _remote_error(e, "Room directory") from None
        return _clean_directory(server, answer)


def _clean_profile(answer: dict[str, Any]) -> dict[str, Any]:
    """The fields of a query/profile answer we pass on: displayname, avatar_url and m.tz as
    bounded strings (nulls mean unset); other well-formed keys (custom fields, profile.yaml
    v1.16) with any JSON value but null (the whole answer is bounded by MAX_PROFILE_SIZE)."""
    out: dict[str, Any] = {}
    for key, value in answer.items():
        if not is_profile_key(key):
            continue
        if key in PROFILE_KEYS:
            if isinstance(value, str) and len(value) <= MAX_FIELD_LENGTH:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _clean_directory(server: str, answer: dict[str, Any]) -> dict[str, Any]:
    chunk = answer.get("chunk")
    if not isinstance(chunk, list):
        raise MatrixError(502, "M_UNKNOWN", f"{server} sent a malformed room directory")
    # public_rooms_chunk.yaml: room_id, num_joined_members, world_readable and guest_can_join are required.
    rooms = [
        r for r in chunk
        if isinstance(r, dict) and isinstance(r.get("room_id"), str) and isinstance(r.get("num_joined_members"), int)
    ]
    out: dict[str, Any] = {"chunk": rooms}
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            out[key] = answer[key]
    total = answer.get("total_room_count_estimate")
    if isinstance(total, int) and not isinstance(total, bool):
        out["total_room_count_estimate"] = total
    return out
