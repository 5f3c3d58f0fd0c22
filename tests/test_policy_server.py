"""Policy Servers, the homeserver's side (server-server-api §Policy Servers, spec v1.18): our
events in a room using a Policy Server are signed by it before they are sent; its refusal reaches
the client verbatim and the event is not sent; a bad signature or an unreachable Policy Server
stops the send; rooms whose ``m.room.policy`` is invalid, or whose Policy Server has no joined
member, are not asked; the ``m.room.policy`` state event itself is never sent to it."""

from __future__ import annotations

from typing import Any

from mxserver.crypto.keys import generate_signing_key, verify_key_base64
from mxserver.crypto.signing import sign_bytes
from mxserver.events.hashing import reference_hash_bytes
from mxserver.events.versions import get_room_version
from mxserver.federation.client import FederationError
from mxserver.federation.remote_rooms import q
from mxserver.rooms.policy_server import POLICY_KEY_ID, PolicyServerSigner, policy_config
from tests.harness import C, HomeserverTestCase, TwoServerTestCase


class FakePolicyServer:
    """Answers ``POST /_matrix/policy/v1/sign`` as ``mode`` says."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = generate_signing_key("policy_server")
        self.mode = "sign"
        #: message bodies refused whatever the mode
        self.spam: set[str] = set()
        self.asked: list[dict[str, Any]] = []

    async def post_json(
        self, destination: str, path: str, body: Any, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        assert destination == self.name and path == "/_matrix/policy/v1/sign", (destination, path)
        self.asked.append(body)
        if self.mode == "refuse" or body.get("content", {}).get("body") in self.spam:
            raise FederationError(destination, 400, "M_FORBIDDEN", "The message appears to contain possible spam")
        if self.mode == "down":
            raise FederationError(destination, 502, "M_UNKNOWN", "connection refused")
        if self.mode == "junk":
            return {"nothing": "here"}
        data = reference_hash_bytes(body, get_room_version("11"))  # type: ignore[arg-type]
        if self.mode == "bad":
            data = b"something else"
        return {self.name: {POLICY_KEY_ID: sign_bytes(data, self.key)}}


class PolicyServerTests(HomeserverTestCase):
    async def _room(self) -> tuple[Any, str, FakePolicyServer]:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat", room_version="11")
        # The Policy Server is this server as another one would see it: its joined member is
        # alice. (The signer skips asking itself: this one is told it is someone else.)
        ps = FakePolicyServer(self.server_name)
        self.hs.room_server.local.policy_signer = PolicyServerSigner(self.hs.event_store, ps, "elsewhere.example")
        return alice, room, ps

    async def _enable(self, alice: Any, room: str, ps: FakePolicyServer) -> None:
        content = {"via": ps.name, "public_keys": {"ed25519": verify_key_base64(ps.key)}}
        await self.set_state(alice, room, "m.room.policy", content)

    async def _event(self, alice: Any, room: str, event_id: str) -> tuple[int, Any]:
        return await self.get(f"{C}/rooms/{q(room)}/event/{q(event_id)}", alice)

    async def test_events_are_signed_by_the_policy_server(self) -> None:
        alice, room, ps = await self._room()
        await self._enable(alice, room, ps)
        self.assertEqual(ps.asked, [])  # the m.room.policy state event itself is not asked about
        event_id = await self.send_message(alice, room, "hello")
        self.assertEqual([e["content"].get("body") for e in ps.asked], ["hello"])
        pdu = (await self.hs.event_store.get_event(event_id)).get_pdu_json()  # type: ignore[union-attr]
        # the Policy Server's signature sits next to ours (here under the same server name)
        self.assertIn(POLICY_KEY_ID, pdu["signatures"][ps.name])
        self.assertGreaterEqual(len(pdu["signatures"][ps.name]), 2)
        # state events too, and a non-state m.room.policy
        await self.set_state(alice, room, "m.room.topic", {"topic": "t"})
        self.assertEqual(ps.asked[-1]["type"], "m.room.topic")

    async def test_refusal_reaches_the_client_and_nothing_is_sent(self) -> None:
        alice, room, ps = await self._room()
        await self._enable(alice, room, ps)
        for mode, code, errcode in (
            ("refuse", 400, "M_FORBIDDEN"),
            ("bad", 403, "M_FORBIDDEN"),
            ("junk", 403, "M_FORBIDDEN"),
            ("down", 502, "M_UNKNOWN"),
        ):
            ps.mode = mode
            status, body = await self.put(f"{C}/rooms/{q(room)}/send/m.room.message/{mode}", {"body": mode, "msgtype": "m.text"}, alice)
            self.assertEqual((status, body.get("errcode")), (code, errcode), (mode, body))
            if mode == "refuse":
                self.assertEqual(body["error"], "The message appears to contain possible spam")
        bodies = [e["content"].get("body") for e in await self.room_events(alice, room)]
        self.assertFalse({"refuse", "bad", "junk", "down"} & set(bodies))
        # the room can always turn its Policy Server off: m.room.policy is never sent to it
        ps.mode = "down"
        await self.set_state(alice, room, "m.room.policy", {})
        ps.mode = "refuse"
        await self.send_message(alice, room, "free again")

    async def test_rooms_not_using_a_policy_server_are_not_asked(self) -> None:
        alice, room, ps = await self._room()
        ps.mode = "refuse"
        # invalid m.room.policy contents: no Policy Server
        for content in ({"via": ps.name}, {"via": ps.name, "public_keys": {"curve": "x"}}, {"public_keys": {"ed25519": "x"}}):
            await self.set_state(alice, room, "m.room.policy", content)
            await self.send_message(alice, room, "fine")
        # a valid one naming a server with no joined member: no Policy Server either
        content = {"via": "nobody.example", "public_keys": {"ed25519": verify_key_base64(ps.key)}}
        await self.set_state(alice, room, "m.room.policy", content)
        await self.send_message(alice, room, "still fine")
        self.assertEqual(ps.asked, [])

    def test_policy_config_validation(self) -> None:
        self.assertEqual(policy_config({"via": "a", "public_keys": {"ed25519": "k"}}), ("a", "k"))
        for bad in ({}, {"via": 1, "public_keys": {"ed25519": "k"}}, {"via": "a", "public_keys": ["k"]}, {"via": "", "public_keys": {"ed25519": "k"}}):
            self.assertIsNone(policy_config(bad))


class ReceivedPolicyTests(TwoServerTestCase):
    """§Validating Policy Server signatures on events from another server: soft failed unless
    the Policy Server signed them (asked again when the signature is missing)."""

    async def test_unsigned_remote_events_are_signed_or_soft_failed(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        room = await self.a.create_room(alice, {"preset": "public_chat", "room_version": "11"})
        await self.b.join(bob, room, via=[self.a.hs.server_name])
        # The Policy Server is B (bob is its joined member), played by a fake on both sides.
        name = self.b.hs.server_name
        ps_a, ps_b = FakePolicyServer(name), FakePolicyServer(name)
        ps_b.key = ps_a.key
        self.a.hs.room_server.local.policy_signer = signer_a = PolicyServerSigner(self.a.hs.event_store, ps_a, "a")
        self.a.hs.room_server.inbound.policy_signer = signer_a
        content = {"via": name, "public_keys": {"ed25519": verify_key_base64(ps_a.key)}}
        await self.a.set_state(alice, room, "m.room.policy", content)
        await self.b.sync_until(
            bob, lambda s: room in s["rooms"]["join"] and any(
                e["type"] == "m.room.policy" for e in s["rooms"]["join"][room]["timeline"]["events"]
            ), "the m.room.policy event"
        )
        # B does not ask (its signer is a server that knows no Policy Servers): A asks instead
        self.b.hs.room_server.local.policy_signer = None
        signed_later = await self.b.send_message(bob, room, "unsigned, signed by A's asking")
        await self.a.sync_until(alice, lambda s: signed_later in _timeline_ids(s, room), "bob's first message")
        self.assertEqual(ps_a.asked[-1]["content"]["body"], "unsigned, signed by A's asking")
        stored = await self.a.hs.event_store.get_event(signed_later)
        assert stored is not None
        self.assertIn(POLICY_KEY_ID, stored.signatures[name])
        # refused: soft failed at A (stored, never shown)
        ps_a.spam.add("spam")
        await self.b.send_message(bob, room, "spam")
        after = await self.b.send_message(bob, room, "fine again")
        await self.a.sync_until(alice, lambda s: after in _timeline_ids(s, room), "bob's last message")
        bodies = [e["content"].get("body") for e in await self.a.room_events(alice, room)]
        self.assertNotIn("spam", bodies)
        self.assertIn("spam", [b["content"].get("body") for b in ps_a.asked])  # asked, refused
        self.assertIn("fine again", bodies)


def _timeline_ids(sync: dict[str, Any], room: str) -> list[str]:
    joined = sync["rooms"]["join"].get(room)
    return [e["event_id"] for e in joined["timeline"]["events"]] if joined else []
