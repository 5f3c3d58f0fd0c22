// The console's shell: the login page, the navigation bar and the hash router. Each page is a
// module exporting render(main, ctx) (ctx: {args, params, go, onLeave}); the router keeps
// the URL (#/users?name=al&from=20) as the page's state, so reloads and the back button work.

import { ApiError, login, logout, session } from "./api.js";
import { errorMessage, field, h, replace } from "./dom.js";
import * as appservices from "./page-appservices.js";
import * as federation from "./page-federation.js";
import * as media from "./page-media.js";
import * as metrics from "./page-metrics.js";
import * as reports from "./page-reports.js";
import * as rooms from "./page-rooms.js";
import * as tokens from "./page-tokens.js";
import * as users from "./page-users.js";
import * as workers from "./page-workers.js";

const PAGES = [
  { path: "users", title: "Users", page: users },
  { path: "rooms", title: "Rooms", page: rooms },
  { path: "federation", title: "Federation", page: federation },
  { path: "appservices", title: "Appservices", page: appservices },
  { path: "media", title: "Media", page: media },
  { path: "reports", title: "Reports", page: reports },
  { path: "tokens", title: "Registration tokens", page: tokens },
  { path: "metrics", title: "Metrics", page: metrics },
  { path: "workers", title: "Workers", page: workers },
];

const root = document.getElementById("app");
let leaveHooks = [];
let renderCount = 0;

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, params: Object.fromEntries(new URLSearchParams(qs || "")) };
}

/** Go to a console route: go(["rooms", roomId]) or go(["users"], {name: "al"}). */
export function go(parts, params = {}) {
  const path = parts.map((p) => encodeURIComponent(p)).join("/");
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const qs = q.toString();
  const hash = `#/${path}${qs ? `?${qs}` : ""}`;
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function leave() {
  for (const hook of leaveHooks) {
    try {
      hook();
    } catch {
      /* a page's clean-up failing must not stop navigation */
    }
  }
  leaveHooks = [];
}

function renderLogin(note) {
  leave();
  document.title = "Log in · mxserver admin";
  const user = h("input", { name: "user", autocomplete: "username", required: true, placeholder: "@admin:example.org" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const status = h("div", { class: "form-status", role: "status" });
  const button = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { class: "login card", id: "login-form" },
    h("h1", {}, "mxserver admin"),
    h("p", { class: "muted" }, "Log in with a server admin account."),
    field("User ID or name", user),
    field("Password", password),
    button,
    status,
  );
  if (note) replace(status, h("div", { class: "msg error", role: "alert" }, note));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(status);
    if (!user.value.trim() || !password.value) {
      replace(status, h("div", { class: "msg error", role: "alert" }, "Enter a user and a password."));
      return;
    }
    button.disabled = true;
    try {
      await login(user.value.trim(), password.value);
      password.value = "";
      if (!parseHash().parts.length) window.location.hash = "#/users";
      route();
    } catch (e) {
      replace(status, errorMessage(e instanceof ApiError ? e : new Error(String(e))));
    } finally {
      button.disabled = false;
    }
  });
  replace(root, h("main", { class: "login-page" }, form));
  user.focus();
}

function shell(current) {
  const s = session();
  const nav = h(
    "nav",
    { class: "topnav", "aria-label": "Console" },
    h("a", { class: "brand", href: "#/users" }, "mxserver admin"),
    h(
      "ul",
      {},
      PAGES.map((p) =>
        h("li", {}, h("a", { href: `#/${p.path}`, class: p.path === current ? "active" : null, "aria-current": p.path === current ? "page" : null }, p.title)),
      ),
    ),
    h(
      "div",
      { class: "whoami" },
      h("span", { class: "version", title: "Server version" }, s.server_version || ""),
      h("span", { class: "user", id: "whoami" }, s.user_id),
      h(
        "button",
        {
          type: "button",
          id: "logout",
          onclick: async () => {
            await logout();
            window.location.hash = "";
            renderLogin();
          },
        },
        "Log out",
      ),
    ),
  );
  const main = h("main", { id: "main", class: "page" });
  replace(root, h("header", {}, nav), main);
  return main;
}

async function route() {
  leave();
  if (!session()) {
    renderLogin();
    return;
  }
  const { parts, params } = parseHash();
  const entry = PAGES.find((p) => p.path === parts[0]);
  if (!entry) {
    window.location.hash = "#/users";
    return;
  }
  const main = shell(entry.path);
  document.title = `${entry.title} · mxserver admin`;
  const mine = ++renderCount;
  const ctx = {
    args: parts.slice(1),
    params,
    go,
    onLeave: (fn) => leaveHooks.push(fn),
    // a page rendering asynchronously checks this before touching the page again
    stale: () => mine !== renderCount,
  };
  try {
    await entry.page.render(main, ctx);
  } catch (e) {
    if (!ctx.stale() && session()) main.append(errorMessage(e));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("mx-session-ended", (ev) => renderLogin(`Your session ended: ${ev.detail}. Log in again.`));
route();
