"""/sync of a room joined over federation after an out-of-band invite (client-server-api §Syncing).

The invite from another server is stored as an outlier with a stream position
(mxserver/rooms/remote_membership.py), so the joiner's first timeline of the room
begins with it. Such an outlier has no room state; the ``state`` block must still be
the room state at the start of the timeline (the state the join adopted), or a client
never learns e.g. that the room is encrypted (``m.room.encryption``): found with two
matrix-nio clients, mxserver joining an encrypted room on Synapse.
"""

from __future__ import annotations

from typing import Any

from mxserver.federation.remote_rooms import q
from tests.harness import C, TwoServerTestCase
from tests.test_federation_joins import FederationTestMixin

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class RemoteInviteJoinSyncTests(FederationTestMixin, TwoServerTestCase):
    async def test_state_after_joining_through_an_out_of_band_invite(self) -> None:
        alice = await self.a.register("alice")
        bob = await self.b.register("bob")
        room_id = await self.b.create_room(
            bob, {"preset": "private_chat", "name": "secret", "initial_state": [ENCRYPTION]}
        )
        code, body = await self.b.post(f"{C}/rooms/{q(room_id)}/invite", {"user_id": alice.user_id}, bob)
        self.assertEqual(code, 200, body)

        def invited(sync: dict[str, Any]) -> str | None:
            return str(sync["next_batch"]) if room_id in sync["rooms"]["invite"] else None

        since = await self.a.sync_until(alice, invited, "Alice's invite at A")
        code, body = await self.join(self.a, alice, room_id)
        self.assertEqual(code, 200, body)

        # both the incremental sync of the new join and an initial sync
        for sync in (await self.a.sync(alice, since), await self.a.sync(alice)):
            room = sync["rooms"]["join"][room_id]
            timeline = room["timeline"]["events"]
            self.assertEqual(
                (timeline[-1]["type"], timeline[-1]["state_key"], timeline[-1]["content"]["membership"]),
                ("m.room.member", alice.user_id, "join"),
            )
            state = {(e["type"], e["state_key"]): e["content"] for e in room["state"]["events"]}
            self.assertEqual(state.get(("m.room.encryption", "")), ENCRYPTION["content"])
            self.assertEqual(state.get(("m.room.name", "")), {"name": "secret"})
            self.assertIn(("m.room.create", ""), state)
            self.assertEqual(state.get(("m.room.member", bob.user_id), {}).get("membership"), "join")
