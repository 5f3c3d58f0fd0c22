"""Device lists, cross-signing keys, receipt kinds and knock refusals across mxserver and Synapse.

Device-list updates travel as m.device_list_update EDUs to the servers sharing a
room; a client on the other server sees the user in ``device_lists.changed`` and
its /keys/query then shows the new (or no longer the deleted) device. Private
read receipts never leave their server; threaded receipts keep their thread.
"""

from __future__ import annotations

import os
import time
from typing import Any

from mxserver.crypto.keys import generate_signing_key, signing_key_from_seed, verify_key_base64
from mxserver.crypto.signing import encode_base64, sign_json
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, User, quote


def upload_device_keys(user: User) -> dict[str, Any]:
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
    user.ok("POST", "/_matrix/client/v3/keys/upload", {"device_keys": device_keys})
    return device_keys


def cross_signing_key(user: User, usage: str) -> tuple[Any, dict[str, Any]]:
    """A signing key whose ID is its public key (as cross-signing keys are named), and its JSON."""
    seed = generate_signing_key("tmp").encode()
    public = verify_key_base64(signing_key_from_seed(seed, "tmp"))
    key = signing_key_from_seed(seed, public)
    return key, {"user_id": user.user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


class _Devices(InteropTestCase):
    def _query(self, asking: User, about: User) -> dict[str, Any]:
        got = asking.ok("POST", "/_matrix/client/v3/keys/query", {"device_keys": {about.user_id: []}}, timeout=60)
        self.assertEqual(got.get("failures", {}), {}, got)
        return got

    def _wait_for_devices(self, asking: User, about: User, want: set[str], timeout: float = 45.0) -> dict[str, Any]:
        """Query until exactly ``want`` shows, without failures. A failure on the way is retried:
        Synapse 1.163 answers 503 "'devices'" when its query races a device-list resync of its own
        (handlers/device.py returns cached devices in the wrong shape to handlers/e2e_keys.py)."""
        deadline = time.monotonic() + timeout
        while True:
            got = asking.ok("POST", "/_matrix/client/v3/keys/query", {"device_keys": {about.user_id: []}}, timeout=60)
            devices = set(got.get("device_keys", {}).get(about.user_id, {}))
            if devices == want and not got.get("failures"):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{asking.server.kind}: /keys/query for {about.user_id} shows devices {sorted(devices)}, "
                    f"not {sorted(want)}, failures {got.get('failures')}, after {timeout:.0f}s"
                )
            time.sleep(1)

    def _wait_for_change(self, watcher_sync: Sync, mark: int, user: User, what: str) -> None:
        watcher_sync.wait(lambda: user.user_id in watcher_sync.device_lists_changed[mark:], f"{user.user_id} in {what}")

    def test_device_list_updates_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        for user, watcher, watcher_sync in ((host_user, guest_user, guest_sync), (guest_user, host_user, host_sync)):
            first = upload_device_keys(user)
            self._wait_for_devices(watcher, user, {user.device_id})
            mark = len(watcher_sync.device_lists_changed)
            second = user.login_again()
            keys = upload_device_keys(second)
            self._wait_for_change(watcher_sync, mark, user, "device_lists.changed after a new device")
            got = self._wait_for_devices(watcher, user, {user.device_id, second.device_id})
            remote = got["device_keys"][user.user_id]
            self.assertEqual(remote[second.device_id]["keys"], keys["keys"])
            self.assertEqual(remote[user.device_id]["keys"], first["keys"])

            # deleting the new device is announced too, and it leaves the other server's answer
            mark = len(watcher_sync.device_lists_changed)
            user.with_password_auth("DELETE", f"/_matrix/client/v3/devices/{quote(second.device_id)}", {})
            self._wait_for_change(watcher_sync, mark, user, "device_lists.changed after deleting a device")
            self._wait_for_devices(watcher, user, {user.device_id})

    def test_cross_signing_keys_query(self) -> None:
        host_user, guest_user = self.users()
        upload_device_keys(host_user)
        master_key, master = cross_signing_key(host_user, "master")
        _, self_signing = cross_signing_key(host_user, "self_signing")
        _, user_signing = cross_signing_key(host_user, "user_signing")
        self_signing = sign_json(self_signing, host_user.user_id, master_key)
        user_signing = sign_json(user_signing, host_user.user_id, master_key)
        host_user.with_password_auth(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            {"master_key": master, "self_signing_key": self_signing, "user_signing_key": user_signing},
        )
        got = self._query(guest_user, host_user)
        self.assertEqual(got["master_keys"][host_user.user_id]["keys"], master["keys"], got)
        self.assertEqual(got["self_signing_keys"][host_user.user_id]["keys"], self_signing["keys"], got)
        self.assertEqual(
            got["self_signing_keys"][host_user.user_id]["signatures"][host_user.user_id],
            self_signing["signatures"][host_user.user_id],
        )
        # a user's user-signing key is for their own eyes only
        self.assertNotIn(host_user.user_id, got.get("user_signing_keys", {}))

    # -- receipts -------------------------------------------------------------------------------

    def test_private_receipts_stay_home_and_threaded_receipts_keep_their_thread(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        first = host_user.send(room_id, f"first {self.tag}")
        second = host_user.send(room_id, f"second {self.tag}")
        guest_sync.wait_for_body(room_id, f"second {self.tag}")
        receipt = f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt"
        guest_user.ok("POST", f"{receipt}/m.read.private/{quote(first)}", {})
        guest_user.ok("POST", f"{receipt}/m.read/{quote(second)}", {"thread_id": "main"})

        def public() -> Any:
            for ev in host_sync.ephemeral.get(room_id, []):
                if ev.get("type") == "m.receipt":
                    got = ev["content"].get(second, {}).get("m.read", {}).get(guest_user.user_id)
                    if got is not None:
                        return got
            return None

        got = host_sync.wait(public, "the guest's threaded read receipt")
        self.assertEqual(got.get("thread_id"), "main", got)
        for ev in host_sync.ephemeral.get(room_id, []):
            if ev.get("type") == "m.receipt":
                self.assertNotIn(first, ev["content"], ev)
                for receipts in ev["content"].values():
                    self.assertNotIn("m.read.private", receipts, ev)

    # -- knocks ---------------------------------------------------------------------------------

    def test_knock_refused(self) -> None:
        """A refused knock reaches the knocking server although it is not in the room."""
        host_user, guest_user = self.users()
        room_id = host_user.create_room(
            preset="private_chat",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        host_sync, guest_sync = Sync(host_user), Sync(guest_user)
        via = f"?via={quote(self.host.server_name)}"
        guest_user.ok("POST", f"/_matrix/client/v3/knock/{quote(room_id)}{via}", {}, timeout=60)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "knock")
        guest_sync.wait(lambda: room_id in guest_sync.knocks, "its knock in the knock section")
        host_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": guest_user.user_id})
        guest_sync.wait(lambda: room_id in guest_sync.left and room_id not in guest_sync.knocks, "the knock refused")

    # Synapse 1.163 has no refused knocks over federation: its sender adds the target's server
    # only for a rescinded *invite* (synapse/federation/sender/__init__.py), and its receiver
    # drops any other PDU of a room it is not in (synapse/handlers/federation_event.py:
    # "Ignoring PDU ... as we're not in the room", seen here for mxserver's refusal).
    test_knock_refused.skip = "Synapse 1.163 neither sends nor accepts refused knocks for a room it is not in"  # type: ignore[attr-defined]


class MxserverHostsDeviceTests(_Devices):
    host_kind = "mxserver"


class SynapseHostsDeviceTests(_Devices):
    host_kind = "synapse"


del _Devices
