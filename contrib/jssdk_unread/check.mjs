// Scratch check for issue 13: matrix-js-sdk's unread notification counts follow mxserver.
//
//   node check.mjs BASE_URL SERVER_NAME        (normally through ./run, which starts a server)
//
// Two real SDK clients (Alice, Bob) with thread support. Alice writes; after each step we
// wait until Bob's SDK room and the server's own /sync (raw HTTP, Bob's token) both show the
// expected counts, and print what each said. Three server views are compared with the SDK:
//   plain   /sync without the thread filter: unread_notifications counts every thread
//   main    /sync with room.timeline.unread_thread_notifications: unread_notifications is
//           the main timeline only, unread_thread_notifications has one entry per thread
// and the SDK's room.getUnreadNotificationCount (main + all threads, what a client shows),
// room.getRoomUnreadNotificationCount (main) and room.getThreadUnreadNotificationCount.
// Exits 1 on the first step whose counts do not settle within JSSDK_TIMEOUT_MS.

import { NotificationCountType, ReceiptType } from "matrix-js-sdk";

import { SERVER_NAME, TIMEOUT_MS, finish, http, register, sleep, startSdk, waitFor } from "./common.mjs";

const TOTAL = NotificationCountType.Total;
const HIGHLIGHT = NotificationCountType.Highlight;

// The server's counts for one room, straight from /sync (no since: a full answer every time).
async function serverCounts(token, roomId) {
    const view = async (filter) => {
        const r = await http("GET", "/_matrix/client/v3/sync", {
            token,
            query: { timeout: "0", filter: JSON.stringify(filter) },
        });
        if (r.status !== 200) throw new Error(`/sync: ${r.status} ${JSON.stringify(r.json)}`);
        return r.json.rooms?.join?.[roomId];
    };
    const plain = await view({ room: { timeline: { limit: 1 } } });
    const threaded = await view({ room: { timeline: { limit: 1, unread_thread_notifications: true } } });
    const pair = (c) => ({ total: c?.notification_count ?? null, highlight: c?.highlight_count ?? null });
    const threads = {};
    for (const [root, c] of Object.entries(threaded?.unread_thread_notifications || {})) threads[root] = pair(c);
    return { room: pair(plain?.unread_notifications), main: pair(threaded?.unread_notifications), threads };
}

// -- SDK ---------------------------------------------------------------------------------------

function sdkCounts(client, roomId, threadRoots) {
    const room = client.getRoom(roomId);
    if (!room) return null;
    const threads = {};
    for (const root of threadRoots) {
        threads[root] = {
            total: room.getThreadUnreadNotificationCount(root, TOTAL),
            highlight: room.getThreadUnreadNotificationCount(root, HIGHLIGHT),
        };
    }
    return {
        room: { total: room.getUnreadNotificationCount(TOTAL), highlight: room.getUnreadNotificationCount(HIGHLIGHT) },
        main: { total: room.getRoomUnreadNotificationCount(TOTAL), highlight: room.getRoomUnreadNotificationCount(HIGHLIGHT) },
        threads,
    };
}

// Bob's copy of an event (thread events live in the thread's timeline once the SDK made it).
async function bobsEvent(bob, roomId, eventId) {
    return waitFor(`Bob's SDK has ${eventId}`, () => bob.getRoom(roomId)?.findEventById(eventId));
}

// A thread reply as Bob's SDK sees it. The SDK puts thread events into a Thread object that
// it fills by fetching the thread through /relations; when that fails the event never shows
// up in the room, so after a short wait it is fetched (GET /event) and mapped by the SDK
// itself: its threadRootId comes from the event's m.relates_to, as for any event.
async function bobsThreadEvent(bob, roomId, eventId) {
    const deadline = Date.now() + Math.min(TIMEOUT_MS, 3000);
    while (Date.now() < deadline) {
        const ev = bob.getRoom(roomId)?.findEventById(eventId);
        if (ev) return ev;
        await sleep(50);
    }
    console.log(`  (Bob's SDK has no thread timeline holding ${eventId}: receipt on the event from GET /event)`);
    return bob.getEventMapper()(await bob.fetchRoomEvent(roomId, eventId));
}

// -- the comparison --------------------------------------------------------------------------------

const fmt = (c) => (c ? `${c.total}/${c.highlight}` : "-");
const eq = (a, b) => a && b && a.total === b.total && a.highlight === b.highlight;

function describe(label, sdk, srv, roots) {
    const lines = [`  ${label}`];
    lines.push(`    room   (total/highlight)  SDK getUnreadNotificationCount ${fmt(sdk?.room)}   server /sync ${fmt(srv?.room)}`);
    lines.push(`    main timeline             SDK getRoomUnreadNotificationCount ${fmt(sdk?.main)}   server /sync (thread filter) ${fmt(srv?.main)}`);
    for (const [name, root] of roots) {
        lines.push(
            `    thread ${name.padEnd(18)} SDK getThreadUnreadNotificationCount ${fmt(sdk?.threads[root])}   server unread_thread_notifications ${fmt(srv?.threads[root] ?? { total: 0, highlight: 0 })}`,
        );
    }
    return lines.join("\n");
}

// expected: { room: {total, highlight}, main: {...}, threads: {root: {...}} } (threads missing = 0/0)
async function expectCounts(step, bob, bobToken, roomId, roots, expected) {
    const zero = { total: 0, highlight: 0 };
    const rootIds = roots.map(([, r]) => r);
    const deadline = Date.now() + TIMEOUT_MS;
    let sdk, srv;
    for (;;) {
        sdk = sdkCounts(bob, roomId, rootIds);
        srv = await serverCounts(bobToken, roomId);
        const problems = [];
        const check = (what, got, want) => {
            if (!eq(got, want)) problems.push(`${what}: got ${fmt(got)}, expected ${fmt(want)}`);
        };
        check("SDK room", sdk?.room, expected.room);
        check("SDK main", sdk?.main, expected.main);
        check("server room", srv.room, expected.room);
        check("server main", srv.main, expected.main);
        for (const [name, root] of roots) {
            const want = expected.threads?.[root] ?? zero;
            check(`SDK thread ${name}`, sdk?.threads[root], want);
            check(`server thread ${name}`, srv.threads[root] ?? zero, want);
        }
        for (const root of Object.keys(srv.threads)) {
            if (!rootIds.includes(root)) problems.push(`server reports an unknown thread ${root}`);
        }
        // The SDK must agree with the server whatever the expectation says.
        if (sdk && !eq(sdk.room, srv.room)) problems.push(`SDK room ${fmt(sdk.room)} != server ${fmt(srv.room)}`);
        if (sdk && !eq(sdk.main, srv.main)) problems.push(`SDK main ${fmt(sdk.main)} != server ${fmt(srv.main)}`);
        if (problems.length === 0) break;
        if (Date.now() > deadline) {
            console.log(describe(`${step}: MISMATCH after ${TIMEOUT_MS} ms`, sdk, srv, roots));
            for (const p of problems) console.log(`    - ${p}`);
            throw new Error(`${step}: counts did not settle`);
        }
        await sleep(100);
    }
    console.log(describe(`${step}: ok`, sdk, srv, roots));
}

// -- the run -------------------------------------------------------------------------------------------

async function main() {
    const suffix = Date.now().toString(36);
    const aliceAcc = await register(`alice-${suffix}`);
    const bobAcc = await register(`bob-${suffix}`);
    const bobId = bobAcc.user_id;
    console.log(`registered ${aliceAcc.user_id} and ${bobId} on ${SERVER_NAME}`);

    const alice = await startSdk(aliceAcc);
    const bob = await startSdk(bobAcc);
    console.log("both SDK clients PREPARED (threadSupport: true)");
    try {
        await run(alice, bob, bobAcc.access_token, bobId);
    } finally {
        alice.stopClient();
        bob.stopClient();
    }
}

async function run(alice, bob, bobToken, bobId) {
    const { room_id: roomId } = await alice.createRoom({ preset: "private_chat", name: "unread counts" });
    await alice.invite(roomId, bobId);
    await waitFor("Bob's SDK sees the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await waitFor("Bob's SDK sees himself joined", () => bob.getRoom(roomId)?.getMyMembership() === "join");
    console.log(`room ${roomId}: Alice created it, Bob joined`);
    const roots = [];
    const c = (total, highlight) => ({ total, highlight });
    await expectCounts("step 0 (joined, nothing sent)", bob, bobToken, roomId, roots, {
        room: c(0, 0),
        main: c(0, 0),
    });

    // 1. three messages in the main timeline; the third mentions Bob (m.mentions + body).
    const send = async (content, threadRoot = null) => {
        if (threadRoot) content["m.relates_to"] = { rel_type: "m.thread", event_id: threadRoot, is_falling_back: true };
        const { event_id } = await alice.sendEvent(roomId, threadRoot, "m.room.message", content);
        return event_id;
    };
    await send({ msgtype: "m.text", body: "first" });
    const m2 = await send({ msgtype: "m.text", body: "second" });
    await send({ msgtype: "m.text", body: `third, for ${bobId}`, "m.mentions": { user_ids: [bobId] } });
    await expectCounts("step 1 (3 messages, the 3rd mentions Bob)", bob, bobToken, roomId, roots, {
        room: c(3, 1),
        main: c(3, 1),
    });

    // 2. Bob reads the 2nd message (the SDK sends thread_id "main" with threads on).
    await bob.sendReadReceipt(await bobsEvent(bob, roomId, m2));
    await expectCounts("step 2 (Bob's receipt on the 2nd message)", bob, bobToken, roomId, roots, {
        room: c(1, 1),
        main: c(1, 1),
    });

    // 3. a thread: its root is in the main timeline, the replies are in the thread; the
    //    second reply mentions Bob.
    const root = await send({ msgtype: "m.text", body: "thread root" });
    roots.push(["(root)", root]);
    const t1 = await send({ msgtype: "m.text", body: "reply one" }, root);
    const t2 = await send({ msgtype: "m.text", body: `reply two, ${bobId}`, "m.mentions": { user_ids: [bobId] } }, root);
    await expectCounts("step 3a (thread root + 2 replies, the 2nd mentions Bob)", bob, bobToken, roomId, roots, {
        room: c(4, 2),
        main: c(2, 1),
        threads: { [root]: c(2, 1) },
    });

    // threaded receipt (thread_id = root) on the first reply: only that thread drops.
    const t1Event = await bobsThreadEvent(bob, roomId, t1);
    if (t1Event.threadRootId !== root) throw new Error(`Bob's SDK does not put ${t1} in thread ${root}`);
    await bob.sendReadReceipt(t1Event);
    await expectCounts("step 3b (threaded receipt on reply one)", bob, bobToken, roomId, roots, {
        room: c(3, 2),
        main: c(2, 1),
        threads: { [root]: c(1, 1) },
    });

    // 4. Bob reads everything: an unthreaded receipt on the newest event (reply two).
    await bob.sendReadReceipt(await bobsThreadEvent(bob, roomId, t2), ReceiptType.Read, true);
    await expectCounts("step 4 (unthreaded receipt on the newest event)", bob, bobToken, roomId, roots, {
        room: c(0, 0),
        main: c(0, 0),
        threads: { [root]: c(0, 0) },
    });
}

finish(main, "matrix-js-sdk's unread counts follow the server");
