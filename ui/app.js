// spanline web UI: routing between views and the wiring of live updates.
"use strict";

const App = {
  views: {
    services: (root) => Services.render(root),
    graph: (root) => Graph.render(root),
    alerts: (root) => Alerts.render(root),
    search: (root, params) => Search.render(root, params),
    running: (root) => Running.render(root),
    compare: (root, params) => Compare.render(root, params),
  },
  /** Whether the trace repository (and the query API over it) runs in this process. */
  repository: true,
  /** For views that read the repository: says it is off and returns true. */
  withoutRepository(root) {
    if (this.repository) return false;
    root.append(h("p", { class: "panel muted", id: "no-repository" },
      "This view reads the trace repository, which is off in this pipeline (repository.enabled: false). ",
      "Services and alerts still arrive live; running executions are answered by the pipeline."));
    return true;
  },
  go(hash) {
    location.hash = hash;
  },
  notice(text) {
    const n = document.getElementById("notice");
    n.textContent = text;
    n.hidden = !text;
  },
  async route() {
    const [path, query] = (location.hash.slice(2) || "services").split("?");
    const params = new URLSearchParams(query || "");
    const [name, arg] = path.split("/");
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
    const root = document.getElementById("view");
    const fresh = h("div", { "data-view": name });
    root.replaceChildren(fresh);
    try {
      if (name === "trace" && arg) await TraceView.render(fresh, arg);
      else await (this.views[name] || this.views.services)(fresh, params);
    } catch (e) {
      fresh.append(h("p", { class: "bad" }, e.message));
    }
    fresh.setAttribute("data-loaded", "true");
  },
  start() {
    const token = document.getElementById("token");
    token.value = Api.token();
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      Api.setToken(token.value.trim());
      this.notice("");
      location.reload();
    });
    window.addEventListener("hashchange", () => this.route());
    Live.on((kind, ev) => {
      if (kind === "window") {
        const name = Services.window(ev);
        if (name) Services.update(name);
      } else {
        Alerts.event(ev);
        Alerts.fill();
      }
    });
    // which views this process can fill, before the first of them asks
    Api.get("/api/spanline/status")
      .then((status) => { this.repository = status.repository !== false; })
      .catch(() => {})
      .then(() => {
        Alerts.load().then(() => Alerts.badge()).catch(() => {});
        Live.start();
        this.route();
      });
  },
};

// for tests and the curious: what the live stream delivered (count, push delays)
window.spanlineLive = Live.stats;
App.start();
