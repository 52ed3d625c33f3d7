// The GSLB status page: map, regions, share of answers, why-not, explain; polls every 3 s.
"use strict";

(() => {
  const { el, svg, render, getJSON, post, message, every, fmt } = Status;
  const PALETTE = ["#1f6fd1", "#d1452f", "#2a9d4b", "#8e44ad", "#e08a00", "#0f9eae", "#8c564b", "#d6478f"];
  const STATE_COLOR = { up: "#1a7f37", down: "#c62828", drained: "#8a6d00", degraded: "#d9822b" };
  const colors = {};
  let services = {};
  let lastClients = 0;

  const x = (lon) => lon + 180;
  const y = (lat) => 90 - lat;

  function colorOf(region) {
    if (!(region in colors)) colors[region] = PALETTE[Object.keys(colors).length % PALETTE.length];
    return colors[region];
  }

  function stateOf(r) {
    if (r.drained) return "drained";
    if (r.state !== "up") return "down";
    if (r.degraded) return "degraded";
    return "up";
  }

  function probeText(r) {
    const p = r.last_probe;
    if (!p) return r.probe ? "not probed yet" : "no probe (always up)";
    const rtt = p.rtt_ms === null ? "" : ` ${fmt(p.rtt_ms, 1)} ms`;
    return `${p.ok ? "ok" : "failed"}${rtt}, ${fmt(p.seconds_ago, 0)} s ago${p.detail ? " — " + p.detail : ""}` +
      voteText(r);
  }

  // Peers (gslb/peers): what the servers' vote made of our own probes, when they differ or we are alone.
  function voteText(r) {
    const v = r.vote;
    const admin = r.admin === "maintenance" ? "; maintenance: down whatever the probes say" : "";
    if (!v || v.voters.length < 2) return admin;
    const tally = `${v.up_votes} up / ${v.down_votes} down, ${v.policy}`;
    return (v.up === v.own_up ? `; servers agree (${tally})` : `; our probes say ${v.own_up ? "up" : "down"}, ` +
      `the servers' vote says ${v.up ? "up" : "down"} (${tally})`) + admin;
  }

  async function act(region, action) {
    const data = await post(`/api/regions/${encodeURIComponent(region)}/${action}`);
    if (data) {
      message(`${region} ${action === "drain" ? "drained" : "undrained"}` +
              (data.safe_to_stop_in !== undefined ? `; safe to stop in ${fmt(data.safe_to_stop_in)} s` : ""), "ok");
      await refresh();
    }
  }

  function drawRegions(regions, share) {
    const layer = document.getElementById("regions-layer");
    layer.replaceChildren();
    for (const r of regions) {
      const [lat, lon] = r.location;
      const st = stateOf(r);
      const g = svg("g", { "data-region": r.name, class: "region-marker" });
      g.append(svg("circle", { cx: x(lon), cy: y(lat), r: 3.2, fill: colorOf(r.name), class: "region-dot" }));
      g.append(svg("circle", { cx: x(lon), cy: y(lat), r: 1.3, fill: STATE_COLOR[st] }));
      const label = svg("text", { x: x(lon) + 4, y: y(lat) + 1.4, class: "region-label" });
      label.textContent = `${r.name} · ${st}` + (share[r.name] !== undefined ? ` · ${fmt(share[r.name] * 100)}%` : "");
      const title = svg("title", {});
      title.textContent = `${r.name}: ${st}`;
      g.append(label, title);
      layer.append(g);
    }
    const legend = document.getElementById("legend");
    legend.replaceChildren(...regions.map((r) => el("span", {},
      el("span", { class: "swatch", style: `background:${colorOf(r.name)}` }), `${r.name} (clients sent there)`)),
      el("span", { class: "muted" }, "inner dot: state — ",
        ...Object.entries(STATE_COLOR).map(([k, c]) => el("span", {},
          el("span", { class: "swatch", style: `background:${c}` }), k + " "))));
  }

  function drawRegionTable(regions, data, share) {
    const body = document.querySelector("#regions tbody");
    render(body, regions.map((r) => {
      const st = stateOf(r);
      const why = (data.why_not[r.name] || []).map((w) =>
        el("li", { "data-kind": w.kind }, el("span", { class: "kind" }, w.kind), ": ", w.text));
      const action = r.drained ? "undrain" : "drain";
      return el("tr", { "data-region": r.name, "data-state": st },
        el("td", {}, el("span", { class: "swatch", style: `background:${colorOf(r.name)}` }), el("b", {}, r.name),
          el("div", { class: "small muted" }, `${r.location[0]}, ${r.location[1]} · ${r.addresses.join(" ")}`)),
        el("td", {}, el("span", { class: `badge state ${st}` }, st)),
        el("td", { class: "small" }, probeText(r)),
        el("td", { class: "num" }, share[r.name] === undefined ? "–" : `${fmt(share[r.name] * 100, 1)}%`),
        el("td", { class: "num" }, fmt(data.answers[r.name] || 0)),
        el("td", { class: "small" }, el("ul", { class: "reasons" }, why)),
        el("td", {}, el("button", { type: "button", "data-action": action, "data-region": r.name,
                                     disabled: !data.token_required,
                                     title: data.token_required ? null : "no admin token configured: actions are off",
                                     onclick: () => act(r.name, action) }, action === "drain" ? "Drain" : "Undrain")));
    }));
  }

  function drawShares(data) {
    const box = document.getElementById("shares");
    box.replaceChildren();
    const points = data.shares.points.slice(-60);
    document.getElementById("interval").textContent = fmt(data.shares.interval);
    const names = data.regions.map((r) => r.name);
    const W = 600, H = 140, n = Math.max(points.length, 1), bw = W / Math.max(n, 30);
    points.forEach((p, i) => {
      const total = names.reduce((s, r) => s + (p.answers[r] || 0), 0);
      let top = H;
      for (const r of names) {
        const v = p.answers[r] || 0;
        if (!total || !v) continue;
        const h = (v / total) * H;
        top -= h;
        const rect = svg("rect", { x: W - (points.length - i) * bw, y: top, width: Math.max(bw - 1, 1), height: h,
                                   fill: colorOf(r) });
        const t = svg("title", {});
        t.textContent = `${r}: ${v} of ${total} answers`;
        rect.append(t);
        box.append(rect);
      }
    });
    const axis = svg("text", { x: 2, y: 155, class: "axis" });
    const span = points.reduce((t, p) => t + p.seconds, 0);
    axis.textContent = points.length ? (span >= 90 ? `${fmt(span / 60, 1)} min ago` : `${fmt(span)} s ago`) : "";
    const now = svg("text", { x: 570, y: 155, class: "axis" });
    now.textContent = "now";
    box.append(axis, now);
    document.getElementById("shares-note").textContent = points.length
      ? "Each bar: the answers of one interval, split by region (cache hits included)."
      : "No interval finished yet: the first bar appears after one interval.";
  }

  function lastShare(data) {
    const pts = data.shares.points;
    for (let i = pts.length - 1; i >= 0; i--) {
      const total = Object.values(pts[i].answers).reduce((a, b) => a + b, 0);
      if (total) return Object.fromEntries(Object.entries(pts[i].answers).map(([k, v]) => [k, v / total]));
    }
    return {};
  }

  function drawServices(data) {
    const names = Object.keys(data.services);
    const select = document.getElementById("explain-name");
    if (select.options.length !== names.length) {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    }
    render(document.querySelector("#services tbody"), names.map((n) => {
      const s = data.services[n];
      return el("tr", {}, el("td", {}, n), el("td", {}, s.policy), el("td", {}, s.regions.join(", ")),
                el("td", { class: "num" }, s.ttl));
    }));
    const sm = data.sample;
    document.getElementById("sample-note").textContent =
      `Client networks on the map: 1 in ${sm.every} answers computed afresh (cache misses), the last ${fmt(sm.max)} ` +
      `kept (${fmt(sm.kept)} now, ${fmt(sm.seen)} seen), shown for 10 minutes.`;
  }

  async function drawClients() {
    const data = await getJSON("/api/status/clients");
    const layer = document.getElementById("clients");
    layer.replaceChildren(...data.clients.filter((c) => c.lat !== undefined).map((c) => {
      const dot = svg("circle", { cx: x(c.lon), cy: y(c.lat), r: 1.1, class: "client",
                                  fill: c.regions.length ? colorOf(c.regions[0]) : "#999",
                                  "data-network": c.network });
      const t = svg("title", {});
      t.textContent = `${c.network} (${c.where}) → ${c.regions.join(", ")}, ${fmt(c.seconds_ago)} s ago`;
      dot.append(t);
      return dot;
    }));
    lastClients = data.clients.length;
  }

  async function refresh() {
    const data = await getJSON("/api/status/overview");
    services = data.services;
    data.regions.forEach((r) => colorOf(r.name));
    const share = lastShare(data);
    document.getElementById("meta").textContent =
      `version ${data.version} · steering generation ${data.generation} · ${data.regions.length} regions`;
    drawRegions(data.regions, share);
    drawRegionTable(data.regions, data, share);
    drawShares(data);
    drawServices(data);
    await drawClients();
    document.body.dataset.loaded = "1";
    document.body.dataset.clients = String(lastClients);
  }

  async function explain(event) {
    event.preventDefault();
    const name = document.getElementById("explain-name").value;
    const client = document.getElementById("explain-client").value.trim();
    const out = document.getElementById("explain-out");
    const r = await fetch(`/api/explain?name=${encodeURIComponent(name)}&client=${encodeURIComponent(client)}`);
    const d = await r.json();
    if (!r.ok) { out.textContent = d.error || `HTTP ${r.status}`; return; }
    out.textContent = [
      `${d.service} (${d.policy}) -> ${d.regions.length ? d.regions.join(", ") : "no region"}` +
        `  ttl ${d.ttl}, ECS scope /${d.scope_prefix}${d.all_down ? ", ALL DOWN rule applied" : ""}`,
      `located: ${d.location}`, ...d.lines.map((l) => "  " + l)].join("\n");
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("explain").addEventListener("submit", explain);
    try {
      const world = await getJSON("/static/world.json");
      document.getElementById("land").setAttribute("d", world.d);
    } catch (e) { message("world map not loaded: " + e.message, "error"); }
    every(3, refresh);
  });
})();
