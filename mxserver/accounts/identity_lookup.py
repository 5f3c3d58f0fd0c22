"""The homeserver's requests to identity servers for third-party invites.

identity-service-api §Association lookup (v2 ``hash_details`` + ``lookup``),
§Invitation storage (``store-invite``) and §Key management (``pubkey/isvalid``
through an invite's ``key_validity_url``). The client names the identity server
(``id_server``, a hostname with an optional port) and hands its own access token
for it (``id_access_token``), sent as ``Authorization: Bearer``.

Requests go out through treq on an agent that obeys the federation IP filter
(``federation.ip_range_blacklist`` minus ``federation.ip_range_whitelist``): an
identity server, like a key validity URL taken from a room event, is a name any
user can choose, so it must not reach this machine's private network. TLS is
checked as for federation (``federation.verify_tls``, ``federation.ca_certificates``).

Requests go through the one identity-server transport
(:meth:`~mxserver.accounts.identity_client.IdentityServerClient.fetch`): an identity
server we may not contact is ``M_SERVER_NOT_TRUSTED`` (client-server-api §Other error
codes), one that cannot be reached is 502 ``M_UNKNOWN``; one that answers nonsense is
:class:`IdentityServerError`, 502 ``M_UNKNOWN`` too.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import attrs

from mxserver.accounts.identity_client import PREFIX, IdentityServerClient, check_id_server
from mxserver.errors import MatrixError

#: v2_store_invite.yaml: a token is 1-255 of these characters
_TOKEN = re.compile(r"^[0-9a-zA-Z.=_-]{1,255}$")


class IdentityServerError(MatrixError):
    """A request to an identity server failed; the Matrix error to answer the client with."""


def _unreachable(what: str) -> IdentityServerError:
    return IdentityServerError(502, "M_UNKNOWN", f"Could not use the identity server: {what}")


def lookup_hash(medium: str, address: str, pepper: str) -> str:
    """identity-service-api §Hashing: SHA-256 of ``"{address} {medium} {pepper}"``, URL-safe unpadded base64."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@attrs.frozen
class StoredInvite:
    """The identity server's answer to ``store-invite``."""

    token: str
    display_name: str
    #: ``[{"public_key": ..., "key_validity_url": ...}, ...]``: the server's key first
    public_keys: tuple[dict[str, str], ...]

    def event_content(self) -> dict[str, Any]:
        """The ``m.room.third_party_invite`` content (event schema: display_name,
        key_validity_url and public_key, the long-term key, plus every key in public_keys)."""
        first = self.public_keys[0]
        return {
            "display_name": self.display_name,
            "key_validity_url": first["key_validity_url"],
            "public_key": first["public_key"],
            "public_keys": [dict(k) for k in self.public_keys],
        }


def _parse_stored_invite(answer: Any) -> StoredInvite:
    if not isinstance(answer, dict):
        raise _unreachable("store-invite answered something other than a JSON object")
    token, display_name = answer.get("token"), answer.get("display_name")
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise _unreachable("store-invite answered without a valid token")
    if not isinstance(display_name, str):
        raise _unreachable("store-invite answered without a display_name")
    keys: list[dict[str, str]] = []
    raw = answer.get("public_keys")
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
            key = {"public_key": entry["public_key"]}
            if isinstance(entry.get("key_validity_url"), str):
                key["key_validity_url"] = entry["key_validity_url"]
            keys.append(key)
    if not keys and isinstance(answer.get("public_key"), str):
        # Identity servers from before public_keys answered one key only.
        keys.append({"public_key": answer["public_key"]})
    if not keys:
        raise _unreachable("store-invite answered without public keys")
    if "key_validity_url" not in keys[0]:
        raise _unreachable("store-invite answered a key without a key_validity_url")
    return StoredInvite(token, display_name, tuple(keys))


class IdentityLookup:
    """Lookups, invitation storage and key validity checks on identity servers, through the
    one identity-server transport (:class:`~mxserver.accounts.identity_client.IdentityServerClient`)."""

    def __init__(self, client: IdentityServerClient) -> None:
        self._client = client

    async def _request(self, method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        """``(status, parsed JSON or None)``; raises when no answer came (see ``fetch``)."""
        answer = await self._client.fetch(method, url, body, access_token=token)
        return answer.code, answer.body

    @staticmethod
    def _base(id_server: str) -> str:
        return f"https://{check_id_server(id_server)}{PREFIX}"

    @staticmethod
    def _refused(what: str, code: int, answer: Any) -> IdentityServerError:
        errcode = answer.get("errcode") if isinstance(answer, dict) else None
        shown = f" {errcode}" if isinstance(errcode, str) else ""
        return _unreachable(f"{what} answered HTTP {code}{shown}")

    # -- §Association lookup ------------------------------------------------------------------------

    async def lookup(self, id_server: str, id_access_token: str, medium: str, address: str) -> str | None:
        """The Matrix user ID bound to ``(medium, address)`` on ``id_server``, or None.

        v2_lookup.yaml: ``GET /hash_details`` says the pepper and algorithms; ``sha256`` is
        used when offered (identity servers MUST offer it), ``none`` otherwise.
        """
        base = self._base(id_server)
        code, details = await self._request("GET", f"{base}/hash_details", id_access_token)
        if code != 200 or not isinstance(details, dict):
            raise self._refused("hash_details", code, details)
        algorithms = details.get("algorithms")
        pepper = details.get("lookup_pepper")
        if not isinstance(algorithms, list) or not isinstance(pepper, str):
            raise _unreachable("hash_details answered without algorithms and lookup_pepper")
        if "sha256" in algorithms:
            algorithm, key = "sha256", lookup_hash(medium, address, pepper)
        elif "none" in algorithms:
            algorithm, key = "none", f"{address} {medium}"
        else:
            raise _unreachable("the identity server offers no lookup algorithm this server knows")
        body = {"addresses": [key], "algorithm": algorithm, "pepper": pepper}
        code, answer = await self._request("POST", f"{base}/lookup", id_access_token, body)
        if code != 200 or not isinstance(answer, dict):
            raise self._refused("lookup", code, answer)
        mappings = answer.get("mappings")
        mxid = mappings.get(key) if isinstance(mappings, dict) else None
        if mxid is None:
            return None
        if not isinstance(mxid, str) or not mxid.startswith("@") or ":" not in mxid:
            raise _unreachable("lookup answered something other than a user ID")
        return mxid

    # -- §Invitation storage -------------------------------------------------------------------------

    async def store_invite(self, id_server: str, id_access_token: str, body: dict[str, Any]) -> StoredInvite:
        """``POST /store-invite`` with ``body`` (medium, address, room_id, sender and the optional
        room and sender details); the token, display name and keys of the stored invitation."""
        code, answer = await self._request("POST", f"{self._base(id_server)}/store-invite", id_access_token, body)
        if code != 200:
            raise self._refused("store-invite", code, answer)
        return _parse_stored_invite(answer)

    # -- §Key management ------------------------------------------------------------------------------

    async def key_is_valid(self, key_validity_url: str, public_key: str) -> bool:
        """Whether ``key_validity_url`` (from an ``m.room.third_party_invite``) says ``public_key``
        is still valid: ``GET {url}?public_key=...`` answering ``{"valid": true}``.

        The URL is used as given (server-server-api §Third-party invites: "using the provided
        URL rather than constructing a new one"); only http(s) URLs are fetched. An identity
        server that does not answer raises the transport's error (see ``IdentityServerClient.fetch``).
        """
        parts = urlsplit(key_validity_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        separator = "&" if parts.query else "?"
        url = key_validity_url + separator + urlencode({"public_key": public_key}, quote_via=quote)
        code, answer = await self._request("GET", url)
        if code != 200 or not isinstance(answer, dict):
            raise self._refused("pubkey/isvalid", code, answer)
        return answer.get("valid") is True
