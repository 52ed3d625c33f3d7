// The regional LB stats page (in the spirit of HAProxy's): one table per pool; polls every 2 s.
"use strict";

(() => {
  const { el, render, getJSON, post, message, every, fmt } = Status;

  function stateOf(b) {
    if (b.admin === "maintenance") return "maintenance";
    if (b.admin === "drain") return "drain";
    if (b.ejected) return "ejected";
    if (b.health !== "up") return "down";
    if (b.effective_weight < b.weight) return "slow-start";
    return "up";
  }

  function when(epoch) {
    if (!epoch) return "";
    const s = Math.max(0, Math.round(epoch - Date.now() / 1000));
    return ` (${s} s left)`;
  }

  async function act(pool, backend, state) {
    const path = `/api/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(backend)}/${state}`;
    const data = await post(path);
    if (data) {
      message(`${pool}/${backend}: ${state}`, "ok");
      await refresh();
    }
  }

  function backendRow(pool, b, actions) {
    const st = stateOf(b);
    const sticky = Object.entries(b.sticky_sessions || {});
    const buttons = [["drain", "Drain"], ["maintenance", "Maint"], ["ready", "Ready"]].map(([state, label]) =>
      el("button", { type: "button", "data-action": state, "data-pool": pool, "data-backend": b.id,
                     disabled: b.admin === state || !actions,
                     title: actions ? null : "no admin token configured: actions are off",
                     onclick: () => act(pool, b.id, state) }, label));
    return el("tr", { "data-pool": pool, "data-backend": b.id, "data-state": st },
      el("td", {}, el("b", {}, b.id), el("div", { class: "small muted" }, b.address)),
      el("td", {}, el("span", { class: `badge state ${st}` }, st)),
      el("td", { class: "small" }, `${b.health}${b.health_probed ? "" : " (not probed)"}`),
      el("td", { class: "small" }, b.admin + when(b.drain_deadline)),
      el("td", { class: "small" }, b.ejected ? `yes${when(b.ejected_until)}` : "no",
         b.times_ejected ? el("div", { class: "muted" }, `${b.times_ejected}× so far`) : null),
      el("td", { class: "num" }, `${fmt(b.effective_weight, 2)} / ${fmt(b.weight, 2)}`),
      el("td", { class: "num" }, fmt(b.inflight)),
      el("td", { class: "num" }, fmt(b.requests)),
      el("td", { class: "num" }, fmt(b.errors)),
      el("td", { class: "num" }, `${fmt(b.ewma_ms, 1)} ms`),
      el("td", { class: "num" }, sticky.length ? sticky.map(([r, n]) => `${r}: ${n}`).join(", ") : "–"),
      el("td", {}, ...buttons));
  }

  function poolSection(name, p, actions) {
    const routes = p.routes.map((r) => `${r.name} (${r.host}${r.path}, ${r.policy})`).join(" · ");
    return el("section", { "data-pool": name },
      el("h2", {}, `Pool ${name} `, el("span", { class: "muted small" }, `${p.healthy}/${p.total} available`)),
      el("div", { class: "small muted" }, routes ? `Routes: ${routes}` : "No route uses this pool."),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["Backend", "State", "Health", "Admin", "Ejected", "Weight (eff./conf.)",
          "In flight", "Requests", "5xx", "Latency", "Sticky sessions", "Actions"].map((h, i) =>
          el("th", { class: i >= 5 && i <= 10 ? "num" : null }, h)))),
        el("tbody", {}, ...p.backends.map((b) => backendRow(name, b, actions)))));
  }

  async function refresh() {
    const data = await getJSON("/api/status/pools");
    document.getElementById("meta").textContent = `region ${data.region} · role ${data.role} · ` +
      `${Object.keys(data.pools).length} pools`;
    render(document.getElementById("pools"),
           Object.entries(data.pools).map(([name, p]) => poolSection(name, p, data.token_required)));
    document.body.dataset.loaded = "1";
  }

  document.addEventListener("DOMContentLoaded", () => every(2, refresh));
})();
