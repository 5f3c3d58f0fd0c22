// Rooms: search and page through the server's rooms; a room's details and members, block,
// purge history, and delete it (in the background: the page follows delete_status until the
// deletion is complete or failed).

import { ADMIN, api, query, seg } from "./api.js";
import {
  checkbox, confirmAction, details, errorMessage, field, form, h, link, message, pager, replace, searchBox, section,
  table, yesNo,
} from "./dom.js";

const LIMIT = 20;
const POLL_MS = 1000;
const ORDERS = [
  ["name", "Name"],
  ["joined_members", "Members"],
  ["joined_local_members", "Local members"],
  ["state_events", "State events"],
  ["canonical_alias", "Alias"],
  ["creator", "Creator"],
  ["version", "Version"],
];

export async function render(main, ctx) {
  if (ctx.args.length) return renderRoom(main, ctx, ctx.args[0]);
  return renderList(main, ctx);
}

async function renderList(main, ctx) {
  const from = Number(ctx.params.from || 0);
  const term = ctx.params.search_term || "";
  const order = ctx.params.order_by || "name";
  const results = h("div", { id: "rooms-results" });
  const orderSelect = h(
    "select",
    { name: "order_by", "aria-label": "Order by" },
    ORDERS.map(([v, label]) => h("option", { value: v, selected: v === order }, `Order: ${label}`)),
  );
  main.append(
    h("h1", {}, "Rooms"),
    h(
      "div",
      { class: "toolbar" },
      searchBox({ name: "search_term", value: term, placeholder: "Room name, alias or ID" }, orderSelect, (value, el) =>
        ctx.go(["rooms"], { search_term: value, order_by: el.elements.order_by.value }),
      ),
    ),
    section("Rooms on this server", results),
  );
  orderSelect.addEventListener("change", () => ctx.go(["rooms"], { ...ctx.params, order_by: orderSelect.value, from: 0 }));
  const body = await api("GET", `${ADMIN}/v1/rooms${query({ from, limit: LIMIT, search_term: term, order_by: order })}`);
  if (ctx.stale()) return;
  replace(
    results,
    table(
      [
        { title: "Name", cell: (r) => link(`/rooms/${seg(r.room_id)}`, r.name || r.canonical_alias || "(no name)") },
        { title: "Room ID", cell: (r) => h("span", { class: "mono" }, r.room_id), class: "wrap" },
        { title: "Alias", cell: (r) => r.canonical_alias || "" },
        { title: "Members", cell: (r) => String(r.joined_members), class: "num" },
        { title: "Local", cell: (r) => String(r.joined_local_members), class: "num" },
        { title: "Version", cell: (r) => r.version || "" },
        { title: "Public", cell: (r) => yesNo(r.public) },
        { title: "Encrypted", cell: (r) => yesNo(Boolean(r.encryption)) },
      ],
      body.rooms,
      { empty: term ? `No room matches “${term}”.` : "No rooms.", testid: "rooms" },
    ),
    pager({ from, count: body.rooms.length, total: body.total_rooms, hasNext: body.next_batch !== undefined, limit: LIMIT }, (f) =>
      ctx.go(["rooms"], { ...ctx.params, from: f }),
    ),
  );
}

const STEPS = ["scheduled", "active", "complete"];

/** Follow a deletion's delete_status until it is complete or failed, drawing the steps. */
function watchDeletion(box, ctx, deleteId, onComplete = () => {}) {
  let timer = null;
  let stopped = false;
  ctx.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  const draw = (st) => {
    const failed = st.status === "failed";
    const at = STEPS.indexOf(st.status);
    const steps = h(
      "ol",
      { class: "steps" },
      STEPS.map((s, i) => {
        let cls = i < at || st.status === "complete" ? "done" : i === at ? "now" : "";
        if (failed && i === Math.max(at, 1)) cls = "failed";
        return h("li", { class: cls }, s);
      }),
    );
    const bar = st.status === "complete" ? h("progress", { max: 1, value: 1 }) : failed ? null : h("progress", {});
    const r = st.shutdown_room || {};
    const summary =
      st.status === "complete"
        ? details([
            ["Users removed", (r.kicked_users || []).join(", ") || "none"],
            ["Users not removed", (r.failed_to_kick_users || []).join(", ") || "none"],
            ["Aliases", (r.local_aliases || []).join(", ") || "none"],
            ["New room", r.new_room_id ? link(`/rooms/${seg(r.new_room_id)}`, r.new_room_id) : "none"],
          ])
        : null;
    replace(
      box,
      h(
        "div",
        { class: "progress card", id: "delete-progress", "data-status": st.status },
        h("strong", {}, `Deletion ${st.delete_id}: `, h("span", { class: "delete-status" }, st.status)),
        steps,
        bar,
        failed ? message("error", `The deletion failed: ${st.error || "unknown error"}`) : null,
        st.status === "complete" ? message("ok", "The room was deleted.") : null,
        summary,
      ),
    );
    return st.status === "complete" || failed;
  };
  const poll = async () => {
    if (stopped) return;
    try {
      const st = await api("GET", `${ADMIN}/v2/rooms/delete_status/${seg(deleteId)}`);
      if (stopped) return;
      if (draw(st)) {
        if (st.status === "complete") onComplete();
        return;
      }
    } catch (e) {
      if (stopped) return;
      box.append(errorMessage(e));
    }
    timer = setTimeout(poll, POLL_MS);
  };
  draw({ delete_id: deleteId, status: "scheduled" });
  poll();
}

function watchPurge(box, ctx, purgeId) {
  let timer = null;
  let stopped = false;
  ctx.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  const poll = async () => {
    if (stopped) return;
    try {
      const st = await api("GET", `${ADMIN}/v1/purge_history_status/${seg(purgeId)}`);
      if (stopped) return;
      const done = st.status === "complete" || st.status === "failed";
      replace(
        box,
        h(
          "div",
          { class: "progress", id: "purge-progress", "data-status": st.status },
          h("strong", {}, `Purge ${purgeId}: ${st.status}`),
          done ? null : h("progress", {}),
          st.status === "failed" ? message("error", `The purge failed: ${st.error || "unknown error"}`) : null,
          st.status === "complete" ? message("ok", "History purged.") : null,
        ),
      );
      if (done) return;
    } catch (e) {
      if (stopped) return;
      replace(box, errorMessage(e));
    }
    timer = setTimeout(poll, POLL_MS);
  };
  poll();
}

async function renderRoom(main, ctx, roomId) {
  const header = [link("/rooms", "‹ All rooms", { class: "back" })];
  const progress = h("div", { id: "delete-box" });
  let room;
  try {
    room = await api("GET", `${ADMIN}/v1/rooms/${seg(roomId)}`);
  } catch (e) {
    if (ctx.stale()) return;
    // A deleted room has no details, but its deletion may still be worth showing.
    const past = await api("GET", `${ADMIN}/v2/rooms/${seg(roomId)}/delete_status`).catch(() => null);
    main.append(...header, h("h1", {}, h("span", { class: "mono" }, roomId)), errorMessage(e), progress);
    if (past && past.results && past.results.length) watchDeletion(progress, ctx, past.results[past.results.length - 1].delete_id);
    return;
  }
  if (ctx.stale()) return;
  const [members, block, deletions] = await Promise.all([
    api("GET", `${ADMIN}/v1/rooms/${seg(roomId)}/members`),
    api("GET", `${ADMIN}/v1/rooms/${seg(roomId)}/block`).catch(() => null),
    api("GET", `${ADMIN}/v2/rooms/${seg(roomId)}/delete_status`).catch(() => null),
  ]);
  if (ctx.stale()) return;

  const status = h("div", { id: "room-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));

  const blockButton = block
    ? h(
        "button",
        {
          type: "button",
          id: "toggle-block",
          onclick: async () => {
            const want = !block.block;
            const ok = await confirmAction({
              title: want ? "Block this room?" : "Unblock this room?",
              body: want ? "Nobody on this server will be able to join it." : "Users on this server will be able to join it again.",
              confirm: want ? "Block" : "Unblock",
              danger: want,
            });
            if (!ok) return;
            try {
              await api("PUT", `${ADMIN}/v1/rooms/${seg(roomId)}/block`, { block: want });
              ctx.go(["rooms", roomId], { note: want ? "Room blocked." : "Room unblocked." });
            } catch (e) {
              replace(status, errorMessage(e));
            }
          },
        },
        block.block ? "Unblock" : "Block",
      )
    : null;

  const purgeBox = h("div", { id: "purge-box" });
  const purgeForm = form(
    { id: "purge-history" },
    [
      field("Purge messages older than (days)", h("input", { name: "days", type: "number", min: 0, step: 1, value: 30 })),
      checkbox("Also purge messages sent by local users", { name: "delete_local_events" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Purge history")),
    ],
    async (f) => {
      const days = Number(f.elements.days.value);
      if (!Number.isFinite(days) || days < 0) throw new Error("Enter a number of days.");
      const ok = await confirmAction({ title: "Purge history?", body: `Messages older than ${days} days in ${roomId} will be removed from this server.`, confirm: "Purge" });
      if (!ok) return undefined;
      const res = await api("POST", `${ADMIN}/v1/purge_history/${seg(roomId)}`, {
        purge_up_to_ts: Date.now() - days * 86400000,
        delete_local_events: f.elements.delete_local_events.checked,
      });
      watchPurge(purgeBox, ctx, res.purge_id);
      return undefined;
    },
  );

  const deleteForm = form(
    { id: "delete-room" },
    [
      h("p", { class: "muted" }, "Everyone is removed from the room, its local aliases go, and it is purged from the database."),
      field("Move local members to a new room made by (optional)", h("input", { name: "new_room_user_id", placeholder: "@admin:example.org" })),
      field("Message in the new room", h("input", { name: "message", placeholder: "This room was shut down by an administrator." })),
      checkbox("Block the room (nobody can join it again)", { name: "block" }),
      checkbox("Purge it from the database", { name: "purge", checked: true }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Delete room")),
    ],
    async (f) => {
      const ok = await confirmAction({
        title: "Delete this room?",
        body: h("span", {}, "This removes every member and cannot be undone: ", h("code", {}, roomId)),
        confirm: "Delete room",
      });
      if (!ok) return undefined;
      const bodyOut = { block: f.elements.block.checked, purge: f.elements.purge.checked };
      if (f.elements.new_room_user_id.value.trim()) bodyOut.new_room_user_id = f.elements.new_room_user_id.value.trim();
      if (f.elements.message.value.trim()) bodyOut.message = f.elements.message.value.trim();
      const res = await api("DELETE", `${ADMIN}/v2/rooms/${seg(roomId)}`, bodyOut);
      watchDeletion(progress, ctx, res.delete_id, roomGone);
      return undefined;
    },
  );

  const grid = h("div", { class: "grid2" });
  // Once deleted, the room's details and actions describe nothing any more.
  const roomGone = () => replace(grid, h("p", { class: "muted" }, "This room no longer exists on this server."));
  main.append(
    ...header,
    h("h1", {}, room.name || "(no name)", h("span", { class: "sub mono" }, roomId), block && block.block ? h("span", { class: "badge bad" }, "blocked") : null),
    status,
    progress,
    replace(
      grid,
      section(
        "Details",
        details([
          ["Room ID", h("span", { class: "mono" }, room.room_id)],
          ["Name", room.name],
          ["Topic", room.topic],
          ["Alias", room.canonical_alias],
          ["Members", `${room.joined_members} joined (${room.joined_local_members} local)`],
          ["Version", room.version],
          ["Creator", room.creator ? link(`/users/${seg(room.creator)}`, room.creator) : null],
          ["Public", yesNo(room.public)],
          ["Join rule", room.join_rules],
          ["History", room.history_visibility],
          ["Guest access", room.guest_access],
          ["Encryption", room.encryption],
          ["Federated", yesNo(room.federatable)],
          ["State events", String(room.state_events)],
          ["Room type", room.room_type],
        ]),
      ),
      section(
        `Members (${members.total})`,
        table(
          [{ title: "User", cell: (m) => link(`/users/${seg(m)}`, m, { class: "mono" }) }],
          members.members,
          { empty: "No joined members.", testid: "members" },
        ),
      ),
      block ? section("Block", h("p", { class: "muted" }, block.block ? `Blocked${block.user_id ? ` by ${block.user_id}` : ""}.` : "Not blocked."), h("div", { class: "actions" }, blockButton)) : null,
      section("Purge history", purgeForm, purgeBox),
      section("Delete room", deleteForm),
    ),
  );
  const running = deletions && (deletions.results || []).find((d) => d.status === "scheduled" || d.status === "active");
  if (running) watchDeletion(progress, ctx, running.delete_id, roomGone);
}
