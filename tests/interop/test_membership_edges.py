"""Membership and privacy edges across mxserver and Synapse, both ways round.

Rejecting and withdrawing invites (the invitee's server is not in the room),
leaving and rejoining, history visibility "joined" (a newcomer's server must not
get the earlier messages through backfill), and room upgrades. (Server ACLs are
not tested here: both servers are named 127.0.0.1:PORT and ACLs ignore ports.)
"""

from __future__ import annotations

from typing import Any

from tests.interop import harness
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, quote


class _Edges(InteropTestCase):
    def test_reject_invite(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="private_chat")
        host_sync, guest_sync = Sync(host_user), Sync(guest_user)
        host_user.invite(room_id, guest_user.user_id)
        guest_sync.wait_for_invite(room_id)
        # rejecting goes through the inviting server (make_leave / send_leave)
        guest_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}, timeout=60)
        rejection = host_sync.wait_for_membership(room_id, guest_user.user_id, "leave")
        self.assertEqual(rejection["sender"], guest_user.user_id)
        guest_sync.wait(lambda: room_id in guest_sync.left and room_id not in guest_sync.invites, "the invite gone")
        # and the room can invite them again
        host_user.invite(room_id, guest_user.user_id)
        guest_sync.wait_for_invite(room_id)
        self.assertEqual(guest_user.join(room_id), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")

    def test_withdrawn_invite(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="private_chat")
        guest_sync = Sync(guest_user)
        host_user.invite(room_id, guest_user.user_id)
        guest_sync.wait_for_invite(room_id)
        # the kick of an invitee reaches their server although it is not in the room
        host_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": guest_user.user_id})
        guest_sync.wait(
            lambda: room_id in guest_sync.left and room_id not in guest_sync.invites, "the invite withdrawn"
        )
        via = f"?via={quote(self.host.server_name)}"
        code, resp = guest_user.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}{via}", {}, timeout=60)
        self.assertEqual(code, 403, resp)
        self.assertEqual(resp.get("errcode"), "M_FORBIDDEN", resp)

    def test_leave_and_rejoin(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room(preset="public_chat")
        guest_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {})
        host_sync.wait_for_membership(room_id, guest_user.user_id, "leave")
        host_user.send(room_id, f"while away {self.tag}")
        self.assertEqual(guest_user.join(room_id, via=[self.host.server_name]), room_id)
        host_sync.wait(
            lambda: (
                [
                    ev["content"]["membership"]
                    for ev in host_sync.timeline.get(room_id, [])
                    if ev.get("type") == "m.room.member" and ev.get("state_key") == guest_user.user_id
                ][-2:]
                == ["leave", "join"]
            ),
            "the guest rejoin",
        )
        host_user.send(room_id, f"welcome back {self.tag}")
        guest_sync.wait_for_body(room_id, f"welcome back {self.tag}")
        guest_user.send(room_id, f"glad to be back {self.tag}")
        host_sync.wait_for_body(room_id, f"glad to be back {self.tag}")
        self.assertEqual(self.joined_members(guest_user, room_id), {host_user.user_id, guest_user.user_id})

    def test_history_while_away_is_visible_after_rejoin(self) -> None:
        """History visibility "shared" (the preset's): what was said while the guest was away is
        visible after rejoining. The guest's server was out of the room then, so its history has a
        gap between the leave and the new join that /messages must fill from the other server."""
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room(preset="public_chat")
        host_user.send(room_id, f"before leaving {self.tag}")
        guest_sync.wait_for_body(room_id, f"before leaving {self.tag}")
        guest_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {})
        host_sync.wait_for_membership(room_id, guest_user.user_id, "leave")
        away = [f"while away {self.tag} {i}" for i in range(5)]
        for body in away:
            host_user.send(room_id, body)
        self.assertEqual(guest_user.join(room_id, via=[self.host.server_name]), room_id)
        host_user.send(room_id, f"after rejoining {self.tag}")
        guest_sync.wait_for_body(room_id, f"after rejoining {self.tag}")
        self.wait_for_messages(guest_user, room_id, away, "while away", timeout=30)
        events = guest_user.all_messages_backwards(room_id)
        self.assertEqual(harness.bodies(events, "before leaving"), [f"before leaving {self.tag}"])

    def test_history_visibility_joined_hides_earlier_messages(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(
            preset="private_chat",
            initial_state=[
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
            ],
        )
        secrets = [f"before you came {i}" for i in range(15)]
        for body in secrets:
            host_user.send(room_id, body)
        self.invite_and_join(host_user, guest_user, room_id)
        host_user.send(room_id, f"after you came {self.tag}")
        guest_sync = Sync(guest_user)
        guest_sync.wait_for_body(room_id, f"after you came {self.tag}")
        events = guest_user.all_messages_backwards(room_id)
        self.assertEqual(harness.bodies(events, "before you came"), [])
        self.assertEqual(harness.bodies(events, "after you came"), [f"after you came {self.tag}"])

    def test_restricted_join_through_another_room(self) -> None:
        """Join rule "restricted": the guest may join because it is in the allowed room; the
        resident server signs the join it authorised (join_authorised_via_users_server)."""
        space, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        outsider = self.guest.register("outsider")
        room_id = host_user.create_room(
            preset="private_chat",
            room_version="10",
            initial_state=[
                {
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
                }
            ],
        )
        room_sync = Sync(host_user)
        self.assertEqual(guest_user.join(room_id, via=[self.host.server_name]), room_id)
        join = room_sync.wait_for_membership(room_id, guest_user.user_id, "join")
        self.assertEqual(join["content"].get("join_authorised_via_users_server"), host_user.user_id, join)
        via = f"?via={quote(self.host.server_name)}"
        code, resp = outsider.request("POST", f"/_matrix/client/v3/join/{quote(room_id)}{via}", {}, timeout=60)
        self.assertEqual(code, 403, resp)

    def test_remote_moderator_kicks_a_local_user(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room(preset="public_chat")
        victim = self.host.register("victim")
        victim.join(room_id)
        guest_sync.wait_for_membership(room_id, victim.user_id, "join")
        levels = host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels")
        levels.setdefault("users", {})[guest_user.user_id] = 50
        levels_id = host_user.send_state(room_id, "m.room.power_levels", levels)
        guest_sync.wait(
            lambda: any(ev.get("event_id") == levels_id for ev in guest_sync.timeline.get(room_id, [])),
            "the guest made a moderator",
        )
        victim_sync = Sync(victim)
        guest_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/kick", {"user_id": victim.user_id})
        kick = victim_sync.wait_for_membership(room_id, victim.user_id, "leave")
        self.assertEqual(kick["sender"], guest_user.user_id)
        self.assertNotIn(victim.user_id, self.joined_members(host_user, room_id))

    def test_displayname_change_updates_memberships(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        name = f"Renamed Guest {self.tag}"
        guest_user.ok(
            "PUT", f"/_matrix/client/v3/profile/{quote(guest_user.user_id)}/displayname", {"displayname": name}
        )

        def renamed() -> Any:
            return any(
                ev.get("type") == "m.room.member"
                and ev.get("state_key") == guest_user.user_id
                and ev["content"].get("membership") == "join"
                and ev["content"].get("displayname") == name
                for ev in host_sync.timeline.get(room_id, [])
            )

        host_sync.wait(renamed, f"the guest's member event with displayname {name!r}")
        joined = host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")["joined"]
        self.assertEqual(joined[guest_user.user_id].get("display_name"), name)

    def test_room_upgrade(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room(preset="public_chat")
        new_room = host_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/upgrade", {"new_version": "11"})[
            "replacement_room"
        ]

        def tombstone() -> Any:
            for ev in guest_sync.timeline.get(room_id, []):
                if ev.get("type") == "m.room.tombstone":
                    return ev
            return None

        ev = guest_sync.wait(tombstone, "the tombstone")
        self.assertEqual(ev["content"].get("replacement_room"), new_room)
        self.assertEqual(guest_user.join(new_room, via=[self.host.server_name]), new_room)
        create = guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(new_room)}/state/m.room.create")
        self.assertEqual(create.get("room_version"), "11")
        self.assertEqual(create.get("predecessor", {}).get("room_id"), room_id, create)
        host_user.send(new_room, f"in the new room {self.tag}")
        guest_sync.wait_for_body(new_room, f"in the new room {self.tag}")


class MxserverHostsEdgeTests(_Edges):
    host_kind = "mxserver"


class SynapseHostsEdgeTests(_Edges):
    host_kind = "synapse"


del _Edges
