"""Asking a room's Policy Server to sign our events (server-server-api §Policy Servers, v1.18).

A room uses a Policy Server when its current state has a valid ``m.room.policy`` event (empty
state key; ``content.via`` a string, ``content.public_keys.ed25519`` a string) and the ``via``
server has a joined member (§Determining if a Policy Server is enabled in a room). Then every
server "MUST ask that Policy Server for a signature before sending an event", except for that
``m.room.policy`` state event itself. The answer's ``ed25519:policy_server`` signature is checked
against the key in the room state and added next to ours; a refusal (or an invalid signature) is
answered to the client and the event is not sent (§Validating Policy Server signatures: SHOULD).

This server is not itself a Policy Server (``/_matrix/policy/v1/sign`` is optional and not
served), so a room naming this server as its Policy Server is not asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.logger import Logger

from mxserver.crypto.keys import decode_verify_key
from mxserver.errors import MatrixError, forbidden
from mxserver.events.model import Event
from mxserver.events.signing import SignatureError, verify_event_signature
from mxserver.federation.client import FederationError
from mxserver.identifier_checks import server_of_user

log = Logger()

POLICY_TYPE = "m.room.policy"
#: "The Key ID for the ed25519 key in m.room.policy is *always* ed25519:policy_server"
POLICY_KEY_ID = "ed25519:policy_server"
SIGN_PATH = "/_matrix/policy/v1/sign"
#: how long a send waits for the Policy Server
SIGN_TIMEOUT_S = 10.0


class SignClient(Protocol):
    """The federation client: a signed POST to another server (mxserver.federation.client)."""

    async def post_json(
        self, destination: str, path: str, body: Any, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]: ...


class EventReader(Protocol):
    async def get_events(self, event_ids: Sequence[str]) -> dict[str, Event]: ...


def policy_config(content: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(via, ed25519 key)`` of a valid m.room.policy content, else None (no Policy Server)."""
    via = content.get("via")
    keys = content.get("public_keys")
    key = keys.get("ed25519") if isinstance(keys, dict) else None
    if not isinstance(via, str) or not via or not isinstance(key, str):
        return None
    return via, key


def needs_signature(event: Event) -> bool:
    """Every event but the m.room.policy state event with an empty state key (room_policy.yaml)."""
    return not (event.type == POLICY_TYPE and event.state_key == "")


class PolicyServerSigner:
    """Gets the Policy Server's signature on a local event before it is sent."""

    def __init__(self, events: EventReader, client: SignClient, server_name: str) -> None:
        self._events = events
        self._client = client
        self._server_name = server_name

    async def policy_server(self, state: Mapping[tuple[str, str], str]) -> tuple[str, str] | None:
        """The room's Policy Server ``(via, ed25519 key)`` in ``state`` (current state), if used."""
        policy_id = state.get((POLICY_TYPE, ""))
        if policy_id is None:
            return None
        policy = (await self._events.get_events([policy_id])).get(policy_id)
        config = policy_config(policy.content) if policy is not None else None
        if config is None:
            return None
        via = config[0]
        member_ids = [
            eid for (t, k), eid in state.items() if t == "m.room.member" and ":" in k and server_of_user(k) == via
        ]
        members = await self._events.get_events(member_ids) if member_ids else {}
        if not any(ev.membership == "join" for ev in members.values()):
            return None  # "zero joined users in the room": no Policy Server
        return config

    async def check_received(self, event: Event, state: Mapping[tuple[str, str], str]) -> str | None:
        """§Checks on receipt of a PDU, step 7: why ``event`` (from another server) is soft
        failed, or None. In a room using a Policy Server an event without its valid signature
        is sent to it for one ("SHOULD ask for a new signature", the key may have rotated),
        which is added to the event; still none, the event is not recommended for inclusion."""
        if not needs_signature(event):
            return None
        config = await self.policy_server(state)
        if config is None:
            return None
        via, key_b64 = config
        if via == self._server_name:
            return None  # we are no Policy Server: nothing of ours to check with
        try:
            verify_key = decode_verify_key(POLICY_KEY_ID, key_b64)
        except ValueError:
            return "the room's Policy Server key is invalid"
        try:
            verify_event_signature(event.get_pdu_json(), event.room_version, via, verify_key)
            return None
        except SignatureError:
            pass
        try:
            signed = await self.sign(event, state)
        except MatrixError as e:
            return f"the Policy Server did not sign it: {e.errcode} {e.msg}"
        sig = signed.signatures.get(via, {}).get(POLICY_KEY_ID)
        if sig is None:
            return "the Policy Server did not sign it"
        event.add_signature(via, POLICY_KEY_ID, sig)
        return None

    async def sign(self, event: Event, state: Mapping[tuple[str, str], str]) -> Event:
        """``event`` with the Policy Server's signature added, or unchanged if the room uses
        none. Raises the Policy Server's refusal (its error, verbatim), or 502 when it cannot
        be asked."""
        if not needs_signature(event):
            return event
        config = await self.policy_server(state)
        if config is None:
            return event
        via, key_b64 = config
        if via == self._server_name:
            return event  # we serve no /sign (see the module docstring)
        try:
            verify_key = decode_verify_key(POLICY_KEY_ID, key_b64)
        except ValueError:
            raise forbidden("The room's m.room.policy public key is not a valid ed25519 key") from None
        pdu = event.get_pdu_json()
        try:
            answer = await self._client.post_json(via, SIGN_PATH, pdu, timeout=SIGN_TIMEOUT_S)
        except FederationError as e:
            if 400 <= e.code < 500 and e.code != 401:
                # §Validating Policy Server signatures: the error "SHOULD be provided to the client verbatim"
                raise MatrixError(e.code, e.errcode, e.msg) from None
            raise MatrixError(502, "M_UNKNOWN", f"The room's Policy Server {via} could not be asked: {e.msg}") from None
        except Exception as e:
            log.info("Policy server {via} unreachable: {e}", via=via, e=e)
            raise MatrixError(502, "M_UNKNOWN", f"The room's Policy Server {via} could not be reached") from None
        theirs = answer.get(via) if isinstance(answer, dict) else None
        sig = theirs.get(POLICY_KEY_ID) if isinstance(theirs, dict) else None
        if not isinstance(sig, str):
            raise forbidden(f"The room's Policy Server {via} did not sign the event")
        # v1.19: the Policy Server may share its name with the event's origin; keep what is there.
        signatures = {k: dict(v) for k, v in event.signatures.items()}
        signatures.setdefault(via, {})[POLICY_KEY_ID] = sig
        pdu["signatures"] = signatures
        try:
            verify_event_signature(pdu, event.room_version, via, verify_key)
        except SignatureError:
            raise forbidden(f"The room's Policy Server {via} answered an invalid signature") from None
        return Event(pdu, event.room_version, event_id=event.event_id)
