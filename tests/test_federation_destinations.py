"""RoomServers (``hs.room_servers``): the servers with joined members in a room, cached and kept current."""

from __future__ import annotations

from mxserver.rooms.room_server import EventSpec
from tests.harness import HomeserverTestCase


class ServersInRoomTests(HomeserverTestCase):
    async def _remote_join(self, room: str, user_id: str) -> None:
        # A remote user's join, built locally: enough for the membership bookkeeping
        # (the room is public; the room server signs it as ours, which does not matter here).
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, user_id, user_id))

    async def test_own_server_and_remote_members(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        self.assertEqual(await self.hs.room_servers.servers_in_room(room), {"test"})
        await self._remote_join(room, "@bob:remote.example")
        await self._remote_join(room, "@carol:remote.example")
        await self._remote_join(room, "@dan:other.example:8448")
        self.assertEqual(await self.hs.room_servers.servers_in_room(room), {"test", "remote.example", "other.example:8448"})
        # one of two users of a server leaves: still there; the last leaves: gone
        await self.hs.room_server.send(
            room, EventSpec("m.room.member", {"membership": "leave"}, "@bob:remote.example", "@bob:remote.example")
        )
        self.assertEqual(await self.hs.room_servers.servers_in_room(room), {"test", "remote.example", "other.example:8448"})
        await self.hs.room_server.send(
            room, EventSpec("m.room.member", {"membership": "leave"}, "@dan:other.example:8448", "@dan:other.example:8448")
        )
        self.assertEqual(await self.hs.room_servers.servers_in_room(room), {"test", "remote.example"})

    async def test_unknown_room(self) -> None:
        self.assertEqual(await self.hs.room_servers.servers_in_room("!nope:test"), set())

    async def test_result_cannot_change_the_cache(self) -> None:
        alice = await self.register("alice")
        room = await self.create_room(alice, preset="public_chat")
        servers = await self.hs.room_servers.servers_in_room(room)
        with self.assertRaises(AttributeError):
            servers.add("evil.example")  # type: ignore[attr-defined]
        self.assertEqual(await self.hs.room_servers.servers_in_room(room), {"test"})
