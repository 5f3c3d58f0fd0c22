// Application services: each registration's delivery state (its queue, the transaction in
// flight, backoff, last success and error), and reloading the registration files.

import { MX_ADMIN, api } from "./api.js";
import { badge, confirmAction, errorMessage, fmtMs, fmtTs, h, message, replace, section, table } from "./dom.js";

function state(a) {
  if ((a.retry_interval_ms || 0) > 0) return badge("backing off", "bad");
  if (a.pending_txn_id) return badge("sending", "info");
  return badge("ok", "on");
}

export async function render(main, ctx) {
  const status = h("div", { id: "appservices-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));
  const reload = h(
    "button",
    {
      type: "button",
      id: "reload-appservices",
      onclick: async () => {
        const ok = await confirmAction({
          title: "Reload registrations?",
          body: "Read the application service registration files again (app_service_config_files).",
          confirm: "Reload",
          danger: false,
        });
        if (!ok) return;
        try {
          const r = await api("POST", `${MX_ADMIN}/v1/appservices/reload`, {});
          const what = ["added", "removed", "changed"].map((k) => `${k}: ${(r[k] || []).join(", ") || "none"}`).join("; ");
          ctx.go(["appservices"], { note: `Registrations reloaded (${what}).` });
        } catch (e) {
          replace(status, errorMessage(e));
        }
      },
    },
    "Reload registrations",
  );
  const results = h("div", { id: "appservices" });
  main.append(
    h("h1", {}, "Application services"),
    h("div", { class: "toolbar" }, h("span", { class: "spacer" }), reload),
    status,
    section("Registered application services", results),
  );
  const body = await api("GET", `${MX_ADMIN}/v1/appservices`);
  if (ctx.stale()) return;
  replace(
    results,
    table(
      [
        { title: "ID", cell: (a) => h("span", { class: "mono" }, a.id) },
        { title: "URL", cell: (a) => a.url || "(no URL: receives nothing)", class: "wrap" },
        { title: "State", cell: state },
        { title: "Queued", cell: (a) => String(a.queued ?? 0), class: "num" },
        { title: "Transaction in flight", cell: (a) => a.pending_txn_id || "" },
        { title: "Retry interval", cell: (a) => fmtMs(a.retry_interval_ms || 0) },
        { title: "Next retry", cell: (a) => fmtTs(a.next_retry_ts) },
        { title: "Last success", cell: (a) => fmtTs(a.last_success_ts) },
        { title: "Last error", cell: (a) => a.last_error || "" },
      ],
      body.appservices || [],
      { empty: "No application services are registered (see app_service_config_files in the configuration).", testid: "appservices" },
    ),
  );
}
