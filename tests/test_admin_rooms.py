"""The admin API's rooms: the room list, a room's details, members, state and messages
(``/_synapse/admin/v1/rooms...``), for server admins only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from zope.interface import implementer

from mxserver.interfaces import IEventChecker
from mxserver.rooms.local_events import EventSpec
from tests.harness import C, HomeserverTestCase, TestUser, q

A = "/_synapse/admin/v1"


class AdminRoomsTestCase(HomeserverTestCase):
    """A server admin and a regular user."""

    async def admin_and_user(self) -> tuple[TestUser, TestUser]:
        admin = await self.register("root")
        await self.hs.accounts.set_admin(admin.user_id, True)
        return admin, await self.register("alice")

    async def ok(self, method: str, path: str, token: TestUser, body: Any = None) -> Any:
        code, resp = await self.request(method, path, body, token=token)
        self.assertEqual(code, 200, resp)
        return resp


class RoomListTests(AdminRoomsTestCase):
    async def test_list_fields_and_paging(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        r1 = await self.create_room(alice, preset="public_chat", name="Bravo", room_alias_name="bravo", visibility="public")
        r2 = await self.create_room(alice, name="alpha")
        await self.join(bob, r1)
        # a remote user's join, built locally: enough for the member counts
        remote = "@remote:elsewhere.example"
        await self.hs.room_server.send(r1, EventSpec("m.room.member", {"membership": "join"}, remote, remote))
        r3 = await self.create_room(alice)  # no name
        body = await self.ok("GET", f"{A}/rooms", admin)
        self.assertEqual(body["total_rooms"], 3)
        self.assertEqual(body["offset"], 0)
        self.assertNotIn("next_batch", body)
        self.assertNotIn("prev_batch", body)
        # by name (case-sensitive order as the names compare), unnamed last
        self.assertEqual([r["room_id"] for r in body["rooms"]], [r1, r2, r3])
        bravo = body["rooms"][0]
        self.assertEqual(
            {k: bravo[k] for k in ("name", "canonical_alias", "joined_members", "joined_local_members", "creator")},
            {
                "name": "Bravo",
                "canonical_alias": "#bravo:test",
                "joined_members": 3,
                "joined_local_members": 2,
                "creator": alice.user_id,
            },
        )
        self.assertEqual(bravo["version"], self.config.default_room_version)
        self.assertEqual(
            (bravo["public"], bravo["join_rules"], bravo["federatable"], bravo["encryption"], bravo["room_type"]),
            (True, "public", True, None, None),
        )
        self.assertEqual(bravo["history_visibility"], "shared")
        self.assertGreaterEqual(bravo["state_events"], 6)
        # paging
        page = await self.ok("GET", f"{A}/rooms?limit=2", admin)
        self.assertEqual([r["room_id"] for r in page["rooms"]], [r1, r2])
        self.assertEqual(page["next_batch"], 2)
        page = await self.ok("GET", f"{A}/rooms?limit=2&from=2", admin)
        self.assertEqual([r["room_id"] for r in page["rooms"]], [r3])
        self.assertEqual((page["prev_batch"], page["offset"], page["total_rooms"]), (0, 2, 3))
        self.assertNotIn("next_batch", page)
        # ordering
        by_size = await self.ok("GET", f"{A}/rooms?order_by=joined_members", admin)
        self.assertEqual(by_size["rooms"][0]["room_id"], r1)
        by_size_b = await self.ok("GET", f"{A}/rooms?order_by=joined_local_members&dir=b", admin)
        self.assertEqual(by_size_b["rooms"][-1]["room_id"], r1)
        public = await self.ok("GET", f"{A}/rooms?order_by=public", admin)
        self.assertEqual(public["rooms"][0]["room_id"], r1)
        for order in ("version", "creator", "encryption", "federatable", "join_rules", "guest_access",
                      "history_visibility", "state_events", "canonical_alias", "size", "alphabetical"):
            got = await self.ok("GET", f"{A}/rooms?order_by={order}", admin)
            self.assertEqual(len(got["rooms"]), 3, order)
        # filters
        only_public = await self.ok("GET", f"{A}/rooms?public_rooms=true", admin)
        self.assertEqual([r["room_id"] for r in only_public["rooms"]], [r1])
        self.assertEqual(only_public["total_rooms"], 1)
        not_public = await self.ok("GET", f"{A}/rooms?public_rooms=false", admin)
        self.assertEqual({r["room_id"] for r in not_public["rooms"]}, {r2, r3})
        await self.leave(alice, r3)
        empty = await self.ok("GET", f"{A}/rooms?empty_rooms=true", admin)
        self.assertEqual([r["room_id"] for r in empty["rooms"]], [r3])

    async def test_search_term(self) -> None:
        admin, alice = await self.admin_and_user()
        r1 = await self.create_room(alice, name="Matrix HQ")
        r2 = await self.create_room(alice, name="other", room_alias_name="lounge")
        await self.set_state(alice, r2, "m.room.canonical_alias", {"alias": "#lounge:test"})

        async def search(term: str) -> list[str]:
            body = await self.ok("GET", f"{A}/rooms?" + urlencode({"search_term": term}), admin)
            self.assertEqual(body["total_rooms"], len(body["rooms"]))
            return [r["room_id"] for r in body["rooms"]]

        self.assertEqual(await search("matrix"), [r1])  # name, any case
        self.assertEqual(await search("LOUNGE"), [r2])  # alias localpart, any case
        self.assertEqual(await search(r2), [r2])  # the room ID
        self.assertEqual(await search(r2[1:8]), [r2])  # part of it
        self.assertEqual(await search(r2 + "x"), [])
        self.assertEqual(await search("nothing-like-it"), [])

    async def test_permissions_and_bad_input(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice)
        for path in (
            f"{A}/rooms",
            f"{A}/rooms/{q(room)}",
            f"{A}/rooms/{q(room)}/members",
            f"{A}/rooms/{q(room)}/state",
            f"{A}/rooms/{q(room)}/messages",
        ):
            self.assertMatrixError(await self.get(path), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.get(path, alice), 403, "M_FORBIDDEN")
        for query in ("limit=-1", "from=x", "order_by=nope", "dir=up", "public_rooms=maybe", "empty_rooms=2"):
            self.assertMatrixError(await self.get(f"{A}/rooms?{query}", admin), 400, "M_INVALID_PARAM")
        for sub in ("", "/members", "/state", "/messages"):
            self.assertMatrixError(await self.get(f"{A}/rooms/{q('not-a-room')}{sub}", admin), 400, "M_INVALID_PARAM")
            self.assertMatrixError(await self.get(f"{A}/rooms/{q('!unknown:test')}{sub}", admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}/messages?dir=x", admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}/messages?filter=%7B", admin), 400, "M_BAD_JSON")


class RoomReadTests(AdminRoomsTestCase):
    async def test_details(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(
            alice,
            name="Music",
            topic="Theory",
            creation_content={"type": "m.space", "m.federate": False},
            initial_state=[
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://test/abc"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        )
        details = await self.ok("GET", f"{A}/rooms/{q(room)}", admin)
        self.assertEqual(
            {k: details[k] for k in ("room_id", "name", "topic", "avatar", "encryption", "room_type", "federatable")},
            {
                "room_id": room,
                "name": "Music",
                "topic": "Theory",
                "avatar": "mxc://test/abc",
                "encryption": "m.megolm.v1.aes-sha2",
                "room_type": "m.space",
                "federatable": False,
            },
        )
        self.assertEqual((details["joined_members"], details["joined_local_members"]), (1, 1))
        self.assertEqual((details["joined_local_devices"], details["forgotten"], details["public"]), (1, False, False))
        await self.leave(alice, room)
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/forget", {}, alice))[0], 200)
        details = await self.ok("GET", f"{A}/rooms/{q(room)}", admin)
        self.assertEqual((details["joined_members"], details["joined_local_devices"], details["forgotten"]), (0, 0, True))

    async def test_members_and_state(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat", name="R")
        await self.join(bob, room)
        members = await self.ok("GET", f"{A}/rooms/{q(room)}/members", admin)
        self.assertEqual(members, {"members": sorted([alice.user_id, bob.user_id]), "total": 2})
        await self.leave(bob, room)
        members = await self.ok("GET", f"{A}/rooms/{q(room)}/members", admin)
        self.assertEqual(members, {"members": [alice.user_id], "total": 1})
        # the admin is not in the room and still reads its state
        state = (await self.ok("GET", f"{A}/rooms/{q(room)}/state", admin))["state"]
        client_state = await self.ok("GET", f"{C}/rooms/{q(room)}/state", alice)
        self.assertEqual(sorted(e["event_id"] for e in state), sorted(e["event_id"] for e in client_state))
        self.assertIn(("m.room.name", "", "R"), [(e["type"], e["state_key"], e["content"].get("name")) for e in state])
        only = (await self.ok("GET", f"{A}/rooms/{q(room)}/state?type=m.room.member", admin))["state"]
        self.assertEqual(sorted(e["state_key"] for e in only), sorted([alice.user_id, bob.user_id]))
        none = (await self.ok("GET", f"{A}/rooms/{q(room)}/state?type=m.nothing", admin))["state"]
        self.assertEqual(none, [])

    async def test_messages_as_admin_outside_the_room(self) -> None:
        admin, alice = await self.admin_and_user()
        # history visible to joined members only: the admin, never a member, still reads it all
        room = await self.create_room(alice, history_visibility="joined")
        for i in range(5):
            await self.send_message(alice, room, f"m{i}")
        self.assertMatrixError(await self.messages(admin, room, dir="b"), 403, "M_FORBIDDEN")
        page = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=b&limit=3", admin)
        self.assertEqual([e["content"].get("body") for e in page["chunk"]], ["m4", "m3", "m2"])
        rest = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=b&limit=3&from={page['end']}", admin)
        self.assertEqual([e["content"].get("body") for e in rest["chunk"]], ["m1", "m0", None])
        forward = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=f&limit=100", admin)
        self.assertEqual(forward["chunk"][0]["type"], "m.room.create")
        filt = q('{"types":["m.room.message"]}')
        only = await self.ok("GET", f"{A}/rooms/{q(room)}/messages?dir=f&filter={filt}", admin)
        self.assertEqual([e["content"]["body"] for e in only["chunk"]], ["m0", "m1", "m2", "m3", "m4"])


A2 = "/_synapse/admin/v2"


async def rows_naming(hs: Any, room_id: str, room_nid: int, event_ids: set[str], event_nids: set[int]) -> list[str]:
    """Every row of every table of the database that still names the room: a text value holding
    its ID or one of its event IDs, or a room/event NID column holding one of its NIDs. The
    block list and the admin tasks keep the room ID on purpose."""
    kept = {"blocked_rooms", "admin_room_tasks", "schema_version"}

    def txn(t: Any) -> list[str]:
        if t.dialect.name == "sqlite":
            tables = [r[0] for r in t.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
            # FTS5 keeps its index in shadow tables (binary); the event_search table itself is read
            tables = [n for n in tables if not n.startswith("event_search_")]
        else:
            tables = [
                r[0] for r in t.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            ]
        found = []
        for table in sorted(set(tables) - kept):
            select = "SELECT rowid AS event_nid, * FROM event_search" if table == "event_search" and t.dialect.name == "sqlite" else f"SELECT * FROM {table}"
            t.execute(select)
            columns = [d[0] for d in t._cursor.description]
            for row in t.fetchall():
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str) and (room_id in value or any(e in value for e in event_ids)):
                        found.append(f"{table}.{column}")
                    elif column == "room_nid" and value == room_nid:
                        found.append(f"{table}.{column}")
                    elif column == "event_nid" and value in event_nids:
                        found.append(f"{table}.{column}")
        return sorted(set(found))

    return await hs.db.run_read("test_rows_naming", txn)


class RoomDeletionTests(AdminRoomsTestCase):
    async def wait_deleted(self, admin: TestUser, delete_id: str) -> dict[str, Any]:
        await self.hs.admin_room_tasks.idle()
        return await self.ok("GET", f"{A2}/rooms/delete_status/{delete_id}", admin)

    async def room_contents(self, room: str) -> tuple[int, set[str], set[int]]:
        """The room's NID, its event IDs and event NIDs, from the database."""
        record = await self.hs.event_store.get_room(room)
        rows = await self.hs.db.select("test", "SELECT event_id, event_nid FROM events WHERE room_nid = ?", record.room_nid)
        return record.room_nid, {r[0] for r in rows}, {int(r[1]) for r in rows}

    async def test_delete_moves_users_blocks_and_purges(self) -> None:
        admin, alice = await self.admin_and_user()
        bob, carol, dan = await self.register("bob"), await self.register("carol"), await self.register("dan")
        room = await self.create_room(alice, preset="public_chat", name="Bad", room_alias_name="bad", visibility="public")
        await self.join(bob, room)
        await self.invite(alice, room, carol)
        # a remote member: the room goes on elsewhere, nothing of it stays here
        remote = "@remote:elsewhere.example"
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, remote, remote))
        first = await self.send_message(alice, room, "bad content")
        txn_path = f"{C}/rooms/{q(room)}/send/m.room.message/reused-txn"
        self.assertEqual((await self.put(txn_path, {"msgtype": "m.text", "body": "with a txn"}, alice))[0], 200)
        await self.send_message(bob, room, "reply", **{"m.relates_to": {"rel_type": "m.thread", "event_id": first}})
        await self.put(f"{C}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/u.work", {"order": 0.5}, alice)
        await self.post(f"{C}/rooms/{q(room)}/receipt/m.read/{q(first)}", {}, bob)
        await self.post(f"{C}/rooms/{q(room)}/report/{q(first)}", {"reason": "bad"}, bob)
        self.assertEqual((await self.post(f"{C}/rooms/{q(room)}/report", {"reason": "bad"}, bob))[0], 200)
        await self.readers_caught_up()
        room_nid, event_ids, event_nids = await self.room_contents(room)
        self.assertNotEqual(await rows_naming(self.hs, room, room_nid, event_ids, event_nids), [])
        since = (await self.sync(bob))["next_batch"]

        code, body = await self.delete(
            f"{A2}/rooms/{q(room)}",
            {"new_room_user_id": dan.user_id, "room_name": "Moved", "message": "Closed for violations", "block": True},
            admin,
        )
        self.assertEqual(code, 200, body)
        delete_id = body["delete_id"]
        status = await self.wait_deleted(admin, delete_id)
        self.assertEqual((status["status"], status["delete_id"], status["room_id"]), ("complete", delete_id, room))
        shutdown = status["shutdown_room"]
        self.assertEqual(sorted(shutdown["kicked_users"]), sorted([alice.user_id, bob.user_id, carol.user_id]))
        self.assertEqual(shutdown["failed_to_kick_users"], [])
        self.assertEqual(shutdown["local_aliases"], ["#bad:test"])
        new_room = shutdown["new_room_id"]
        self.assertIsInstance(new_room, str)
        by_room = await self.ok("GET", f"{A2}/rooms/{q(room)}/delete_status", admin)
        self.assertEqual(by_room, {"results": [status]})

        # what the users see: they are in the new room, with the message, and not in the old one
        for user in (alice, bob, carol):
            joined = (await self.ok("GET", f"{C}/joined_rooms", user))["joined_rooms"]
            self.assertEqual(joined, [new_room], user.user_id)
        self.assertIn("Closed for violations", await self.visible_bodies(alice, new_room))
        self.assertEqual(await self.state_content(alice, new_room, "m.room.name"), {"name": "Moved"})
        pl = await self.state_content(alice, new_room, "m.room.power_levels")
        self.assertEqual(pl["users_default"], -10)
        # the alias now leads to the new room; the old room left the directory and is gone
        self.assertEqual((await self.ok("GET", f"{C}/directory/room/{q('#bad:test')}", alice))["room_id"], new_room)
        public = await self.ok("GET", f"{C}/publicRooms", alice)
        self.assertNotIn(room, [r["room_id"] for r in public["chunk"]])
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/messages", alice), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}", admin), 404, "M_NOT_FOUND")
        listed = await self.ok("GET", f"{A}/rooms", admin)
        self.assertNotIn(room, [r["room_id"] for r in listed["rooms"]])
        # /sync goes on: from before the deletion, and from scratch (the old room is not there)
        later = await self.sync(bob, since=since)
        self.assertIn(new_room, later.get("rooms", {}).get("join", {}))
        fresh = await self.sync(bob)
        self.assertEqual(list(fresh["rooms"]["join"]), [new_room])
        self.assertNotIn(room, fresh["rooms"].get("leave", {}))
        # blocked: nobody joins it again
        self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
        self.assertEqual(await self.ok("GET", f"{A}/rooms/{q(room)}/block", admin), {"block": True, "user_id": admin.user_id})
        # nothing of the room is left in the database
        self.assertEqual(await rows_naming(self.hs, room, room_nid, event_ids, event_nids), [])
        # the server goes on: the new room works (its members cannot speak there, as in Synapse)
        self.assertEqual((await self.put(f"{C}/rooms/{q(new_room)}/send/m.room.message/mute", {"body": "x"}, alice))[0], 403)
        await self.send_message(dan, new_room, "still here")
        # a transaction ID whose event was purged is a new request
        other = await self.create_room(alice)
        code, sent = await self.put(f"{C}/rooms/{q(other)}/send/m.room.message/reused-txn", {"body": "new"}, alice)
        self.assertEqual(code, 200, sent)
        self.assertNotIn(sent["event_id"], event_ids)
        # the status survives a restart, and stream positions never go back
        position = self.hs.event_store.max_stream
        await self.restart()
        self.assertGreaterEqual(self.hs.event_store.max_stream, position)
        self.assertEqual((await self.ok("GET", f"{A2}/rooms/delete_status/{delete_id}", admin))["status"], "complete")

    async def test_delete_without_new_room_or_purge(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat", room_alias_name="kept", visibility="public")
        await self.join(bob, room)
        code, body = await self.delete(f"{A2}/rooms/{q(room)}", {"purge": False}, admin)
        self.assertEqual(code, 200, body)
        status = await self.wait_deleted(admin, body["delete_id"])
        self.assertEqual(status["status"], "complete")
        self.assertEqual(
            status["shutdown_room"],
            {
                "kicked_users": sorted([alice.user_id, bob.user_id]),
                "failed_to_kick_users": [],
                "local_aliases": ["#kept:test"],
                "new_room_id": None,
            },
        )
        # the room is still here, empty, without its alias, out of the directory, not blocked
        details = await self.ok("GET", f"{A}/rooms/{q(room)}", admin)
        self.assertEqual((details["joined_members"], details["public"], details["forgotten"]), (0, False, True))
        self.assertMatrixError(await self.get(f"{C}/directory/room/{q('#kept:test')}", alice), 404, "M_NOT_FOUND")
        self.assertEqual(await self.ok("GET", f"{C}/joined_rooms", alice), {"joined_rooms": []})
        self.assertEqual(await self.ok("GET", f"{A}/rooms/{q(room)}/block", admin), {"block": False})
        self.assertEqual(await self.membership(room, bob), "leave")

    async def test_new_room_user_need_not_be_registered(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice)
        code, body = await self.delete(f"{A2}/rooms/{q(room)}", {"new_room_user_id": "@moderation:test"}, admin)
        self.assertEqual(code, 200, body)
        status = await self.wait_deleted(admin, body["delete_id"])
        self.assertEqual(status["status"], "complete", status)
        new_room = status["shutdown_room"]["new_room_id"]
        self.assertEqual(await self.ok("GET", f"{C}/joined_rooms", alice), {"joined_rooms": [new_room]})
        self.assertEqual(await self.state_content(alice, new_room, "m.room.name"), {"name": "Content Violation Notification"})
        self.assertIn(
            "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.",
            await self.visible_bodies(alice, new_room),
        )

    async def test_user_who_cannot_leave_stops_the_purge_unless_forced(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        await self.join(bob, room)

        @implementer(IEventChecker)
        class BobStays:
            """A module that refuses bob's leave: the shutdown cannot move him out."""

            def check_event_allowed(self, event: Any, state: Any) -> bool:
                return not (event.type == "m.room.member" and event.state_key == bob.user_id and event.membership == "leave")

        self.hs.module_api.register_event_hook(BobStays())
        code, body = await self.delete(f"{A2}/rooms/{q(room)}", {}, admin)
        self.assertEqual(code, 200, body)
        status = await self.wait_deleted(admin, body["delete_id"])
        self.assertEqual(status["status"], "failed")
        self.assertIn("still joined", status["error"])
        self.assertEqual(
            (status["shutdown_room"]["kicked_users"], status["shutdown_room"]["failed_to_kick_users"]),
            ([alice.user_id], [bob.user_id]),
        )
        # nothing was purged: bob is still in the room and reads it
        self.assertEqual(await self.membership(room, bob), "join")
        self.assertEqual((await self.messages(bob, room, dir="b"))[0], 200)
        # force_purge removes it all the same
        code, body = await self.delete(f"{A2}/rooms/{q(room)}", {"force_purge": True}, admin)
        self.assertEqual(code, 200, body)
        status = await self.wait_deleted(admin, body["delete_id"])
        self.assertEqual(status["status"], "complete", status)
        self.assertEqual(status["shutdown_room"]["failed_to_kick_users"], [bob.user_id])
        self.assertMatrixError(await self.get(f"{A}/rooms/{q(room)}", admin), 404, "M_NOT_FOUND")
        self.assertEqual(await self.ok("GET", f"{C}/joined_rooms", bob), {"joined_rooms": []})
        self.assertMatrixError(await self.messages(bob, room, dir="b"), 404, "M_NOT_FOUND")
        self.assertEqual(len((await self.ok("GET", f"{A2}/rooms/{q(room)}/delete_status", admin))["results"]), 2)

    async def test_block_endpoint(self) -> None:
        admin, alice = await self.admin_and_user()
        bob = await self.register("bob")
        room = await self.create_room(alice, preset="public_chat")
        self.assertEqual(await self.ok("PUT", f"{A}/rooms/{q(room)}/block", admin, {"block": True}), {"block": True})
        self.assertMatrixError(await self.post(f"{C}/join/{q(room)}", {}, bob), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/rooms/{q(room)}/invite", {"user_id": bob.user_id}, alice), 403, "M_FORBIDDEN")
        await self.send_message(alice, room, "members stay and talk")
        self.assertEqual(await self.ok("PUT", f"{A}/rooms/{q(room)}/block", admin, {"block": False}), {"block": False})
        self.assertEqual(await self.ok("GET", f"{A}/rooms/{q(room)}/block", admin), {"block": False})
        await self.join(bob, room)
        # a room unknown here may be blocked ahead
        unknown = "!notyet:elsewhere.example"
        self.assertEqual(await self.ok("PUT", f"{A}/rooms/{q(unknown)}/block", admin, {"block": True}), {"block": True})
        self.assertEqual(await self.ok("GET", f"{A}/rooms/{q(unknown)}/block", admin), {"block": True, "user_id": admin.user_id})
        self.assertMatrixError(await self.post(f"{C}/join/{q(unknown)}", {}, bob), 403, "M_FORBIDDEN")

    async def test_permissions_and_bad_input(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice)
        requests: list[tuple[str, str, Any]] = [
            ("GET", f"{A}/rooms/{q(room)}/block", None),
            ("PUT", f"{A}/rooms/{q(room)}/block", {"block": True}),
            ("DELETE", f"{A2}/rooms/{q(room)}", {}),
            ("GET", f"{A2}/rooms/{q(room)}/delete_status", None),
            ("GET", f"{A2}/rooms/delete_status/abc", None),
        ]
        for method, path, body in requests:
            self.assertMatrixError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request(method, path, body, token=alice), 403, "M_FORBIDDEN")
        # nothing was blocked nor deleted by those
        self.assertEqual(await self.ok("GET", f"{A}/rooms/{q(room)}/block", admin), {"block": False})
        self.assertMatrixError(await self.get(f"{A2}/rooms/{q(room)}/delete_status", admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get(f"{A2}/rooms/delete_status/nope", admin), 404, "M_NOT_FOUND")
        path = f"{A2}/rooms/{q(room)}"
        self.assertMatrixError(await self.request("DELETE", path, token=admin), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.request("DELETE", path, raw=b"[]", token=admin), 400, "M_BAD_JSON")
        for bad in ({"block": "yes"}, {"purge": 1}, {"force_purge": "x"}, {"room_name": 5}, {"message": []}):
            self.assertMatrixError(await self.delete(path, bad, admin), 400, "M_BAD_JSON")
        for bad_user in ("not-a-user", "@someone:elsewhere.example"):
            self.assertMatrixError(await self.delete(path, {"new_room_user_id": bad_user}, admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.delete(f"{A2}/rooms/{q('!unknown:test')}", {}, admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.delete(f"{A2}/rooms/{q('bad')}", {}, admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.put(f"{A}/rooms/{q(room)}/block", {}, admin), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.put(f"{A}/rooms/{q(room)}/block", {"block": "no"}, admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.get(f"{A}/rooms/{q('bad')}/block", admin), 400, "M_INVALID_PARAM")
        # the room is untouched
        self.assertEqual(await self.membership(room, alice), "join")

    async def test_interrupted_deletion_fails_after_restart(self) -> None:
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice)
        await self.hs.admin_room_tasks.store.add("stuck", "delete", room, 1)
        await self.restart()
        status = await self.ok("GET", f"{A2}/rooms/delete_status/stuck", admin)
        self.assertEqual((status["status"], status["error"]), ("failed", "Interrupted by a server restart"))
        # and the room may be deleted again
        code, body = await self.delete(f"{A2}/rooms/{q(room)}", {}, admin)
        self.assertEqual(code, 200, body)
        self.assertEqual((await self.wait_deleted(admin, body["delete_id"]))["status"], "complete")


class PurgeHistoryTests(AdminRoomsTestCase):
    async def purged(self, admin: TestUser, purge_id: str) -> dict[str, Any]:
        await self.hs.admin_room_tasks.idle()
        return await self.ok("GET", f"{A}/purge_history_status/{purge_id}", admin)

    async def room_with_history(self) -> tuple[TestUser, TestUser, str, str, list[str]]:
        """A room with a remote member's messages (the admin cannot make a remote server here:
        the room server stores them as a remote user's), then local ones, then a topic change."""
        admin, alice = await self.admin_and_user()
        room = await self.create_room(alice, preset="public_chat", name="Old")
        remote = "@remote:elsewhere.example"
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, remote, remote))
        ids = []
        for i in range(3):
            event = await self.hs.room_server.send(room, EventSpec("m.room.message", {"msgtype": "m.text", "body": f"r{i}"}, None, remote))
            ids.append(event.event_id)
        for i in range(3):
            ids.append(await self.send_message(alice, room, f"l{i}"))
        await self.set_state(alice, room, "m.room.topic", {"topic": "kept"})
        ids.append(await self.send_message(alice, room, "last"))
        return admin, alice, room, remote, ids

    async def bodies(self, user: TestUser, room: str) -> list[str]:
        events = await self.room_events(user, room)
        return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]

    async def test_purge_up_to_event_keeps_local_events_and_state(self) -> None:
        admin, alice, room, remote, ids = await self.room_with_history()
        await self.readers_caught_up()
        state_before = sorted(e["event_id"] for e in await self.ok("GET", f"{C}/rooms/{q(room)}/state", alice))
        code, body = await self.post(f"{A}/purge_history/{q(room)}/{q(ids[-1])}", {}, admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.purged(admin, body["purge_id"]), {"status": "complete"})
        # the remote user's messages are gone, the local ones and every state event stay
        self.assertEqual(await self.bodies(alice, room), ["l0", "l1", "l2", "last"])
        state_after = sorted(e["event_id"] for e in await self.ok("GET", f"{C}/rooms/{q(room)}/state", alice))
        self.assertEqual(state_after, state_before)
        self.assertEqual((await self.state_content(alice, room, "m.room.topic") or {}).get("topic"), "kept")
        self.assertMatrixError(await self.get(f"{C}/rooms/{q(room)}/event/{q(ids[0])}", alice), 404, "M_NOT_FOUND")
        # the room goes on
        await self.send_message(alice, room, "after")
        self.assertEqual((await self.bodies(alice, room))[-1], "after")

    async def test_purge_local_events_too_but_never_the_last(self) -> None:
        admin, alice, room, remote, ids = await self.room_with_history()
        await self.readers_caught_up()
        code, body = await self.post(f"{A}/purge_history/{q(room)}", {"purge_up_to_ts": 2**50, "delete_local_events": True}, admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.purged(admin, body["purge_id"]), {"status": "complete"})
        # everything but the room's latest event (a forward extremity) and its state
        self.assertEqual(await self.bodies(alice, room), ["last"])
        self.assertEqual((await self.state_content(alice, room, "m.room.name")), {"name": "Old"})
        members = await self.ok("GET", f"{A}/rooms/{q(room)}/members", admin)
        self.assertEqual(members["members"], sorted([alice.user_id, remote]))
        # a search finds nothing of what went
        found = await self.ok("POST", f"{C}/search", alice, {"search_categories": {"room_events": {"search_term": "l1"}}})
        self.assertEqual(found["search_categories"]["room_events"]["results"], [])

    async def test_purge_by_timestamp(self) -> None:
        admin, alice, room, remote, ids = await self.room_with_history()
        sent_ts = {e: (await self.hs.event_store.get_event(e)).origin_server_ts for e in ids[:3]}
        cut = sent_ts[ids[1]]
        await self.readers_caught_up()
        code, body = await self.post(f"{A}/purge_history/{q(room)}", {"purge_up_to_ts": cut}, admin)
        self.assertEqual(code, 200, body)
        self.assertEqual(await self.purged(admin, body["purge_id"]), {"status": "complete"})
        # the remote messages sent before the time went, those sent at it or after stay
        expected = [f"r{i}" for i, e in enumerate(ids[:3]) if sent_ts[e] >= cut]
        self.assertIn("r1", expected)
        self.assertEqual(await self.bodies(alice, room), [*expected, "l0", "l1", "l2", "last"])

    async def test_permissions_and_bad_input(self) -> None:
        admin, alice, room, remote, ids = await self.room_with_history()
        for method, path, body in (
            ("POST", f"{A}/purge_history/{q(room)}", {"purge_up_to_ts": 1}),
            ("POST", f"{A}/purge_history/{q(room)}/{q(ids[-1])}", {}),
            ("GET", f"{A}/purge_history_status/x", None),
        ):
            self.assertMatrixError(await self.request(method, path, body), 401, "M_MISSING_TOKEN")
            self.assertMatrixError(await self.request(method, path, body, token=alice), 403, "M_FORBIDDEN")
        path = f"{A}/purge_history/{q(room)}"
        self.assertMatrixError(await self.post(path, {}, admin), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(path, {"purge_up_to_ts": "yesterday"}, admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"purge_up_to_ts": -1}, admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"purge_up_to_ts": 5, "delete_local_events": "yes"}, admin), 400, "M_BAD_JSON")
        self.assertMatrixError(await self.post(path, {"purge_up_to_event_id": "nope"}, admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.post(f"{path}/{q('$unknown')}", {}, admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{A}/purge_history/{q('!unknown:test')}", {"purge_up_to_ts": 5}, admin), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.post(f"{A}/purge_history/{q('bad')}", {"purge_up_to_ts": 5}, admin), 400, "M_INVALID_PARAM")
        self.assertMatrixError(await self.request("POST", path, raw=b"{", token=admin), 400, "M_NOT_JSON")
        self.assertMatrixError(await self.get(f"{A}/purge_history_status/unknown", admin), 404, "M_NOT_FOUND")
        # an event of another room is not a point in this one
        other = await self.create_room(alice)
        other_event = await self.send_message(alice, other, "elsewhere")
        self.assertMatrixError(await self.post(f"{path}/{q(other_event)}", {}, admin), 404, "M_NOT_FOUND")
        # nothing was purged
        self.assertEqual(len(await self.bodies(alice, room)), 7)
