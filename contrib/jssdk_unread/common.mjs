// What the scratch checks share: the server's address, raw HTTP, registration, SDK clients
// with thread support, waits with a deadline, and the SDK's background failures.
//
//   node <check>.mjs BASE_URL SERVER_NAME        (normally through ./run, which starts a server)

import { ClientEvent, createClient } from "matrix-js-sdk";
import loglevel from "loglevel";

export const [BASE, SERVER_NAME = "localhost"] = process.argv.slice(2);
if (!BASE) {
    console.error("usage: node <check>.mjs BASE_URL [SERVER_NAME]");
    process.exit(2);
}
export const TIMEOUT_MS = Number(process.env.JSSDK_TIMEOUT_MS || 20000);

// The SDK's own logging (errors included: its MatrixRTC manager logs one per state event of a
// room it has not made yet) is off unless asked for; what goes wrong in it is caught below.
// Every SDK logger is its own loglevel logger at DEBUG, so each is set (again after clients
// are created: they make child loggers).
const SDK_LOG = process.env.JSSDK_SDK_LOG || "silent";
export const quietSdk = () => Object.values(loglevel.getLoggers()).forEach((l) => l.setLevel(SDK_LOG, false));
quietSdk();

// The SDK fetches some things in the background without awaiting them (e.g. a new thread's
// start, through /relations): a rejected request there must not kill the check, but it is
// reported at the end, since a client on this server would hit it too.
export const backgroundErrors = [];
process.on("unhandledRejection", (err) => {
    const line = `${err?.name || "Error"}: ${err?.message || err}`;
    if (!backgroundErrors.includes(line)) {
        backgroundErrors.push(line);
        console.log(`  (SDK background request failed: ${line})`);
    }
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function http(method, path, { token, body, query } = {}) {
    const url = new URL(BASE + path);
    for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = { raw: text };
    }
    return { status: res.status, json };
}

export async function register(localpart) {
    const req = { username: localpart, password: `pw-${localpart}-${Date.now()}`, inhibit_login: false };
    let r = await http("POST", "/_matrix/client/v3/register", { body: req });
    if (r.status === 401 && r.json.session) {
        r = await http("POST", "/_matrix/client/v3/register", {
            body: { ...req, auth: { type: "m.login.dummy", session: r.json.session } },
        });
    }
    if (r.status !== 200) throw new Error(`register ${localpart}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json; // user_id, access_token, device_id
}

export async function startSdk(account) {
    const client = createClient({
        baseUrl: BASE,
        accessToken: account.access_token,
        userId: account.user_id,
        deviceId: account.device_id,
    });
    quietSdk();
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === "PREPARED") {
                client.off(ClientEvent.Sync, onSync);
                resolve();
            } else if (state === "ERROR") {
                reject(new Error(`${account.user_id}: sync error ${data?.error}`));
            }
        };
        client.on(ClientEvent.Sync, onSync);
    });
    await client.startClient({ threadSupport: true, initialSyncLimit: 20 });
    await withTimeout(prepared, `${account.user_id}: PREPARED`);
    return client;
}

export async function withTimeout(promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS} ms: ${what}`)), TIMEOUT_MS);
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

// ``fn()`` until it answers something truthy (checked every 50 ms), at most TIMEOUT_MS.
export async function waitFor(what, fn) {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${TIMEOUT_MS} ms: ${what}`);
        await sleep(50);
    }
}

// Runs ``main`` and exits: 0 with ``passLine`` (and the SDK's background failures listed), 1 on failure.
export function finish(main, passLine) {
    main().then(
        () => {
            if (backgroundErrors.length) {
                console.log(`note: ${backgroundErrors.length} SDK background request(s) failed:`);
                for (const line of backgroundErrors) console.log(`  ${line}`);
            }
            console.log(`PASS: ${passLine}`);
            process.exit(0);
        },
        (err) => {
            console.error(`FAIL: ${err.message}`);
            process.exit(1);
        },
    );
}
