// Users: search and page through accounts, create one, and on a user's page make or unmake
// an admin, reset the password, deactivate.

import { ADMIN, api, query, seg, serverName } from "./api.js";
import {
  checkbox, confirmAction, details, errorMessage, field, fmtTs, form, h, link, message, pager, replace, searchBox,
  section, table, yesNo,
} from "./dom.js";

const LIMIT = 20;

export async function render(main, ctx) {
  if (ctx.args.length) return renderUser(main, ctx, ctx.args[0]);
  return renderList(main, ctx);
}

function fullUserId(input) {
  const v = input.trim();
  if (v.startsWith("@")) return v;
  return `@${v}:${serverName()}`;
}

async function renderList(main, ctx) {
  const from = Number(ctx.params.from || 0);
  const name = ctx.params.name || "";
  const deactivated = ctx.params.deactivated === "true";
  const results = h("div", { id: "users-results" });
  const createBox = h("div", { id: "create-user-box" });
  const includeDeactivated = checkbox("Include deactivated", { name: "deactivated", checked: deactivated });
  main.append(
    h("h1", {}, "Users"),
    h(
      "div",
      { class: "toolbar" },
      searchBox({ name: "name", value: name, placeholder: "User ID or display name" }, includeDeactivated, (value, el) =>
        ctx.go(["users"], { name: value, deactivated: el.elements.deactivated.checked ? "true" : "" }),
      ),
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "primary", id: "new-user", onclick: () => toggleCreate(createBox, ctx) }, "Create user"),
    ),
    createBox,
    section("Accounts", results),
  );
  const body = await api("GET", `${ADMIN}/v2/users${query({ from, limit: LIMIT, name, deactivated: deactivated ? "true" : "" })}`);
  if (ctx.stale()) return;
  replace(
    results,
    table(
      [
        { title: "User ID", cell: (u) => link(`/users/${seg(u.name)}`, u.name, { class: "mono" }) },
        { title: "Display name", cell: (u) => u.displayname || "" },
        { title: "Admin", cell: (u) => yesNo(u.admin) },
        { title: "Status", cell: (u) => (u.deactivated ? h("span", { class: "badge bad" }, "deactivated") : h("span", { class: "badge on" }, "active")) },
        { title: "Guest", cell: (u) => yesNo(u.is_guest) },
        { title: "Created", cell: (u) => fmtTs(u.creation_ts) },
      ],
      body.users,
      { empty: name ? `No user matches “${name}”.` : "No users.", testid: "users" },
    ),
    pager({ from, count: body.users.length, total: body.total, hasNext: body.next_token !== undefined, limit: LIMIT }, (f) =>
      ctx.go(["users"], { ...ctx.params, from: f }),
    ),
  );
}

function toggleCreate(box, ctx) {
  if (box.firstChild) {
    replace(box);
    return;
  }
  const userField = h("input", { name: "user_id", required: true, placeholder: `alice or @alice:${serverName()}` });
  replace(
    box,
    section(
      "Create a user",
      form(
        { id: "create-user" },
        [
          h(
            "div",
            { class: "row" },
            field("User ID", userField),
            field("Display name", h("input", { name: "displayname" })),
            field("Password", h("input", { name: "password", type: "password", autocomplete: "new-password" })),
          ),
          checkbox("Server admin", { name: "admin" }),
          h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create")),
        ],
        async (f) => {
          const userId = fullUserId(f.elements.user_id.value);
          if (userId.length < 3 || !userId.includes(":")) throw new Error("Enter a user ID.");
          const existing = await api("GET", `${ADMIN}/v2/users/${seg(userId)}`).catch((e) => (e.status === 404 ? null : Promise.reject(e)));
          if (existing) throw new Error(`${userId} already exists.`);
          const bodyOut = { admin: f.elements.admin.checked };
          if (f.elements.displayname.value.trim()) bodyOut.displayname = f.elements.displayname.value.trim();
          if (f.elements.password.value) bodyOut.password = f.elements.password.value;
          await api("PUT", `${ADMIN}/v2/users/${seg(userId)}`, bodyOut);
          ctx.go(["users", userId], { created: "1" });
        },
      ),
    ),
  );
  userField.focus();
}

async function renderUser(main, ctx, userId) {
  const user = await api("GET", `${ADMIN}/v2/users/${seg(userId)}`);
  if (ctx.stale()) return;
  const rooms = await api("GET", `${ADMIN}/v1/users/${seg(userId)}/joined_rooms`).catch(() => null);
  if (ctx.stale()) return;
  const status = h("div", { id: "user-status" });
  if (ctx.params.created) status.append(message("ok", `Created ${userId}.`));

  const refresh = (note) => ctx.go(["users", userId], note ? { note } : {});
  if (ctx.params.note) status.append(message("ok", ctx.params.note));

  const adminButton = h(
    "button",
    {
      type: "button",
      id: "toggle-admin",
      class: user.admin ? null : "primary",
      onclick: async () => {
        const make = !user.admin;
        const ok = await confirmAction({
          title: make ? "Make server admin?" : "Remove server admin?",
          body: make ? `${userId} will be able to use the admin API and this console.` : `${userId} will no longer be a server admin.`,
          confirm: make ? "Make admin" : "Remove admin",
          danger: !make,
        });
        if (!ok) return;
        try {
          await api("PUT", `${ADMIN}/v2/users/${seg(userId)}`, { admin: make });
          refresh(make ? `${userId} is now a server admin.` : `${userId} is no longer a server admin.`);
        } catch (e) {
          replace(status, errorMessage(e));
        }
      },
    },
    user.admin ? "Remove admin" : "Make admin",
  );

  const resetForm = form(
    { id: "reset-password" },
    [
      field("New password", h("input", { name: "new_password", type: "password", autocomplete: "new-password", required: true })),
      checkbox("Log out all devices", { name: "logout_devices", checked: true }),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Reset password")),
    ],
    async (f) => {
      const pw = f.elements.new_password.value;
      if (!pw) throw new Error("Enter the new password.");
      const ok = await confirmAction({ title: "Reset password?", body: `Set a new password for ${userId}.`, confirm: "Reset password" });
      if (!ok) return undefined;
      await api("POST", `${ADMIN}/v1/reset_password/${seg(userId)}`, { new_password: pw, logout_devices: f.elements.logout_devices.checked });
      f.elements.new_password.value = "";
      return "Password reset.";
    },
  );

  const deactivateForm = form(
    { id: "deactivate-user" },
    [
      h("p", { class: "muted" }, "Deactivation logs the user out everywhere, removes them from their rooms and cannot be undone by the user."),
      checkbox("Also erase (hide their messages from new members)", { name: "erase" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Deactivate")),
    ],
    async (f) => {
      const erase = f.elements.erase.checked;
      const ok = await confirmAction({
        title: "Deactivate this account?",
        body: `${userId} will be deactivated${erase ? " and erased" : ""}.`,
        confirm: "Deactivate",
      });
      if (!ok) return undefined;
      await api("POST", `${ADMIN}/v1/deactivate/${seg(userId)}`, { erase });
      refresh(`${userId} was deactivated.`);
      return undefined;
    },
  );

  main.append(
    link("/users", "‹ All users", { class: "back" }),
    h("h1", {}, h("span", { class: "mono" }, userId), user.admin ? h("span", { class: "badge info" }, "admin") : null,
      user.deactivated ? h("span", { class: "badge bad" }, "deactivated") : null),
    status,
    h(
      "div",
      { class: "grid2" },
      section(
        "Account",
        details([
          ["Display name", user.displayname],
          ["Server admin", yesNo(user.admin)],
          ["Deactivated", yesNo(user.deactivated, "yes", "no", true)],
          ["Erased", yesNo(user.erased, "yes", "no", true)],
          ["Guest", yesNo(user.is_guest)],
          ["Created", fmtTs(user.creation_ts)],
          ["User type", user.user_type],
          ["Avatar", user.avatar_url],
          ["Locked", yesNo(user.locked, "yes", "no", true)],
        ]),
      ),
      section(
        "Joined rooms",
        rooms
          ? table([{ title: "Room", cell: (r) => link(`/rooms/${seg(r)}`, r, { class: "mono" }) }], rooms.joined_rooms.map((r) => r), {
              empty: "Not in any room.",
            })
          : h("p", { class: "muted" }, "Not available."),
      ),
      section("Server admin", h("p", { class: "muted" }, user.admin ? "This user is a server admin." : "This user is not a server admin."), h("div", { class: "actions" }, adminButton)),
      section("Reset password", resetForm),
      user.deactivated ? null : section("Deactivate", deactivateForm),
    ),
  );
}
