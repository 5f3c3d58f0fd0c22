"""More of what real rooms do across mxserver and Synapse, both ways round.

Redactions, bans, knocking, the public room directory and joins by room ID,
older room versions, presence, to-device messages and E2EE device keys.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from mxserver.crypto.keys import generate_signing_key, verify_key_base64
from mxserver.crypto.signing import encode_base64, sign_json
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, User, quote


class _More(InteropTestCase):
    # -- room events ------------------------------------------------------------------------

    def test_redactions_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        self._redaction_seen(room_id, host_user, guest_user, guest_sync)
        self._redaction_seen(room_id, guest_user, host_user, host_sync)

    def _redaction_seen(self, room_id: str, author: User, other: User, other_sync: Sync) -> None:
        body = f"regrettable {author.user_id} {self.tag}"
        event_id = author.send(room_id, body)
        other_sync.wait_for_body(room_id, body)
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/redact/{quote(event_id)}/{uuid.uuid4().hex}"
        redaction_id = author.ok("PUT", path, {"reason": "interop"})["event_id"]

        def redaction() -> Any:
            for ev in other_sync.timeline.get(room_id, []):
                if ev.get("event_id") == redaction_id:
                    return ev
            return None

        ev = other_sync.wait(redaction, f"the redaction of {event_id}")
        self.assertEqual(ev["type"], "m.room.redaction")
        self.assertEqual(ev.get("redacts", ev["content"].get("redacts")), event_id)
        self.assertEqual(ev["content"].get("reason"), "interop")
        seen = other.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}")
        self.assertEqual(seen["content"], {}, seen)
        self.assertEqual(seen["unsigned"]["redacted_because"]["event_id"], redaction_id, seen)

    def test_ban_keeps_out(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        host_user.ok(
            "POST",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/ban",
            {"user_id": guest_user.user_id, "reason": "interop"},
        )
        ban = guest_sync.wait_for_membership(room_id, guest_user.user_id, "ban")
        self.assertEqual(ban["sender"], host_user.user_id)
        via = f"?via={quote(self.host.server_name)}"
        code, resp = guest_user.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}{via}", {}, timeout=60)
        self.assertEqual(code, 403, resp)
        self.assertEqual(resp.get("errcode"), "M_FORBIDDEN", resp)
        state = host_user.ok(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(guest_user.user_id)}"
        )
        self.assertEqual(state["membership"], "ban")

    def test_knock_then_invite(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(
            preset="private_chat",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        host_sync = Sync(host_user)
        guest_sync = Sync(guest_user)
        via = f"?via={quote(self.host.server_name)}&server_name={quote(self.host.server_name)}"
        knocked = guest_user.ok(
            "POST", f"/_matrix/client/v3/knock/{quote(room_id)}{via}", {"reason": "let me in"}, timeout=60
        )
        self.assertEqual(knocked["room_id"], room_id)
        knock = host_sync.wait_for_membership(room_id, guest_user.user_id, "knock")
        self.assertEqual(knock["content"].get("reason"), "let me in")
        host_user.invite(room_id, guest_user.user_id)
        guest_sync.wait_for_invite(room_id)
        self.assertEqual(guest_user.join(room_id), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")

    def test_public_directory_and_join_by_room_id(self) -> None:
        host_user, guest_user = self.users()
        name = f"Public interop {self.tag}"
        room_id = host_user.create_room(preset="public_chat", visibility="public", name=name)
        listing = guest_user.ok(
            "GET", f"/_matrix/client/v3/publicRooms?server={quote(self.host.server_name)}&limit=500"
        )
        entries = [r for r in listing["chunk"] if r["room_id"] == room_id]
        self.assertEqual(len(entries), 1, listing)
        self.assertEqual(entries[0].get("name"), name)
        self.assertEqual(entries[0].get("num_joined_members"), 1)
        filtered = guest_user.ok(
            "POST",
            f"/_matrix/client/v3/publicRooms?server={quote(self.host.server_name)}",
            {"filter": {"generic_search_term": self.tag}, "limit": 10},
        )
        self.assertEqual([r["room_id"] for r in filtered["chunk"]], [room_id], filtered)

        host_sync = Sync(host_user)
        self.assertEqual(guest_user.join(room_id, via=[self.host.server_name]), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")
        guest_sync = Sync(guest_user)
        host_user.send(room_id, f"welcome {self.tag}")
        guest_sync.wait_for_body(room_id, f"welcome {self.tag}")

    def test_older_room_versions(self) -> None:
        for version in ("1", "10", "11"):
            host_user, guest_user = self.users()
            room_id = host_user.create_room(preset="private_chat", room_version=version)
            host_sync, guest_sync = self.invite_and_join(host_user, guest_user, room_id)
            create = guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.create")
            self.assertEqual(create.get("room_version", "1"), version, create)
            host_user.send(room_id, f"v{version} from host")
            guest_sync.wait_for_body(room_id, f"v{version} from host")
            guest_user.send(room_id, f"v{version} from guest")
            host_sync.wait_for_body(room_id, f"v{version} from guest")

    # -- ephemeral and devices -----------------------------------------------------------------

    def test_presence_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        for user, watcher in ((host_user, guest_sync), (guest_user, host_sync)):
            status = f"busy {user.user_id} {self.tag}"
            user.ok(
                "PUT",
                f"/_matrix/client/v3/presence/{quote(user.user_id)}/status",
                {"presence": "online", "status_msg": status},
            )

            def seen(user: User = user, watcher: Sync = watcher, status: str = status) -> Any:
                return any(
                    ev.get("type") == "m.presence"
                    and ev.get("sender") == user.user_id
                    and ev["content"].get("status_msg") == status
                    and ev["content"].get("presence") == "online"
                    for ev in watcher.presence
                )

            watcher.wait(seen, f"{user.user_id} online with status {status!r}")
            got = watcher.user.ok("GET", f"/_matrix/client/v3/presence/{quote(user.user_id)}/status")
            self.assertEqual(got.get("presence"), "online", got)
            self.assertEqual(got.get("status_msg"), status, got)

    def test_to_device_both_ways(self) -> None:
        host_user, guest_user = self.users()
        host_sync, guest_sync = Sync(host_user), Sync(guest_user)
        for sender, target, target_sync in ((host_user, guest_user, guest_sync), (guest_user, host_user, host_sync)):
            content = {"tag": self.tag, "from": sender.user_id}
            path = f"/_matrix/client/v3/sendToDevice/m.interop.test/{uuid.uuid4().hex}"
            sender.ok("PUT", path, {"messages": {target.user_id: {target.device_id: content}}})

            def seen(sender: User = sender, target_sync: Sync = target_sync, content: dict[str, Any] = content) -> Any:
                return [
                    ev
                    for ev in target_sync.to_device
                    if ev.get("type") == "m.interop.test"
                    and ev.get("sender") == sender.user_id
                    and ev.get("content") == content
                ]

            self.assertEqual(len(target_sync.wait(seen, f"a to-device message from {sender.user_id}")), 1)

    def test_device_keys_query_and_claim(self) -> None:
        host_user, guest_user = self.users()
        device_keys, otk_id, otk = self._upload_keys(host_user)
        got = guest_user.ok(
            "POST", "/_matrix/client/v3/keys/query", {"device_keys": {host_user.user_id: []}}, timeout=60
        )
        self.assertEqual(got.get("failures", {}), {}, got)
        remote = got["device_keys"][host_user.user_id][host_user.device_id]
        for key in ("user_id", "device_id", "algorithms", "keys", "signatures"):
            self.assertEqual(remote[key], device_keys[key], remote)
        claimed = guest_user.ok(
            "POST",
            "/_matrix/client/v3/keys/claim",
            {"one_time_keys": {host_user.user_id: {host_user.device_id: "signed_curve25519"}}},
            timeout=60,
        )
        self.assertEqual(claimed.get("failures", {}), {}, claimed)
        self.assertEqual(claimed["one_time_keys"][host_user.user_id][host_user.device_id], {otk_id: otk}, claimed)
        # a one-time key is handed out once
        again = guest_user.ok(
            "POST",
            "/_matrix/client/v3/keys/claim",
            {"one_time_keys": {host_user.user_id: {host_user.device_id: "signed_curve25519"}}},
            timeout=60,
        )
        self.assertEqual(again["one_time_keys"].get(host_user.user_id, {}).get(host_user.device_id, {}), {}, again)

    @staticmethod
    def _upload_keys(user: User) -> tuple[dict[str, Any], str, dict[str, Any]]:
        """Device keys and one signed one-time key, signed like a client does (ed25519:DEVICE)."""
        key = generate_signing_key(user.device_id)
        device_keys: dict[str, Any] = {
            "user_id": user.user_id,
            "device_id": user.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{user.device_id}": encode_base64(os.urandom(32)),
                f"ed25519:{user.device_id}": verify_key_base64(key),
            },
        }
        device_keys = sign_json(device_keys, user.user_id, key)
        otk_id = "signed_curve25519:AAAAAQ"
        otk = sign_json({"key": encode_base64(os.urandom(32))}, user.user_id, key)
        user.ok("POST", "/_matrix/client/v3/keys/upload", {"device_keys": device_keys, "one_time_keys": {otk_id: otk}})
        return device_keys, otk_id, otk


class MxserverHostsMoreTests(_More):
    """The mxserver user creates the rooms and is the first sender."""

    host_kind = "mxserver"


class SynapseHostsMoreTests(_More):
    """The Synapse user creates the rooms and is the first sender."""

    host_kind = "synapse"


del _More
