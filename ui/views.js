// spanline web UI: the views over services, the service graph, alerts, search,
// running executions and the baseline comparison.
"use strict";

/** A sparkline of `values` (nulls are gaps), `cls` styles the stroke. */
function sparkline(values, cls) {
  const w = 120, hgt = 26;
  const nums = values.filter((v) => v !== null && isFinite(v));
  const el = svg("svg", { class: "spark", width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}` });
  if (nums.length === 0) return el;
  if (nums.length === 1) {
    // one window so far: a dot at the right end
    el.append(svg("circle", { cx: w - 3, cy: hgt / 2, r: 2, class: "dot " + (cls || "") }));
    return el;
  }
  const max = Math.max(...nums), min = Math.min(0, ...nums);
  const span = max - min || 1;
  let d = "";
  values.forEach((v, i) => {
    if (v === null || !isFinite(v)) return;
    const x = (i / (values.length - 1)) * (w - 2) + 1;
    const y = hgt - 2 - ((v - min) / span) * (hgt - 4);
    d += (d ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  });
  el.append(svg("path", { d, class: cls || "" }));
  return el;
}

/** Per service, its points (oldest first) from the repository, then from live windows. */
const Services = {
  series: new Map(),
  windowMs: null,
  points: 60,
  async load() {
    // without the repository the rows come from live windows only
    if (!App.repository) return;
    const data = await Api.get("/api/spanline/series", { scope: "service", start: "-15m", limit: 1000 });
    for (const s of data || []) {
      const name = s.key.service;
      const ms = s.windowSeconds * 1000;
      if (this.windowMs === null || ms < this.windowMs) this.windowMs = ms;
      if (ms !== this.windowMs) continue;
      this.series.set(name, s.points.slice(-this.points));
    }
    let names = [];
    try {
      names = await Api.get("/api/services");
    } catch (_) {
      names = [];
    }
    for (const n of names || []) if (!this.series.has(n)) this.series.set(n, []);
  },
  /** A closed window of scope `service`: appended to its service's points. */
  window(ev) {
    if (ev.scope !== "service") return false;
    if (this.windowMs === null) this.windowMs = ev.windowMs;
    if (ev.windowMs !== this.windowMs) return false;
    const name = (ev.key.find(([k]) => k === "service") || [])[1];
    if (!name) return false;
    const pts = this.series.get(name) || [];
    const end = ev.windowEndMs;
    if (pts.length && pts[pts.length - 1].end >= end) return false;
    pts.push({
      end,
      count: ev.count,
      errorCount: ev.errors,
      errorRate: ev.count ? ev.errors / ev.count : 0,
      throughput: ev.count / (ev.windowMs / 1000),
      p50Ms: ev.p50Ms,
      p99Ms: ev.p99Ms,
    });
    while (pts.length > this.points) pts.shift();
    this.series.set(name, pts);
    return name;
  },
  row(name) {
    const pts = this.series.get(name) || [];
    const last = pts[pts.length - 1] || {};
    return h("tr", { class: "clickable", "data-service": name, onclick: () => App.go("#/search?service=" + encodeURIComponent(name)) },
      h("td", {}, name),
      h("td", { class: "num" }, fmt.rate(last.throughput)),
      h("td", { class: "num" + (last.errorRate > 0.05 ? " bad" : "") }, fmt.pct(last.errorRate)),
      h("td", { class: "num" }, fmt.ms(last.p50Ms)),
      h("td", { class: "num" }, fmt.ms(last.p99Ms)),
      h("td", {}, sparkline(pts.map((p) => p.throughput))),
      h("td", {}, sparkline(pts.map((p) => p.p99Ms))),
      h("td", {}, sparkline(pts.map((p) => p.errorRate), "err")),
      h("td", { class: "muted" }, last.end ? fmt.time(last.end) : "–"));
  },
  async render(root) {
    root.append(h("h2", {}, "Services"));
    const table = h("table", { id: "services" },
      h("thead", {}, h("tr", {}, h("th", {}, "service"), h("th", { class: "num" }, "rate"), h("th", { class: "num" }, "errors"),
        h("th", { class: "num" }, "p50"), h("th", { class: "num" }, "p99"), h("th", {}, "rate"), h("th", {}, "p99"),
        h("th", {}, "error rate"), h("th", {}, "window end"))),
      h("tbody"));
    root.append(h("p", { class: "muted" }, "RED figures of the latest closed window per service; new windows arrive live."), table);
    await this.load().catch((e) => root.append(h("p", { class: "bad" }, e.message)));
    this.fill(table);
  },
  fill(table) {
    const body = table.querySelector("tbody");
    body.replaceChildren(...[...this.series.keys()].sort().map((n) => this.row(n)));
    if (!this.series.size) body.append(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No windows yet: they arrive as the pipeline closes them.")));
  },
  update(name) {
    const table = document.getElementById("services");
    if (!table) return;
    const old = table.querySelector(`tr[data-service="${CSS.escape(name)}"]`);
    if (!old) return this.fill(table);
    const row = this.row(name);
    row.classList.add("flash");
    old.replaceWith(row);
  },
};

const Graph = {
  async render(root) {
    root.append(h("h2", {}, "Service graph"));
    if (App.withoutRepository(root)) return;
    root.append(h("p", { class: "muted" }, "Calls between services in the last hour (from /api/dependencies)."));
    const links = await Api.get("/api/dependencies", { lookback: 3600000 });
    const box = h("div", { class: "graph" });
    root.append(box);
    if (!links || !links.length) return box.append(h("p", { class: "empty" }, "No calls between services yet."));
    // layers: a service's column is the longest chain of callers before it
    const nodes = new Set();
    links.forEach((l) => { nodes.add(l.parent); nodes.add(l.child); });
    const depth = new Map([...nodes].map((n) => [n, 0]));
    for (let i = 0; i < nodes.size; i++) {
      for (const l of links) if (l.parent !== l.child && depth.get(l.child) < depth.get(l.parent) + 1 && depth.get(l.parent) + 1 < nodes.size) depth.set(l.child, depth.get(l.parent) + 1);
    }
    const cols = [];
    for (const [n, d] of depth) (cols[d] = cols[d] || []).push(n);
    cols.forEach((c) => c && c.sort());
    const nw = 150, nh = 30, gx = 90, gy = 26;
    const rows = Math.max(...cols.map((c) => (c ? c.length : 0)));
    const width = cols.length * (nw + gx), height = rows * (nh + gy) + gy;
    const pos = new Map();
    cols.forEach((c, x) => (c || []).forEach((n, y) => {
      const top = (height - c.length * (nh + gy)) / 2 + y * (nh + gy) + gy / 2;
      pos.set(n, { x: 20 + x * (nw + gx), y: top });
    }));
    const errs = new Map([...Services.series].map(([n, p]) => [n, (p[p.length - 1] || {}).errorRate || 0]));
    const g = svg("svg", { viewBox: `0 0 ${width} ${height}`, height: Math.min(height, 640), id: "graph" });
    g.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      svg("path", { d: "M0 0L10 5L0 10z", fill: "#8c959f" }))));
    for (const l of links) {
      const a = pos.get(l.parent), b = pos.get(l.child);
      if (!a || !b || l.parent === l.child) continue;
      const x1 = a.x + nw, y1 = a.y + nh / 2, x2 = b.x, y2 = b.y + nh / 2, mx = (x1 + x2) / 2;
      g.append(svg("path", { class: "edge", d: `M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}`, "marker-end": "url(#arrow)", "stroke-width": Math.min(4, 1 + Math.log10(1 + l.callCount) / 2) }));
      // the count sits near the callee, where edges into one service fan apart
      const t = 0.8, u = 1 - t;
      const lx = u * u * u * x1 + 3 * u * t * mx + t * t * t * x2;
      const ly = (u * u * u + 3 * u * u * t) * y1 + (3 * u * t * t + t * t * t) * y2;
      g.append(svg("text", { class: "edge-label", x: lx, y: ly - 3, "text-anchor": "middle" }, l.callCount));
    }
    for (const [n, p] of pos) {
      const node = svg("g", { class: "node" + (errs.get(n) > 0.05 ? " errors" : ""), "data-node": n, transform: `translate(${p.x},${p.y})` },
        svg("rect", { width: nw, height: nh, rx: 5 }), svg("text", { x: nw / 2, y: nh / 2 + 4, "text-anchor": "middle" }, n));
      node.addEventListener("click", () => App.go("#/search?service=" + encodeURIComponent(n)));
      g.append(node);
    }
    box.append(g);
  },
};

const Alerts = {
  active: new Map(),
  async load() {
    // without the repository the active alerts are those that arrived live
    if (!App.repository) return;
    const data = await Api.get("/api/spanline/alerts", { active: "true", limit: 200 });
    this.active = new Map((data || []).map((a) => [a.fingerprint, a]));
  },
  /** An alert event from the stream: firing ones replace, resolved ones leave. */
  event(a) {
    if (a.status === "resolved") this.active.delete(a.fingerprint);
    else this.active.set(a.fingerprint, a);
    this.badge();
  },
  badge() {
    const b = document.getElementById("alert-count");
    b.textContent = this.active.size;
    b.hidden = this.active.size === 0;
  },
  card(a) {
    return h("div", { class: "panel alert " + a.severity, "data-fingerprint": a.fingerprint, "data-rule": a.rule },
      h("div", {}, h("span", { class: "sev" }, a.severity), " ", h("b", {}, a.rule), " · ", a.summary),
      h("div", { class: "meta" }, "service ", a.labels.service || "–", " · suspected service ",
        h("b", { class: "suspected" }, a.suspected_service || "–"), " · firing since ", fmt.time(a.starts_at_ms),
        " · score ", fmt.num(a.score, 2)),
      (a.suspected_services || []).length ? h("ol", { class: "suspects" },
        a.suspected_services.map((s) => h("li", {}, h("b", {}, s.service), " ", fmt.num(s.score, 2),
          h("ul", {}, s.evidence.map((e) => h("li", { class: "meta" }, e)))))) : null,
      a.exemplar_trace_ids.length ? h("div", { class: "meta" }, "exemplar traces: ",
        a.exemplar_trace_ids.map((id) => h("a", { class: "mono exemplar", href: "#/trace/" + id }, id.slice(0, 16)))) : null);
  },
  async render(root) {
    root.append(h("h2", {}, "Active alerts"));
    const list = h("div", { id: "alerts" });
    root.append(list);
    await this.load().catch((e) => root.append(h("p", { class: "bad" }, e.message)));
    this.badge();
    this.fill();
  },
  /** An incident: the alert on its cause first, the symptoms grouped under it. */
  incident(id, members) {
    const notification = (a) => (a.annotations || {}).notification;
    const lead = members.find((a) => notification(a) !== "grouped") || members[0];
    const cause = lead.annotations.incident_cause || lead.suspected_service || "–";
    const symptoms = members.filter((a) => a !== lead).map((a) => {
      const card = this.card(a);
      card.classList.add("symptom");
      return card;
    });
    return h("section", { class: "incident", "data-incident": id },
      h("h3", {}, "Incident: ", h("b", { class: "cause" }, cause), " · ", members.length,
        members.length === 1 ? " alert" : " alerts"),
      this.card(lead),
      symptoms.length ? h("div", { class: "symptoms" }, h("div", { class: "meta" }, "symptoms of it:"), symptoms) : null);
  },
  fill() {
    const list = document.getElementById("alerts");
    if (!list) return;
    // alerts of one incident together, newest incident first
    const groups = new Map();
    for (const a of [...this.active.values()].sort((a, b) => b.starts_at_ms - a.starts_at_ms)) {
      const id = (a.annotations || {}).incident;
      const key = id ? "i:" + id : "a:" + a.fingerprint;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(a);
    }
    const blocks = [...groups.entries()].map(([key, members]) =>
      key.startsWith("i:") ? this.incident(key.slice(2), members) : this.card(members[0]));
    list.replaceChildren(...blocks);
    if (!blocks.length) list.append(h("p", { class: "empty" }, "No alert is firing."));
  },
};

const Running = {
  async render(root) {
    root.append(h("h2", {}, "Running executions"), h("p", { class: "muted" }, "Traces the pipeline holds open, oldest first; refreshed every 2 s."));
    const box = h("div", { id: "running" });
    root.append(box);
    const tick = async () => {
      if (!document.body.contains(box)) return;
      try {
        const snap = await Api.get("/api/spanline/executions", { limit: 50 });
        box.replaceChildren(h("p", {}, h("b", {}, snap.openTraces), " open traces at ", fmt.time(snap.atMs)),
          h("table", {}, h("thead", {}, h("tr", {}, ["trace", "root", "spans", "age", "services"].map((t) => h("th", {}, t)))),
            h("tbody", {}, snap.traces.map((t) => h("tr", {},
              h("td", { class: "mono" }, t.traceID.slice(0, 16)),
              h("td", {}, t.root ? t.root.service + " " + t.root.operation : h("span", { class: "muted" }, "not yet")),
              h("td", { class: "num" }, t.spans), h("td", { class: "num" }, fmt.ms(t.ageMs)), h("td", {}, t.services.join(", ")))))));
      } catch (e) {
        box.replaceChildren(h("p", { class: "muted" }, e.message));
      }
      setTimeout(tick, 2000);
    };
    await tick();
  },
};

const Compare = {
  async render(root, params) {
    root.append(h("h2", {}, "Baseline comparison"));
    if (App.withoutRepository(root)) return;
    const f = (name, value, label) => h("label", {}, label, h("input", { name, value: params.get(name) || value }));
    const form = h("form", { class: "query panel" }, f("service", "", "service"), f("baselineStart", "-10m", "baseline from"),
      f("baselineEnd", "-5m", "baseline to"), f("start", "-5m", "current from"), f("end", "now", "current to"), h("button", {}, "Compare"));
    const out = h("div", { id: "compare" });
    root.append(form, out);
    const run = async () => {
      const q = Object.fromEntries(new FormData(form));
      q.scope = "service";
      try {
        const rows = await Api.get("/api/spanline/compare", q);
        const figures = [["p50Ms", fmt.ms], ["p99Ms", fmt.ms], ["errorRate", fmt.pct], ["throughput", fmt.rate]];
        out.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["series", "figure", "baseline", "current", "change", "p-value", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, rows.flatMap((s) => figures.map(([k, show]) => {
            const c = s[k];
            const rel = c.relativeChange === null ? "" : ` (${c.relativeChange > 0 ? "+" : ""}${(c.relativeChange * 100).toFixed(0)}%)`;
            return h("tr", {}, h("td", {}, Object.values(s.key).join(" ")), h("td", {}, k),
              h("td", { class: "num" }, show(c.baseline)), h("td", { class: "num" }, show(c.current)),
              h("td", { class: "num" }, (c.change > 0 ? "+" : "") + fmt.num(c.change, 3) + rel),
              h("td", { class: "num" }, c.pValue === null ? "–" : c.pValue.toExponential(1)),
              h("td", { class: c.significant ? "sig bad" : "muted" }, c.significant ? "significant" : "–"));
          })))));
        if (!rows.length) out.append(h("p", { class: "empty" }, "No windows in these ranges."));
      } catch (e) {
        out.replaceChildren(h("p", { class: "bad" }, e.message));
      }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
    await run();
  },
};
