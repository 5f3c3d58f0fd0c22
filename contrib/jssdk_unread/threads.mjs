// Scratch check for issue 14: matrix-js-sdk with threadSupport shows a thread and its replies
// as the server serves them (bundled aggregations, /threads, /relations).
//
//   node threads.mjs BASE_URL SERVER_NAME        (normally through ./run threads)
//
// Alice (a real SDK client) starts a thread in a room and edits its root before Bob's SDK
// starts: Bob's SDK must build the thread from what the server gives it at start (the root's
// bundled m.thread and m.replace, the thread list from GET /threads, the replies from
// /relations), then follow it live, and Alice's SDK must see Bob's reply in the thread.
// Exits 1 on the first step that does not settle within JSSDK_TIMEOUT_MS.

import { Thread } from "matrix-js-sdk";

import { SERVER_NAME, finish, http, register, startSdk, waitFor } from "./common.mjs";

const replies = (thread) => thread.events.filter((e) => e.getId() !== thread.id).map((e) => e.getContent().body);

async function main() {
    const suffix = Date.now().toString(36);
    const aliceAcc = await register(`alice-${suffix}`);
    const bobAcc = await register(`bob-${suffix}`);
    console.log(`registered ${aliceAcc.user_id} and ${bobAcc.user_id} on ${SERVER_NAME}`);
    const alice = await startSdk(aliceAcc);
    let bob = null;
    try {
        const { room_id: roomId } = await alice.createRoom({ preset: "public_chat", name: "threads" });
        const joined = await http("POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {
            token: bobAcc.access_token,
            body: {},
        });
        if (joined.status !== 200) throw new Error(`Bob's join: ${joined.status} ${JSON.stringify(joined.json)}`);

        // 1. Before Bob's SDK starts: a root, two replies in its thread, an edit of the root,
        //    and enough main-timeline chatter that the root is not in Bob's initial timeline.
        const { event_id: root } = await alice.sendMessage(roomId, { msgtype: "m.text", body: "thread root" });
        for (const body of ["reply one", "reply two"]) {
            await alice.sendMessage(roomId, root, { msgtype: "m.text", body });
        }
        await alice.sendMessage(roomId, {
            msgtype: "m.text",
            body: "* thread root (edited)",
            "m.new_content": { msgtype: "m.text", body: "thread root (edited)" },
            "m.relates_to": { rel_type: "m.replace", event_id: root },
        });
        for (let i = 0; i < 25; i++) await alice.sendMessage(roomId, { msgtype: "m.text", body: `chatter ${i}` });
        console.log(`room ${roomId}: thread ${root} with 2 replies and an edited root, then 25 messages`);

        bob = await startSdk(bobAcc);
        console.log(`Bob's SDK PREPARED (threadSupport: true; server-side threads: ${Thread.hasServerSideSupport}, thread list: ${Thread.hasServerSideListSupport})`);
        const room = bob.getRoom(roomId);
        if (!room) throw new Error("Bob's SDK has no room");

        // 2. The thread list (GET /threads) gives Bob's SDK the thread with its bundle (its
        //    timeline sets are made when a client opens the threads panel, as Element does).
        await room.createThreadsTimelineSets();
        await room.fetchRoomThreads();
        const thread = await waitFor("Bob's SDK lists the thread", () => room.getThread(root));
        await waitFor("the thread's bundle count (2 replies)", () => thread.length === 2);
        console.log(`  thread listed: length ${thread.length}, latest reply "${thread.replyToEvent?.getContent().body}"`);
        if (thread.replyToEvent?.getContent().body !== "reply two") {
            throw new Error(`latest reply is "${thread.replyToEvent?.getContent().body}", expected "reply two"`);
        }
        // The root shows the edit (bundled m.replace), its own content unchanged on the server.
        await waitFor("the root shows its edit", () => thread.rootEvent?.getContent().body === "thread root (edited)");
        console.log(`  root shows "${thread.rootEvent.getContent().body}" (replaced by ${thread.rootEvent.replacingEventId()})`);

        // 3. The replies themselves: the SDK fetches a thread's events through /relations when
        //    it makes the thread (initialEventsFetched), as a client opening it would see them.
        await waitFor("Bob's SDK fetched the thread's events", () => thread.initialEventsFetched);
        if (replies(thread).join("|") !== "reply one|reply two") {
            throw new Error(`Bob's thread holds ${JSON.stringify(replies(thread))}, expected both replies`);
        }
        console.log(`  thread timeline: ${JSON.stringify(replies(thread))}`);

        // 4. Live: Alice replies again; Bob's SDK gets it into the thread through /sync.
        await alice.sendMessage(roomId, root, { msgtype: "m.text", body: "reply three" });
        await waitFor("Bob's thread gets reply three live", () => thread.length === 3 && replies(thread).includes("reply three"));
        console.log(`  live reply: length ${thread.length}, ${JSON.stringify(replies(thread))}`);

        // 5. Bob replies through his SDK; Alice's SDK shows it in her thread.
        await bob.sendMessage(roomId, root, { msgtype: "m.text", body: "bob's reply" });
        const alicesThread = await waitFor("Alice's SDK has the thread", () => alice.getRoom(roomId)?.getThread(root));
        await waitFor("Alice's thread shows Bob's reply", () => replies(alicesThread).includes("bob's reply"));
        console.log(`  Alice's thread: length ${alicesThread.length}, ${JSON.stringify(replies(alicesThread))}`);
    } finally {
        alice.stopClient();
        bob?.stopClient();
    }
}

finish(main, "matrix-js-sdk shows the thread and its replies as the server serves them");
