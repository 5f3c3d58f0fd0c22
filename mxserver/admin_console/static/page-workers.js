// Workers: the processes of the server (a cluster's main and workers, or the single process
// as main), from the worker registry at /_mxserver/admin/v1/workers: role, pid, when each
// started and was last seen, alive or not (seen within the last 30 s).

import { MX_ADMIN, api } from "./api.js";
import { badge, fmtTs, h, replace, section, table } from "./dom.js";

export async function render(main, ctx) {
  const results = h("div", { id: "workers" });
  main.append(h("h1", {}, "Workers"), section("Processes", results));
  const body = await api("GET", `${MX_ADMIN}/v1/workers`);
  if (ctx.stale()) return;
  replace(
    results,
    table(
      [
        { title: "Name", cell: (w) => h("code", {}, w.name) },
        { title: "Role", cell: (w) => w.role },
        { title: "State", cell: (w) => (w.alive ? badge("alive", "on") : badge("not seen", "bad")) },
        { title: "PID", cell: (w) => String(w.pid), class: "num" },
        { title: "Started", cell: (w) => fmtTs(w.started_ts) },
        { title: "Last seen", cell: (w) => fmtTs(w.last_seen_ts) },
      ],
      body.workers,
      { empty: "No processes recorded.", testid: "workers" },
    ),
  );
}
