// The console's one way of talking to the server: JSON over fetch, the access token in an
// Authorization header (never a cookie: a request the browser makes on its own carries no
// credential, so there is nothing to forge across sites), errors as ApiError carrying the
// Matrix error's errcode and its human-readable `error`.

const SESSION_KEY = "mxserver.admin.session";
export const ADMIN = "/_synapse/admin";
export const MX_ADMIN = "/_mxserver/admin";

export class ApiError extends Error {
  constructor(status, errcode, message) {
    super(message);
    this.status = status;
    this.errcode = errcode;
  }
}

/** The logged-in session ({access_token, user_id, device_id, server_version}) or null. */
export function session() {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function saveSession(value) {
  if (value) sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(SESSION_KEY);
}

/** The server name of the logged-in admin (the part of their user ID after the first colon). */
export function serverName() {
  const s = session();
  return s ? s.user_id.slice(s.user_id.indexOf(":") + 1) : "";
}

/** Percent-encode one path segment (user IDs, room IDs, tokens). */
export const seg = encodeURIComponent;

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function send(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "M_CONNECTION", `The server could not be reached (${e.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const errcode = data && typeof data.errcode === "string" ? data.errcode : "M_UNKNOWN";
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, errcode, message);
  }
  return data;
}

/** An admin API call with the session's token. A token the server no longer knows ends the
 * session: the console goes back to the login page. */
export async function api(method, path, body) {
  const s = session();
  try {
    return await send(method, path, body, s ? s.access_token : null);
  } catch (e) {
    if (e.status === 401 && (e.errcode === "M_UNKNOWN_TOKEN" || e.errcode === "M_MISSING_TOKEN")) {
      saveSession(null);
      window.dispatchEvent(new CustomEvent("mx-session-ended", { detail: e.message }));
    }
    throw e;
  }
}

/** Log in with a password, then check the account is a server admin: anyone else's token is
 * logged out again at once and the login refused. */
export async function login(user, password) {
  const body = {
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "mxserver admin console",
  };
  const result = await send("POST", "/_matrix/client/v3/login", body, null);
  let version;
  try {
    version = await send("GET", `${ADMIN}/v1/server_version`, undefined, result.access_token);
  } catch (e) {
    await send("POST", "/_matrix/client/v3/logout", {}, result.access_token).catch(() => {});
    if (e.status === 403) {
      throw new ApiError(403, e.errcode, `${result.user_id} is not a server admin: only server admins can use this console.`);
    }
    throw e;
  }
  saveSession({
    access_token: result.access_token,
    user_id: result.user_id,
    device_id: result.device_id,
    server_version: version.server_version,
  });
  return session();
}

/** Log out: the token is revoked on the server and forgotten here. */
export async function logout() {
  const s = session();
  saveSession(null);
  if (s) await send("POST", "/_matrix/client/v3/logout", {}, s.access_token).catch(() => {});
}
