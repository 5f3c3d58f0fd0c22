// Scratch check for issue 15: matrix-js-sdk's SlidingSync (simplified sliding sync, MSC4186)
// drives a client to a synced room list and a live timeline.
//
//   node sliding.mjs BASE_URL SERVER_NAME        (normally through ./run sliding)
//
// Alice (raw HTTP) makes five named rooms with Bob in them and a message in each. Bob's SDK
// client starts with a SlidingSync of one list (range 0-19, timeline_limit 5): it must count
// the five rooms, hold each with its name and its latest message, then follow live: a new
// message in one room, and a new room Alice invites him to.
// Exits 1 on the first step that does not settle within JSSDK_TIMEOUT_MS.

import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";
import { createClient } from "matrix-js-sdk";

import { BASE, SERVER_NAME, finish, http, quietSdk, register, waitFor } from "./common.mjs";

const C = "/_matrix/client/v3";

async function ok(method, path, token, body) {
    const r = await http(method, path, { token, body });
    if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json;
}

const lastBody = (room) => {
    const events = room?.getLiveTimeline().getEvents() || [];
    const messages = events.filter((e) => e.getType() === "m.room.message");
    return messages.length ? messages[messages.length - 1].getContent().body : undefined;
};

async function main() {
    const suffix = Date.now().toString(36);
    const aliceAcc = await register(`alice-${suffix}`);
    const bobAcc = await register(`bob-${suffix}`);
    const alice = aliceAcc.access_token;
    console.log(`registered ${aliceAcc.user_id} and ${bobAcc.user_id} on ${SERVER_NAME}`);
    let txn = 0;
    const say = (roomId, body) =>
        ok("PUT", `${C}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${txn++}`, alice, { msgtype: "m.text", body });
    const rooms = [];
    for (let i = 0; i < 5; i++) {
        const { room_id } = await ok("POST", `${C}/createRoom`, alice, { name: `Room ${i}`, preset: "private_chat", invite: [bobAcc.user_id] });
        await ok("POST", `${C}/join/${encodeURIComponent(room_id)}`, bobAcc.access_token, {});
        await say(room_id, `hello ${i}`);
        rooms.push(room_id);
    }
    console.log(`five rooms with Bob joined and a message in each`);

    const bob = createClient({ baseUrl: BASE, accessToken: bobAcc.access_token, userId: bobAcc.user_id, deviceId: bobAcc.device_id });
    quietSdk();
    const lists = new Map([
        [
            "all",
            {
                ranges: [[0, 19]],
                timeline_limit: 5,
                required_state: [
                    ["m.room.name", ""],
                    ["m.room.create", ""],
                    ["m.room.member", "$ME"],
                ],
            },
        ],
    ]);
    const slidingSync = new SlidingSync(BASE, lists, { timeline_limit: 20, required_state: [["*", "*"]] }, bob, 5000);
    await bob.startClient({ slidingSync });
    try {
        // 1. The list: five joined rooms, each in the client with its name and latest message.
        await waitFor("the list counts five rooms", () => slidingSync.getListData("all")?.joinedCount === 5);
        for (let i = 0; i < 5; i++) {
            await waitFor(`room ${i} in Bob's client with its name and message`, () => {
                const room = bob.getRoom(rooms[i]);
                return room?.name === `Room ${i}` && lastBody(room) === `hello ${i}`;
            });
        }
        console.log(`  list: ${slidingSync.getListData("all").joinedCount} rooms; names and latest messages as sent`);

        // 2. Live timeline: a new message in room 2 reaches Bob's client through the long-poll.
        await say(rooms[2], "live message");
        await waitFor("room 2's live message in Bob's client", () => lastBody(bob.getRoom(rooms[2])) === "live message");
        console.log(`  live: room 2 shows "${lastBody(bob.getRoom(rooms[2]))}"`);

        // 3. A new room Alice invites Bob to shows up as an invite; once joined the list counts six.
        const { room_id: sixth } = await ok("POST", `${C}/createRoom`, alice, { name: "Room 5", preset: "private_chat", invite: [bobAcc.user_id] });
        await waitFor("the invite in Bob's client", () => bob.getRoom(sixth)?.getMyMembership() === "invite");
        await bob.joinRoom(sixth);
        await say(sixth, "welcome");
        await waitFor("the sixth room joined, in the list", () => slidingSync.getListData("all")?.joinedCount === 6);
        await waitFor("the sixth room's message", () => lastBody(bob.getRoom(sixth)) === "welcome");
        console.log(`  invite, join: list counts ${slidingSync.getListData("all").joinedCount}; "${bob.getRoom(sixth).name}" shows "welcome"`);
    } finally {
        bob.stopClient();
        slidingSync.stop();
    }
}

finish(main, "matrix-js-sdk's SlidingSync syncs the room list and a live timeline");
