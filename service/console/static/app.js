// Vigil operator console: one page, hash routes, polling the admin API with fetch().
// The token lives in this tab's sessionStorage and travels only as an Authorization header.
"use strict";
(() => {
  const POLL_MS = 3000;
  const TOKEN_KEY = "vigil.console.token";
  const OPERATOR_ROLES = new Set(["operator", "admin"]);
  const COLORS = ["#1d4ed8", "#b91c1c", "#047857", "#7c3aed", "#b45309", "#be185d"];

  const $ = (sel, root = document) => root.querySelector(sel);

  /** An element: h("td", {class: "num"}, "text", child, ...). Text is always text. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const fmt = {
    pct: (x, digits = 1) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`),
    ms: (s) => (s === null || s === undefined ? "–" : `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`),
    num: (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits)),
    rate: (x) => (x === null || x === undefined ? "–" : x >= 10 ? x.toFixed(0) : x.toFixed(2)),
    time: (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–"),
    when: (ts) => (ts ? new Date(typeof ts === "number" ? ts * 1000 : ts).toLocaleString() : "–"),
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    you: null,
    overview: null,
    timer: null,
    generation: 0,
    pinned: {}, // model -> the deployment the page shows and acts on (its revision)
    cards: {}, // "model/version" -> card document, fetched once
    charts: {},
    regions: new WeakMap(), // element -> signature of what it shows
  };

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, body) {
      const env = body && typeof body === "object" ? body : {};
      super(env.error || `HTTP ${status}`);
      this.status = status;
      this.field = env.field;
      this.reason = env.reason;
    }
  }

  async function api(path, { method = "GET", body, headers = {} } = {}) {
    const init = { method, cache: "no-store", credentials: "omit", headers: {
      Accept: "application/json", Authorization: `Bearer ${state.token}`, ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      if (!init.headers["Content-Type"]) init.headers["Content-Type"] = "application/json";
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!r.ok) throw new ApiError(r.status, data);
    return { data, etag: r.headers.get("ETag") };
  }

  function explain(err) {
    if (err instanceof ApiError) {
      if (err.status === 412) return "Changed meanwhile — reload: the deployment moved on since this page showed it; nothing was changed.";
      const where = err.field ? ` (${err.field}: ${err.reason})` : "";
      return `${err.status}: ${err.message}${where}`;
    }
    return `The server could not be reached (${err.message}).`;
  }

  // ------------------------------------------------------------------ sign-in

  function showSignin(message) {
    stopPolling();
    state.token = null;
    state.you = null;
    state.overview = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("#page").replaceChildren();
    $("#nav").hidden = true;
    $("#who").hidden = true;
    $("#signout").hidden = true;
    $("#live").textContent = "";
    hideFlash();
    $("#signin").hidden = false;
    const error = $("#signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("#token").value = "";
    $("#token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("#token").value.trim();
    $("#token").value = "";
    if (!token) return;
    state.token = token;
    try {
      const { data } = await api("/admin/overview");
      sessionStorage.setItem(TOKEN_KEY, token);
      state.overview = data;
      $("#signin").hidden = true;
      start();
    } catch (err) {
      const why = err instanceof ApiError && (err.status === 401 || err.status === 403)
        ? `Sign-in failed: the server refused this token (${err.status} ${err.reason || ""}).`
        : `Sign-in failed: ${explain(err)}`;
      showSignin(why);
    }
  }

  // ------------------------------------------------------------------ flash and confirm

  function flash(message, kind = "error", action = null) {
    const el = $("#flash");
    el.className = `flash ${kind}`;
    el.setAttribute("role", kind === "error" ? "alert" : "status");
    el.replaceChildren(...[h("span", { class: "flash-text" }, message),
      action, h("button", { type: "button", class: "quiet", onclick: hideFlash }, "Dismiss")].filter(Boolean));
    el.hidden = false;
  }

  function hideFlash() {
    const el = $("#flash");
    el.hidden = true;
    el.replaceChildren();
  }

  function confirmChange(text, label = "Confirm") {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = label;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("#confirm-ok").focus();
    });
  }

  /** Ask, then run an action; its answer or its error goes to the flash line. */
  async function act(text, label, run, done) {
    hideFlash();
    if (!(await confirmChange(text, label))) return;
    try {
      const result = await run();
      flash(typeof done === "function" ? done(result) : done, "ok");
    } catch (err) {
      const reload = err instanceof ApiError && err.status === 412
        ? h("button", { type: "button", onclick: () => { state.pinned = {}; hideFlash(); refresh(); } }, "Reload")
        : null;
      flash(explain(err), "error", reload);
    }
    refresh();
  }

  const canAct = () => state.you && OPERATOR_ROLES.has(state.you.role);

  // ------------------------------------------------------------------ polling and routing

  function route() {
    const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").map(decodeURIComponent);
    return { page: parts[0] || "overview", arg: parts[1] || null };
  }

  function start() {
    $("#nav").hidden = false;
    $("#signout").hidden = false;
    state.generation += 1;
    $("#page").replaceChildren();
    state.charts = {};
    refresh();
  }

  function stopPolling() {
    clearTimeout(state.timer);
    state.timer = null;
  }

  async function refresh() {
    stopPolling();
    const generation = state.generation;
    const { page, arg } = route();
    try {
      const { data } = await api("/admin/overview");
      if (generation !== state.generation || !state.token) return;
      state.overview = data;
      state.you = data.you;
      drawHeader(data);
      const pages = { overview: drawOverview, model: drawModel, rollouts: drawRollouts,
                      webhooks: drawWebhooks, audit: drawAudit };
      await (pages[page] || drawOverview)(arg, generation);
      $("#live").textContent = `Updated ${fmt.time(data.now)}`;
      $("#live").classList.remove("stale");
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        showSignin(`Signed out: the server refused the token (${err.status}).`);
        return;
      }
      $("#live").textContent = `Not updated: ${explain(err)}`;
      $("#live").classList.add("stale");
    }
    if (state.token && generation === state.generation) {
      state.timer = setTimeout(refresh, POLL_MS);
    }
  }

  /** Rebuild ``el``'s children only when ``signature`` changed (keeps focus and scroll). */
  function update(el, signature, build) {
    const sig = JSON.stringify(signature);
    if (state.regions.get(el) === sig) return;
    state.regions.set(el, sig);
    el.replaceChildren(...[build()].flat().filter(Boolean));
  }

  /** The page's skeleton for this route, built once per navigation. */
  function skeleton(key, build) {
    const page = $("#page");
    if (page.dataset.key !== key) {
      page.dataset.key = key;
      for (const c of Object.values(state.charts)) c.destroy();
      state.charts = {};
      page.replaceChildren(...build());
    }
    return page;
  }

  function drawHeader(data) {
    const who = $("#who");
    who.hidden = false;
    who.textContent = `${data.you.name} (${data.you.role})`;
    for (const a of document.querySelectorAll("#nav a")) {
      const current = a.getAttribute("href").replace("#/", "") === route().page ||
        (a.getAttribute("href") === "#/" && ["overview", "model"].includes(route().page));
      if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
  }

  // ------------------------------------------------------------------ overview

  function monitorLine(m) {
    const lagging = (m.lag_seconds || 0) > 30;
    return h("p", { class: lagging ? "monitor bad-text" : "monitor" },
      `Monitor lag: ${m.lag_events ?? "–"} events, ${fmt.num(m.lag_seconds, 1)} s`,
      lagging ? " — behind" : "", ` · last tick ${fmt.time(m.updated_at)}`);
  }

  function shares(d) {
    if (!d) return [h("span", {}, "not deployed")];
    const w = d.canary ? d.canary.weight : 0;
    const out = [h("span", { class: "variant" }, h("b", {}, d.champion.version), ` champion ${fmt.pct(1 - w, 0)}`)];
    if (d.canary) out.push(h("span", { class: "variant" }, h("b", {}, d.canary.version), ` canary ${fmt.pct(w, 0)}`));
    for (const s of d.shadows || []) out.push(h("span", { class: "variant" }, h("b", {}, s.version), ` shadow (${fmt.pct(s.sample_rate, 0)} mirrored)`));
    return out;
  }

  function modelProblems(m, objective) {
    const problems = [];
    for (const v of m.variants) {
      const r = v.recent || {};
      const errRate = r.error_rate ?? null;
      if (errRate !== null && errRate > 0.05) problems.push(`${v.version} ${v.variant}: ${fmt.pct(errRate)} errors`);
      if (r.p99 && r.p99 > objective) problems.push(`${v.version} ${v.variant}: p99 ${fmt.ms(r.p99)}`);
    }
    for (const [version, d] of Object.entries(m.drift)) {
      if (d.active_alarms.length) problems.push(`${version}: drift (${d.active_alarms.map((a) => a.signal).join(", ")})`);
    }
    const st = m.rollout && m.rollout.state;
    if (st && ["aborted", "paused"].includes(st.status)) problems.push(`rollout ${st.status}`);
    return problems;
  }

  function rolloutText(r) {
    if (!r) return "none";
    const st = r.state;
    const steps = r.spec.steps;
    const w = steps[Math.min(st.step, steps.length - 1)];
    return `${r.spec.candidate}: ${st.status}, step ${st.step + 1}/${steps.length} (${fmt.pct(w, 0)})` +
      (st.reason ? ` — ${st.reason}` : "");
  }

  function drawOverview() {
    const data = state.overview;
    const page = skeleton("overview", () => [
      h("h1", {}, "Models"), h("div", { id: "monitor" }), h("div", { id: "models", class: "cards" })]);
    update($("#monitor", page), data.monitor, () => monitorLine(data.monitor));
    const objective = data.latency_objective_seconds;
    update($("#models", page), data.models.map((m) => [m, objective]), () => data.models.map((m) => {
      const problems = modelProblems(m, objective);
      const rows = m.variants.map((v) => {
        const r = v.recent || {};
        const bad = (r.error_rate ?? 0) > 0.05 || (r.p99 || 0) > objective;
        return h("tr", { class: bad ? "bad-text" : null },
          h("th", { scope: "row" }, `${v.version} ${v.variant}`),
          h("td", { class: "num" }, fmt.rate(r.requests_per_second ?? 0)),
          h("td", { class: "num" }, fmt.pct(r.error_rate ?? v.error_rate)),
          h("td", { class: "num" }, fmt.ms(r.p99 ?? v.p99)));
      });
      const alarms = Object.entries(m.drift).flatMap(([version, d]) =>
        d.active_alarms.map((a) => `${version} ${a.signal}: ${a.features.join(", ")}`));
      return h("article", { class: problems.length ? "card bad" : "card", "data-model": m.name },
        h("h2", {}, h("a", { href: `#/model/${encodeURIComponent(m.name)}` }, m.name),
          problems.length ? h("span", { class: "badge bad-badge" }, "attention") : h("span", { class: "badge ok-badge" }, "ok")),
        h("p", { class: "shares" }, shares(m.deployment)),
        h("p", { class: "muted" }, `Registered: ${m.versions.join(", ")} · revision ${m.deployment ? m.deployment.revision : "–"}`),
        rows.length ? h("table", { class: "compact" },
          h("caption", { class: "sr-only" }, `${m.name} traffic, last 5 minutes`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "variant"), h("th", { scope: "col", class: "num" }, "req/s"),
            h("th", { scope: "col", class: "num" }, "errors"), h("th", { scope: "col", class: "num" }, "p99"))),
          h("tbody", {}, rows)) : h("p", { class: "muted" }, "No traffic counted yet."),
        h("p", { class: alarms.length ? "drift bad-text" : "drift" },
          alarms.length ? `Drift alarms: ${alarms.join("; ")}` : "Drift: no open alarm"),
        h("p", { class: m.rollout && ["aborted", "paused"].includes(m.rollout.state.status) ? "bad-text" : "" },
          `Rollout: ${rolloutText(m.rollout)}`));
    }));
  }

  // ------------------------------------------------------------------ model page

  function section(id, title, ...extra) {
    return h("section", { id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...extra);
  }

  function drawModel(name, generation) {
    const m = state.overview.models.find((x) => x.name === name);
    if (!m) {
      skeleton(`missing/${name}`, () => [h("h1", {}, name), h("p", {}, "No such model.")]);
      return Promise.resolve();
    }
    const page = skeleton(`model/${name}`, () => [
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / ", name),
      h("h1", {}, name),
      section("deployment", "Deployment", h("div", { class: "body" }), h("div", { class: "actions" })),
      section("traffic", "Traffic and latency, last hour",
        h("div", { class: "charts" }, h("figure", { id: "chart-requests" }, h("figcaption", {}, "Requests per minute by variant")),
          h("figure", { id: "chart-latency" }, h("figcaption", {}, "Latency p99 (ms) by variant")))),
      section("quality", "Live quality against the card's holdout", h("div", { class: "body" })),
      section("drift", "Drift", h("div", { class: "body" })),
      section("features", "Features ranked by how far they moved", h("div", { class: "body" })),
      section("shadows", "Shadow agreement", h("div", { class: "body" })),
      section("versions", "Versions", h("div", { class: "body" })),
    ]);
    if (!state.pinned[name] && m.deployment) state.pinned[name] = m.deployment;
    drawDeployment(page, m);
    return Promise.all([
      api(`/admin/models/${encodeURIComponent(name)}/stats`),
      api(`/admin/models/${encodeURIComponent(name)}/history?minutes=60`),
      ...Object.keys(m.drift).map((v) => api(`/admin/drift/${encodeURIComponent(name)}?version=${encodeURIComponent(v)}`)),
      ...m.versions.filter((v) => !state.cards[`${name}/${v}`]).map((v) =>
        api(`/admin/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(v)}`).then((r) => {
          state.cards[`${name}/${v}`] = r.data;
          return r;
        })),
    ]).then(([stats, hist, ...rest]) => {
      if (generation !== state.generation || $("#page").dataset.key !== `model/${name}`) return;
      const drifts = rest.slice(0, Object.keys(m.drift).length).map((r) => r.data);
      drawCharts(page, hist.data);
      drawQuality(page, m, stats.data);
      drawDrift(page, m, drifts);
      drawFeatures(page, drifts);
      drawShadows(page, m, stats.data);
      drawVersions(page, m);
    });
  }

  function drawDeployment(page, m) {
    const name = m.name;
    const shown = state.pinned[name] || m.deployment;
    const live = m.deployment;
    const body = $("#deployment .body", page);
    update(body, [shown, live && live.revision], () => {
      const out = [h("p", { class: "shares" }, shares(shown)),
        h("p", { class: "muted" }, `Revision ${shown ? shown.revision : "–"} · routing key header ${shown ? shown.routing_key_header : "–"}`)];
      if (shown && live && live.revision !== shown.revision) {
        out.push(h("p", { class: "bad-text notice" },
          `The deployment moved to revision ${live.revision} since this page showed revision ${shown.revision}; actions here act on revision ${shown.revision}. `,
          h("button", { type: "button", onclick: () => { state.pinned[name] = null; refresh(); } }, "Reload")));
      }
      return out;
    });
    const actions = $("#deployment .actions", page);
    update(actions, [canAct(), shown], () => {
      if (!canAct() || !shown) return [];
      const ifMatch = { "If-Match": `"${shown.revision}"` };
      const path = `/admin/deployments/${encodeURIComponent(name)}`;
      const pin = (r) => { state.pinned[name] = r.data; return r; };
      const buttons = [];
      if (shown.canary) {
        buttons.push(h("button", { type: "button", "data-action": "promote", onclick: () => act(
          `Promote ${name}: canary ${shown.canary.version} becomes champion in place of ${shown.champion.version} (revision ${shown.revision}).`,
          "Promote", () => api(`${path}/promote`, { method: "POST", headers: ifMatch }).then(pin),
          (r) => `Promoted: ${name} champion is now ${r.data.champion.version} (revision ${r.data.revision}).`) }, "Promote canary"));
      }
      const history = shown.history || [];
      if (history.length) {
        const previous = history[history.length - 1];
        buttons.push(h("button", { type: "button", class: "danger", "data-action": "rollback", onclick: () => act(
          `Roll back ${name}: the previous champion ${previous} comes back in place of ${shown.champion.version}` +
          `${shown.canary ? ` and canary ${shown.canary.version} is cleared` : ""} (revision ${shown.revision}).`,
          "Roll back", () => api(`${path}/rollback`, { method: "POST", headers: ifMatch }).then(pin),
          (r) => `Rolled back: ${name} champion is now ${r.data.champion.version} (revision ${r.data.revision}).`) }, `Roll back to ${previous}`));
      }
      const versions = m.versions.filter((v) => v !== shown.champion.version);
      const select = h("select", { id: "canary-version", name: "version" },
        versions.map((v) => h("option", { value: v, selected: shown.canary && shown.canary.version === v }, v)));
      const weight = h("input", { id: "canary-weight", name: "weight", type: "number", min: "0", max: "100", step: "1",
        value: shown.canary ? String(Math.round(shown.canary.weight * 100)) : "10", inputmode: "numeric" });
      const form = h("form", { class: "inline", "aria-label": "Canary weight", onsubmit: (e) => {
        e.preventDefault();
        const pct = Number(weight.value);
        if (!Number.isFinite(pct) || pct < 0 || pct > 100) { flash("The canary weight is a percentage from 0 to 100."); return; }
        const version = select.value;
        const from = shown.canary ? `${shown.canary.version} at ${fmt.pct(shown.canary.weight, 0)}` : "no canary";
        act(`Set the canary of ${name} to ${version} at ${pct}% (from ${from}; revision ${shown.revision}).`, "Set weight",
          () => api(path, { method: "PATCH", headers: { ...ifMatch, "Content-Type": "application/merge-patch+json" },
            body: { canary: { version, weight: pct / 100 } } }).then(pin),
          (r) => `Canary of ${name} set: ${r.data.canary.version} at ${fmt.pct(r.data.canary.weight, 0)} (revision ${r.data.revision}).`);
      } }, h("label", { for: "canary-version" }, "Canary"), select,
        h("label", { for: "canary-weight" }, "weight %"), weight,
        h("button", { type: "submit", "data-action": "set-weight", disabled: versions.length ? null : true }, "Set canary weight"));
      if (shown.canary) {
        buttons.push(h("button", { type: "button", "data-action": "clear-canary", onclick: () => act(
          `Clear the canary of ${name}: ${shown.canary.version} stops taking ${fmt.pct(shown.canary.weight, 0)} of traffic (revision ${shown.revision}).`,
          "Clear canary", () => api(path, { method: "PATCH", headers: { ...ifMatch, "Content-Type": "application/merge-patch+json" },
            body: { canary: null } }).then(pin),
          (r) => `Canary of ${name} cleared (revision ${r.data.revision}).`) }, "Clear canary"));
      }
      return [h("div", { class: "buttons" }, buttons), form];
    });
  }

  function seriesKey(s) { return `${s.version} ${s.variant}`; }

  function drawCharts(page, hist) {
    if (typeof uPlot === "undefined") return;
    const start = hist.from;
    const xs = [];
    for (let t = start; t <= hist.now; t += 60) xs.push(t);
    const index = new Map(xs.map((t, i) => [t, i]));
    const series = hist.series.filter((s) => s.variant !== "shadow" || s.points.length);
    const requests = series.map((s) => { const a = xs.map(() => 0); for (const p of s.points) if (index.has(p.t)) a[index.get(p.t)] = p.requests; return a; });
    const p99 = series.map((s) => { const a = xs.map(() => null); for (const p of s.points) if (index.has(p.t) && p.p99 !== null) a[index.get(p.t)] = +(p.p99 * 1000).toFixed(3); return a; });
    const names = series.map(seriesKey);
    chart(page, "requests", names, [xs, ...requests]);
    chart(page, "latency", names, [xs, ...p99]);
  }

  function chart(page, id, names, data) {
    const fig = $(`#chart-${id}`, page);
    const width = Math.max(260, Math.min(fig.clientWidth || 600, 900));
    const sig = JSON.stringify([names, width]);
    let c = state.charts[id];
    if (c && c._vigilSig !== sig) { c.destroy(); c = null; }
    if (!c) {
      c = new uPlot({
        width, height: 200, legend: { show: true },
        axes: [{ stroke: "#1f2937" }, { stroke: "#1f2937", size: 56 }],
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false, points: { show: true, size: 5 } }))],
        scales: { x: { time: true } },
      }, data, fig);
      c._vigilSig = sig;
      state.charts[id] = c;
    } else {
      c.setData(data);
    }
  }

  function holdoutOf(m, version) {
    const card = state.cards[`${m.name}/${version}`];
    return card && card.card.metrics ? card.card.metrics.holdout || {} : {};
  }

  function drawQuality(page, m, stats) {
    const body = $("#quality .body", page);
    const rows = [];
    for (const [version, variants] of Object.entries(stats.versions)) {
      for (const [variant, r] of Object.entries(variants)) {
        const w = r.quality.window;
        const holdout = holdoutOf(m, version);
        const metrics = Object.keys(holdout).filter((k) => k in w);
        rows.push(h("tr", {}, h("th", { scope: "row" }, `${version} ${variant}`),
          h("td", { class: "num" }, String(w.labels)),
          h("td", {}, metrics.length ? metrics.map((k) => {
            const worse = ["log_loss", "mae", "rmse"].includes(k) ? w[k] > holdout[k] * 1.1 : w[k] < holdout[k] - 0.05;
            return h("span", { class: worse ? "metric bad-text" : "metric" }, `${k} ${fmt.num(w[k], 3)} (holdout ${fmt.num(holdout[k], 3)})`);
          }) : h("span", { class: "muted" }, "no labels yet"))));
      }
    }
    update(body, rows.map((r) => r.textContent), () => rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "variant"), h("th", { scope: "col", class: "num" }, "labels (window)"), h("th", { scope: "col" }, "live vs holdout"))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No traffic counted yet."));
  }

  function bar(value, max, label, bad) {
    const pct = Math.max(0, Math.min(1, max ? value / max : 0)) * 100;
    const fill = h("span", { class: bad ? "bar bad-bar" : "bar" });
    fill.style.width = `${pct.toFixed(1)}%`; // CSSOM, which the page's CSP allows
    return h("span", { class: "barwrap", role: "img", "aria-label": label }, fill);
  }

  function drawDrift(page, m, drifts) {
    const body = $("#drift .body", page);
    const sig = [canAct(), drifts.map((d) => [d.version, d.rows_seen > 0, d.active_alarms.map((a) => a.id),
      Object.entries(d.signals).map(([k, s]) => [k, Math.round((s.max_ratio || 0) * 100)])])];
    update(body, sig, () => drifts.map((d) => {
      const active = d.active_alarms;
      const signals = Object.entries(d.signals);
      return h("div", { class: "drift-version", "data-version": d.version },
        h("h3", { class: active.length ? "bad-text" : "" }, `${d.version}: ${active.length ? `${active.length} open alarm${active.length > 1 ? "s" : ""}` : "no open alarm"}`,
          ` · ${d.rows_seen} rows seen`),
        active.length ? h("ul", { class: "alarms" }, active.map((a) => h("li", {},
          `${a.signal}: score ${fmt.num(a.score)} at row ${a.rows} (${fmt.time(a.time)}); features ${a.features.slice(0, 3).map((f) => f.feature).join(", ")}`))) : null,
        active.length && canAct() ? h("button", { type: "button", "data-action": "ack", onclick: () => act(
          `Acknowledge ${active.length} open drift alarm${active.length > 1 ? "s" : ""} of ${m.name} ${d.version} (${active.map((a) => a.signal).join(", ")}).`,
          "Acknowledge", () => api(`/admin/drift/${encodeURIComponent(m.name)}/ack?version=${encodeURIComponent(d.version)}`, { method: "POST" }),
          (r) => `Acknowledged alarm${r.data.acknowledged.length === 1 ? "" : "s"} ${r.data.acknowledged.join(", ")} of ${m.name} ${d.version}.`) },
          `Acknowledge ${d.version} alarms`) : null,
        signals.length ? h("table", { class: "compact" },
          h("caption", { class: "sr-only" }, `${d.version} drift signals`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "signal"), h("th", { scope: "col", class: "num" }, "ratio to threshold"), h("th", { scope: "col" }, ""))),
          h("tbody", {}, signals.map(([k, s]) => h("tr", { class: s.alarm_active ? "bad-text" : "" },
            h("th", { scope: "row" }, k), h("td", { class: "num" }, fmt.num(s.max_ratio)),
            h("td", {}, bar(s.max_ratio || 0, 1.5, `${k} at ${fmt.pct(s.max_ratio || 0, 0)} of its threshold`, (s.max_ratio || 0) >= 1))))))
          : h("p", { class: "muted" }, "No drift state yet."));
    }));
  }

  function drawFeatures(page, drifts) {
    const body = $("#features .body", page);
    const d = drifts[0]; // the champion's version sorts first only by chance: pick it by name
    const champion = state.overview.models.find((x) => drifts.length && x.name === drifts[0].model);
    const main = champion && champion.deployment ? drifts.find((x) => x.version === champion.deployment.champion.version) || d : d;
    if (!main) { update(body, "none", () => h("p", { class: "muted" }, "No drift state yet.")); return; }
    const ratio = {};
    for (const [k, s] of Object.entries(main.signals)) {
      if (!k.startsWith("input_")) continue;
      for (const [f, r] of Object.entries(s.features || {})) ratio[f] = Math.max(ratio[f] || 0, r);
    }
    for (const a of main.active_alarms) for (const f of a.features || []) ratio[f.feature] = Math.max(ratio[f.feature] || 0, f.ratio);
    const psi = main.psi || {};
    const names = [...new Set([...Object.keys(ratio), ...Object.keys(psi)])];
    names.sort((a, b) => (ratio[b] || 0) - (ratio[a] || 0) || (psi[b] || 0) - (psi[a] || 0));
    const top = names.slice(0, 12);
    const maxPsi = Math.max(0.25, ...top.map((f) => psi[f] || 0));
    update(body, [main.version, top, top.map((f) => [Math.round((ratio[f] || 0) * 100), Math.round((psi[f] || 0) * 100)])], () => top.length ? [
      h("p", { class: "muted" }, `${main.version}: ratio to the detectors' threshold (1.00 alarms) and PSI over the live window (0.25 is a large shift).`),
      h("table", { class: "features" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "#"), h("th", { scope: "col" }, "feature"), h("th", { scope: "col", class: "num" }, "ratio"),
          h("th", { scope: "col", class: "num" }, "PSI"), h("th", { scope: "col" }, "PSI bar"))),
        h("tbody", {}, top.map((f, i) => h("tr", { class: (ratio[f] || 0) >= 1 ? "bad-text" : "" },
          h("td", { class: "num" }, String(i + 1)), h("th", { scope: "row", class: "feature" }, f),
          h("td", { class: "num" }, fmt.num(ratio[f] || 0)), h("td", { class: "num" }, fmt.num(psi[f] ?? null, 3)),
          h("td", {}, bar(psi[f] || 0, maxPsi, `PSI ${fmt.num(psi[f] ?? 0, 3)}`, (psi[f] || 0) >= 0.25))))))]
      : h("p", { class: "muted" }, "No rows seen yet."));
  }

  function drawShadows(page, m, stats) {
    const body = $("#shadows .body", page);
    const rows = [];
    for (const [version, variants] of Object.entries(stats.versions)) {
      const s = variants.shadow;
      if (s) rows.push([version, s.agreement_with_primary ?? null, s.requests]);
    }
    update(body, rows, () => rows.length ? h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "shadow"), h("th", { scope: "col", class: "num" }, "agreement with the answer served"), h("th", { scope: "col", class: "num" }, "requests"))),
      h("tbody", {}, rows.map(([v, a, n]) => h("tr", { class: a !== null && a < 0.9 ? "bad-text" : "" },
        h("th", { scope: "row" }, v), h("td", { class: "num" }, fmt.pct(a)), h("td", { class: "num" }, String(n))))))
      : h("p", { class: "muted" }, (m.deployment && m.deployment.shadows.length) ? "No shadow answers counted yet." : "No shadow."));
  }

  function drawVersions(page, m) {
    const body = $("#versions .body", page);
    const cards = m.versions.map((v) => state.cards[`${m.name}/${v}`]).filter(Boolean);
    update(body, cards.map((c) => c.version), () => cards.map((c) => {
      const card = c.card;
      const lineage = card.lineage || {};
      return h("details", { class: "version" },
        h("summary", {}, h("b", {}, c.version), ` · ${card.task} · registered ${fmt.when(c.created_at)}`),
        h("p", {}, card.description || ""),
        h("dl", {},
          h("dt", {}, "holdout"), h("dd", {}, Object.entries((card.metrics || {}).holdout || {}).map(([k, x]) => `${k} ${fmt.num(x, 3)}`).join(" · ") || "–"),
          h("dt", {}, "dataset"), h("dd", {}, lineage.dataset || "–"),
          h("dt", {}, "code"), h("dd", {}, [lineage.code_path, lineage.code_commit].filter(Boolean).join(" @ ") || "–"),
          h("dt", {}, "parent"), h("dd", {}, lineage.parent_version || "–"),
          h("dt", {}, "hyperparameters"), h("dd", {}, JSON.stringify(lineage.hyperparameters || {})),
          h("dt", {}, "ONNX sha256"), h("dd", { class: "mono" }, c.onnx_sha256 || "–")));
    }));
  }

  // ------------------------------------------------------------------ rollouts

  function drawRollouts() {
    const data = state.overview;
    const page = skeleton("rollouts", () => [h("h1", {}, "Rollouts"), h("div", { id: "rollouts" })]);
    update($("#rollouts", page), [canAct(), data.models.map((m) => [m.name, m.rollout])], () => data.models.map((m) => {
      const r = m.rollout;
      if (!r) return h("section", { class: "card" }, h("h2", {}, m.name), h("p", { class: "muted" }, "No rollout."));
      const st = r.state;
      const a = r.analysis;
      const ops = canAct() ? [
        st.status === "running" ? ["pause", "Pause"] : null,
        st.status === "paused" ? ["resume", "Resume"] : null,
        ["running", "paused"].includes(st.status) ? ["abort", "Abort"] : null,
      ].filter(Boolean).map(([cmd, label]) => h("button", { type: "button", class: cmd === "abort" ? "danger" : null, "data-action": cmd,
        onclick: () => act(`${label} the rollout of ${r.spec.candidate} on ${m.name} (now ${st.status} at step ${st.step + 1}${cmd === "abort" ? "; the canary is cleared" : ""}).`,
          label, () => api(`/admin/rollouts/${encodeURIComponent(m.name)}/${cmd}`, { method: "POST" }),
          (res) => `Rollout of ${m.name}: ${res.data.state ? res.data.state.status : cmd}.`) }, `${label} rollout`)) : [];
      return h("section", { class: ["aborted", "paused"].includes(st.status) ? "card bad" : "card", "data-model": m.name },
        h("h2", {}, `${m.name}: ${r.spec.candidate} ${st.status}`),
        h("p", {}, `Started ${fmt.when(r.started_at)} by ${r.started_by}.`, st.reason ? ` ${st.reason}` : ""),
        h("ol", { class: "steps" }, r.spec.steps.map((w, i) => h("li", { class: i === st.step ? "current" : i < st.step ? "done" : "" },
          `${fmt.pct(w, 0)}${i === st.step ? " (current)" : i < st.step ? " (passed)" : ""}`))),
        a ? h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": `${m.name} rollout analysis` }, h("table", {},
          h("caption", {}, `Analysis at step ${a.step + 1}, ${fmt.time(a.at)}: ${a.verdict}`),
          h("thead", {}, h("tr", {}, ["gate", "value", "threshold", "samples", "verdict"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, a.gates.map((g) => h("tr", { class: g.verdict === "fail" ? "bad-text" : "" },
            h("th", { scope: "row" }, g.name), h("td", { class: "num" }, fmt.num(g.value, 4)), h("td", { class: "num" }, fmt.num(g.threshold, 4)),
            h("td", { class: "num" }, String(g.samples)), h("td", {}, g.verdict + (g.detail ? ` — ${g.detail}` : "")))))))
          : h("p", { class: "muted" }, "No analysis yet."),
        ops.length ? h("div", { class: "buttons" }, ops) : null);
    }));
  }

  // ------------------------------------------------------------------ webhooks and audit

  async function drawWebhooks(_, generation) {
    const page = skeleton("webhooks", () => [h("h1", {}, "Webhook deliveries"),
      section("pending", "Pending", h("div", { class: "body" })), section("dead", "Dead letters", h("div", { class: "body" }))]);
    const [pending, dead] = await Promise.all([api("/admin/webhooks/deliveries?status=pending&limit=50"),
      api("/admin/webhooks/deliveries?status=dead&limit=50")]);
    if (generation !== state.generation || page.dataset.key !== "webhooks") return;
    for (const [id, list] of [["pending", pending.data.items], ["dead", dead.data.items]]) {
      update($(`#${id} .body`, page), [canAct(), list], () => list.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["id", "target", "event", "attempts", "last answer", id === "pending" ? "next attempt" : ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, list.map((d) => h("tr", { class: id === "dead" ? "bad-text" : "" },
          h("td", { class: "num" }, String(d.id)), h("td", {}, d.target),
          h("td", {}, `${d.type}${d.model ? ` (${d.model})` : ""}`),
          h("td", {}, h("details", {}, h("summary", {}, String(d.attempts)), h("ul", {}, d.history.map((a) =>
            h("li", {}, `#${a.attempt} ${fmt.time(a.ts)}: ${a.status_code ?? a.error ?? "?"} in ${a.duration_seconds}s`))))),
          h("td", {}, d.last_status ? String(d.last_status) : d.last_error || "–"),
          h("td", {}, id === "pending" ? fmt.time(d.next_attempt_at) : canAct() ? h("button", { type: "button", "data-action": "redeliver",
            onclick: () => act(`Redeliver webhook delivery ${d.id} (${d.type} to ${d.target}) for a new round of attempts.`, "Redeliver",
              () => api(`/admin/webhooks/deliveries/${d.id}/redeliver`, { method: "POST" }), `Delivery ${d.id} queued again.`) }, "Redeliver") : "")))))
        : h("p", { class: "muted" }, id === "pending" ? "Nothing pending." : "No dead letter."));
    }
  }

  async function drawAudit(_, generation) {
    const page = skeleton("audit", () => [h("h1", {}, "Audit log"), h("div", { id: "audit", class: "scroll", tabindex: "0", role: "region", "aria-label": "Audit rows" })]);
    const { data } = await api("/admin/audit?limit=50");
    if (generation !== state.generation || page.dataset.key !== "audit") return;
    update($("#audit", page), data.items.map((r) => r.id), () => h("table", {},
      h("caption", { class: "sr-only" }, "The 50 latest audit rows, newest first"),
      h("thead", {}, h("tr", {}, ["time", "actor", "role", "action", "target", "outcome", "detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, data.items.map((r) => h("tr", { class: r.outcome === "ok" ? "" : "bad-text", "data-action": r.action },
        h("td", {}, fmt.when(r.ts)), h("td", { class: "actor" }, r.actor), h("td", {}, r.role || "–"), h("td", { class: "action" }, r.action),
        h("td", {}, r.target), h("td", { class: "outcome" }, r.outcome), h("td", {}, r.detail || ""))))));
  }

  // ------------------------------------------------------------------ start

  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => showSignin("Signed out."));
  window.addEventListener("hashchange", () => { if (state.token) { hideFlash(); start(); $("#main").focus(); } });
  if (state.token) { $("#signin").hidden = true; start(); } else showSignin();
})();
