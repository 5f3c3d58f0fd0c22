// Media: act on one item by its mxc:// URI (quarantine, unquarantine, protect, delete) and list
// a user's uploads with the same actions per item.

import { ADMIN, api, query, seg, serverName } from "./api.js";
import {
  badge, confirmAction, errorMessage, field, fmtBytes, fmtTs, form, h, message, pager, replace, searchBox, section, table,
} from "./dom.js";

const LIMIT = 20;

function parseMxc(uri) {
  const m = /^mxc:\/\/([^/]+)\/([A-Za-z0-9_-]+)$/.exec(uri.trim());
  if (!m) throw new Error("Enter a media URI like mxc://example.org/AbCdEf.");
  return { server: m[1], mediaId: m[2] };
}

const ACTIONS = {
  quarantine: {
    label: "Quarantine",
    confirm: (uri) => ({ title: "Quarantine this media?", body: `${uri} will no longer be served to anyone.`, confirm: "Quarantine" }),
    run: (s, id) => api("POST", `${ADMIN}/v1/media/quarantine/${seg(s)}/${seg(id)}`, {}),
    done: "quarantined",
  },
  unquarantine: {
    label: "Unquarantine",
    confirm: (uri) => ({ title: "Release from quarantine?", body: `${uri} will be served again.`, confirm: "Unquarantine", danger: false }),
    run: (s, id) => api("POST", `${ADMIN}/v1/media/unquarantine/${seg(s)}/${seg(id)}`, {}),
    done: "released from quarantine",
  },
  protect: {
    label: "Protect",
    confirm: (uri) => ({ title: "Protect this media?", body: `${uri} will be safe from quarantine.`, confirm: "Protect", danger: false }),
    run: (s, id) => api("POST", `${ADMIN}/v1/media/protect/${seg(id)}`, {}),
    done: "protected from quarantine",
  },
  delete: {
    label: "Delete",
    confirm: (uri) => ({ title: "Delete this media?", body: `${uri} and its thumbnails will be deleted from this server.`, confirm: "Delete" }),
    run: (s, id) => api("DELETE", `${ADMIN}/v1/media/${seg(s)}/${seg(id)}`),
    done: "deleted",
  },
};

export async function render(main, ctx) {
  const status = h("div", { id: "media-status" });
  if (ctx.params.note) status.append(message("ok", ctx.params.note));
  const act = async (name, server, mediaId) => {
    const uri = `mxc://${server}/${mediaId}`;
    const a = ACTIONS[name];
    if (!(await confirmAction(a.confirm(uri)))) return;
    try {
      await a.run(server, mediaId);
      ctx.go(["media"], { ...ctx.params, note: `${uri} ${a.done}.` });
    } catch (e) {
      replace(status, errorMessage(e));
    }
  };
  const byUri = form(
    { id: "media-by-uri" },
    [
      field("Media URI", h("input", { name: "uri", placeholder: `mxc://${serverName()}/…`, required: true })),
      h(
        "div",
        { class: "actions" },
        Object.entries(ACTIONS).map(([name, a]) =>
          h("button", { type: "submit", value: name, class: name === "delete" ? "danger" : null, "data-action": name }, a.label),
        ),
      ),
    ],
    async (f) => {
      const { server, mediaId } = parseMxc(f.elements.uri.value);
      await act(f.dataset.action || "quarantine", server, mediaId);
    },
  );
  // which button submitted the form
  byUri.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (b) byUri.dataset.action = b.dataset.action;
  });

  const userId = ctx.params.user_id || "";
  const from = Number(ctx.params.from || 0);
  const results = h("div", { id: "user-media" });
  main.append(
    h("h1", {}, "Media"),
    status,
    section("One item", byUri),
    section(
      "A user's uploads",
      searchBox({ name: "user_id", value: userId, placeholder: `@alice:${serverName()}`, label: "List media" }, null, (value) =>
        ctx.go(["media"], { user_id: value }),
      ),
      results,
    ),
  );
  if (!userId) {
    results.append(h("p", { class: "muted" }, "Enter a local user to list what they uploaded."));
    return;
  }
  const body = await api("GET", `${ADMIN}/v1/users/${seg(userId)}/media${query({ from, limit: LIMIT })}`);
  if (ctx.stale()) return;
  const server = serverName();
  replace(
    results,
    table(
      [
        { title: "Media ID", cell: (m) => h("span", { class: "mono" }, m.media_id) },
        { title: "Name", cell: (m) => m.upload_name || "" },
        { title: "Type", cell: (m) => m.media_type || "" },
        { title: "Size", cell: (m) => fmtBytes(m.media_length), class: "num" },
        { title: "Uploaded", cell: (m) => fmtTs(m.created_ts) },
        {
          title: "State",
          cell: (m) => [
            m.quarantined_by ? badge(`quarantined by ${m.quarantined_by}`, "bad") : badge("served", "on"),
            m.safe_from_quarantine ? [" ", badge("protected", "info")] : null,
          ],
        },
        {
          title: "",
          cell: (m) =>
            h(
              "div",
              { class: "actions" },
              m.quarantined_by
                ? h("button", { type: "button", class: "small", onclick: () => act("unquarantine", server, m.media_id) }, "Unquarantine")
                : h("button", { type: "button", class: "small", "data-media": m.media_id, onclick: () => act("quarantine", server, m.media_id) }, "Quarantine"),
              h("button", { type: "button", class: "small danger", onclick: () => act("delete", server, m.media_id) }, "Delete"),
            ),
        },
      ],
      body.media,
      { empty: `${userId} has no uploads.`, testid: "media" },
    ),
    pager({ from, count: body.media.length, total: body.total, hasNext: body.next_token !== undefined, limit: LIMIT }, (f) =>
      ctx.go(["media"], { ...ctx.params, from: f }),
    ),
  );
}
