// Building the page: elements from data with textContent only (never HTML from strings, so
// nothing the server returns can become markup), tables with paging, forms, confirmation
// dialogs and messages.

/** An element: h("button", {class: "primary", onclick: fn}, "Save"). Children may be
 * strings, nodes, arrays or null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's content. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtTs(ms) {
  if (ms === null || ms === undefined || ms === 0) return "—";
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? "—" : d.toLocaleString(undefined, { hour12: false });
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function yesNo(value, yes = "yes", no = "no", danger = false) {
  return h("span", { class: `badge ${value ? (danger ? "bad" : "on") : "off"}` }, value ? yes : no);
}

export function badge(text, kind = "off") {
  return h("span", { class: `badge ${kind}` }, text);
}

/** A link inside the console: route is a hash path like "/users/@a:b". */
export function link(route, text, attrs = {}) {
  return h("a", { href: `#${route}`, ...attrs }, text);
}

/** A table: columns [{title, cell: row => node|string, class}], one row per item. */
export function table(columns, rows, { empty = "Nothing to show.", caption, testid } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "data-table": testid },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.title)))),
      h(
        "tbody",
        {},
        rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.class }, c.cell(row))))),
      ),
    ),
  );
}

/** Previous/next paging for offset-based lists: shows "from–to of total". */
export function pager({ from, count, total, hasNext, limit }, go) {
  const first = count ? from + 1 : 0;
  const last = from + count;
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: from <= 0, onclick: () => go(Math.max(0, from - limit)) }, "‹ Previous"),
    h("span", { class: "pager-info" }, total !== undefined ? `${first}–${last} of ${total}` : `${first}–${last}`),
    h("button", { type: "button", disabled: !hasNext, onclick: () => go(from + limit) }, "Next ›"),
  );
}

/** A labelled input. */
export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("small", {}, hint) : null);
}

export function checkbox(label, attrs = {}) {
  return h("label", { class: "check" }, h("input", { type: "checkbox", ...attrs }), " ", label);
}

/** A form whose submit calls onSubmit(form) with the button disabled until it finishes, and
 * shows the API's error beside it. */
export function form(attrs, children, onSubmit) {
  const status = h("div", { class: "form-status", role: "status" });
  const el = h("form", { ...attrs, novalidate: attrs.novalidate }, children, status);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const buttons = el.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    replace(status);
    try {
      const done = await onSubmit(el);
      if (typeof done === "string") replace(status, message("ok", done));
    } catch (e) {
      replace(status, errorMessage(e));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return el;
}

export function message(kind, text) {
  return h("div", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** An API error as the user should read it: the server's `error` text, and its errcode. */
export function errorMessage(e) {
  if (e && e.errcode) return message("error", `${e.message} (${e.errcode})`);
  return message("error", e && e.message ? e.message : String(e));
}

/** Ask before a destructive action: resolves true only on the confirming button. */
export function confirmAction({ title, body, confirm = "Confirm", danger = true }) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { class: "confirm-body" }, body),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
        h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => dialog.close("ok") }, confirm),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A key/value list. */
export function details(pairs) {
  return h(
    "dl",
    { class: "details" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "—" : v)]),
  );
}

/** A page section with a heading. */
export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), children);
}

/** A search box (one text input, submitted with Enter or the button). */
export function searchBox({ name, value, placeholder, label = "Search" }, extra, onSearch) {
  const input = h("input", { type: "search", name, value: value || "", placeholder, "aria-label": placeholder });
  const el = h("form", { class: "search", role: "search" }, input, extra, h("button", { type: "submit" }, label));
  el.addEventListener("submit", (ev) => {
    ev.preventDefault();
    onSearch(input.value.trim(), el);
  });
  return el;
}
