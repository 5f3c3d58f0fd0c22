"""mxserver and a real Synapse in one room, both ways round.

``MxserverHostsTests``: an mxserver user creates the room and a Synapse user joins;
``SynapseHostsTests``: the other way round. Every test uses new users and rooms.
"""

from __future__ import annotations

from typing import Any

from tests.interop import harness
from tests.interop.base import InteropTestCase
from tests.interop.harness import Sync, quote


class _Scenarios(InteropTestCase):
    # -- membership ---------------------------------------------------------------------

    def test_invite_and_join(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="private_chat", name=f"interop {self.tag}")
        guest_sync = Sync(guest_user)
        host_sync = Sync(host_user)
        host_user.invite(room_id, guest_user.user_id)
        invite_state = guest_sync.wait_for_invite(room_id)
        invites = [
            ev for ev in invite_state if ev.get("type") == "m.room.member" and ev.get("state_key") == guest_user.user_id
        ]
        self.assertEqual([ev["content"]["membership"] for ev in invites], ["invite"], invite_state)
        self.assertEqual(invites[0]["sender"], host_user.user_id)
        # the stripped state shows the room's name to the invitee
        names = [ev["content"].get("name") for ev in invite_state if ev.get("type") == "m.room.name"]
        self.assertEqual(names, [f"interop {self.tag}"], invite_state)

        self.assertEqual(guest_user.join(room_id), room_id)
        join = host_sync.wait_for_membership(room_id, guest_user.user_id, "join")
        self.assertEqual(join["sender"], guest_user.user_id)
        guest_sync.wait(lambda: room_id in guest_sync.joined, f"{room_id} among its joined rooms")
        both = {host_user.user_id, guest_user.user_id}
        self.assertEqual(self.joined_members(host_user, room_id), both)
        self.assertEqual(self.joined_members(guest_user, room_id), both)
        # the joiner's server has the room's state
        name = guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.name")
        self.assertEqual(name, {"name": f"interop {self.tag}"})

    def test_leave_stops_delivery(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        control, *_ = self._control_room(host_user, guest_user)
        guest_user.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {})
        host_sync.wait_for_membership(room_id, guest_user.user_id, "leave")
        guest_sync.wait(lambda: room_id in guest_sync.left, f"{room_id} among its left rooms")
        self._assert_not_delivered_after(host_user, guest_user, guest_sync, room_id, control)

    def test_kick_stops_delivery(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        control, *_ = self._control_room(host_user, guest_user)
        host_user.ok(
            "POST",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/kick",
            {"user_id": guest_user.user_id, "reason": "interop"},
        )
        kick = guest_sync.wait_for_membership(room_id, guest_user.user_id, "leave")
        self.assertEqual(kick["sender"], host_user.user_id)
        self.assertEqual(kick["content"].get("reason"), "interop")
        self.assertIn(room_id, guest_sync.left)
        self.assertNotIn(guest_user.user_id, self.joined_members(host_user, room_id))
        self._assert_not_delivered_after(host_user, guest_user, guest_sync, room_id, control)

    def _control_room(self, host_user: Any, guest_user: Any) -> tuple[str, Sync, Sync]:
        control = host_user.create_room(preset="private_chat")
        host_sync, guest_sync = self.invite_and_join(host_user, guest_user, control)
        return control, host_sync, guest_sync

    def _assert_not_delivered_after(
        self, host_user: Any, guest_user: Any, guest_sync: Sync, room_id: str, control: str
    ) -> None:
        """A message sent after the guest left is not delivered; a later one in another room is (the marker)."""
        before = len(guest_sync.timeline.get(room_id, []))
        host_user.send(room_id, f"after leaving {self.tag}")
        host_user.send(control, f"marker {self.tag}")
        guest_sync.wait_for_body(control, f"marker {self.tag}")
        self.assertEqual(guest_sync.timeline_bodies(room_id, "after leaving"), [])
        self.assertEqual(guest_sync.timeline.get(room_id, [])[before:], [])
        code, page = guest_user.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=50")
        if code == 200:
            self.assertEqual(harness.bodies(page["chunk"], "after leaving"), [])
        else:
            self.assertEqual(code, 403, page)

    # -- messages -------------------------------------------------------------------------

    def test_messages_both_ways_in_order(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        sent = [f"from host {i}" for i in range(10)]
        for body in sent:
            host_user.send(room_id, body)
        guest_sync.wait(
            lambda: len(guest_sync.timeline_bodies(room_id, "from host")) >= 10, "10 messages from the host"
        )
        self.assertEqual(guest_sync.timeline_bodies(room_id, "from host"), sent)

        replies = [f"from guest {i}" for i in range(10)]
        for body in replies:
            guest_user.send(room_id, body)
        host_sync.wait(
            lambda: len(host_sync.timeline_bodies(room_id, "from guest")) >= 10, "10 messages from the guest"
        )
        self.assertEqual(host_sync.timeline_bodies(room_id, "from guest"), replies)

        # a conversation: each answer waits for the message it answers
        for i in range(3):
            host_user.send(room_id, f"ping {i}")
            guest_sync.wait_for_body(room_id, f"ping {i}")
            guest_user.send(room_id, f"pong {i}")
            host_sync.wait_for_body(room_id, f"pong {i}")
        expected = [b for i in range(3) for b in (f"ping {i}", f"pong {i}")]
        for user in (host_user, guest_user):
            events = user.all_messages_backwards(room_id)
            self.assertEqual(harness.bodies(events, "from host"), sent)
            self.assertEqual(harness.bodies(events, "from guest"), replies)
            self.assertEqual([b for b in harness.bodies(events) if b.startswith(("ping", "pong"))], expected)

    def test_burst_of_200_messages(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        sent = [f"burst {i:03d}" for i in range(200)]
        for body in sent:
            host_user.send(room_id, body)
        guest_sync.wait_for_body(room_id, sent[-1], timeout=90)
        self.wait_for_messages(guest_user, room_id, sent, "burst ", timeout=90)

    def test_backfill_of_100_older_messages(self) -> None:
        host_user, guest_user = self.users()
        room_id = host_user.create_room(preset="private_chat")
        sent = [f"history {i:03d}" for i in range(100)]
        for body in sent:
            host_user.send(room_id, body)
        self.invite_and_join(host_user, guest_user, room_id)
        # a client paging back once through the whole room gets every older message, in order
        events = guest_user.all_messages_backwards(room_id)
        self.assertEqual(harness.bodies(events, "history "), sent)
        types = [ev["type"] for ev in events]
        self.assertEqual(types[0], "m.room.create", types[:5])

    # -- ephemeral --------------------------------------------------------------------------

    def test_typing_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        self._typing_seen(room_id, host_user, guest_sync)
        self._typing_seen(room_id, guest_user, host_sync)

    def _typing_seen(self, room_id: str, typer: Any, watcher_sync: Sync) -> None:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(typer.user_id)}"
        typer.ok("PUT", path, {"typing": True, "timeout": 30000})
        watcher_sync.wait(lambda: self._typing(watcher_sync, room_id) == {typer.user_id}, f"{typer.user_id} typing")
        typer.ok("PUT", path, {"typing": False})
        watcher_sync.wait(lambda: self._typing(watcher_sync, room_id) == set(), f"{typer.user_id} stop typing")

    @staticmethod
    def _typing(sync: Sync, room_id: str) -> set[str] | None:
        """The typing users of the latest m.typing in room_id; None if none arrived yet."""
        latest = None
        for ev in sync.ephemeral.get(room_id, []):
            if ev.get("type") == "m.typing":
                latest = set(ev["content"]["user_ids"])
        return latest

    def test_read_receipts_both_ways(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        self._receipt_seen(room_id, host_user, host_sync, guest_user, guest_sync)
        self._receipt_seen(room_id, guest_user, guest_sync, host_user, host_sync)

    def _receipt_seen(self, room_id: str, sender: Any, sender_sync: Sync, reader: Any, reader_sync: Sync) -> None:
        event_id = sender.send(room_id, f"read me {sender.user_id}")
        reader_sync.wait_for_body(room_id, f"read me {sender.user_id}")
        reader.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {})

        def receipt() -> Any:
            for ev in sender_sync.ephemeral.get(room_id, []):
                if ev.get("type") == "m.receipt":
                    got = ev["content"].get(event_id, {}).get("m.read", {}).get(reader.user_id)
                    if got is not None:
                        return got
            return None

        got = sender_sync.wait(receipt, f"{reader.user_id}'s read receipt on {event_id}")
        self.assertIsInstance(got.get("ts"), int)

    # -- queries ----------------------------------------------------------------------------

    def test_profile_query(self) -> None:
        host_user, guest_user = self.users()
        name = f"Host Person {self.tag}"
        host_user.ok("PUT", f"/_matrix/client/v3/profile/{quote(host_user.user_id)}/displayname", {"displayname": name})
        profile = guest_user.ok("GET", f"/_matrix/client/v3/profile/{quote(host_user.user_id)}")
        self.assertEqual(profile.get("displayname"), name, profile)
        only = guest_user.ok("GET", f"/_matrix/client/v3/profile/{quote(host_user.user_id)}/displayname")
        self.assertEqual(only, {"displayname": name})
        code, missing = guest_user.request(
            "GET", f"/_matrix/client/v3/profile/{quote('@nobody' + self.tag + ':' + self.host.server_name)}"
        )
        self.assertEqual(code, 404, missing)
        self.assertEqual(missing.get("errcode"), "M_NOT_FOUND", missing)

    def test_alias_query_and_join_by_alias(self) -> None:
        host_user, guest_user = self.users()
        localpart = f"interop{self.tag}"
        room_id = host_user.create_room(preset="public_chat", room_alias_name=localpart)
        alias = f"#{localpart}:{self.host.server_name}"
        resolved = guest_user.ok("GET", f"/_matrix/client/v3/directory/room/{quote(alias)}")
        self.assertEqual(resolved["room_id"], room_id)
        self.assertIn(self.host.server_name, resolved["servers"])
        code, unknown = guest_user.request("GET", f"/_matrix/client/v3/directory/room/{quote('#no' + alias[1:])}")
        self.assertEqual(code, 404, unknown)
        self.assertEqual(unknown.get("errcode"), "M_NOT_FOUND", unknown)

        host_sync = Sync(host_user)
        self.assertEqual(guest_user.join(alias), room_id)
        host_sync.wait_for_membership(room_id, guest_user.user_id, "join")

    # -- state ------------------------------------------------------------------------------

    def test_room_name_change_propagates(self) -> None:
        room_id, host_user, guest_user, host_sync, guest_sync = self.shared_room()
        host_user.send_state(room_id, "m.room.name", {"name": f"renamed by host {self.tag}"})
        self._wait_for_name(guest_sync, room_id, f"renamed by host {self.tag}")
        self.assertEqual(
            guest_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.name"),
            {"name": f"renamed by host {self.tag}"},
        )
        # the host gives the guest the power to rename; the guest's server must accept that first
        levels = host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.power_levels")
        levels.setdefault("users", {})[guest_user.user_id] = 50
        levels_id = host_user.send_state(room_id, "m.room.power_levels", levels)
        guest_sync.wait(
            lambda: any(ev.get("event_id") == levels_id for ev in guest_sync.timeline.get(room_id, [])),
            "the new power levels",
        )
        guest_user.send_state(room_id, "m.room.name", {"name": f"renamed by guest {self.tag}"})
        self._wait_for_name(host_sync, room_id, f"renamed by guest {self.tag}")
        self.assertEqual(
            host_user.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.name"),
            {"name": f"renamed by guest {self.tag}"},
        )

    @staticmethod
    def _wait_for_name(sync: Sync, room_id: str, name: str) -> None:
        sync.wait(
            lambda: any(
                ev.get("type") == "m.room.name" and ev.get("content", {}).get("name") == name
                for ev in sync.timeline.get(room_id, [])
            ),
            f"room name {name!r}",
        )


class MxserverHostsTests(_Scenarios):
    """An mxserver user creates each room; a Synapse user is invited and joins."""

    host_kind = "mxserver"


class SynapseHostsTests(_Scenarios):
    """A Synapse user creates each room; an mxserver user is invited and joins."""

    host_kind = "synapse"


del _Scenarios  # only the two concrete classes run
