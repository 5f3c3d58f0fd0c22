// Registration tokens: list (all, valid, expired or used up), create (given or random, with
// a use limit and an expiry), delete.

import { ADMIN, api, query, seg } from "./api.js";
import { confirmAction, errorMessage, field, fmtTs, form, h, message, replace, section, table, badge } from "./dom.js";

function validity(t) {
  if (t.expiry_time !== null && t.expiry_time !== undefined && t.expiry_time < Date.now()) return badge("expired", "bad");
  if (t.uses_allowed !== null && t.uses_allowed !== undefined && t.pending + t.completed >= t.uses_allowed) return badge("used up", "warn");
  return badge("valid", "on");
}

export async function render(main, ctx) {
  const valid = ctx.params.valid || "";
  const status = h("div", { id: "tokens-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));
  const results = h("div", { id: "tokens" });
  const filter = h(
    "select",
    { name: "valid", "aria-label": "Show" },
    [["", "All tokens"], ["true", "Valid"], ["false", "Expired or used up"]].map(([v, label]) => h("option", { value: v, selected: v === valid }, label)),
  );
  filter.addEventListener("change", () => ctx.go(["tokens"], { valid: filter.value }));
  const create = form(
    { id: "create-token" },
    [
      h(
        "div",
        { class: "row" },
        field("Token (empty: random)", h("input", { name: "token", maxlength: 64, pattern: "[A-Za-z0-9._~\\-]*" })),
        field("Uses allowed (empty: unlimited)", h("input", { name: "uses_allowed", type: "number", min: 0, step: 1 })),
        field("Expires (empty: never)", h("input", { name: "expiry", type: "datetime-local" })),
      ),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create token")),
    ],
    async (f) => {
      replace(status); // the last action's note no longer applies
      const bodyOut = {};
      if (f.elements.token.value.trim()) bodyOut.token = f.elements.token.value.trim();
      if (f.elements.uses_allowed.value !== "") bodyOut.uses_allowed = Number(f.elements.uses_allowed.value);
      if (f.elements.expiry.value) bodyOut.expiry_time = new Date(f.elements.expiry.value).getTime();
      const t = await api("POST", `${ADMIN}/v1/registration_tokens/new`, bodyOut);
      ctx.go(["tokens"], { note: `Token ${t.token} created.` });
      return undefined;
    },
  );
  main.append(
    h("h1", {}, "Registration tokens"),
    status,
    section("New token", create),
    section("Tokens", h("div", { class: "toolbar" }, filter), results),
  );
  const body = await api("GET", `${ADMIN}/v1/registration_tokens${query({ valid })}`);
  if (ctx.stale()) return;
  const remove = async (t) => {
    const ok = await confirmAction({ title: "Delete this token?", body: `Nobody will be able to register with ${t.token} any more.`, confirm: "Delete token" });
    if (!ok) return;
    try {
      await api("DELETE", `${ADMIN}/v1/registration_tokens/${seg(t.token)}`);
      ctx.go(["tokens"], { valid, note: `Token ${t.token} deleted.` });
    } catch (e) {
      replace(status, errorMessage(e));
    }
  };
  replace(
    results,
    table(
      [
        { title: "Token", cell: (t) => h("code", {}, t.token) },
        { title: "State", cell: validity },
        { title: "Uses allowed", cell: (t) => (t.uses_allowed === null ? "unlimited" : String(t.uses_allowed)), class: "num" },
        { title: "Pending", cell: (t) => String(t.pending), class: "num" },
        { title: "Completed", cell: (t) => String(t.completed), class: "num" },
        { title: "Expires", cell: (t) => (t.expiry_time ? fmtTs(t.expiry_time) : "never") },
        { title: "", cell: (t) => h("button", { type: "button", class: "small danger", "data-token": t.token, onclick: () => remove(t) }, "Delete") },
      ],
      body.registration_tokens,
      { empty: "No registration tokens.", testid: "tokens" },
    ),
  );
}
