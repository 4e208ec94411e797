// spanline web UI: the query API client, the live event stream and small DOM helpers.
"use strict";

const TOKEN_KEY = "spanline.token";

/** Creates an element: h("td", {class: "num"}, "12", child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Creates an SVG element. */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = {
  ms(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 2) + " s";
    if (v >= 10) return v.toFixed(0) + " ms";
    return v.toFixed(v >= 1 ? 1 : 2) + " ms";
  },
  pct(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return (v * 100).toFixed(v >= 0.1 ? 0 : 1) + "%";
  },
  rate(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "/s";
  },
  num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return Number(v).toFixed(digits === undefined ? 3 : digits);
  },
  time(ms) {
    return new Date(ms).toLocaleTimeString();
  },
  ago(ms) {
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 90) return s.toFixed(0) + " s ago";
    if (s < 5400) return (s / 60).toFixed(0) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  },
};

/** Why an API request failed (the envelope's message when there is one). */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const Api = {
  token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  setToken(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  headers() {
    const t = Api.token();
    return t ? { Authorization: "Bearer " + t } : {};
  },
  url(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === null || v === undefined || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
      else q.append(k, v);
    }
    const s = q.toString();
    return s ? path + "?" + s : path;
  },
  /** GETs `path` and returns the envelope's `data`; throws ApiError. */
  async get(path, params) {
    const res = await fetch(Api.url(path, params), { headers: Api.headers() });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const msg = body && body.errors && body.errors[0] ? body.errors[0].msg : res.statusText;
      if (res.status === 401) App.notice("The API needs a token: enter it in the field at the top right.");
      throw new ApiError(res.status, msg);
    }
    return body ? body.data : null;
  },
};

/**
 * The live stream: closed windows and alert events as the pipeline emits them, read
 * with fetch (so the token goes in a header), reconnecting after a failure.
 */
const Live = {
  listeners: [],
  connected: false,
  stats: { events: 0, windows: 0, alerts: 0, lastDelayMs: null, delays: [] },
  on(fn) {
    this.listeners.push(fn);
  },
  async start() {
    for (;;) {
      try {
        await this.read();
      } catch (_) {
        // dropped or refused: try again shortly
      }
      this.status(false, "live: reconnecting");
      await new Promise((r) => setTimeout(r, 2000));
    }
  },
  async read() {
    const res = await fetch("/api/spanline/events", { headers: Api.headers() });
    if (!res.ok || !res.body) {
      this.status(false, res.status === 401 ? "live: token needed" : "live: unavailable");
      return;
    }
    this.status(true, "live");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        this.dispatch(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
      }
    }
  },
  dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (name !== "window" && name !== "alert") return;
    const ev = JSON.parse(data.join("\n"));
    const delay = Date.now() - ev.emittedAtMs;
    const s = this.stats;
    s.events += 1;
    s[name === "window" ? "windows" : "alerts"] += 1;
    s.lastDelayMs = delay;
    s.delays.push(delay);
    if (s.delays.length > 1000) s.delays.shift();
    this.status(true, "live · push " + delay + " ms");
    for (const fn of this.listeners) fn(name, ev);
  },
  status(on, text) {
    this.connected = on;
    const el = document.getElementById("live");
    el.textContent = text;
    el.className = "live " + (on ? "on" : "off");
  },
};
