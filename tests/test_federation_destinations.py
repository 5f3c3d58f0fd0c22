"""servers_in_room: the servers with joined members in a room, cached and kept current."""

from __future__ import annotations

from mxserver.federation.destinations import servers_in_room
from mxserver.rooms.room_server import EventSpec
from tests.room_helpers import RoomTestCase


class ServersInRoomTests(RoomTestCase):
    async def _remote_join(self, room: str, user_id: str) -> None:
        # A remote user's join, built locally: enough for the membership bookkeeping
        # (the room is public; the room server signs it as ours, which does not matter here).
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, user_id, user_id))

    async def test_own_server_and_remote_members(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        self.assertEqual(await servers_in_room(self.hs, room), {"test"})
        await self._remote_join(room, "@bob:remote.example")
        await self._remote_join(room, "@carol:remote.example")
        await self._remote_join(room, "@dan:other.example:8448")
        self.assertEqual(await servers_in_room(self.hs, room), {"test", "remote.example", "other.example:8448"})
        # one of two users of a server leaves: still there; the last leaves: gone
        await self.hs.room_server.send(
            room, EventSpec("m.room.member", {"membership": "leave"}, "@bob:remote.example", "@bob:remote.example")
        )
        self.assertEqual(await servers_in_room(self.hs, room), {"test", "remote.example", "other.example:8448"})
        await self.hs.room_server.send(
            room, EventSpec("m.room.member", {"membership": "leave"}, "@dan:other.example:8448", "@dan:other.example:8448")
        )
        self.assertEqual(await servers_in_room(self.hs, room), {"test", "remote.example"})

    async def test_unknown_room(self) -> None:
        self.assertEqual(await servers_in_room(self.hs, "!nope:test"), set())

    async def test_result_is_a_copy(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice)
        servers = await servers_in_room(self.hs, room)
        servers.add("evil.example")
        self.assertEqual(await servers_in_room(self.hs, room), {"test"})
