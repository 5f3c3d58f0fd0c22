"""A message sent while the other server is down arrives after it comes back.

This module's name sorts after test_federation, so the restarts (and the back-off they leave
behind) come after the other interop tests.
"""

from __future__ import annotations

import time

from tests.interop.base import InteropTestCase

#: how long the restarted server may take to receive what it missed
CATCH_UP_TIMEOUT = 120.0


class _PeerDown(InteropTestCase):
    def test_message_sent_while_peer_down_arrives(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        host_user.send(room_id, f"before {self.tag}")
        guest_sync.wait_for_body(room_id, f"before {self.tag}")

        self.guest.stop()
        sent = [f"while down {self.tag} {i:02d}" for i in range(30)]
        for body in sent:
            host_user.send(room_id, body)
        self.guest.start()

        # the guest's sync token from before the restart is still good
        guest_sync.wait(
            lambda: sent[-1] in guest_sync.timeline_bodies(room_id, "while down"),
            f"the last message sent while {self.guest.kind} was down",
            timeout=CATCH_UP_TIMEOUT,
        )
        self.wait_for_messages(guest_user, room_id, sent, "while down", timeout=60)
        # and the conversation goes on both ways
        guest_user.send(room_id, f"back {self.tag}")
        host_sync.wait_for_body(room_id, f"back {self.tag}")

    def test_long_outage_history_is_complete(self) -> None:
        """60 messages during an outage the sender notices (its retries fail meanwhile): the
        restarted server gets the latest at once and the rest through /get_missing_events or
        /backfill, so its client can page through all of them in order."""
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        host_user.send(room_id, f"before {self.tag}")
        guest_sync.wait_for_body(room_id, f"before {self.tag}")
        self.guest.stop()
        sent = [f"long outage {self.tag} {i:02d}" for i in range(60)]
        for i, body in enumerate(sent):
            host_user.send(room_id, body)
            if i == 0:
                time.sleep(8)  # the sender tries, fails and backs off (Synapse: catch-up mode)
        self.guest.start()
        guest_sync.wait(
            lambda: sent[-1] in guest_sync.timeline_bodies(room_id, "long outage"),
            f"the last message sent while {self.guest.kind} was down",
            timeout=CATCH_UP_TIMEOUT,
        )
        self.wait_for_messages(guest_user, room_id, sent, "long outage", timeout=60)


class SynapseDownTests(_PeerDown):
    """mxserver's sender retries towards Synapse once Synapse is back."""

    host_kind = "mxserver"


class MxserverDownTests(_PeerDown):
    """Synapse catches mxserver up (latest event, then /get_missing_events) once mxserver is back."""

    host_kind = "synapse"


del _PeerDown
