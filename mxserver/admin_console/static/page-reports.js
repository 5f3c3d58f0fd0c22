// Event reports: the reports users made, newest first, filtered by room or reporter; a
// report's event, and deleting a report once dealt with.

import { ADMIN, api, query, seg } from "./api.js";
import { confirmAction, details, errorMessage, fmtTs, h, link, message, pager, replace, searchBox, section, table } from "./dom.js";

const LIMIT = 20;

export async function render(main, ctx) {
  if (ctx.args.length) return renderReport(main, ctx, ctx.args[0]);
  const from = Number(ctx.params.from || 0);
  const roomId = ctx.params.room_id || "";
  const userId = ctx.params.user_id || "";
  const status = h("div", { id: "reports-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));
  const results = h("div", { id: "reports" });
  const userInput = h("input", { type: "search", name: "user_id", value: userId, placeholder: "Reporter contains…", "aria-label": "Reporter" });
  main.append(
    h("h1", {}, "Event reports"),
    h(
      "div",
      { class: "toolbar" },
      searchBox({ name: "room_id", value: roomId, placeholder: "Room ID contains…", label: "Filter" }, userInput, (value, el) =>
        ctx.go(["reports"], { room_id: value, user_id: el.elements.user_id.value.trim() }),
      ),
    ),
    status,
    section("Reports", results),
  );
  const body = await api("GET", `${ADMIN}/v1/event_reports${query({ from, limit: LIMIT, room_id: roomId, user_id: userId })}`);
  if (ctx.stale()) return;
  replace(
    results,
    table(
      [
        { title: "#", cell: (r) => link(`/reports/${seg(String(r.id))}`, String(r.id)) },
        { title: "Received", cell: (r) => fmtTs(r.received_ts) },
        { title: "Room", cell: (r) => link(`/rooms/${seg(r.room_id)}`, r.name || r.canonical_alias || r.room_id) },
        { title: "Reported by", cell: (r) => link(`/users/${seg(r.user_id)}`, r.user_id) },
        { title: "Sender", cell: (r) => (r.sender ? link(`/users/${seg(r.sender)}`, r.sender) : "") },
        { title: "Reason", cell: (r) => r.reason || "" },
        { title: "Score", cell: (r) => (r.score === null || r.score === undefined ? "" : String(r.score)), class: "num" },
      ],
      body.event_reports,
      { empty: "No reports.", testid: "reports" },
    ),
    pager({ from, count: body.event_reports.length, total: body.total, hasNext: body.next_token !== undefined, limit: LIMIT }, (f) =>
      ctx.go(["reports"], { ...ctx.params, from: f }),
    ),
  );
}

async function renderReport(main, ctx, reportId) {
  const r = await api("GET", `${ADMIN}/v1/event_reports/${seg(reportId)}`);
  if (ctx.stale()) return;
  const status = h("div", { id: "report-status" });
  const del = h(
    "button",
    {
      type: "button",
      class: "danger",
      id: "delete-report",
      onclick: async () => {
        const ok = await confirmAction({ title: "Delete this report?", body: `Report ${reportId} will be removed (the event stays).`, confirm: "Delete report" });
        if (!ok) return;
        try {
          await api("DELETE", `${ADMIN}/v1/event_reports/${seg(reportId)}`);
          ctx.go(["reports"], { note: `Report ${reportId} deleted.` });
        } catch (e) {
          replace(status, errorMessage(e));
        }
      },
    },
    "Delete report",
  );
  main.append(
    link("/reports", "‹ All reports", { class: "back" }),
    h("h1", {}, `Report ${reportId}`),
    status,
    h(
      "div",
      { class: "grid2" },
      section(
        "Report",
        details([
          ["Received", fmtTs(r.received_ts)],
          ["Room", link(`/rooms/${seg(r.room_id)}`, r.name || r.room_id)],
          ["Event", h("span", { class: "mono" }, r.event_id)],
          ["Reported by", r.user_id],
          ["Sender", r.sender],
          ["Reason", r.reason],
          ["Score", r.score === undefined ? null : String(r.score)],
        ]),
        h("div", { class: "actions" }, del),
      ),
      section("Reported event", h("pre", { class: "json" }, JSON.stringify(r.event_json ?? null, null, 2))),
    ),
  );
}
