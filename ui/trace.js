// spanline web UI: trace search and the trace view (waterfall with the critical path,
// the bottleneck and the analyze stage's findings).
"use strict";

function tagValue(span, key) {
  const t = span.tags.find((x) => x.key === key);
  return t ? t.value : undefined;
}

/** The root-first summary of a Jaeger trace. */
function summarize(t) {
  const start = Math.min(...t.spans.map((s) => s.startTime));
  const end = Math.max(...t.spans.map((s) => s.startTime + s.duration));
  const ids = new Set(t.spans.map((s) => s.spanID));
  const root = t.spans.find((s) => !s.references.some((r) => ids.has(r.spanID))) || t.spans[0];
  const services = new Set(t.spans.map((s) => t.processes[s.processID].serviceName));
  const errors = t.spans.filter((s) => tagValue(s, "error") === true).length;
  return { start, durationMs: (end - start) / 1000, root, services: [...services], errors };
}

const Search = {
  async render(root, params) {
    root.append(h("h2", {}, "Trace search"));
    if (App.withoutRepository(root)) return;
    const services = await Api.get("/api/services").catch(() => []);
    const sel = h("select", { name: "service" }, h("option", { value: "" }, "any service"),
      (services || []).map((s) => h("option", { value: s, selected: s === params.get("service") }, s)));
    const ops = h("select", { name: "operation" }, h("option", { value: "" }, "any operation"));
    const loadOps = async () => {
      ops.replaceChildren(h("option", { value: "" }, "any operation"));
      if (!sel.value) return;
      const list = await Api.get("/api/operations", { service: sel.value }).catch(() => []);
      const names = [...new Set((list || []).map((o) => o.name))].sort();
      names.forEach((n) => ops.append(h("option", { value: n, selected: n === params.get("operation") }, n)));
    };
    sel.addEventListener("change", loadOps);
    await loadOps();
    const f = (name, label, ph) => h("label", {}, label, h("input", { name, placeholder: ph, value: params.get(name) || "" }));
    const form = h("form", { class: "query panel", id: "search-form" },
      h("label", {}, "service", sel), h("label", {}, "operation", ops),
      f("tags", "tags", "error=true http.response.status_code=500"), f("minDuration", "min duration", "100ms"),
      f("maxDuration", "max duration", "5s"), f("limit", "limit", "20"), h("button", { type: "submit" }, "Search"));
    const out = h("div", { id: "results" });
    root.append(form, out);
    const run = async () => {
      const q = Object.fromEntries(new FormData(form));
      q.start = String((Date.now() - 3600000) * 1000);
      out.replaceChildren(h("p", { class: "muted" }, "searching…"));
      try {
        const traces = await Api.get("/api/traces", q);
        const rows = traces.map((t) => {
          const s = summarize(t);
          return h("tr", { class: "clickable trace-row", "data-trace": t.traceID, onclick: () => App.go("#/trace/" + t.traceID) },
            h("td", { class: "mono" }, t.traceID.slice(0, 16)),
            h("td", {}, t.processes[s.root.processID].serviceName + " " + s.root.operationName),
            h("td", { class: "num" }, fmt.ms(s.durationMs)), h("td", { class: "num" }, t.spans.length),
            h("td", { class: "num" + (s.errors ? " bad" : "") }, s.errors), h("td", {}, s.services.length),
            h("td", { class: "muted" }, fmt.time(s.start / 1000)));
        });
        out.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["trace", "root", "duration", "spans", "errors", "services", "started"].map((t) => h("th", {}, t)))),
          h("tbody", {}, rows)));
        if (!rows.length) out.append(h("p", { class: "empty" }, "No trace matches."));
      } catch (e) {
        out.replaceChildren(h("p", { class: "bad" }, e.message));
      }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
    await run();
  },
};

const TraceView = {
  /** Spans in tree order (children by start) with their depth. */
  order(t) {
    const kids = new Map();
    const ids = new Set(t.spans.map((s) => s.spanID));
    const roots = [];
    for (const s of t.spans) {
      const parent = s.references.find((r) => r.refType === "CHILD_OF" && ids.has(r.spanID));
      if (parent) (kids.get(parent.spanID) || kids.set(parent.spanID, []).get(parent.spanID)).push(s);
      else roots.push(s);
    }
    const out = [];
    const walk = (s, depth) => {
      out.push([s, depth]);
      (kids.get(s.spanID) || []).sort((a, b) => a.startTime - b.startTime).forEach((c) => walk(c, depth + 1));
    };
    roots.sort((a, b) => a.startTime - b.startTime).forEach((r) => walk(r, 0));
    return out;
  },
  async render(root, id) {
    if (App.withoutRepository(root)) return;
    const [traces, analysis] = await Promise.all([
      Api.get("/api/traces/" + id),
      Api.get("/api/spanline/traces/" + id + "/analysis").then((a) => a[0]).catch(() => null),
    ]);
    const t = traces[0];
    const sum = summarize(t);
    const critical = new Set(((analysis && analysis.criticalPath) || []).map((s) => s.spanID));
    const bottleneck = analysis && analysis.bottleneck ? analysis.bottleneck.spanID : null;
    root.append(h("h2", {}, "Trace ", h("span", { class: "mono" }, t.traceID)));
    const facts = h("dl", { class: "kv" },
      h("dt", {}, "root"), h("dd", {}, t.processes[sum.root.processID].serviceName + " " + sum.root.operationName),
      h("dt", {}, "duration"), h("dd", {}, fmt.ms(sum.durationMs)),
      h("dt", {}, "spans"), h("dd", {}, t.spans.length + (sum.errors ? ` (${sum.errors} with errors)` : "")),
      h("dt", {}, "services"), h("dd", {}, sum.services.join(", ")));
    if (analysis) {
      const b = analysis.bottleneck, bs = analysis.bottleneckService;
      facts.append(h("dt", {}, "bottleneck"), h("dd", { id: "bottleneck" }, b ? `${b.service} ${b.name}: ${fmt.ms(b.selfTimeMs)} self time, ${fmt.pct(b.share)} of the critical path` : "none"),
        h("dt", {}, "bottleneck service"), h("dd", {}, bs ? `${bs.service} (${fmt.pct(bs.share)})` : "none"),
        h("dt", {}, "critical path"), h("dd", {}, `${critical.size} spans`));
    }
    const findings = h("div", { class: "panel", id: "findings" }, h("h3", {}, "Findings"));
    const list = (analysis && analysis.findings) || [];
    if (list.length) findings.append(h("ul", {}, list.map((f) => h("li", { class: "finding" }, h("b", {}, f.kind), f.service ? " (" + f.service + ")" : "", ": ", f.message))));
    else findings.append(h("p", { class: "muted" }, analysis ? "No findings." : "No analysis stored for this trace."));
    root.append(h("div", { class: "panel" }, facts), findings);
    root.append(h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:#8cb4ff" }), "span"),
      h("span", {}, h("i", { style: "background:#fb8f44" }), "◆ on the critical path"),
      h("span", {}, h("i", { style: "background:#d1242f" }), "bottleneck")));
    const wf = h("div", { class: "waterfall", id: "waterfall" });
    const total = Math.max(1, sum.durationMs * 1000);
    for (const [s, depth] of this.order(t)) {
      const left = ((s.startTime - sum.start) / total) * 100;
      const width = Math.max(0.2, (s.duration / total) * 100);
      const classes = ["wf-row"];
      if (critical.has(s.spanID)) classes.push("critical");
      if (s.spanID === bottleneck) classes.push("bottleneck");
      if (tagValue(s, "error") === true) classes.push("error");
      wf.append(h("div", { class: classes.join(" "), "data-span": s.spanID, title: `${s.operationName} · ${fmt.ms(s.duration / 1000)}` },
        h("div", { class: "wf-name", style: `padding-left:${6 + depth * 12}px` }, h("b", {}, t.processes[s.processID].serviceName), " ", s.operationName),
        h("div", { class: "wf-track" }, h("div", { class: "wf-bar", style: `left:${left}%;width:${width}%` }),
          h("span", { class: "wf-dur", style: `left:calc(${Math.min(100, left + width)}% + 4px)` }, fmt.ms(s.duration / 1000)))));
    }
    root.append(wf);
  },
};
