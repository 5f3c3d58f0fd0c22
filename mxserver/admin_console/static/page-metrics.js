// Metrics: a live view of the server's Prometheus figures, read every few seconds from
// /_mxserver/admin/v1/metrics. A handful of key figures (rates worked out between two
// readings) on top, every sample below in a filterable table.

import { MX_ADMIN, api } from "./api.js";
import { checkbox, errorMessage, fmtBytes, h, replace, section, table } from "./dom.js";

const POLL_MS = 5000;

function samples(snapshot, sampleName, where = () => true) {
  const out = [];
  for (const m of snapshot.metrics) for (const s of m.samples) if (s.name === sampleName && s.value !== null && where(s.labels)) out.push(s);
  return out;
}

function total(snapshot, sampleName, where) {
  return samples(snapshot, sampleName, where).reduce((acc, s) => acc + s.value, 0);
}

function has(snapshot, sampleName) {
  return samples(snapshot, sampleName).length > 0;
}

function rate(prev, cur, sampleName, where) {
  if (!prev) return null;
  const dt = (cur.ts - prev.ts) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, total(cur, sampleName, where) - total(prev, sampleName, where)) / dt;
}

/** Mean of a histogram over the last interval (or since start when there is no previous reading). */
function mean(prev, cur, base) {
  const sum = total(cur, `${base}_sum`) - (prev ? total(prev, `${base}_sum`) : 0);
  const count = total(cur, `${base}_count`) - (prev ? total(prev, `${base}_count`) : 0);
  return count > 0 ? sum / count : null;
}

const num = (v, digits = 1) => (v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits }));
const ms = (seconds) => (seconds === null ? "—" : `${num(seconds * 1000, seconds < 0.01 ? 2 : 1)} ms`);

function figures(prev, cur) {
  const out = [
    ["HTTP requests / s", num(rate(prev, cur, "mxserver_http_requests_total"), 2), `${num(total(cur, "mxserver_http_requests_total"), 0)} in total`],
    ["Mean request time", ms(mean(prev, cur, "mxserver_http_request_seconds")), prev ? "over the last interval" : "since start"],
    ["Server errors (5xx)", num(total(cur, "mxserver_http_requests_total", (l) => String(l.status).startsWith("5")), 0), "since start"],
    ["DB transactions / s", num(rate(prev, cur, "mxserver_db_transaction_seconds_count"), 2), `mean ${ms(mean(prev, cur, "mxserver_db_transaction_seconds"))}`],
    ["Reactor lag", ms(total(cur, "mxserver_reactor_lag_seconds")), "last tick"],
    ["Federation PDUs queued", num(total(cur, "mxserver_federation_pending_pdus"), 0), `${num(total(cur, "mxserver_federation_pending_edus"), 0)} EDUs`],
    ["Appservice queue", num(total(cur, "mxserver_appservice_queue_length"), 0), "events not yet delivered"],
  ];
  if (has(cur, "process_resident_memory_bytes")) out.push(["Resident memory", fmtBytes(total(cur, "process_resident_memory_bytes")), ""]);
  if (has(cur, "process_cpu_seconds_total")) {
    const cpu = rate(prev, cur, "process_cpu_seconds_total");
    out.push(["CPU", cpu === null ? "—" : `${num(cpu * 100, 1)} %`, "of one core"]);
  }
  if (has(cur, "process_open_fds")) out.push(["Open files", num(total(cur, "process_open_fds"), 0), ""]);
  return h(
    "div",
    { class: "figures", id: "figures" },
    out.map(([label, value, note]) => h("div", { class: "figure" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "note" }, note))),
  );
}

function labelText(labels) {
  return Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(", ");
}

export async function render(main, ctx) {
  let prev = null;
  let cur = null;
  let timer = null;
  let paused = false;
  let stopped = false;
  let updates = 0;
  // ?every=N polls every N seconds (at least 1)
  const every = ctx.params.every ? Math.max(1, Number(ctx.params.every) || 5) * 1000 : POLL_MS;
  ctx.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  const live = h("span", { class: "live", id: "metrics-live" }, "live");
  const top = h("div", { id: "metrics-figures" });
  const rows = h("div", { id: "metrics-table" });
  const errors = h("div");
  const filter = h("input", { type: "search", name: "filter", placeholder: "Filter by name or label", "aria-label": "Filter metrics" });
  const buckets = checkbox("Histogram buckets", { name: "buckets" });
  const pause = h("button", { type: "button", id: "metrics-pause" }, "Pause");
  main.append(
    h("h1", {}, "Metrics", live),
    errors,
    top,
    section("All figures", h("div", { class: "toolbar" }, filter, buckets, h("span", { class: "spacer" }), pause), rows),
  );

  const drawTable = () => {
    if (!cur) return;
    const term = filter.value.trim().toLowerCase();
    const showBuckets = buckets.querySelector("input").checked;
    const list = [];
    for (const m of cur.metrics) {
      for (const s of m.samples) {
        if (s.name.endsWith("_created")) continue;
        if (!showBuckets && s.name.endsWith("_bucket")) continue;
        const labels = labelText(s.labels);
        if (term && !s.name.toLowerCase().includes(term) && !labels.toLowerCase().includes(term)) continue;
        list.push({ m, s, labels });
      }
    }
    replace(
      rows,
      table(
        [
          { title: "Sample", cell: (r) => h("span", { class: "mono", title: r.m.help }, r.s.name) },
          { title: "Labels", cell: (r) => h("span", { class: "mono" }, r.labels), class: "wrap" },
          { title: "Type", cell: (r) => r.m.type },
          { title: "Value", cell: (r) => (r.s.value === null ? "NaN" : num(r.s.value, 6)), class: "num" },
        ],
        list,
        { empty: "No figure matches.", testid: "metrics" },
      ),
    );
  };

  const poll = async () => {
    if (stopped) return;
    try {
      const snap = await api("GET", `${MX_ADMIN}/v1/metrics`);
      if (stopped) return;
      prev = cur;
      cur = snap;
      updates += 1;
      replace(errors);
      replace(top, figures(prev, cur));
      drawTable();
      live.textContent = `live · updated ${new Date(cur.ts).toLocaleTimeString(undefined, { hour12: false })}`;
      live.dataset.updates = String(updates);
    } catch (e) {
      if (stopped) return;
      replace(errors, errorMessage(e));
    }
    if (!paused && !stopped) timer = setTimeout(poll, every);
  };
  filter.addEventListener("input", drawTable);
  buckets.addEventListener("change", drawTable);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    live.classList.toggle("paused", paused);
    clearTimeout(timer);
    if (!paused) poll();
  });
  if (ctx.stale()) return;
  await poll();
}
