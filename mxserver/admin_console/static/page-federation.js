// Federation: every destination server the sender knows, with its live queue (mxserver's own
// view) and its stored retry state (Synapse's destinations list), and a reset of the backoff.

import { ADMIN, MX_ADMIN, api, seg } from "./api.js";
import { badge, confirmAction, errorMessage, fmtMs, fmtTs, h, message, pager, replace, searchBox, section, table } from "./dom.js";

const LIMIT = 25;

function state(d) {
  if (d.in_flight) return badge("sending", "info");
  if (d.backing_off || (d.retry_interval_ms || 0) > 0) return badge("backing off", "bad");
  if (d.catching_up) return badge("catching up", "warn");
  return badge("ok", "on");
}

/** The two views of the destinations merged by name (either may be missing). */
async function destinations() {
  const [live, stored] = await Promise.all([
    api("GET", `${MX_ADMIN}/v1/federation/destinations`),
    api("GET", `${ADMIN}/v1/federation/destinations?limit=1000`).catch((e) => ({ error: e })),
  ]);
  const byName = new Map();
  for (const d of live.destinations || []) byName.set(d.destination, { ...d });
  if (!stored.error) {
    for (const d of stored.destinations || []) {
      const merged = byName.get(d.destination) || { destination: d.destination };
      merged.retry_last_ts = d.retry_last_ts;
      if (merged.retry_interval_ms === undefined) merged.retry_interval_ms = d.retry_interval;
      if (!merged.failure_ts) merged.failure_ts = d.failure_ts;
      if (merged.last_successful_stream === undefined) merged.last_successful_stream = d.last_successful_stream_ordering;
      byName.set(d.destination, merged);
    }
  }
  const list = [...byName.values()].sort((a, b) => a.destination.localeCompare(b.destination));
  return { list, storedError: stored.error || null, appservices: live.appservices || [] };
}

export async function render(main, ctx) {
  const from = Number(ctx.params.from || 0);
  const term = (ctx.params.destination || "").toLowerCase();
  const status = h("div", { id: "federation-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));
  const results = h("div", { id: "destinations" });
  main.append(
    h("h1", {}, "Federation destinations"),
    h(
      "div",
      { class: "toolbar" },
      searchBox({ name: "destination", value: ctx.params.destination, placeholder: "Server name" }, null, (value) =>
        ctx.go(["federation"], { destination: value }),
      ),
      h("span", { class: "spacer" }),
      h("button", { type: "button", onclick: () => ctx.go(["federation"], { ...ctx.params, note: "" }) }, "Refresh"),
    ),
    status,
    section("Servers this server sends to", results),
  );
  const { list, storedError } = await destinations();
  if (ctx.stale()) return;
  if (storedError) status.append(message("warn", `Stored retry state unavailable: ${storedError.message}`));
  const shown = list.filter((d) => !term || d.destination.toLowerCase().includes(term));
  const page = shown.slice(from, from + LIMIT);
  const reset = async (d) => {
    const ok = await confirmAction({
      title: "Reset the connection?",
      body: `Forget the backoff for ${d.destination} and try it again now.`,
      confirm: "Reset",
      danger: false,
    });
    if (!ok) return;
    try {
      await api("POST", `${ADMIN}/v1/federation/destinations/${seg(d.destination)}/reset_connection`, {});
      ctx.go(["federation"], { ...ctx.params, note: `The connection to ${d.destination} was reset.` });
    } catch (e) {
      replace(status, errorMessage(e));
    }
  };
  replace(
    results,
    table(
      [
        { title: "Destination", cell: (d) => h("span", { class: "mono" }, d.destination) },
        { title: "State", cell: state },
        { title: "Retry interval", cell: (d) => fmtMs(d.retry_interval_ms || 0) },
        { title: "Next retry", cell: (d) => fmtTs(d.next_retry_ts) },
        { title: "Last failure", cell: (d) => fmtTs(d.failure_ts) },
        { title: "Last success", cell: (d) => fmtTs(d.last_success_ts) },
        { title: "Queued PDUs", cell: (d) => String(d.pending_pdus ?? 0), class: "num" },
        { title: "Queued EDUs", cell: (d) => String(d.pending_edus ?? 0), class: "num" },
        { title: "Last error", cell: (d) => d.last_error || "" },
        {
          title: "",
          cell: (d) =>
            h("button", { type: "button", class: "small", "data-destination": d.destination, onclick: () => reset(d) }, "Reset"),
        },
      ],
      page,
      { empty: term ? `No destination matches “${term}”.` : "This server has not sent to any other server yet.", testid: "destinations" },
    ),
    pager({ from, count: page.length, total: shown.length, hasNext: from + LIMIT < shown.length, limit: LIMIT }, (f) =>
      ctx.go(["federation"], { ...ctx.params, from: f }),
    ),
  );
}
